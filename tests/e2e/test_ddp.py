"""Data-parallel training end to end: `kdedge distill --nproc-per-node 2` (gloo, 2 CPU processes) on the
embedded Fashion-MNIST subset, against the one-process run of the same recipe and global batch; then
Ctrl-C in the middle and --resume, which must land on the uninterrupted run's weights bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow
EXE = Path(sys.executable).with_name("kdedge")
STAGES = ("teacher", "student", "baseline")


def _recipe(tmp_path: Path, name: str) -> Path:
    recipe = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    recipe.update(name=name, output_dir=str(tmp_path / "runs"), device="cpu")
    recipe["teacher"]["model"]["channels"] = [8, 16, 32]  # BatchNorm and dropout: both must stay in step
    recipe["teacher"]["train"]["epochs"] = 4
    recipe["student"] = {"model": {"name": "cnn", "channels": [8, 8, 16]},
                         "train": {**recipe["student"]["train"], "epochs": 2}}
    # a hint term: its adapter trains outside DDP, so its gradients are averaged by kdedge itself
    recipe["distill"]["losses"].append({"name": "hint", "weight": 0.5, "student": "stages.1", "teacher": "stages.1"})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _stages(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"]


def _weights(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return torch.load(run / stage / "model.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    _run("distill", str(_recipe(tmp, "one")), "--threads", "1", cwd=tmp)
    _run("distill", str(_recipe(tmp, "two")), "--nproc-per-node", "2", cwd=tmp)
    return tmp


def test_two_processes_end_identical_and_within_noise_of_one(runs: Path):
    one, two = _stages(runs / "runs" / "one"), _stages(runs / "runs" / "two")
    for stage in STAGES:
        parallel = two[stage]["data_parallel"]
        assert parallel["world_size"] == 2 and parallel["ranks_identical"]
        assert len(parallel["weights_sha256_per_rank"]) == 2
        assert len(set(parallel["weights_sha256_per_rank"])) == 1  # computed on each rank independently
        assert "data_parallel" not in one[stage]
        # the same global batch: accuracies differ by training noise only (per-rank BatchNorm statistics
        # and dropout masks); 1,000 test images give a binomial sd of ~1.4 pt per run
        a, b, n = one[stage]["test"]["accuracy"], two[stage]["test"]["accuracy"], 1000
        sd = ((a * (1 - a) + b * (1 - b)) / n) ** 0.5
        assert abs(a - b) <= 4 * sd + 0.02, (stage, a, b)


def test_ctrl_c_stops_every_rank_and_resume_matches_the_uninterrupted_run(runs: Path):
    recipe = _recipe(runs, "two")  # the same recipe as the fixture's 2-process run, in another directory
    text = yaml.safe_load(recipe.read_text())
    text.update(name="two_resumed")
    recipe.write_text(yaml.safe_dump(text, sort_keys=False))
    run = runs / "runs" / "two_resumed"
    checkpoint = run / "teacher" / "checkpoint.pt"
    proc = subprocess.Popen([str(EXE), "distill", str(recipe), "--nproc-per-node", "2"], cwd=runs,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists(), "the teacher never checkpointed an epoch"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    said = [line for line in err.splitlines() if line.startswith("kdedge: error:")]
    assert len(said) == 1 and "--resume" in said[0], err[-2000:]  # rank 0 alone says what was kept
    assert "Traceback" not in err
    assert _stages(run)["teacher"]["status"] == "interrupted"
    _run("distill", str(recipe), "--nproc-per-node", "2", "--resume", cwd=runs)
    for stage in STAGES:
        resumed, straight = _weights(run, stage), _weights(runs / "runs" / "two", stage)
        assert resumed.keys() == straight.keys()
        for key in straight:
            assert torch.equal(resumed[key], straight[key]), (stage, key)
