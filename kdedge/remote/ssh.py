"""The SSH transport of `kdedge bench --host`: commands and file copies over the system's OpenSSH client.

The user's own ssh setup does the work: ~/.ssh/config (host aliases, ProxyJump, keys), ssh-agent and
known_hosts. kdedge stores no host, key or password. Every ssh call has BatchMode=yes (fail instead
of prompting for a password or a host key) and a ConnectTimeout, so an unreachable device is an
error within the time asked for, never a hang.

No shell runs on this side: every command is an argument list. The remote side is different: sshd
hands the command to the remote user's login shell as ONE string, so the remote argv is quoted with
shlex.join (POSIX sh quoting, right for bash/dash/zsh, the shells a Jetson has). That is the only
place a command string is built; file transfers stream a tar archive through ssh's stdin/stdout.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
from os import PathLike
from pathlib import Path
from typing import IO, Sequence

from kdedge.errors import KdedgeError
from kdedge.remote.archive import RefusedMember, extract_stream
from kdedge.remote.target import SshTarget

SSH = "ssh"
# sshd on the device may keep a session open after a network drop; these make the client notice in ~45 s
KEEPALIVE = ("-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3")
# ssh's own failures exit 255; these are the messages it prints then (the command's exit codes pass through)
_SSH_FAILURE = re.compile(r"^(ssh: |kex_exchange_identification|Connection (closed|reset|timed out)|"
                          r"Host key verification failed|.*Permission denied \(|banner exchange|"
                          r"Could not resolve hostname)", re.I)


def ssh_argv(target: SshTarget, remote_argv: Sequence[str], *, connect_timeout: float) -> list[str]:
    """The local ssh argv that runs remote_argv on the target (exposed so callers can log it)."""
    if not remote_argv or not all(isinstance(a, str) for a in remote_argv):
        raise KdedgeError(f"remote command must be a non-empty list of strings, not {remote_argv!r}")
    argv = [SSH, "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, math.ceil(connect_timeout))}",
            *KEEPALIVE]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    argv += [*target.extra_options, "--", target.destination]
    # sshd gives the remote login shell one string; quoting each argument makes the shell split it back
    # into exactly remote_argv (spaces, quotes, $ and ; stay literal). The one string built in this module.
    argv.append(shlex.join(remote_argv))
    return argv


def run(target: SshTarget, argv: Sequence[str], *, timeout: float, input: str | None = None,
        connect_timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv on the target; its exit code, stdout and stderr come back as they are.

    A failure of ssh itself (unreachable, refused key) is a KdedgeError, as is a command still running
    after `timeout` seconds (the local ssh is killed; without a terminal the remote command may keep
    running until it next writes to the closed connection)."""
    local = ssh_argv(target, argv, connect_timeout=connect_timeout or min(timeout, 30))
    try:
        proc = subprocess.run(local, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)
    except FileNotFoundError:
        raise KdedgeError(_NO_SSH) from None
    except subprocess.TimeoutExpired:
        raise KdedgeError(f"{shlex.join(argv)[:120]} on {target} did not finish within {timeout:g}s") from None
    # what the device printed reaches this terminal: no escape sequences (see clean)
    proc.stdout, proc.stderr = clean(proc.stdout), clean(proc.stderr)
    if proc.returncode == 255 and (reason := _ssh_reason(proc.stderr)) is not None:
        raise KdedgeError(f"ssh to {target} failed: {reason}")
    return proc


def check_reachable(target: SshTarget, timeout: float) -> None:
    """Log in and run `true`, within `timeout` seconds in all; else KdedgeError with ssh's own reason."""
    # ssh's own connect timeout a second short of ours, so that it, not our kill, reports a silent host
    local = ssh_argv(target, ["true"], connect_timeout=max(1, math.ceil(timeout) - 1))
    try:
        proc = subprocess.run(local, stdin=subprocess.DEVNULL, capture_output=True, encoding="utf-8",
                              errors="replace", timeout=timeout)
    except FileNotFoundError:
        raise KdedgeError(_NO_SSH) from None
    except subprocess.TimeoutExpired:
        raise KdedgeError(f"cannot reach {target} within {timeout:g}s: no answer (timed out)") from None
    if proc.returncode != 0:
        stderr = clean(proc.stderr)
        reason = _ssh_reason(stderr) or _stderr_lines(stderr) or f"ssh exited with {proc.returncode}"
        raise KdedgeError(f"cannot reach {target} within {timeout:g}s: {reason}")


def copy_to(target: SshTarget, local_paths: Sequence[str | PathLike[str]], remote_dir: str, *,
            timeout: float) -> list[str]:
    """Copy files or directories into remote_dir (created if missing); returns the remote paths.

    One ssh connection: a tar stream written here with tarfile, unpacked there by tar (always on a
    Jetson). No scp: it needs an sftp subsystem or, in legacy mode, re-parses paths in the remote shell."""
    paths = [Path(p) for p in local_paths]
    if not paths:
        raise KdedgeError("copy_to: no local paths given")
    for path in paths:
        if not path.exists():
            raise KdedgeError(f"copy_to {target}: {path} does not exist")
    names = [_local_name(p) for p in paths]
    _unique(names, f"copy_to {target}")
    _check_remote_path(remote_dir)
    # sh -c with a constant script, the directory as $1: mkdir and tar run in one connection
    remote = ["sh", "-c", 'mkdir -p -- "$1" && exec tar -xf - -C "$1"', "sh", remote_dir]
    with _Streamed(target, remote, timeout=timeout, stdin=True) as stream:
        try:
            # dereference: a symlinked artifact arrives as the file it points to, under the link's name
            with tarfile.open(fileobj=stream.stdin, mode="w|", format=tarfile.PAX_FORMAT, dereference=True) as tar:
                for path, name in zip(paths, names, strict=True):
                    tar.add(str(path), arcname=name)
        except (BrokenPipeError, ConnectionResetError):
            pass  # ssh or tar stopped reading: the exit status below says why
        except OSError as exc:  # a local file that cannot be read
            stream.fail_later(f"cannot read {exc.filename or 'a local file'}: {exc.strerror or exc}")
        finally:
            stream.close_stdin()
    stream.check(f"copy to {target}:{remote_dir}")
    return [posixpath.join(remote_dir, name) for name in names]


def copy_from(target: SshTarget, remote_paths: Sequence[str], local_dir: str | PathLike[str], *,
              timeout: float) -> list[Path]:
    """Copy remote files or directories into local_dir (created if missing); returns the local paths.

    The remote side is not trusted: kdedge.remote.archive unpacks only regular files and directories
    under the names asked for, each checked to land inside local_dir (see there why not tarfile's filter)."""
    if not remote_paths:
        raise KdedgeError("copy_from: no remote paths given")
    remote = ["tar", "-cf", "-"]
    names = []
    for path in remote_paths:
        _check_remote_path(path)
        parent, name = posixpath.split(posixpath.normpath(path))
        if name in ("", ".", ".."):
            raise KdedgeError(f"copy_from {target}: {path!r} names no file or directory")
        remote += ["-C", parent or ".", f"./{name}"]  # "./" so a name starting with '-' is not an option
        names.append(name)
    _unique(names, f"copy_from {target}")
    local = Path(local_dir)
    local.mkdir(parents=True, exist_ok=True)
    with _Streamed(target, remote, timeout=timeout, stdin=False) as stream:
        try:
            with tarfile.open(fileobj=stream.stdout, mode="r|") as tar:
                extract_stream(tar, local, names)
            while stream.stdout.read(1 << 16):
                pass  # tar pads its archive past the end marker; read it so ssh is not killed by SIGPIPE
        except RefusedMember as exc:
            stream.fail_later(f"refused the archive the device sent: {exc.message}")
        except (tarfile.TarError, OSError) as exc:
            stream.fail_later(f"the archive could not be unpacked ({type(exc).__name__}: {clean(str(exc))})")
    stream.check(f"copy from {target}")
    return [local / name for name in names]


def _local_name(path: Path) -> str:
    return path.name if path.name not in ("", ".", "..") else path.resolve().name


def _unique(names: list[str], what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise KdedgeError(f"{what}: two paths are both named {name!r}; they would land on the same file")
        seen.add(name)


def _check_remote_path(path: str) -> None:
    if not isinstance(path, str) or not path or "\0" in path or "\n" in path:
        raise KdedgeError(f"remote path {path!r}: must be a non-empty single-line string")


class _Streamed:
    """ssh with its stdin or stdout streamed by the caller; stderr goes to a temp file (a pipe could fill
    and deadlock both sides), and a timer kills ssh at `timeout` so a dead link cannot hang the copy."""

    def __init__(self, target: SshTarget, remote: list[str], *, timeout: float, stdin: bool) -> None:
        self._target, self._timeout = target, timeout
        self._stderr = tempfile.TemporaryFile()
        self._local_error: str | None = None
        self._timed_out = threading.Event()
        try:
            self._proc = subprocess.Popen(
                ssh_argv(target, remote, connect_timeout=min(timeout, 30)),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if stdin else subprocess.PIPE, stderr=self._stderr)
        except FileNotFoundError:
            self._stderr.close()
            raise KdedgeError(_NO_SSH) from None
        self._timer = threading.Timer(timeout, self._kill)
        self._timer.daemon = True
        self._timer.start()

    @property
    def stdin(self) -> IO[bytes]:
        assert self._proc.stdin is not None
        return self._proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self._proc.stdout is not None
        return self._proc.stdout

    def close_stdin(self) -> None:
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def fail_later(self, message: str) -> None:
        self._local_error = message
        self._proc.kill()

    def _kill(self) -> None:
        self._timed_out.set()
        self._proc.kill()

    def __enter__(self) -> _Streamed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_stdin()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc.wait()
        self._timer.cancel()

    def check(self, what: str) -> None:
        self._stderr.seek(0)
        stderr = clean(self._stderr.read().decode(errors="replace"))
        self._stderr.close()
        if self._timed_out.is_set():
            raise KdedgeError(f"{what} did not finish within {self._timeout:g}s")
        if self._local_error is not None:
            raise KdedgeError(f"{what}: {self._local_error}")
        code = self._proc.returncode
        if code != 0:
            reason = _ssh_reason(stderr) or _stderr_lines(stderr) or f"exit status {code}"
            raise KdedgeError(f"{what} failed: {reason}")


_NO_SSH = "the ssh command is not installed here: install OpenSSH's client (apt-get install openssh-client)"


# C0 controls but tab and newline (ESC starts the terminal's escape sequences, CR overwrites a line),
# DEL, C1 controls (0x9b is a one-byte CSI), zero-width and bidi controls (text that reads otherwise)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def clean(text: str) -> str:
    """Text from the remote side without control characters (newline and tab kept), safe to print here."""
    return _CONTROL.sub("", text)


def _ssh_reason(stderr: str) -> str | None:
    """The line in which ssh says why it failed, if it did."""
    for line in reversed(stderr.splitlines()):
        if _SSH_FAILURE.match(line.strip()):
            return line.strip()
    return None


def _stderr_lines(text: str, limit: int = 300) -> str:
    """All of a short stderr on one line (tar's cause comes first, its summary last)."""
    joined = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[:limit - 1] + "…"
