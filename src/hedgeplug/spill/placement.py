"""Where overflow goes: the members of the agreed view in rendezvous order
for the store's name, so every writer of a name prefers the same members and
different names spread over different ones."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def rendezvous_order(name: str, members: Iterable[str]) -> list[str]:
    def weight(member: str) -> bytes:
        return hashlib.blake2b(f"{name}\0{member}".encode(), digest_size=8).digest()

    return sorted(members, key=weight, reverse=True)
