"""Hostile bytes against every frame decoder: the envelope codec, the tcp
frame reader and the udp datagram header.

Each property feeds arbitrary or mutated input and asserts the decoder
either returns a well-formed value or raises its one documented drop error
(WireError, FrameRejected / EndOfStream, None for a datagram) - never any
other exception, and never holds more bytes than the frame limit allows.
The internal decoders are imported in one place below so a module move
changes one block.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import pytest
from anyio.abc import ByteReceiveStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# -- the decoders under test (one place to update when modules move) ----------
from hedgeplug.transport._framing import (
    HEADER,
    HEADER_SIZE,
    PREAMBLE_SIZE,
    PURPOSE_FRAMES,
    FrameReader,
    FrameRejected,
    FrameType,
    encode_frame,
    preamble,
)
from hedgeplug.transport.udp import HEADER_SIZE as DATAGRAM_HEADER_SIZE
from hedgeplug.transport.udp import decode_datagram, encode_datagram
from hedgeplug.wire import MAGIC, VERSION, Codec, Envelope, Kind, WireError

# ------------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_FRAME = 4096
CHUNK = 1 << 16  # the most one receive() may return (the reader asks for 64 KiB)

# Values msgpack can carry, nested a little: what a hostile peer can put in a body.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(scalars, inner, max_size=6),
    max_leaves=20,
)


def packable(value: Any) -> bytes | None:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None  # e.g. an unhashable key strategy hypothesis combined


# ------------------------------------------------------------ the envelope codec

# Both wire versions: a current codec reads 1 and 2, one pinned to 1 (as the
# previous release is) reads only 1; every one writes each version it speaks.
CODECS = {
    "plain": Codec("c", max_frame=MAX_FRAME),
    "sealed": Codec("c", "k3y", max_frame=MAX_FRAME),
    "plain-pinned-v1": Codec("c", max_frame=MAX_FRAME, send_version=1),
    "sealed-pinned-v1": Codec("c", "k3y", max_frame=MAX_FRAME, send_version=1),
}
WIRE_VERSIONS = st.sampled_from((1, 2))


def decode_or_drop(codec: Codec, frame: bytes) -> Envelope | None:
    try:
        env = codec.decode(frame)
    except WireError as exc:
        assert exc.reason  # names a drop counter
        return None
    assert isinstance(env, Envelope) and isinstance(env.kind, Kind)
    assert isinstance(env.cluster, str) and isinstance(env.sender, str)
    assert isinstance(env.channel, str) and isinstance(env.msg_id, int)
    return env


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(frame=st.binary(max_size=200))
def test_codec_arbitrary_bytes_only_drop(name: str, frame: bytes) -> None:
    decode_or_drop(CODECS[name], frame)


@pytest.mark.parametrize("name", ["plain", "plain-pinned-v1"])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.lists(values, max_size=8) | values,
    flags=st.sampled_from([0, 1, 2, 255]),
    version=st.integers(0, 255) | WIRE_VERSIONS,
)
def test_codec_arbitrary_bodies_behind_a_valid_header_only_drop(
    name: str, fields: Any, flags: int, version: int
) -> None:
    body = packable(fields)
    if body is None:
        return
    frame = MAGIC + bytes((version, flags)) + body
    env = decode_or_drop(CODECS[name], frame)
    if env is not None:
        assert flags & 1 == 0 and env.cluster == "c" and env.version == version
        assert version in CODECS[name].reads


@FUZZ
@given(
    sender=st.text(max_size=30),
    channel=st.text(max_size=30),
    msg_id=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    kind=st.integers(min_value=-3, max_value=5),
    payload=values,
)
def test_codec_envelope_shaped_bodies(sender: str, channel: str, msg_id: int, kind: int, payload: Any) -> None:
    body = packable(["c", sender, channel, msg_id, kind, payload])
    if body is None:
        return
    env = decode_or_drop(CODECS["plain"], MAGIC + bytes((VERSION, 0)) + body)
    assert (env is not None) == (0 <= kind <= 2 and len(body) + 4 <= MAX_FRAME)


@pytest.mark.parametrize("name", ["plain", "sealed"])  # each writes both versions
@FUZZ
@given(
    payload=values,
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
    version=WIRE_VERSIONS,
)
def test_codec_mutated_frames_only_drop(name: str, payload: Any, flips: list[tuple[int, int]], version: int) -> None:
    codec = CODECS[name]
    if packable(payload) is None or version not in codec.reads:
        return
    try:
        frame = bytearray(codec.encode(Envelope("c", "s", "ch", 1, Kind.MESSAGE, payload), version))
    except Exception:
        return  # over the frame limit
    original = bytes(frame)
    for position, xor in flips:
        frame[position % len(frame)] ^= xor
    env = decode_or_drop(codec, bytes(frame))
    if name.startswith("sealed") and bytes(frame) != original:
        # Any flipped bit must fail authentication (or the header checks).
        assert env is None


@pytest.mark.parametrize("name", ["plain", "sealed"])
@FUZZ
@given(payload=values, version=WIRE_VERSIONS)
def test_codec_round_trip(name: str, payload: Any, version: int) -> None:
    codec = CODECS[name]
    if packable(payload) is None or version not in codec.reads:
        return
    env = Envelope("c", "s", "ch", 3, Kind.REPLY, payload)
    try:
        frame = codec.encode(env, version)
    except Exception:
        return
    decoded = codec.decode(frame)
    assert decoded.kind is Kind.REPLY and decoded.msg_id == 3 and decoded.version == version
    # msgpack turns tuples into lists and NaN != NaN; compare through msgpack.
    assert msgpack.packb(decoded.payload) == msgpack.packb(payload)


def test_codec_deep_nesting_is_a_drop() -> None:
    # A body of 100k nested one-item lists: msgpack's depth limit, not a RecursionError.
    body = b"\x96" + b"\xa1c" * 3 + b"\x01\x00" + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(WireError):
        Codec("c", max_frame=1 << 20).decode(MAGIC + bytes((VERSION, 0)) + body)


def test_codec_huge_declared_lengths_are_a_drop() -> None:
    # array32 / map32 / str32 / bin32 headers claiming 4 G items in a 10-byte body.
    for head in (b"\xdd", b"\xdf", b"\xdb", b"\xc6"):
        with pytest.raises(WireError):
            Codec("c").decode(MAGIC + bytes((VERSION, 0)) + head + b"\xff\xff\xff\xff" + b"x")


# ------------------------------------------------------------ the tcp frame reader


class ChunkSource(ByteReceiveStream):
    """Fake socket (named as one): hands out the given chunks, then EndOfStream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)
        self.handed = 0

    async def receive(self, max_bytes: int = CHUNK) -> bytes:
        if not self._chunks:
            raise anyio.EndOfStream
        chunk = self._chunks.pop(0)
        if len(chunk) > max_bytes:
            self._chunks.insert(0, chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.handed += len(chunk)
        return chunk

    async def aclose(self) -> None:
        self._chunks.clear()


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


async def read_everything(chunks: list[bytes], with_preamble: bool) -> tuple[list[Any], str, int]:
    """Frames read, how reading ended, and the most bytes the reader buffered."""
    reader = FrameReader(ChunkSource(chunks), MAX_FRAME)
    frames: list[Any] = []
    most = 0
    try:
        if with_preamble:
            await reader.read_preamble()
        while True:
            frames.append(await reader.read())
            most = max(most, reader.buffered)
    except FrameRejected as exc:
        assert exc.reason in ("bad-preamble", "bad-frame", "frame-too-large", "truncated-frame")
        return frames, exc.reason, max(most, reader.buffered)
    except anyio.EndOfStream:
        return frames, "end", max(most, reader.buffered)


@FUZZ
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=6), pre=st.booleans())
def test_frame_reader_garbage_only_rejects(data: bytes, cuts: list[int], pre: bool) -> None:
    frames, _, most = anyio.run(read_everything, chunks_of(data, cuts), pre, backend="trio")
    for kind, request_id, body in frames:
        assert isinstance(kind, FrameType) and 0 <= request_id <= 0xFFFFFFFF
        assert len(body) <= MAX_FRAME
    assert most <= HEADER_SIZE + MAX_FRAME + CHUNK


@FUZZ
@given(
    length=st.integers(MAX_FRAME + 1, 0xFFFFFFFF),
    kind=st.sampled_from([int(t) for t in FrameType]),
    request_id=st.integers(0, 0xFFFFFFFF),
)
def test_frame_reader_oversized_prefix_rejected_before_the_body(length: int, kind: int, request_id: int) -> None:
    # Only the 9-byte header arrives: the reader must refuse at once, not wait for 4 GiB.
    header = preamble(PURPOSE_FRAMES) + HEADER.pack(length, kind, request_id)
    source = ChunkSource([header, b"x" * 10])

    async def run() -> FrameRejected:
        reader = FrameReader(source, MAX_FRAME)
        await reader.read_preamble()
        with pytest.raises(FrameRejected) as info:
            await reader.read()
        return info.value

    rejected = anyio.run(run, backend="trio")
    assert rejected.reason == "frame-too-large"
    assert (rejected.kind, rejected.request_id) == (kind, request_id)  # a request can be answered
    assert source.handed == PREAMBLE_SIZE + HEADER_SIZE  # no body byte was read


@FUZZ
@given(
    frames=st.lists(
        st.tuples(st.sampled_from(list(FrameType)), st.integers(0, 0xFFFFFFFF), st.binary(max_size=MAX_FRAME // 8)),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
    tail=st.binary(max_size=20),
)
def test_frame_reader_good_frames_then_garbage(frames: list[Any], cuts: list[int], tail: bytes) -> None:
    stream = preamble(PURPOSE_FRAMES) + b"".join(encode_frame(k, i, b) for k, i, b in frames) + tail
    got, how, _ = anyio.run(read_everything, chunks_of(stream, cuts), True, backend="trio")
    assert got[: len(frames)] == frames  # everything before the garbage arrives intact
    if not tail:
        assert got == frames and how == "end"


# ------------------------------------------------------------ udp datagrams


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=100))
def test_datagram_decoder_returns_ours_or_none(data: bytes) -> None:
    decoded = decode_datagram(data)
    if decoded is not None:
        kind, request_id, body = decoded
        assert data[:2] == b"HU" and 1 <= kind <= 5 and 0 <= request_id <= 0xFFFFFFFF
        assert body == data[DATAGRAM_HEADER_SIZE:]


@settings(max_examples=200, deadline=None)
@given(kind=st.integers(1, 5), request_id=st.integers(0, 0xFFFFFFFF), body=st.binary(max_size=100))
def test_datagram_round_trip(kind: int, request_id: int, body: bytes) -> None:
    assert decode_datagram(encode_datagram(kind, request_id, body)) == (kind, request_id, body)
