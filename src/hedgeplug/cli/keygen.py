"""`hedgeplug keygen`: print a new random cluster key, or the ids of the keys in a file."""

from __future__ import annotations

import argparse

from ..keyring import ClusterKey, generate_key, read_key_file
from .common import eprint

HELP = "print a new random cluster key (or, with --ids FILE, the ids of a key file's keys)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ids",
        metavar="KEY_FILE",
        help="instead of a new key, print the id of each key in KEY_FILE, primary first"
        " (ids appear in node logs and in sealed frames; they reveal nothing of the key)",
    )


def run(args: argparse.Namespace) -> int:
    if args.ids:
        for position, secret in enumerate(read_key_file(args.ids)):
            role = "primary" if position == 0 else "accepted"
            print(f"{ClusterKey.from_secret(secret).hex}  {role}", flush=True)
        return 0
    key = generate_key()
    print(key, flush=True)
    eprint(
        f"hedgeplug: key id {ClusterKey.from_secret(key).hex}; keep the key secret"
        " (e.g. `(umask 077; hedgeplug keygen > cluster.keys)`)"
    )
    return 0
