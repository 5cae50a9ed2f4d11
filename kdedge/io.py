"""Atomic artifact writes: a temp file in the same directory, fsync, then rename.

A killed process therefore leaves either the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class WriteRole:
    """Who writes in a multi-process (data-parallel) run. Every rank runs the same pipeline and reaches
    the same writes in the same order; only the writer (rank 0) puts the file in place, the others
    write to a scratch file that is thrown away. All of them meet before each write (every rank has read
    what it read before the file changes) and after it (no rank reads it before it is finished), so
    between two writes every rank sees the same files. kdedge.train.distributed installs one."""

    is_writer = True

    def before_write(self) -> None:
        pass

    def after_write(self) -> None:
        pass

    def sync(self) -> None:
        """Meet the other ranks (after rank 0 took a run's lock)."""

    def stop_waiting(self) -> None:
        """After an error on this rank: later writes (marking a stage stopped) must not wait for ranks
        that are elsewhere; the launcher stops those when this one exits."""


_role: list[WriteRole] = [WriteRole()]


def set_write_role(role: WriteRole | None) -> None:
    """Install `role` (None: back to the single-process default)."""
    _role[0] = role or WriteRole()


def write_role() -> WriteRole:
    return _role[0]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is fsynced and renamed onto `path`.
    In a multi-process run only rank 0 writes (see WriteRole)."""
    role = _role[0]
    role.before_write()
    if not role.is_writer:
        with tempfile.TemporaryDirectory(prefix="kdedge-rank-scratch-") as scratch:
            yield Path(scratch) / Path(path).name
        role.after_write()
        return
    with _atomic_path(path) as tmp:
        yield tmp
    role.after_write()


@contextmanager
def _atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a read-only or full directory: name the artifact, not a random temp name
        exc.filename = str(path)
        raise
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        # a full disk (ENOSPC from write or fsync) names no file: name the artifact, not the temp file
        if exc.filename in (None, tmp_name):
            exc.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """torch.save, atomically. Serialised in memory first: torch's own file writer reports a full disk
    as an opaque RuntimeError, a plain write as OSError(ENOSPC) naming the file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_result(path: str | os.PathLike, result: Any, markdown: str) -> None:
    """A benchmark's result as JSON for machines at `path` and Markdown for people beside it (.md),
    both atomically; the Markdown is also printed, then where they went."""
    path = Path(path)
    write_json(path, result)
    write_text(path.with_suffix(".md"), markdown)
    print(markdown)
    print(f"wrote {path} and {path.with_suffix('.md').name}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    """Checksum recorded beside every artifact, so a reader can tell a complete file from a stale one."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_dir(new: Path, dest: Path) -> None:
    """`new` becomes `dest` as one unit (a report set: no new report.md beside an old report.json).
    The old directory moves aside first and is deleted only once `new` is in place; a kill between the
    two renames leaves it aside, and restore_dir puts it back."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}-old-", dir=dest.parent))
        dest.rename(old / dest.name)
    try:
        new.rename(dest)
    except OSError:
        if old is not None:
            (old / dest.name).rename(dest)
        raise
    _fsync_dir(dest.parent)
    if old is not None:
        _remove_tree(old)


def restore_dir(dest: Path) -> None:
    """Undo what a killed replace_dir or atomic_path left beside or in `dest`: put a directory that was
    moved aside back if `dest` is gone, then delete leftover temp directories and `.*.tmp` files.
    Call it only while holding the run's lock (the leftovers may otherwise be another command's work)."""
    parent = dest.parent
    if not parent.is_dir():
        return
    asides = sorted(p for p in parent.glob(f".{dest.name}-old-*") if p.is_dir() and not p.is_symlink())
    if not (dest.exists() or dest.is_symlink()):
        for aside in asides:
            kept = aside / dest.name
            if kept.is_dir() and not kept.is_symlink():
                kept.rename(dest)
                break
    for leftover in (*asides, *parent.glob(f".{dest.name}-new-*")):
        _remove_tree(leftover)
    if dest.is_dir() and not dest.is_symlink():
        for tmp in dest.rglob(".*.tmp"):
            if tmp.is_symlink() or tmp.is_file():
                tmp.unlink(missing_ok=True)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
