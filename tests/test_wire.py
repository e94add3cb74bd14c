"""The envelope codec: round trips, sealing, drops by reason, wire versions 1 and 2,
key ids and the replay window."""

import hashlib
import os

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from hedgeplug.errors import ConfigError, FrameTooLarge
from hedgeplug.keyring import Keyring, key_id
from hedgeplug.wire import REPLAY_WINDOW, SEND_VERSION_ENV, Codec, Envelope, Kind, WireError


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


# ------------------------------------------------------------ wire version 2 and the keyring

def v1_reference_seal(secret: str, e: Envelope) -> bytes:
    """A sealed frame exactly as release 0.1 (wire version 1) wrote it, written
    out from that format's description rather than with the codec under test."""
    material = hashlib.sha256(b"hedgeplug/v1 cluster key\0" + secret.encode()).digest()
    body = msgpack.packb(
        [e.cluster, e.sender, e.channel, e.msg_id, int(e.kind), e.payload], use_bin_type=True
    )
    header, nonce = b"HP\x01\x01", os.urandom(12)
    return header + nonce + ChaCha20Poly1305(material).encrypt(nonce, body, header)


def v1_reference_open(secret: str, frame: bytes) -> list:
    material = hashlib.sha256(b"hedgeplug/v1 cluster key\0" + secret.encode()).digest()
    assert frame[:4] == b"HP\x01\x01"
    body = ChaCha20Poly1305(material).decrypt(frame[4:16], frame[16:], frame[:4])
    return msgpack.unpackb(body, raw=False)


def test_version_2_sealed_frame_layout():
    codec = Codec("c", "k")
    frame = codec.encode(env("x"))
    material = hashlib.sha256(b"hedgeplug/v1 cluster key\0k").digest()
    assert frame[:4] == b"HP\x02\x01"
    assert frame[4:8] == key_id(material) == hashlib.sha256(b"hedgeplug/v2 key id\0" + material).digest()[:4]
    body = ChaCha20Poly1305(material).decrypt(frame[8:20], frame[20:], frame[:8])
    assert msgpack.unpackb(body, raw=False) == ["c", "node-1", "heartbeat", 7, 0, "x"]


def test_a_frame_whose_key_id_was_altered_fails_authentication():
    frame = bytearray(Codec("c", Keyring(["k1", "k2"])).encode(env()))
    frame[4:8] = Keyring(["k2"]).keys[0].id  # claim the other accepted key
    with pytest.raises(WireError) as info:
        Codec("c", Keyring(["k2", "k1"])).decode(bytes(frame))
    assert info.value.reason == "auth"


def test_frames_of_the_previous_release_are_still_read():
    e = env({"from": "0.1"})
    assert Codec("c", "k").decode(v1_reference_seal("k", e)) == e
    # ... by a keyring holding that key anywhere (tried in turn: v1 names no key)
    assert Codec("c", Keyring(["new", "k"])).decode(v1_reference_seal("k", e)) == e
    plain = b"HP\x01\x00" + msgpack.packb(["c", "node-1", "heartbeat", 7, 0, None])
    assert Codec("c").decode(plain) == env()


def test_a_node_pinned_to_version_1_writes_what_the_previous_release_reads(monkeypatch):
    e = env([1, 2])
    pinned = Codec("c", Keyring(["k", "other"]), send_version=1)
    assert v1_reference_open("k", pinned.encode(e)) == ["c", "node-1", "heartbeat", 7, 0, [1, 2]]
    assert Codec("c", send_version=1).encode(e)[:4] == b"HP\x01\x00"
    monkeypatch.setenv(SEND_VERSION_ENV, "1")
    assert Codec("c", "k").encode(e)[:4] == b"HP\x01\x01"
    monkeypatch.setenv(SEND_VERSION_ENV, "3")
    with pytest.raises(ConfigError, match="HEDGEPLUG_WIRE_VERSION='3': expected one of 1, 2"):
        Codec("c", "k")


def test_a_key_the_receiver_does_not_hold_names_its_id():
    frame = Codec("c", "new").encode(env())
    with pytest.raises(WireError, match=Keyring(["new"]).ids[0]) as info:
        Codec("c", "old").decode(frame)
    assert info.value.reason == "auth"


def test_rotation_steps_overlap_pairwise():
    """Neighbouring rotation steps always share the key the sender seals with."""
    steps = [["old"], ["old", "new"], ["new", "old"], ["new"]]
    for a, b in zip(steps, steps[1:], strict=False):
        for sender, receiver in ((a, b), (b, a)):
            e = env(sender)
            assert Codec("c", Keyring(receiver)).decode(Codec("c", Keyring(sender)).encode(e)) == e
    with pytest.raises(WireError):  # skipping a step does not
        Codec("c", Keyring(["new"])).decode(Codec("c", Keyring(["old", "new"])).encode(env()))


def test_a_replayed_frame_is_dropped_within_the_window():
    sender, receiver = Codec("c", "k"), Codec("c", "k")
    first = sender.encode(env(1))
    assert receiver.decode(first) == env(1)
    with pytest.raises(WireError) as info:
        receiver.decode(first)
    assert info.value.reason == "replay"
    for i in range(REPLAY_WINDOW):
        receiver.decode(sender.encode(env(i)))
    # Beyond the window the stated limit applies: an old frame is accepted again.
    assert receiver.decode(first) == env(1)


def test_forged_frames_do_not_push_real_ones_out_of_the_replay_window():
    sender, receiver = Codec("c", "k"), Codec("c", "k")
    first = sender.encode(env(1))
    receiver.decode(first)
    forged = Codec("c", "guess")
    for _ in range(REPLAY_WINDOW + 10):
        with pytest.raises(WireError):
            receiver.decode(forged.encode(env()))
    with pytest.raises(WireError, match="replay"):
        receiver.decode(first)
