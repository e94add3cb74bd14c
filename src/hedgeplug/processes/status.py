"""Reading a set of node statuses: do they agree on one leader and one view?"""

from __future__ import annotations

from typing import Any

Status = dict[str, Any]


def agreement(
    statuses: dict[str, Status | None], live_ids: set[str], external: frozenset[str] = frozenset()
) -> tuple[bool, str]:
    """Whether every live node answered, all name the same leader (one of
    them, which says it leads) and every view holds exactly the live set plus
    the `external` ids (members that are not child processes, such as a
    node inside the calling process). The second item says what is missing
    when they do not agree."""
    expected = live_ids | external
    missing = [i for i in sorted(live_ids) if statuses.get(i) is None]
    if missing:
        return False, f"no status from {', '.join(missing)}"
    answered = [statuses[i] for i in sorted(live_ids)]
    leaders = {(s.get("leader") or {}).get("id") for s in answered}  # type: ignore[union-attr]
    if len(leaders) != 1 or None in leaders:
        return False, f"leaders seen: {sorted(map(str, leaders))}"
    (leader,) = leaders
    if leader not in live_ids:
        return False, f"leader {leader} is not a live process"
    if not statuses[leader].get("is_leader"):  # type: ignore[union-attr]
        return False, f"{leader} does not hold a valid lease"
    for s in answered:
        ids = {m["id"] for m in s.get("members", [])}  # type: ignore[union-attr]
        if ids != expected:
            extra, lacking = sorted(ids - expected), sorted(expected - ids)
            return False, f"{s['id']} sees extra {extra} lacking {lacking}"  # type: ignore[index]
    digests = {s.get("view_digest") for s in answered}  # type: ignore[union-attr]
    if len(digests) != 1:
        return False, f"{len(digests)} different view digests"
    return True, "agreed"


def summarize(statuses: dict[str, Status | None]) -> str:
    lines = []
    for node_id, s in sorted(statuses.items()):
        if s is None:
            lines.append(f"  {node_id}: no answer")
            continue
        leader = (s.get("leader") or {}).get("id")
        ids = sorted(m["id"] for m in s.get("members", []))
        lines.append(
            f"  {node_id}: leader={leader} is_leader={s.get('is_leader')} token={s.get('token')} "
            f"view={s.get('view_version')} members={ids}"
        )
    return "\n".join(lines)
