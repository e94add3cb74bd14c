"""atheris harness: the envelope codec (plain and sealed) on arbitrary frames.

    .venv/bin/python scripts/fuzz/fuzz_wire.py -max_total_time=300 /tmp/corpus-wire
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    import msgpack

    from hedgeplug.wire import MAGIC, VERSION, Codec, Envelope, WireError

from _harness import main

PLAIN = Codec("c", max_frame=1 << 16)
SEALED = Codec("c", "k3y", max_frame=1 << 16)
HEADER = MAGIC + bytes((VERSION, 0))


def one_input(data: bytes) -> None:
    # Half the inputs get a valid header so the fuzzer explores the body checks.
    frame = HEADER + data[1:] if data[:1] == b"\x00" else data
    for codec in (PLAIN, SEALED):
        try:
            env = codec.decode(frame)
        except WireError:
            continue
        assert isinstance(env, Envelope) and env.cluster == "c"
        msgpack.packb(env.payload, use_bin_type=True)  # whatever decoded must re-encode


if __name__ == "__main__":
    main(one_input)
