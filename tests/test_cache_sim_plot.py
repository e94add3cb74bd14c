"""`hedgeplug sim cache-spiky --plot FILE`: the cache scenarios draw their own
figure (nodes with a cache, hit rate, owned keys per node over virtual time),
not the generic one, and drawing it does not change the run."""

from __future__ import annotations

import json
import struct

from hedgeplug.cli import main

SMALL = ["-p", "high=4", "-p", "duration=6", "-p", "every=2", "-p", "settle=4", "-p", "keys=20"]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_cache_scenario_plots_hit_rate_and_owned_keys(tmp_path, capsys) -> None:  # noqa: ANN001
    import matplotlib  # noqa: F401  (the test command installs the plot extra)

    png = tmp_path / "spiky.png"
    assert main(["sim", "cache-spiky", *SMALL, "--json", "--plot", str(png)]) == 0
    with_plot = json.loads(capsys.readouterr().out)
    # The cache figure is 1000x700 (three panels); the generic one 1000x800.
    assert png_size(png.read_bytes()) == (1000, 700)
    assert main(["sim", "cache-spiky", *SMALL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == with_plot["digest"]


def test_plot_given_twice_is_refused(tmp_path, capsys) -> None:  # noqa: ANN001
    code = main(["sim", "cache-spiky", *SMALL, "-p", f"plot={tmp_path / 'a.png'}",
                 "--plot", str(tmp_path / "b.png")])
    assert code != 0
    assert "give --plot FILE or -p plot=FILE, not both" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
