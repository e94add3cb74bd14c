"""atheris harness: the tcp frame reader (preamble, 9-byte headers, bodies,
any split into reads) and the udp datagram header.

    .venv/bin/python scripts/fuzz/fuzz_framing.py -max_total_time=300 /tmp/corpus-framing
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    import anyio
    from anyio.abc import ByteReceiveStream

    from hedgeplug.transport._framing import HEADER_SIZE, FrameReader, FrameRejected
    from hedgeplug.transport.udp import decode_datagram

from _harness import drive, main

MAX_FRAME = 4096
CHUNK = 1 << 16


class Chunks(ByteReceiveStream):
    """Fake socket (named as one): the given reads, then end of stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)[:max_bytes]

    async def aclose(self) -> None:
        self.chunks.clear()


async def read_all(reader: FrameReader, preamble: bool) -> None:
    try:
        if preamble:
            await reader.read_preamble()
        while True:
            kind, request_id, body = await reader.read()
            assert len(body) <= MAX_FRAME and 0 <= request_id <= 0xFFFFFFFF
            assert reader.buffered <= HEADER_SIZE + MAX_FRAME + CHUNK
    except (FrameRejected, anyio.EndOfStream):
        pass


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    preamble = fdp.ConsumeBool()
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6)))
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    points = [0, *[c % (len(rest) + 1) for c in cuts], len(rest)]
    chunks = [rest[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]
    drive(read_all(FrameReader(Chunks(chunks), MAX_FRAME), preamble))
    decoded = decode_datagram(rest)
    if decoded is not None:
        assert 1 <= decoded[0] <= 5


if __name__ == "__main__":
    main(one_input)
