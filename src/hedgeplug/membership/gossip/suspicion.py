"""How long a suspect member has to refute before it is declared dead.

Lifeguard's rule: the timeout starts long (`max`) and shrinks towards `min`
as independent members confirm the suspicion, on a log scale, so one
confused prober cannot kill a healthy member quickly but a real failure seen
by several members is declared fast. `max` grows with log10 of the cluster
size because a larger cluster needs longer for a refutation to travel back
through gossip.

`min`, the timeout of a fully confirmed suspicion, is Lifeguard's
`mult * log10(n) * probe_interval` capped at `confirmed`: the node that
accused (and any node whose suspicion runs out) keeps pinging the suspect
with the accusation until it ends, so a live suspect refutes in one round
trip and need not wait for gossip to reach it and bring its answer back.
"""

from __future__ import annotations

import math

import attrs


def suspicion_bounds(
    cluster_size: int,
    probe_interval: float,
    mult: int,
    max_mult: int,
    confirmed: float = math.inf,
) -> tuple[float, float]:
    """(min, max) suspicion timeout for a cluster of `cluster_size` live members."""
    node_scale = max(1.0, math.log10(max(1, cluster_size)))
    base = mult * node_scale * probe_interval
    return min(base, confirmed), base * max_mult


def expected_confirmations(mult: int, cluster_size: int) -> int:
    """Confirmations after which the timeout reaches its minimum.

    Beyond the suspect and the first accuser only n-2 members can confirm,
    so small clusters expect fewer.
    """
    k = mult - 2
    return max(0, min(k, cluster_size - 2))


@attrs.define
class Suspicion:
    member: str
    incarnation: int
    start: float
    low: float
    high: float
    expected: int
    accusers: set[str] = attrs.Factory(set)
    # Started by a peer's claim of death rather than an accusation: such a
    # claim is never believed on its own word (see watch.ends_known_suspicion).
    from_claimed_death: bool = False

    @property
    def confirmations(self) -> int:
        return max(0, len(self.accusers) - 1)

    def confirm(self, origin: str) -> bool:
        """Count an accusation from `origin`; True if it was a new independent one."""
        if origin in self.accusers or self.confirmations >= self.expected:
            return False
        self.accusers.add(origin)
        return True

    def timeout(self) -> float:
        if self.expected < 1:
            return self.low
        fraction = math.log(self.confirmations + 1) / math.log(self.expected + 1)
        return max(self.low, self.high - fraction * (self.high - self.low))

    def deadline(self) -> float:
        return self.start + self.timeout()


class Suspicions:
    """The open suspicions of one node, by member id."""

    def __init__(self, mult: int, max_mult: int, confirmed: float = math.inf) -> None:
        self.mult = mult
        self.max_mult = max_mult
        self.confirmed = confirmed
        self._open: dict[str, Suspicion] = {}

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._open

    def __len__(self) -> int:
        return len(self._open)

    def get(self, member_id: str) -> Suspicion | None:
        return self._open.get(member_id)

    def start(
        self,
        member_id: str,
        incarnation: int,
        origin: str,
        now: float,
        cluster_size: int,
        probe_interval: float,
    ) -> Suspicion:
        low, high = suspicion_bounds(
            cluster_size, probe_interval, self.mult, self.max_mult, self.confirmed
        )
        s = Suspicion(
            member_id, incarnation, now, low, high, expected_confirmations(self.mult, cluster_size)
        )
        s.accusers.add(origin)
        self._open[member_id] = s
        return s

    def confirm(self, member_id: str, incarnation: int, origin: str) -> bool:
        s = self._open.get(member_id)
        if s is None or s.incarnation != incarnation:
            return False
        return s.confirm(origin)

    def cancel(self, member_id: str) -> None:
        self._open.pop(member_id, None)

    def expired(self, now: float) -> list[Suspicion]:
        """Suspicions whose deadline passed, removed from the open set."""
        done = [s for s in self._open.values() if now >= s.deadline()]
        for s in done:
            del self._open[s.member]
        return done

    def next_deadline(self) -> float | None:
        return min((s.deadline() for s in self._open.values()), default=None)
