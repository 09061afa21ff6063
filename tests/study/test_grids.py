"""Named grids: what `make study` and `--grid full` run, codec entries that narrow their own rows, and flags
that override a grid (seen through `vistok study --list`, which runs nothing)."""

import pytest

from vistok.cli import STUDY_CODECS, main
from vistok.errors import UsageError
from vistok.study import StudyConfig, grid, named_grid
from vistok.study.grids import GRIDS


def _rows(cfg):
    return [(c["id"], c.get("unit"), o, p) for c, o, p in grid(cfg)]


def test_the_make_study_grid_crosses_every_tokenization_with_three_orders_and_one_masked_row():
    cfg = named_grid("tokenizations")
    rows = _rows(cfg)
    five = set(STUDY_CODECS) - {"avc"}  # avc is a choice, not in this 16x16 grid: one macroblock, no order to study
    assert {r[0] for r in rows} == five  # pixels, jpeg, wavelet, bsq, vq
    for codec in five:
        assert {o for c, u, o, p in rows if c == codec and u != 1 and not p} == {"raster", "random", "randsac:4"}
    assert [r for r in rows if r[3]] == [("bsq", None, "random", "masked:0.5")]  # one masked row
    assert [r for r in rows if r[1] == 1] == [("pixels", 1, "raster", "")]  # RandSAC's pixel raster
    assert len(rows) == 17 and cfg.seeds == 3 and cfg.psnr == 21.0
    assert all("orders" not in c and "parallel" not in c for c, _, _ in grid(cfg))  # row keys are no codec option


def test_the_full_grid_holds_the_make_study_rows_and_the_order_study():
    quick, full, orders = (set(_rows(named_grid(n))) for n in ("tokenizations", "full", "orders"))
    assert {(c, u, p) for c, u, o, p in quick} <= {(c, u, p) for c, u, o, p in full}
    assert {(o, p) for c, u, o, p in orders} <= {(o, p) for c, u, o, p in full if c == "bsq"}
    assert named_grid("full").seeds > named_grid("tokenizations").seeds
    assert named_grid("orders") == StudyConfig()  # the study's defaults
    assert set(GRIDS) == {"orders", "tokenizations", "full"}


def test_a_codec_entry_narrows_its_own_rows_and_its_modes_are_checked():
    cfg = StudyConfig(codecs=[{"id": "jpeg", "quality": 50, "layout": "dense", "orders": ["raster"]},
                              {"id": "pixels", "unit": 4, "bits": 8, "parallel": ["", "masked:0.25"]}],
                      orders=["raster", "random"], parallel=[""])
    assert _rows(cfg) == [("jpeg", None, "raster", ""), ("pixels", 4, "raster", ""), ("pixels", 4, "random", ""),
                          ("pixels", 4, "random", "masked:0.25")]
    with pytest.raises(UsageError, match="masked"):
        grid(StudyConfig(codecs=[{"id": "bsq", "parallel": ["masked:2"]}]))
    with pytest.raises(UsageError, match="--grid takes orders, tokenizations, full"):
        named_grid("mine")


def test_flags_given_override_the_grid_and_the_rest_keep_its_values(capsys):
    def _list(*args):
        with pytest.raises(SystemExit) as exc:
            main(["study", *args, "--list"])
        got = capsys.readouterr()
        return exc.value.code, got.out, got.err

    rc, out, err = _list("--grid", "tokenizations", "--seeds", "2", "--steps", "50")
    assert rc == 0, err
    assert "seeds: 2" in out and "steps: 50" in out  # given
    assert "psnr: 21.0" in out and "size: 16" in out and "executor: ray" in out  # the grid's
    assert "17 rows x 2 seed(s) = 34 runs:" in out and "pixels-u1-b8  raster  none" in out
    rc, out, _ = _list("--grid", "tokenizations", "--codec", "jpeg", "--orders", "raster")
    assert "1 rows x 3 seed(s)" in out and "jpeg-dense-50  raster  none" in out  # a codec flag replaces its codecs
    rc, out, _ = _list()
    assert "10 rows x 1 seed(s)" in out and "bsq  randsac:11,5  segments" in out  # no --grid: the order study
    rc, out, err = _list("--grid", "mine")
    assert rc == 2 and err.strip() == "error: --grid takes orders, tokenizations, full, got 'mine'" and not out
