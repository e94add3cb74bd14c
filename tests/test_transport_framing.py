"""The tcp frame reader on its own: any split of the byte stream yields the
same frames, garbage yields only FrameRejected, and a cancelled read loses no
bytes. Bytes come from `ChunkSource`, an in-memory stand-in for a socket (a
fake, named as one) so hypothesis can choose every split; the real-socket
behaviour is covered in test_transport_tcp.py."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import ByteReceiveStream
from hypothesis import given, settings
from hypothesis import strategies as st

from hedgeplug.transport._framing import (
    PURPOSE_FRAMES,
    FrameReader,
    FrameRejected,
    FrameType,
    encode_frame,
    preamble,
)


class ChunkSource(ByteReceiveStream):
    """Fake socket: hands out the given chunks, optionally pausing before each."""

    def __init__(self, chunks: list[bytes], pause: float = 0.0) -> None:
        self._chunks = list(chunks)
        self._pause = pause

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._pause:
            await anyio.sleep(self._pause)
        if not self._chunks:
            raise anyio.EndOfStream
        chunk = self._chunks.pop(0)
        if len(chunk) > max_bytes:
            self._chunks.insert(0, chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    async def aclose(self) -> None:
        self._chunks.clear()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


async def read_all(reader: FrameReader) -> list[tuple[FrameType, int, bytes]]:
    frames = []
    while True:
        try:
            frames.append(await reader.read())
        except anyio.EndOfStream:
            return frames


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from(list(FrameType)),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=300),
    ),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_any_split_of_the_stream_gives_the_same_frames(frames, cuts) -> None:
    data = preamble(PURPOSE_FRAMES) + b"".join(encode_frame(*f) for f in frames)

    async def run() -> None:
        reader = FrameReader(ChunkSource(split(data, cuts)), max_frame=1000)
        assert await reader.read_preamble() == PURPOSE_FRAMES
        assert await read_all(reader) == frames

    anyio.run(run)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_garbage_only_ever_raises_frame_rejected(garbage, cuts) -> None:
    async def run() -> None:
        reader = FrameReader(ChunkSource(split(garbage, cuts)), max_frame=64)
        try:
            await reader.read_preamble()
            await read_all(reader)
        except FrameRejected as exc:
            assert exc.reason in {"bad-preamble", "bad-frame", "frame-too-large", "truncated-frame"}
        except anyio.EndOfStream:
            pass

    anyio.run(run)


def test_size_is_refused_from_the_header_alone() -> None:
    # Only the 9 header bytes exist; a reader that waited for the body would hang.
    header_only = encode_frame(FrameType.REQUEST, 9, b"x" * 5000)[:9]

    async def run() -> None:
        reader = FrameReader(ChunkSource([header_only]), max_frame=4096)
        with pytest.raises(FrameRejected) as info:
            await reader.read()
        assert (info.value.reason, info.value.kind, info.value.request_id) == (
            "frame-too-large",
            FrameType.REQUEST,
            9,
        )
        assert "5000 bytes exceeds the limit of 4096" in str(info.value)

    anyio.run(run)


@pytest.mark.anyio
async def test_a_cancelled_read_loses_no_bytes() -> None:
    frame = encode_frame(FrameType.REPLY, 3, b"payload" * 10)
    # Each chunk arrives 50 ms after the previous one is asked for.
    reader = FrameReader(ChunkSource([frame[:4], frame[4:20], frame[20:]], pause=0.05), 1000)
    timeouts = 0
    while True:
        with anyio.move_on_after(0.07) as scope:
            result = await reader.read()
        if not scope.cancelled_caught:
            break
        timeouts += 1
    assert timeouts >= 1
    assert result == (FrameType.REPLY, 3, b"payload" * 10)
