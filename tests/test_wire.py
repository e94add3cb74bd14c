"""The envelope codec: round trips, sealing, and drops by reason."""

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedgeplug.errors import FrameTooLarge
from hedgeplug.wire import Codec, Envelope, Kind, WireError


def env(payload=None, cluster="c"):
    return Envelope(cluster, "node-1", "heartbeat", 7, Kind.MESSAGE, payload)


@pytest.mark.parametrize("key", ["", "s3cret"])
def test_round_trip(key):
    codec = Codec("c", key)
    e = env({"a": [1, 2, b"x"], "b": None})
    assert codec.decode(codec.encode(e)) == e


def test_wrong_cluster_is_dropped():
    frame = Codec("other").encode(env(cluster="other"))
    with pytest.raises(WireError) as info:
        Codec("c").decode(frame)
    assert info.value.reason == "wrong-cluster"


def test_wrong_key_and_tampering_fail_authentication():
    frame = Codec("c", "k1").encode(env(1))
    with pytest.raises(WireError) as info:
        Codec("c", "k2").decode(frame)
    assert info.value.reason == "auth"
    tampered = bytearray(frame)
    tampered[-1] ^= 1
    with pytest.raises(WireError) as info:
        Codec("c", "k1").decode(bytes(tampered))
    assert info.value.reason == "auth"


def test_sealed_and_plain_do_not_mix():
    with pytest.raises(WireError) as info:
        Codec("c").decode(Codec("c", "k").encode(env()))
    assert info.value.reason == "sealed"
    with pytest.raises(WireError) as info:
        Codec("c", "k").decode(Codec("c").encode(env()))
    assert info.value.reason == "unsealed"


def test_sealed_frames_hide_the_payload():
    frame = Codec("c", "k").encode(env("very secret payload"))
    assert b"very secret payload" not in frame


def test_size_limit_on_both_sides():
    codec = Codec("c", max_frame=100)
    with pytest.raises(FrameTooLarge, match="100 bytes"):
        codec.encode(env("x" * 200))
    with pytest.raises(WireError) as info:
        codec.decode(b"HP\x01\x00" + b"x" * 200)
    assert info.value.reason == "too-large"


@pytest.mark.parametrize(
    "frame,reason",
    [
        (b"", "not-hedgeplug"),
        (b"GET / HTTP/1.1\r\n", "not-hedgeplug"),
        (b"HP\x09\x00", "version"),
        (b"HP\x01\x00\xc1", "decode"),
        (b"HP\x01\x00" + msgpack.packb([1, 2, 3]), "decode"),
        (b"HP\x01\x00" + msgpack.packb(["c", "n", "ch", 1, 9, None]), "decode"),
        (b"HP\x01\x00" + msgpack.packb(["c", 5, "ch", 1, 0, None]), "decode"),
    ],
)
def test_garbage_is_a_wire_error_with_a_reason(frame, reason):
    with pytest.raises(WireError) as info:
        Codec("c").decode(frame)
    assert info.value.reason == reason


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_wire_error(data):
    for codec in (Codec("c"), Codec("c", "k")):
        try:
            codec.decode(data)
        except WireError:
            pass
        # decode of arbitrary bytes may also succeed only if they form a valid frame
