"""The envelope every frame carries, its codec and its protection.

Layout of a frame: magic b"HP", protocol version (1 byte), flags (1 byte),
then either the msgpack body, or with a cluster key a 12-byte nonce and the
body sealed with ChaCha20-Poly1305 (the 4 header bytes as associated data).

Body: [cluster, sender, channel, msg_id, kind, payload]. Decoding never
raises anything but `WireError`, whose `reason` is the name of the drop
counter the node increments.
"""

from __future__ import annotations

import enum
import hashlib
import os
from typing import Any

import attrs
import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC = b"HP"
VERSION = 1
FLAG_SEALED = 0x01
NONCE_SIZE = 12
HEADER_SIZE = 4


class Kind(enum.IntEnum):
    MESSAGE = 0  # a request or a one-way message
    REPLY = 1
    ERROR = 2  # the handler raised; payload is its description


class WireError(Exception):
    """A frame that cannot be accepted; `reason` names the drop counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@attrs.frozen
class Envelope:
    cluster: str
    sender: str
    channel: str
    msg_id: int
    kind: Kind
    payload: Any


def derive_key(secret: str) -> bytes:
    """A 32-byte AEAD key from the configured cluster key."""
    return hashlib.sha256(b"hedgeplug/v1 cluster key\0" + secret.encode()).digest()


class Codec:
    """Encodes and checks envelopes for one cluster (and key, if any)."""

    def __init__(self, cluster: str, key: str = "", max_frame: int = 1 << 20) -> None:
        self.cluster = cluster
        self.max_frame = max_frame
        self._aead = ChaCha20Poly1305(derive_key(key)) if key else None

    @property
    def sealed(self) -> bool:
        return self._aead is not None

    def encode(self, env: Envelope) -> bytes:
        body = msgpack.packb(
            [env.cluster, env.sender, env.channel, env.msg_id, int(env.kind), env.payload],
            use_bin_type=True,
        )
        if self._aead is None:
            frame = MAGIC + bytes((VERSION, 0)) + body
        else:
            header = MAGIC + bytes((VERSION, FLAG_SEALED))
            nonce = os.urandom(NONCE_SIZE)  # nonces must be unpredictable, not replayable from a seed
            frame = header + nonce + self._aead.encrypt(nonce, body, header)
        if len(frame) > self.max_frame:
            from .errors import FrameTooLarge

            raise FrameTooLarge(
                f"message of {len(frame)} bytes exceeds the frame limit of {self.max_frame} bytes"
            )
        return frame

    def decode(self, frame: bytes) -> Envelope:
        if len(frame) > self.max_frame:
            raise WireError("too-large", f"{len(frame)} bytes")
        if len(frame) < HEADER_SIZE or frame[:2] != MAGIC:
            raise WireError("not-hedgeplug")
        if frame[2] != VERSION:
            raise WireError("version", f"protocol version {frame[2]}")
        flags = frame[3]
        if self._aead is not None:
            if not flags & FLAG_SEALED:
                raise WireError("unsealed", "cluster key configured but frame is not sealed")
            if len(frame) < HEADER_SIZE + NONCE_SIZE + 16:
                raise WireError("auth", "sealed frame too short")
            nonce = frame[HEADER_SIZE:HEADER_SIZE + NONCE_SIZE]
            try:
                body = self._aead.decrypt(nonce, frame[HEADER_SIZE + NONCE_SIZE:], frame[:HEADER_SIZE])
            except InvalidTag:
                raise WireError("auth", "authentication failed (wrong key or tampered frame)") from None
        else:
            if flags & FLAG_SEALED:
                raise WireError("sealed", "frame is sealed but no cluster key is configured")
            body = frame[HEADER_SIZE:]
        try:
            fields = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:
            raise WireError("decode", type(exc).__name__) from None
        if not isinstance(fields, list) or len(fields) != 6:
            raise WireError("decode", "envelope is not a 6-item list")
        cluster, sender, channel, msg_id, kind, payload = fields
        if not (isinstance(cluster, str) and isinstance(sender, str) and isinstance(channel, str)):
            raise WireError("decode", "cluster, sender and channel must be strings")
        if not isinstance(msg_id, int) or not isinstance(kind, int) or kind not in (0, 1, 2):
            raise WireError("decode", "bad message id or kind")
        if cluster != self.cluster:
            raise WireError("wrong-cluster", f"cluster {cluster!r}")
        return Envelope(cluster, sender, channel, msg_id, Kind(kind), payload)
