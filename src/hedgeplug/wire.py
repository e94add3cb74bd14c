"""The envelope every frame carries, its codec and its protection.

Wire version 2 (the newest):

    offset size  field
    0      2     magic b"HP"
    2      1     version: 2
    3      1     flags: bit 0 set = sealed
    unsealed: 4..  msgpack body
    sealed:   4  4  key id of the sealing key (see hedgeplug.keyring)
              8  12 random nonce
              20 ..  body sealed with ChaCha20-Poly1305: ciphertext + 16-byte tag,
                     the 8 bytes before the nonce as associated data

Wire version 1 (release 0.1.0; still read and written): the same without the
key id; a sealed frame is header (4) + nonce (12) + sealed body, the 4
header bytes as associated data, and is opened by trying each accepted key.

Compatibility rule: a node reads versions N-1 and N; which one it sends to
whom is decided by hedgeplug.versions (the lowest its view's members speak,
N-1 to strangers, a reply in its request's version) and passed to `encode`.
A codec pinned to N-1 (HEDGEPLUG_WIRE_VERSION=1 in the environment when it
is built, i.e. when the node starts, or `Codec(send_version=1)`) reads and
writes only N-1, as the previous release does: tests run mixed clusters so.

Body: [cluster, sender, channel, msg_id, kind, payload]. Decoding never
raises anything but `WireError`, whose `reason` is the name of the drop
counter the node increments. A sealed frame repeating the nonce of one of
the last REPLAY_WINDOW frames this codec opened is refused as a replay.
"""

from __future__ import annotations

import collections
import enum
import os
from typing import Any

import attrs
import msgpack
from cryptography.exceptions import InvalidTag

from .errors import ConfigError
from .keyring import KEY_ID_SIZE, ClusterKey, Keyring, derive_key
from .versions import WIRE_VERSION, WIRE_VERSION_ENV, WIRE_VERSIONS, pinned

__all__ = ["Codec", "Envelope", "Kind", "WireError", "derive_key"]

MAGIC = b"HP"
VERSION = WIRE_VERSION
VERSIONS = WIRE_VERSIONS
PREVIOUS_VERSION = VERSIONS[0]
FLAG_SEALED = 0x01
NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = 4
SEALED_HEADER = {1: HEADER_SIZE, 2: HEADER_SIZE + KEY_ID_SIZE}
SEND_VERSION_ENV = WIRE_VERSION_ENV
REPLAY_WINDOW = 4096  # nonces of recently opened frames remembered to refuse a replay


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
    # The wire version of the frame it was decoded from (a reply goes back in it).
    version: int = attrs.field(default=VERSION, eq=False)


class Codec:
    """Encodes and checks envelopes for one cluster and keyring (maybe empty).

    `key` is one key string or a Keyring; `keyring` may be swapped while the
    codec is in use (a followed key file does). `send_version`: the newest
    version it speaks (default: HEDGEPLUG_WIRE_VERSION, else VERSION); pinned
    to PREVIOUS_VERSION it reads and writes only that one."""

    def __init__(
        self,
        cluster: str,
        key: str | Keyring = "",
        max_frame: int = 1 << 20,
        *,
        send_version: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.max_frame = max_frame
        self.keyring = key if isinstance(key, Keyring) else Keyring([key] if key else [])
        self.send_version = send_version if send_version is not None else pinned(SEND_VERSION_ENV, VERSIONS)
        if self.send_version not in VERSIONS:
            raise ConfigError(
                f"wire version {self.send_version} cannot be sent; this release speaks "
                f"{PREVIOUS_VERSION} and {VERSION}"
            )
        self.reads = VERSIONS if self.send_version == VERSION else (self.send_version,)
        self._recent: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    @property
    def sealed(self) -> bool:
        return bool(self.keyring)

    def encode(self, env: Envelope, version: int | None = None) -> bytes:
        """`env` as a frame of wire `version` (default: the newest this codec speaks)."""
        if version is None:
            version = self.send_version
        elif version not in self.reads:
            raise ValueError(f"wire version {version} is not one this codec speaks {self.reads}")
        body = msgpack.packb(
            [env.cluster, env.sender, env.channel, env.msg_id, int(env.kind), env.payload],
            use_bin_type=True,
        )
        key = self.keyring.primary
        if key is None:
            frame = MAGIC + bytes((version, 0)) + body
        else:
            frame = self._seal(key, body, version)
        if len(frame) > self.max_frame:
            from .errors import FrameTooLarge

            raise FrameTooLarge(
                f"message of {len(frame)} bytes exceeds the frame limit of {self.max_frame} bytes"
            )
        return frame

    def _seal(self, key: ClusterKey, body: bytes, version: int) -> bytes:
        header = MAGIC + bytes((version, FLAG_SEALED))
        if version >= 2:
            header += key.id
        nonce = os.urandom(NONCE_SIZE)  # nonces must be unpredictable, not replayable from a seed
        return header + nonce + key.aead.encrypt(nonce, body, header)

    def decode(self, frame: bytes) -> Envelope:
        if len(frame) > self.max_frame:
            raise WireError("too-large", f"{len(frame)} bytes")
        if len(frame) < HEADER_SIZE or frame[:2] != MAGIC:
            raise WireError("not-hedgeplug")
        version = frame[2]
        if version not in self.reads:
            pin = "" if self.reads == VERSIONS else f" (this node is pinned to {self.send_version})"
            raise WireError("version", f"protocol version {version}{pin}")
        flags = frame[3]
        if self.keyring:
            if not flags & FLAG_SEALED:
                raise WireError("unsealed", "cluster key configured but frame is not sealed")
            body = self._open(version, frame)
        else:
            if flags & FLAG_SEALED:
                raise WireError("sealed", "frame is sealed but no cluster key is configured")
            body = frame[HEADER_SIZE:]
        return self._envelope(body, version)

    def _open(self, version: int, frame: bytes) -> bytes:
        header_size = SEALED_HEADER[version]
        if len(frame) < header_size + NONCE_SIZE + TAG_SIZE:
            raise WireError("auth", "sealed frame too short")
        header = frame[:header_size]
        nonce = frame[header_size:header_size + NONCE_SIZE]
        if version >= 2:
            keys = self.keyring.candidates(header[HEADER_SIZE:])
            if not keys:
                raise WireError(
                    "auth", f"sealed with key {header[HEADER_SIZE:].hex()}, which this node "
                    f"does not accept ({self.keyring.describe()})"
                )
        else:
            keys = self.keyring.keys  # version 1 names no key: try each, primary first
        for key in keys:
            try:
                body = key.aead.decrypt(nonce, frame[header_size + NONCE_SIZE:], header)
            except InvalidTag:
                continue
            self._remember(nonce)
            return body
        raise WireError("auth", "authentication failed (wrong key or tampered frame)")

    def _remember(self, nonce: bytes) -> None:
        # Only frames that authenticated get here, so an attacker cannot flush the window
        # with forgeries; a replay of one of the last REPLAY_WINDOW frames is refused.
        if nonce in self._recent:
            raise WireError("replay", "a frame with this nonce was already accepted")
        self._recent[nonce] = None
        if len(self._recent) > REPLAY_WINDOW:
            self._recent.popitem(last=False)

    def _envelope(self, body: bytes, version: int) -> Envelope:
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
        return Envelope(cluster, sender, channel, msg_id, Kind(kind), payload, version)

