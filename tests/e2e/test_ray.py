"""Trials on Ray Tune through the installed `kdedge` command, on the embedded Fashion-MNIST subset with tiny
budgets (marked slow; CI runs them once): a sweep of 4 points with one that fails, every Ray socket on
127.0.0.1, the same table as the local backend; and seeds as parallel runs."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
pytest.importorskip("ray.tune", reason="Ray Tune not installed (pip install 'kdedge[ray]')")

RECIPE = {
    "name": "tiny_ray", "seed": 0, "device": "cpu", "data": {"dataset": "fashion_mnist_small"},
    "teacher": {"model": {"name": "mlp", "widths": [64]},
                "train": {"epochs": 1, "batch_size": 64, "optimizer": {"lr": 0.05}, "augment": False}},
    "student": {"model": {"name": "mlp", "widths": [16]},
                "train": {"epochs": 1, "batch_size": 64, "optimizer": {"lr": 0.05}, "augment": False}},
    "distill": {"losses": [{"name": "hinton", "alpha": 0.5, "temperature": 4.0}]},
}
FIELD = "student.train.optimizer.lr"
VALUES = "0.05,0.1,0.2,10"  # lr 10 makes the student's loss diverge at step 20: that point fails


def _kdedge(*args: str, cwd: Path, watch: bool = False) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the command; with `watch`, also every address a process under it listens on while it runs."""
    exe = Path(sys.executable).with_name("kdedge")
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([str(exe), *args], cwd=cwd, stdout=stdout, stderr=stderr, text=True)
        seen: set[str] = set()
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline:
            if watch:
                seen |= _listening_addresses(proc.pid)
            time.sleep(0.3)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, out.read_text(), err.read_text()), seen


def _listening_addresses(root: int) -> set[str]:
    """The local addresses of the TCP sockets in LISTEN state held by `root` and its descendants, read from
    /proc (no psutil): /proc/net/tcp* maps socket inodes to addresses, /proc/<pid>/fd to their owners."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = set(), [root]
    while todo:
        pid = todo.pop()
        pids.add(pid)
        todo += children.get(pid, [])
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = fd.readlink().as_posix() if fd.is_symlink() else ""
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                found.add(_address(cols[1].split(":")[0], v6))
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _address(hex_ip: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_ip)
    if not v6:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc stores an IPv6 address as four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_ray.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(tmp_path / "runs")}, sort_keys=False))
    return path


def test_ray_sweep_of_four_trials_keeps_three_when_one_fails(tmp_path: Path):
    with socket.socket() as own:  # the watcher itself: it sees this process's listening socket, decoded
        own.bind(("127.0.0.1", 0))
        own.listen()
        assert "127.0.0.1" in _listening_addresses(os.getpid())
    recipe = _recipe(tmp_path)
    proc, listening = _kdedge("sweep", str(recipe), "--set", f"{FIELD}={VALUES}", "--backend", "ray",
                              "--cpus-per-trial", "1", cwd=tmp_path, watch=True)
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"kdedge: error: sweep of {FIELD}: 1 of 4 points failed (10: student: training diverged")
    assert "trials on Ray" in proc.stdout and proc.stdout.count("trial 10 failed") == 1
    assert "ray: a one-machine Ray on 127.0.0.1" in proc.stdout
    # Ray's servers were seen, each bound to the loopback address only
    assert listening, "no Ray process was seen listening"
    assert all(_loopback(address) for address in listening), listening

    run = tmp_path / "runs" / "tiny_ray"
    sweep_dir = run / "sweep" / FIELD
    report = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["value"] for p in report["points"]] == [0.05, 0.1, 0.2, 10]
    for point in report["points"][:3]:  # each finished point as its own run recorded it
        stages = json.loads((run / point["run"] / "manifest.json").read_text())["stages"]
        assert point["student"] == stages["student"]["test"] and point["baseline"] == stages["baseline"]["test"]
        assert stages["student"]["fingerprint"] and stages["teacher"]["imported_from"] == str(run)
    assert report["points"][3]["student"] is None and "diverged" in report["points"][3]["error"]
    ray_table = (sweep_dir / "sweep.md").read_text()
    assert (sweep_dir / "sweep.png").is_file()

    # the local backend reuses the three finished points and writes the same table
    proc, _ = _kdedge("sweep", str(recipe), "--set", f"{FIELD}={VALUES}", "--backend", "local", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.count("reusing the finished run") == 3
    assert (sweep_dir / "sweep.md").read_text() == ray_table


def test_ray_seeds_as_parallel_runs(tmp_path: Path):
    recipe = _recipe(tmp_path)
    proc, _ = _kdedge("distill", str(recipe), "--seeds", "0,1", "--backend", "ray", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "runs" / "tiny_ray_seeds" / "seeds.json").read_text())
    assert result["seeds"] == [0, 1] and not result["failed_seeds"]
    accuracies = []
    for seed in (0, 1):
        manifest = json.loads((tmp_path / "runs" / f"tiny_ray_seed{seed}" / "manifest.json").read_text())
        assert manifest["recipe"]["seed"] == seed
        accuracies.append(manifest["stages"]["student"]["test"]["accuracy"])
    kd = result["summary"]["stats"]["kd"]["accuracy"]
    assert kd["values"] == accuracies and kd["mean"] == pytest.approx(sum(accuracies) / 2)
    assert "KD student" in (tmp_path / "runs" / "tiny_ray_seeds" / "seeds.md").read_text()
