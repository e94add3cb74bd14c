"""hedgeplug lock backend over etcd v3: ``[lock] use = "etcd"``.

This module is the plugin (entry point ``etcd`` in the ``hedgeplug`` group):
it holds the options of the [lock] section and registers the backend.
"""

from __future__ import annotations

import importlib
import os
import ssl
from typing import TYPE_CHECKING, Any

import attrs
from hedgeplug.plugin import ConfigError, Duration, NodeContext, hookimpl, positive

if TYPE_CHECKING:
    from .gateway import GatewayClient
    from .lock import EtcdLock, lease_seconds

__all__ = ["EtcdLock", "EtcdOptions", "GatewayClient", "lease_seconds", "make"]

# Every node loads this plugin to read its configuration: the client (httpx)
# and the backend are imported when a backend is made or a name first used.
_LAZY = {"GatewayClient": ".gateway", "EtcdLock": ".lock", "lease_seconds": ".lock"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hedgeplug_etcd' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def _check_endpoints(_inst: Any, _attr: attrs.Attribute, value: list[str]) -> None:
    if not value:
        raise ValueError("'endpoints' must list at least one URL like http://127.0.0.1:2379")
    for url in value:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"'endpoints' entry {url!r} must start with http:// or https://")


def _check_file(_inst: Any, attr: attrs.Attribute, value: str | None) -> None:
    if value is not None and not os.path.isfile(value):
        raise ValueError(f"'{attr.name}' {value!r} is not a readable file")


@attrs.frozen
class EtcdOptions:
    """[lock] keys for ``use = "etcd"``."""

    endpoints: list[str] = attrs.field(
        factory=lambda: ["http://127.0.0.1:2379"], validator=_check_endpoints,
        metadata={"help": "client URLs of the etcd members, tried in order"},
    )
    prefix: str = attrs.field(
        default="hedgeplug/", metadata={"help": "key prefix; the lock is <prefix><lock name>/lock"}
    )
    timeout: Duration = attrs.field(
        default=Duration(3.0), validator=positive,
        metadata={"help": "bound on one call to etcd"},
    )
    ca_file: str | None = attrs.field(
        default=None, validator=_check_file,
        metadata={"help": "PEM CA bundle that signed the etcd server certificates"},
    )
    cert_file: str | None = attrs.field(
        default=None, validator=_check_file, metadata={"help": "PEM client certificate (mTLS)"}
    )
    key_file: str | None = attrs.field(
        default=None, validator=_check_file, metadata={"help": "PEM key of cert_file"}
    )
    username: str | None = attrs.field(
        default=None, metadata={"help": "etcd user, when etcd auth is enabled"}
    )
    password: str | None = attrs.field(default=None, metadata={"help": "password of username"})

    def __attrs_post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("'cert_file' and 'key_file' must be given together")
        if self.password is not None and self.username is None:
            raise ValueError("'password' is set but 'username' is not")


def ssl_context(options: EtcdOptions) -> ssl.SSLContext | None:
    """The TLS settings for https endpoints (None: the system's defaults)."""
    if options.ca_file is None and options.cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=options.ca_file)
        if options.cert_file is not None:
            context.load_cert_chain(options.cert_file, options.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"[lock] etcd TLS files (ca_file={options.ca_file!r}, cert_file={options.cert_file!r},"
            f" key_file={options.key_file!r}) cannot be loaded: {exc}"
        ) from exc
    return context


def make(options: EtcdOptions, ctx: NodeContext) -> EtcdLock:
    from .gateway import GatewayClient
    from .lock import EtcdLock

    client = GatewayClient(
        options.endpoints, timeout=options.timeout, ssl_context=ssl_context(options),
        username=options.username, password=options.password,
    )
    return EtcdLock(client, ctx.lock_name, options.prefix)


@hookimpl
def hedgeplug_register_locks(register: Any) -> None:
    register("etcd", make, EtcdOptions)
