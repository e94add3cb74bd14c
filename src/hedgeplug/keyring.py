"""Cluster keys: the keyring a node seals and opens frames with.

A configured key is any non-empty string (`hedgeplug keygen` prints a random
one). The AEAD key is SHA-256(b"hedgeplug/v1 cluster key\\0" + the key's
UTF-8 bytes), the derivation of wire version 1, kept so existing keys stay
valid. Its id, carried in clear in every sealed frame of wire version 2, is
the first 4 bytes of SHA-256(b"hedgeplug/v2 key id\\0" + AEAD key): it lets a
receiver pick the key without trying each, and reveals nothing about it.

A keyring holds up to MAX_KEYS keys: the first (primary) seals what the node
sends, all of them open what it receives. Rotation is three rolling steps:
add the new key as accepted everywhere, make it primary everywhere, remove
the old one; nodes in neighbouring steps always share a key the sender uses.

Keys come from `[node] key` (one key) or `[node] key_file` (one key a line,
the first primary, `#` comment lines and blank lines ignored), or their
environment forms HEDGEPLUG_NODE_KEY / HEDGEPLUG_NODE_KEY_FILE. A running
node follows its key file: a changed file is applied within about a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import anyio
import attrs
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .address import Address, AddressError
from .errors import ConfigError

KEY_ID_SIZE = 4
CLEAR_FINGERPRINT = "clear"  # the lease fingerprint of a node without a key
MAX_KEYS = 8  # bounds the trial decryption a wire-version-1 frame costs
KEY_FILE_POLL = 1.0  # seconds between looks at a followed key file
KEY_FILE_SETTLE = 0.2  # a changed file must read the same twice this far apart

log = logging.getLogger("hedgeplug.keyring")


def derive_key(secret: str) -> bytes:
    """The 32-byte ChaCha20-Poly1305 key for a configured key string."""
    return hashlib.sha256(b"hedgeplug/v1 cluster key\0" + secret.encode()).digest()


def key_id(aead_key: bytes) -> bytes:
    """The public 4-byte name of an AEAD key."""
    return hashlib.sha256(b"hedgeplug/v2 key id\0" + aead_key).digest()[:KEY_ID_SIZE]


def generate_key() -> str:
    """A new random key: 256 bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


@attrs.frozen
class ClusterKey:
    """One usable key: its id and the cipher built from it (never the text)."""

    id: bytes
    aead: ChaCha20Poly1305 = attrs.field(eq=False, repr=False)

    @classmethod
    def from_secret(cls, secret: str) -> ClusterKey:
        material = derive_key(secret)
        return cls(key_id(material), ChaCha20Poly1305(material))

    @property
    def hex(self) -> str:
        return self.id.hex()


class Keyring:
    """The keys a node accepts, primary (the one it sends with) first."""

    def __init__(self, secrets_: Iterable[str] = ()) -> None:
        unique: list[str] = []
        for secret in secrets_:
            if not isinstance(secret, str) or not secret:
                raise ConfigError("a cluster key must be a non-empty string")
            if secret not in unique:
                unique.append(secret)
        if len(unique) > MAX_KEYS:
            raise ConfigError(
                f"{len(unique)} cluster keys given; at most {MAX_KEYS} are accepted at once"
            )
        self.keys: tuple[ClusterKey, ...] = tuple(ClusterKey.from_secret(s) for s in unique)
        by_id: dict[bytes, list[ClusterKey]] = {}
        for key in self.keys:
            by_id.setdefault(key.id, []).append(key)
        self._by_id = {k: tuple(v) for k, v in by_id.items()}

    @property
    def primary(self) -> ClusterKey | None:
        return self.keys[0] if self.keys else None

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def candidates(self, wanted: bytes) -> tuple[ClusterKey, ...]:
        """The keys named `wanted` (one, unless two keys share an id by chance)."""
        return self._by_id.get(wanted, ())

    @property
    def ids(self) -> list[str]:
        return [k.hex for k in self.keys]

    @property
    def fingerprint(self) -> str:
        """What a lease taken by this node carries: the primary key's id, or
        "clear" without a key (a keyless node and a keyed one cannot talk)."""
        return self.keys[0].hex if self.keys else CLEAR_FINGERPRINT

    def verifies(self, fingerprint: str) -> bool:
        """Whether a lease stamped `fingerprint` was taken by a node this one
        can talk to; "" (a record without a fingerprint) verifies for all."""
        return fingerprint == "" or fingerprint == self.fingerprint or fingerprint in self.ids

    def describe(self) -> str:
        if not self.keys:
            return "no key (frames travel in clear)"
        rest = ", ".join(self.ids[1:])
        return f"primary key {self.ids[0]}" + (f", also accepts {rest}" if rest else "")


# ------------------------------------------------------------ where keys come from


def parse_key_lines(text: str, source: str) -> list[str]:
    """Keys from key-file text: one a line, surrounding blanks stripped,
    blank lines and lines starting with '#' skipped."""
    keys = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keys.append(stripped)
    if not keys:
        raise ConfigError(
            f"key file {source} holds no key (one key a line; `hedgeplug keygen` prints one)"
        )
    return keys


def read_key_file(path: str) -> list[str]:
    """The keys in `path`, primary first; ConfigError naming the file if unusable."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(64 * 1024)
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"key file {path} is a directory") from None
    except PermissionError:
        raise ConfigError(f"key file {path} is not readable (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"key file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"key file {path} is not UTF-8 text") from None
    return parse_key_lines(text, path)


def keyring_for(settings: Any) -> Keyring:
    """The keyring [node] settings name: key_file if set, else key, else none."""
    key_file = getattr(settings, "key_file", "")
    if key_file:
        keyring = Keyring(read_key_file(key_file))
        _warn_if_shared(key_file)
        return keyring
    key = getattr(settings, "key", "")
    return Keyring([key] if key else [])


def _warn_if_shared(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "key file %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777
        )


def validate_key_file(settings: Any, _attribute: Any, key_file: str) -> None:
    """attrs validator of [node] key_file: key and key_file are alternatives,
    and the file must hold usable keys."""
    if getattr(settings, "key", "") and key_file:
        raise ValueError(
            "'key_file' and 'key' are both set; keep one (the key file holds every accepted key)"
        )
    if key_file:
        try:
            keys = read_key_file(key_file)
            Keyring(keys)
        except ConfigError as exc:
            raise ValueError(f"'key_file': {exc}") from None


COMMAND_LINE_WARNING = (
    "warning: a key given on the command line is visible to every user of this machine"
    " (ps, /proc); prefer HEDGEPLUG_NODE_KEY_FILE=PATH, HEDGEPLUG_NODE_KEY, or key_file"
    " in the [node] section of a --config file"
)


# ------------------------------------------------------------ following a key file


class _HasKeyring(Protocol):
    keyring: Keyring


async def follow_key_file(
    codec: _HasKeyring,
    path: str,
    count: Callable[[str], None],
    interval: float | None = None,
) -> None:
    """Look at `path` every `interval` (default KEY_FILE_POLL) seconds. When its
    content changed and reads the same twice in a row (a file caught while
    being written is not applied) and names other keys than the codec holds,
    swap the codec's keyring and count "keyring.reloads". A file that became
    unusable keeps the old keys and counts "keyring.reload-errors" once."""
    interval = interval or KEY_FILE_POLL
    looked_at: bytes | None = b""  # never a real file's content: the first look compares keys
    while True:
        seen = await _read_bytes(path)
        if seen != looked_at:
            await anyio.sleep(KEY_FILE_SETTLE)
            if await _read_bytes(path) == seen:
                looked_at = seen
                _apply(codec, path, seen, count)
        await anyio.sleep(interval)


def _apply(codec: _HasKeyring, path: str, content: bytes | None, count: Callable[[str], None]) -> None:
    try:
        if content is None:
            raise ConfigError(f"key file {path} cannot be read")
        try:
            text = content.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"key file {path} is not UTF-8 text") from None
        keyring = Keyring(parse_key_lines(text, path))
    except ConfigError as exc:
        count("keyring.reload-errors")
        log.error("%s; keeping %s", exc, codec.keyring.describe())
        return
    if keyring.ids != codec.keyring.ids:
        codec.keyring = keyring
        count("keyring.reloads")
        log.info("key file %s applied: %s", path, keyring.describe())


async def _read_bytes(path: str) -> bytes | None:
    try:
        return await anyio.Path(path).read_bytes()
    except OSError:
        return None


# ------------------------------------------------------------ secure by default


def exposed_addresses(transport: Any, address: str) -> list[str]:
    """The host:port addresses among the transport's listen address and the
    advertised one that are reachable beyond this machine. A wildcard bind
    (0.0.0.0, ::) counts; names that are not host:port (mem://...) do not."""
    candidates: list[Address | str] = [address]
    listen = getattr(getattr(transport, "options", None), "bind", None)
    if isinstance(listen, Address | str):
        candidates.insert(0, listen)
    exposed = []
    for candidate in candidates:
        try:
            parsed = Address.parse(candidate) if isinstance(candidate, str) else candidate
        except AddressError:
            continue
        text = str(parsed)
        if (parsed.is_wildcard or not parsed.is_loopback) and text not in exposed:
            exposed.append(text)
    return exposed


def check_exposure(transport: Any, address: str, keyring: Keyring, insecure: bool) -> None:
    """Refuse a node without a key whose transport is reachable beyond loopback,
    unless [node] insecure = true (then only warn). A transport that
    authenticates every peer itself (tcp with mutual TLS) counts as a key."""
    if keyring or getattr(transport, "authenticates_peers", False):
        return
    exposed = exposed_addresses(transport, address)
    if not exposed:
        return
    where = " and ".join(exposed)
    if insecure:
        log.warning(
            "running without a cluster key on %s ([node] insecure = true): anyone who"
            " reaches it can join the cluster and read every message",
            where,
        )
        return
    raise ConfigError(
        f"refusing to start: the transport is reachable beyond this machine ({where}) and no"
        " cluster key is set, so anyone who reaches it could join the cluster and read every"
        " message. Set a key on every node: `hedgeplug keygen > /etc/hedgeplug/cluster.keys`,"
        " then [node] key_file = \"/etc/hedgeplug/cluster.keys\" (or the environment variable"
        " HEDGEPLUG_NODE_KEY_FILE, or HEDGEPLUG_NODE_KEY for a single key); or, with the tcp"
        " transport, mutual TLS ([transport] tls_cert, tls_key, tls_ca); or bind to"
        " 127.0.0.1; or, on a network you trust, set [node] insecure = true"
    )


def command_line_keys(overrides: Sequence[str]) -> bool:
    """Whether `--set` overrides carry a key (so the caller can warn)."""
    return any(o.partition("=")[0].strip() in ("node.key",) for o in overrides)


def start_keys(
    tg: Any, transport: Any, address: str, codec: _HasKeyring, settings: Any, count: Callable[[str], None]
) -> None:
    """What a node does about keys once its transport is bound: refuse to run
    exposed without a key, and follow [node] key_file if one is set."""
    check_exposure(transport, address, codec.keyring, bool(getattr(settings, "insecure", False)))
    key_file = getattr(settings, "key_file", "")
    if key_file:
        tg.start_soon(follow_key_file, codec, key_file, count)
