"""atheris harness: gossip payloads through the message checks and into the
protocol (ping, gossip, push-pull and relay handling) of a Gossip instance
whose node context is a plain object (a fake, named as one: no network).

    .venv/bin/python scripts/fuzz/fuzz_gossip.py -max_total_time=300 /tmp/corpus-gossip
"""

from __future__ import annotations

import logging
from random import Random
from typing import Any

import atheris

with atheris.instrument_imports():
    from hedgeplug.contracts import Message
    from hedgeplug.membership.gossip import messages as wire
    from hedgeplug.membership.gossip.plugin import GossipOptions, resolve
    from hedgeplug.membership.gossip.protocol import Gossip
    from hedgeplug.view import MemberState

from _harness import Suspended, drive, main, value_of

logging.disable(logging.CRITICAL)


class Channel:
    def handle(self, handler: Any) -> None:
        self.handler = handler

    async def send(self, address: str, payload: Any) -> None:
        pass  # nowhere: the harness has no network

    async def request(self, address: str, payload: Any, timeout: float) -> Any:
        return None


class FakeContext:
    id = "me"
    address = "127.0.0.1:1"
    meta: dict[str, str] = {}
    leader = None

    def __init__(self) -> None:
        self.random = Random(1)
        self.log = logging.getLogger("fuzz")
        self.time = 0.0
        self.counters: dict[str, int] = {}
        self.ch = Channel()

    def now(self) -> float:
        return self.time

    def channel(self, name: str) -> Channel:
        return self.ch

    def publish_view(self, view: Any) -> None:
        pass

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n


def one_input(data: bytes) -> None:
    payload = value_of(data[1:])
    g = Gossip(resolve(GossipOptions()), FakeContext())  # type: ignore[arg-type]
    g.start()
    # A known peer, so records about it and relays to it reach deeper code.
    g.absorb([["peer", "127.0.0.1:2", {}, "alive", 0, "peer"]])
    sender = "peer" if data[:1] == b"\x00" else "stranger"
    try:
        drive(g.handle(Message(sender, "gossip", payload, 1)))
    except Suspended:
        pass  # a relay ping waits for the network; the checks before it ran
    for member in g.table:
        assert isinstance(member.state, MemberState) and 0 <= member.incarnation < 2**62 + 1
    assert len(g.table) <= wire.MAX_RECORDS + 2


if __name__ == "__main__":
    main(one_input, inside_trio=True)
