"""A study's runs as tasks: in-process, on a local Ray and on a two-node Ray cluster started on localhost,
with the same figures per seed; a rerun finishes what another executor left, and progress says how far."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.ray_cluster import two_node_cluster
from tests.train.test_probe import FASHION
from vistok.study import StudyConfig, study

ARGS = dict(sources=["fashion-mnist:test:60"], test_sources=[], codecs=[{"id": "pixels", "unit": 4, "bits": 4}],
            orders=["random"], parallel=[""], steps=2, batch_size=2, probe_train=24, probe_test=10, finetune=0,
            seeds=2, row_cpus=1, size=16)
CLI = ["--source", "fashion-mnist:test:60", "--test-source", "heldout", "--codec", "pixels", "--bits", "4",
       "--orders", "random", "--parallel", "none", "--steps", "2", "--batch-size", "2", "--probe-train", "24",
       "--probe-test", "10", "--finetune", "0", "--seeds", "2", "--row-cpus", "1", "--size", "16"]


def _figures(runs):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]


@FASHION
@pytest.mark.slow
def test_runs_give_the_same_figures_in_process_on_a_local_ray_and_on_a_cluster(tmp_path):
    here = study(StudyConfig(out=str(tmp_path / "here"), **ARGS))
    assert [(r["run"], r["seed"]) for r in here] == [("pixels-u4-b4_random_tokens_s0", 0),
                                                     ("pixels-u4-b4_random_tokens_s1", 1)]
    assert here[0]["bits_per_image"] != here[1]["bits_per_image"]  # the seed changes the run
    local_ray = study(StudyConfig(out=str(tmp_path / "ray"), executor="ray", **{**ARGS, "seeds": 1}))
    assert _figures(local_ray) == _figures(here[:1])
    with two_node_cluster(tmp_path) as (addr, env):
        cmd = [sys.executable, "-m", "vistok.cli", "study", *CLI, "--out", str(tmp_path / "cluster"),
               "--executor", "ray", "--address", addr]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[2/2 done, 0 running] done pixels-u4-b4_random_tokens_s" in res.stderr  # progress: done, running, ETA
    assert "ETA" in res.stderr and "± " in res.stdout  # the table: mean ± 95% CI over the seeds
    cluster = json.loads((tmp_path / "cluster" / "study.json").read_text())
    assert _figures(cluster["runs"]) == _figures(here)
    row = cluster["rows"][0]
    assert row["seeds"] == [0, 1] and row["figures"]["linear_top1"]["n"] == 2
    assert cluster["codecs"][0]["name"] == "pixels-u4-b4" and cluster["codecs"][0]["tokens_per_image"] == 256
    # a run the cluster finished is kept; one it did not is run here, to the same figures
    (tmp_path / "cluster" / "runs" / "pixels-u4-b4_random_tokens_s1" / "result.json").unlink()
    again = study(StudyConfig(out=str(tmp_path / "cluster"), **ARGS))
    assert _figures(again) == _figures(here)


def test_bad_study_options_fail_before_any_work(tmp_path):
    for bad, word in (({"seeds": 0}, "--seeds"), ({"executor": "slurm"}, "--executor"), ({"steps": 0}, "--steps")):
        with pytest.raises(Exception, match=word):
            study(replace(StudyConfig(out=str(tmp_path / "s"), **ARGS), **bad))
    assert not (tmp_path / "s" / "codecs.json").exists()
