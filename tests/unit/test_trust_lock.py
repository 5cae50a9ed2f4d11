"""Issue 13 item 4: one writer per run, tried with real processes. A second command on a run that another
holds waits briefly, then fails with one line naming the holder's pid and command; a killed holder blocks
nothing; the issue's repro (run A distilling, run B --force with another student) no longer mixes them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdedge.lock import WAIT_S

from tests.conftest import TINY_RECIPE, deep_update

EXE = Path(sys.executable).with_name("kdedge")

HOLDER = """
import sys, time
from kdedge.lock import run_lock
with run_lock(sys.argv[1], create=True):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold(run: Path) -> subprocess.Popen:
    """Another process holding the run's lock (as a running kdedge command does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kdedge(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), *map(str, args), "--threads", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _recipe(tmp: Path, name: str, overrides: dict) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"output_dir": str(tmp / "runs"), **overrides})))
    return path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdedge: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from kdedge.cli import app

    root = tmp_path_factory.mktemp("locked")
    result = CliRunner().invoke(app, ["train", str(_recipe(root, "r", {}))])
    assert result.exit_code == 0, result.output
    return root / "runs" / "tiny"


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run at tmp_path/runs/tiny, where _recipe(tmp_path, ...) writes."""
    shutil.copytree(trained, tmp_path / "runs" / "tiny")
    return tmp_path / "runs" / "tiny"


def test_second_writer_fails_with_holder_pid_and_a_killed_holder_blocks_nothing(tmp_path: Path):
    recipe = _recipe(tmp_path, "r", {})
    run = tmp_path / "runs" / "tiny"
    holder = _hold(run)
    try:
        t0 = time.monotonic()
        second = _kdedge("train", recipe)
        out, err = second.communicate(timeout=120)
        waited = time.monotonic() - t0
        assert second.returncode == 2, err
        line = _one_line(err)
        assert f"pid {holder.pid}" in line and "run_lock" in line and str(run) in line
        assert "--force" not in line
        assert waited >= WAIT_S  # it waited for the holder before giving up
        assert sorted(os.listdir(run)) == []  # and wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL: the holder had no chance to clean up; the kernel released its lock
    done = _kdedge("train", recipe)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert (run / "teacher" / "model.pt").is_file()


def test_unfinished_stage_of_a_live_command_is_not_offered_to_force(run: Path, tmp_path: Path):
    """An unfinished teacher (checkpoint, no model) whose command still runs: the second command must
    fail on the lock, not say "--force to start the run afresh" over the live work."""
    (run / "teacher" / "model.pt").unlink()
    data = json.loads((run / "manifest.json").read_text())
    data["stages"]["teacher"] = {"status": "running"}
    (run / "manifest.json").write_text(json.dumps(data))
    holder = _hold(run)
    try:
        proc = _kdedge("train", _recipe(tmp_path, "r", {}))
        _, err = proc.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2
    line = _one_line(err)
    assert "another kdedge command is writing this run" in line and "--force" not in line


def test_issue_repro_force_run_does_not_mix_with_a_running_one(tmp_path: Path):
    """Run A (student cnn [8,16]) is training; run B with --force and student cnn [12,24] starts on the
    same run. Before: both exited 0 and B reused A's student under B's recipe."""
    slow_teacher = {"teacher": {"model": {"name": "mlp", "widths": [32]},
                                "train": {"epochs": 400, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05},
                                          "schedule": {"name": "constant"}, "augment": False}}}

    def student(channels):
        return {"student": {"model": {"name": "cnn", "channels": channels},
                            "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05},
                                      "augment": False}},
                "distill": {"losses": [{"name": "hinton", "weight": 1.0}], "baseline": False}}

    a = _recipe(tmp_path, "a", {**slow_teacher, **student([8, 16])})
    b = _recipe(tmp_path, "b", {**slow_teacher, **student([12, 24])})
    run = tmp_path / "runs" / "tiny"
    proc_a = _kdedge("distill", a)
    try:
        deadline = time.monotonic() + 120
        while not (run / "teacher" / "checkpoint.pt").exists():  # A is training
            assert proc_a.poll() is None, proc_a.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc_b = _kdedge("distill", b, "--force")
        _, err_b = proc_b.communicate(timeout=120)
        assert proc_a.poll() is None, "A finished before B gave up: make A's teacher slower"
        assert proc_b.returncode == 2, err_b
        line = _one_line(err_b)
        assert f"pid {proc_a.pid}" in line and "distill" in line
    finally:
        proc_a.kill()
        proc_a.communicate(timeout=60)
    # B changed nothing: the run is A's (A's recipe; B did not clear it)
    data = json.loads((run / "manifest.json").read_text())
    assert data["recipe"]["student"]["model"]["channels"] == [8, 16]
    assert (run / "teacher" / "checkpoint.pt").is_file()


def test_every_writing_command_takes_the_lock(run: Path):
    """Only the lock is tested: the run needs no exports because the lock comes first."""
    holder = _hold(run)
    try:
        procs = {command: _kdedge(command, run) for command in ("export", "bench", "calibrate")}
        errors = {command: proc.communicate(timeout=120)[1] for command, proc in procs.items()}
    finally:
        holder.kill()
        holder.wait()
    for command, proc in procs.items():
        assert proc.returncode == 2 and f"pid {holder.pid}" in _one_line(errors[command]), command
