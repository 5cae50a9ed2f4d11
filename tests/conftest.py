"""Shared test helpers: tiny real-data recipes, a CLI runner that keeps stdout and stderr apart, and a
throwaway OpenSSH server on 127.0.0.1 (`sshd`) for the remote-bench transport."""

from __future__ import annotations

import copy
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]

# A tiny but real recipe: scikit-learn digits (1,797 real 8x8 images) and a small MLP.
TINY_RECIPE: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "teacher": {
        "model": {"name": "mlp", "widths": [32], "dropout": 0.1},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.1},
                  "schedule": {"name": "cosine", "warmup_epochs": 0.5}, "augment": False},
    },
}


def deep_update(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_recipe(tmp_path: Path):
    """Write TINY_RECIPE (with overrides) to tmp_path; its runs go to tmp_path/runs."""

    def make(overrides: dict | None = None, *, filename: str = "recipe.yaml", raw: str | None = None) -> Path:
        path = tmp_path / filename
        if raw is not None:
            path.write_text(raw)
            return path
        recipe = deep_update(TINY_RECIPE, {"output_dir": str(tmp_path / "runs"), **(overrides or {})})
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return make


@pytest.fixture
def cli():
    from kdedge.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The machine has 2 cores shared with other jobs; one intra-op thread keeps tests fast and
    # deterministic (resume tests compare bitwise and depend on a fixed thread count).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _image_cache_dir(tmp_path_factory):
    # image folders are decoded into $KDEDGE_CACHE_DIR: a throwaway one, never the user's ~/.cache
    saved = os.environ.get("KDEDGE_CACHE_DIR")
    os.environ["KDEDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("kdedge-cache"))
    yield
    if saved is None:
        os.environ.pop("KDEDGE_CACHE_DIR", None)
    else:
        os.environ["KDEDGE_CACHE_DIR"] = saved


def interrupt_kd_step_at(monkeypatch, n: int):
    """Make the n-th KD training step (counted over all KD students) raise KeyboardInterrupt, as a
    Ctrl-C would; returns the real step factory so a test can put it back before resuming."""
    import kdedge.stages.students as students_module

    real = students_module.make_distill_step
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        step, adapters = real(*args, **kwargs)

        def wrapped(x, y, idx):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return step(x, y, idx)
        wrapped.start_epoch = step.start_epoch  # the loop tells the step its epoch (loss warm-ups)
        return wrapped, adapters

    monkeypatch.setattr(students_module, "make_distill_step", interrupting)
    return real


# ---------------------------------------------------------------------------------------------------
# a real sshd on 127.0.0.1 (tests/unit/test_remote_ssh.py, tests/unit/test_remote_bench.py)

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kdedge-test", "-f", str(path)],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An SshTarget for a throwaway sshd on 127.0.0.1 (this user, a fresh key), stopped after the module.

    The sshd gets a fresh host key, config, authorized_keys and pid file in a temp directory; the client
    gets a fresh key and known_hosts file there too, through extra_options: "-F /dev/null" (no ssh
    config read) followed only by "-o KEY=VALUE" pairs, which tests can also pass as --ssh-option. Needs
    /usr/sbin/sshd: `make test` installs Debian's openssh-server when it runs as root; elsewhere skip."""
    from kdedge.errors import KdedgeError
    from kdedge.remote.ssh import check_reachable
    from kdedge.remote.target import SshTarget

    if not SSHD.exists():
        pytest.skip("no OpenSSH server: /usr/sbin/sshd is missing (apt-get install openssh-server; "
                    "`make test` does it when run as root)")
    if not (shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("no OpenSSH client (apt-get install openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    if os.geteuid() == 0:
        # sshd running as root needs its privilege-separation directory; the openssh-server package
        # creates it only when its service starts, which containers do not do
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    client = ("-F", "/dev/null", "-o", f"IdentityFile={d / 'client_key'}", "-o", "IdentitiesOnly=yes",
              "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "StrictHostKeyChecking=no",
              "-o", "LogLevel=ERROR")
    for _attempt in range(3):  # the free port may be taken between choosing it and sshd binding it
        port = free_port()
        (d / "sshd_config").write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "LogLevel VERBOSE", ""]))
        log = open(d / "sshd.log", "w")
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            break
        log.close()
    else:
        pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-2000:]}")
    target = SshTarget.parse(f"{getpass.getuser()}@127.0.0.1:{port}", extra_options=client)
    try:
        try:
            check_reachable(target, timeout=20)
        except KdedgeError as exc:
            sshd_log = (d / "sshd.log").read_text()
            if "account is locked" in sshd_log:
                pytest.skip(f"sshd refuses a locked account ({getpass.getuser()}): {exc.message}")
            pytest.fail(f"cannot log in to the test sshd: {exc.message}; sshd log: {sshd_log[-2000:]}")
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
