"""One writer per run: an exclusive flock(2) on the run directory itself, held by any command that writes it.

The kernel releases a flock when its holder exits, however it exits, so a killed command never leaves a
lock that blocks the next one. Locking the directory (not a lock file in it) writes nothing: a command
that fails leaves the run exactly as it found it. The holder's pid and command line for the message come
from the kernel's lock table (/proc/locks), so nothing has to be recorded either.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kdedge.errors import KdedgeError
from kdedge.io import write_role
from kdedge.ranks import is_main_process, launched

WAIT_S = 5.0      # a second command waits this long for the first, then fails with one line
_POLL_S = 0.1

# Runs this process holds (resolved root -> depth): a stage that locks inside a command that already
# locked the same run must not wait for itself (flocks of two open() calls conflict within one process).
_held: dict[Path, int] = {}


@contextmanager
def run_lock(root: Path, *, create: bool = False, wait_s: float | None = None) -> Iterator[None]:
    """Hold the run's lock for the block. `create` makes the run directory (and its missing parents)
    first and removes them again on release if nothing was written there."""
    root = Path(root)
    if launched() and not is_main_process():  # data-parallel ranks: rank 0 holds the lock for all of them;
        write_role().sync()                  # they read the run only once it holds it
        yield
        return
    key = root.resolve()
    if key in _held:
        _held[key] += 1
        write_role().sync()
        try:
            yield
        finally:
            _held[key] -= 1
        return
    made = _make_dirs(root) if create else []
    try:
        fd = _acquire(root, WAIT_S if wait_s is None else wait_s, create=create)
    except BaseException:
        _remove_empty(made)
        raise
    _held[key] = 1
    try:
        write_role().sync()
        yield
    finally:
        del _held[key]
        _remove_empty(made)  # before unlocking: a waiter then sees the directory gone and starts afresh
        os.close(fd)         # releases the flock


def _acquire(root: Path, wait_s: float, *, create: bool) -> int:
    deadline = time.monotonic() + wait_s
    while True:
        fd = _open(root)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise KdedgeError(f"{root}: another kdedge command is writing this run ({_holder(fd)}); "
                                          "wait for it to finish (or stop that process), then rerun") from None
                    time.sleep(_POLL_S)
                except OSError as exc:
                    if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL):
                        return fd  # a filesystem without flock (some network mounts): run unlocked
                    raise
            if _same_dir(fd, root):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the directory we waited on was removed meanwhile: lock the current one
        if create:
            _make_dirs(root)


def _open(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise KdedgeError(f"{root}: not a kdedge run directory; give a directory made by "
                              "`kdedge train RECIPE`") from None
        raise KdedgeError(f"{root}: cannot open the run directory ({exc.strerror})") from None


def _same_dir(fd: int, root: Path) -> bool:
    try:
        now = os.stat(root)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _holder(fd: int) -> str:
    """'pid N: its command line', read from the kernel's lock table; what is known elsewhere."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "its pid is not available on this system"
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != ident:
            continue
        pid = fields[4]
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            command = shlex.join(a.decode("utf-8", "replace") for a in argv)
        except OSError:
            command = "command unknown"
        printable = "".join(c if c.isprintable() else "?" for c in command)[:200]
        return f"pid {pid}: {printable}"
    return "its pid is not visible from here"


def _make_dirs(root: Path) -> list[Path]:
    """mkdir -p root; returns the directories it made, deepest first."""
    missing = []
    for path in [root, *root.parents]:
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
            made.insert(0, path)
        except FileExistsError:
            pass  # made meanwhile by another command: not ours to remove
        except OSError as exc:
            _remove_empty(made)
            raise KdedgeError(f"{path}: cannot make the run directory ({exc.strerror}); "
                              "change the recipe's output_dir or name") from None
    return made


def _remove_empty(made: list[Path]) -> None:
    for path in made:
        try:
            path.rmdir()
        except OSError:
            return  # not empty (the command wrote its run there) or already gone
