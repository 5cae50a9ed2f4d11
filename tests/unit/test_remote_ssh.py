"""The SSH transport end to end, against a real OpenSSH server started for these tests on 127.0.0.1
(the `sshd` fixture of tests/conftest.py: fresh host and client keys, config and known_hosts in a temp
directory, nothing in ~/.ssh or /etc/ssh read or written; skips where /usr/sbin/sshd is missing).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tarfile
import time
from pathlib import Path

import pytest

from kdedge.errors import KdedgeError
from kdedge.remote import ssh
from kdedge.remote.ssh import check_reachable, copy_from, copy_to, run, ssh_argv
from kdedge.remote.target import SshTarget
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def test_run_returns_stdout_and_exit_code(sshd):
    tricky = ["it's", "two words", "$HOME", "a;b", "*", "", "back\\slash", '"q"']
    proc = run(sshd, [sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))", *tricky], timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.strip() == repr(tricky)  # shlex.join: the remote argv arrives exactly, nothing expanded


def test_failing_remote_command_gives_its_exit_code(sshd):
    proc = run(sshd, ["sh", "-c", "echo oops >&2; exit 3"], timeout=60)
    assert (proc.returncode, proc.stderr.strip()) == (3, "oops")
    assert run(sshd, ["false"], timeout=60).returncode == 1
    assert run(sshd, ["sh", "-c", "exit 255"], timeout=60).returncode == 255  # the command's 255, not ssh's


def test_remote_command_timeout(sshd):
    t0 = time.monotonic()
    with pytest.raises(KdedgeError, match=r"sleep 10 on .* did not finish within 2s"):
        run(sshd, ["sleep", "10"], timeout=2)
    assert time.monotonic() - t0 < 4


def test_copy_there_and_back(sshd, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    payload = os.urandom(3 << 20)
    (src / "model.int8-trt.onnx").write_bytes(payload)
    (src / "sub" / "notes with space.txt").write_text("hello\n")
    (tmp_path / "-dash.json").write_text("{}")
    remote_dir = str(tmp_path / "remote side" / "bench")  # the "device" is this machine
    remote = copy_to(sshd, [src / "model.int8-trt.onnx", src / "sub", tmp_path / "-dash.json"], remote_dir,
                     timeout=60)
    assert remote == [f"{remote_dir}/model.int8-trt.onnx", f"{remote_dir}/sub", f"{remote_dir}/-dash.json"]
    assert Path(remote_dir, "sub", "notes with space.txt").read_text() == "hello\n"
    back = copy_from(sshd, remote, tmp_path / "back", timeout=60)
    assert back == [tmp_path / "back" / n for n in ("model.int8-trt.onnx", "sub", "-dash.json")]
    assert hashlib.sha256(back[0].read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert (back[1] / "notes with space.txt").read_text() == "hello\n" and back[2].read_text() == "{}"


def test_copy_errors(sshd, tmp_path):
    with pytest.raises(KdedgeError, match="does not exist"):
        copy_to(sshd, [tmp_path / "missing.onnx"], str(tmp_path / "r"), timeout=30)
    (tmp_path / "f").write_text("x")
    (tmp_path / "not_a_dir").write_text("")
    with pytest.raises(KdedgeError, match=r"copy to .*not_a_dir/inner failed: .*"):
        copy_to(sshd, [tmp_path / "f"], str(tmp_path / "not_a_dir" / "inner"), timeout=30)
    with pytest.raises(KdedgeError, match=r"copy from .* failed: .*No such file"):
        copy_from(sshd, [str(tmp_path / "nothing_here")], tmp_path / "back", timeout=30)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("y")
    with pytest.raises(KdedgeError, match="two paths are both named 'f'"):
        copy_to(sshd, [tmp_path / "f", tmp_path / "a" / "f"], str(tmp_path / "r"), timeout=30)


def test_copy_sends_a_symlinked_file_as_a_file(sshd, tmp_path):
    (tmp_path / "real.engine").write_bytes(b"engine bytes")
    (tmp_path / "model.engine").symlink_to(tmp_path / "real.engine")
    [remote] = copy_to(sshd, [tmp_path / "model.engine"], str(tmp_path / "remote"), timeout=30)
    assert remote == str(tmp_path / "remote" / "model.engine")
    assert not Path(remote).is_symlink() and Path(remote).read_bytes() == b"engine bytes"


def test_kdedge_runs_remotely(sshd):
    kdedge = REPO / ".venv" / "bin" / "kdedge"
    if not kdedge.exists():
        pytest.skip(f"{kdedge} not installed (make install-dev)")
    proc = run(sshd, [str(kdedge), "list", "formats"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "onnx-int8" in proc.stdout and "onnx-int8-trt" in proc.stdout
    bad = run(sshd, [str(kdedge), "list", "nonsense"], timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("kdedge: error: list: unknown kind")


def test_closed_port_fails_within_the_timeout(tmp_path):
    target = SshTarget.parse(f"nobody@127.0.0.1:{free_port()}", extra_options=_isolated(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(KdedgeError) as info:
        check_reachable(target, timeout=5)
    assert time.monotonic() - t0 < 5 + 2
    assert info.value.message.startswith(f"cannot reach {target} within 5s: ssh: connect to host 127.0.0.1 port")
    assert "Connection refused" in info.value.message


def test_silent_server_fails_within_the_timeout(tmp_path):
    """A port that accepts TCP but never speaks SSH (a hung device, a wrong service): no hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        target = SshTarget.parse(f"nobody@127.0.0.1:{listener.getsockname()[1]}", extra_options=_isolated(tmp_path))
        t0 = time.monotonic()
        # ssh's own reason ("Connection timed out during banner exchange"), or ours if ssh is slower
        with pytest.raises(KdedgeError, match=rf"cannot reach {target} within 2s: .*timed out"):
            check_reachable(target, timeout=2)
        assert time.monotonic() - t0 < 2 + 2


def test_unknown_host(tmp_path):
    target = SshTarget.parse("nobody@no-such-host.invalid", extra_options=_isolated(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(KdedgeError, match=r"cannot reach nobody@no-such-host\.invalid within 5s: "):
        check_reachable(target, timeout=5)
    assert time.monotonic() - t0 < 5 + 2
    with pytest.raises(KdedgeError, match=r"ssh to nobody@no-such-host\.invalid failed: "):
        run(target, ["true"], timeout=5)


def _isolated(tmp_path: Path) -> tuple[str, ...]:
    return ("-F", "/dev/null", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=no", "-o", "IdentitiesOnly=yes", "-i", str(tmp_path / "no_key"))


# ---------------------------------------------------------------------------------------------------
# without a server


@pytest.mark.parametrize("spec, user, host, port, text", [
    ("jetson@orin.local", "jetson", "orin.local", None, "jetson@orin.local"),
    ("jetson@192.168.55.1:2222", "jetson", "192.168.55.1", 2222, "jetson@192.168.55.1:2222"),
    ("orin", None, "orin", None, "orin"),
    ("nvidia@[fe80::1%eth0]:22", "nvidia", "fe80::1%eth0", 22, "nvidia@[fe80::1%eth0]:22"),
    ("nvidia@fe80::1", "nvidia", "fe80::1", None, "nvidia@[fe80::1]"),
])
def test_target_parse(spec, user, host, port, text):
    t = SshTarget.parse(spec)
    assert (t.user, t.host, t.port, str(t)) == (user, host, port, text)


@pytest.mark.parametrize("spec, match", [
    ("", "bad host"), ("user@", "bad host"), ("user@host:port", "not a number"), ("user@host:0", "not in 1..65535"),
    ("user@host:70000", "not in 1..65535"), ("user@-oProxyCommand=touch_x", "bad host"),
    ("-x@host", "bad user"), ("user@ho st", "bad host"), ("user@[::1", "IPv6"),
])
def test_target_parse_rejects(spec, match):
    with pytest.raises(KdedgeError, match=match):
        SshTarget.parse(spec)


def test_ssh_argv_never_prompts_and_quotes_the_remote_argv():
    t = SshTarget.parse("jetson@orin:2200", extra_options=["-i", "/k"])
    argv = ssh_argv(t, ["trtexec", "--onnx=/a b/m.onnx", "$(reboot)"], connect_timeout=7.2)
    assert argv[:5] == ["ssh", "-T", "-o", "BatchMode=yes", "-o"] and argv[5] == "ConnectTimeout=8"
    assert argv[-6:] == ["-p", "2200", "-i", "/k", "--", "jetson@orin", "trtexec '--onnx=/a b/m.onnx' '$(reboot)'"][-6:]
    assert argv[-1] == "trtexec '--onnx=/a b/m.onnx' '$(reboot)'"
    with pytest.raises(KdedgeError, match="non-empty list of strings"):
        ssh_argv(t, [], connect_timeout=1)


def test_missing_ssh_client(monkeypatch, tmp_path):
    monkeypatch.setattr(ssh, "SSH", str(tmp_path / "no-ssh-here"))
    with pytest.raises(KdedgeError, match="ssh command is not installed"):
        check_reachable(SshTarget.parse("a@b"), timeout=1)
    with pytest.raises(KdedgeError, match="ssh command is not installed"):
        run(SshTarget.parse("a@b"), ["true"], timeout=1)


def test_copy_from_refuses_links_leaving_the_destination(sshd, tmp_path):
    """What the device sends is unpacked as regular files and directories only: a link out of the target
    directory (a compromised or confused device) is refused instead of being created (every hostile
    member type: tests/unit/test_trust_remote.py)."""
    remote = tmp_path / "device" / "results"
    remote.mkdir(parents=True)
    (remote / "bench.json").write_text("{}")
    (remote / "escape").symlink_to("/etc/passwd")
    with pytest.raises(KdedgeError, match=r"copy from .*: refused the archive the device sent: member "
                                          r"'\./results/escape' is a symlink \(-> '/etc/passwd'\)"):
        copy_from(sshd, [str(remote)], tmp_path / "back", timeout=30)
    escape = tmp_path / "back" / "results" / "escape"
    assert not escape.exists() and not escape.is_symlink()


def test_unreadable_local_file_is_a_one_line_error(sshd, tmp_path, monkeypatch):
    (tmp_path / "secret.onnx").write_text("x")

    def unreadable(self, name, *args, **kwargs):  # as reading a file without permission would (root reads all)
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(tarfile.TarFile, "add", unreadable)
    with pytest.raises(KdedgeError, match=r"copy to .*: cannot read .*secret\.onnx: Permission denied"):
        copy_to(sshd, [tmp_path / "secret.onnx"], str(tmp_path / "r"), timeout=30)
