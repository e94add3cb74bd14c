"""atheris harness: heartbeat messages (beat, leave, update) into the
handler of a Heartbeat instance that leads, with a plain-object node
context (a fake, named as one: no network, no lock).

    .venv/bin/python scripts/fuzz/fuzz_heartbeat.py -max_total_time=300 /tmp/corpus-heartbeat
"""

from __future__ import annotations

import logging
from typing import Any

import atheris

with atheris.instrument_imports():
    from hedgeplug.contracts import Lease, Message
    from hedgeplug.membership.heartbeat import Heartbeat, HeartbeatOptions
    from hedgeplug.view import View

from _harness import drive, main, value_of

logging.disable(logging.CRITICAL)


class Channel:
    def handle(self, handler: Any) -> None:
        self.handler = handler


class FakeContext:
    id = "me"
    address = "127.0.0.1:1"
    meta: dict[str, str] = {}

    def __init__(self, leads: bool) -> None:
        self.is_leader = leads
        holder = "me" if leads else "boss"
        self.leader = Lease(lock="fuzz", holder=holder, address="127.0.0.1:3", token=5, ttl=5.0, remaining=5.0)
        self.newest_token = 5
        self.view = View()
        self.log = logging.getLogger("fuzz")
        self.counters: dict[str, int] = {}

    def now(self) -> float:
        return 0.0

    def channel(self, name: str) -> Channel:
        return Channel()

    def publish_view(self, view: View) -> None:
        self.view = view

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n


def one_input(data: bytes) -> None:
    leads = data[:1] != b"\x00"
    ctx = FakeContext(leads)
    hb = Heartbeat(HeartbeatOptions(), ctx)  # type: ignore[arg-type]
    if leads:
        hb._lead = hb._take_over(5)
    payload = value_of(data[2:])
    sender = "boss" if data[1:2] == b"\x00" else "x"
    if isinstance(payload, dict) and isinstance(payload.get("m"), list) and payload["m"]:
        sender = payload["m"][0] if isinstance(payload["m"][0], str) else sender
    drive(hb._on_message(Message(sender, "heartbeat", payload, 1)))


if __name__ == "__main__":
    main(one_input, inside_trio=True)
