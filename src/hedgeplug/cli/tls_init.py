"""`hedgeplug tls-init DIR NODE...`: a cluster CA and one certificate per node."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..errors import ConfigError
from .common import eprint

HELP = "write a cluster CA and a TLS certificate per node for the tcp transport"

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="where the PEM files go (created if absent)")
    parser.add_argument(
        "nodes",
        metavar="NODE[=NAME,...]",
        nargs="+",
        help="a node to issue a certificate for; after '=', the host names and IP addresses"
        " it is reached at (default: NODE, localhost, 127.0.0.1, ::1)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity of the node certificates")


def _parse(spec: str) -> tuple[str, list[str]]:
    node, _, names = spec.partition("=")
    if not _NODE_NAME.match(node):
        raise ConfigError(
            f"node name {node!r}: use letters, digits, '.', '_' and '-' (it names the files)"
        )
    return node, [n.strip() for n in names.split(",") if n.strip()]


def run(args: argparse.Namespace) -> int:
    from ..transport.tcp.certificates import CA_CERT, CA_KEY, create_ca, issue_node

    if args.days < 1:
        raise ConfigError("--days must be at least 1")
    nodes = [_parse(spec) for spec in args.nodes]
    folder = Path(args.folder).resolve()  # the printed paths work from anywhere
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a directory")
    if (folder / CA_KEY).exists():
        eprint(f"hedgeplug: using the existing CA in {folder}")
    else:
        create_ca(folder)
        eprint(f"hedgeplug: new CA: {folder / CA_CERT} (its key {folder / CA_KEY}: keep it offline)")
    for node, names in nodes:
        files = issue_node(folder, node, names or None, days=args.days)
        print(f"[transport]  # {node}")
        print(f'tls_cert = "{files.cert}"')
        print(f'tls_key = "{files.key}"')
        print(f'tls_ca = "{files.ca}"')
    return 0
