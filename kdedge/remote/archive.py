"""Unpack the tar stream a device sends back (`kdedge bench --host`), trusting nothing in it.

A report is regular files and directories, so that is all that is unpacked: links, devices and fifos
are refused, as are absolute names, `..` and names outside the requested top-level entries, and each
path is checked to resolve inside the destination before it is written. tarfile's own "data" filter is
not relied on: the CPython releases before 3.10.18/3.11.13/3.12.11/3.13.4 let a crafted symlink chain
through it (CVE-2025-4517). Files are written by this module (O_NOFOLLOW, mode 0644), not by tarfile.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from typing import Collection

from kdedge.errors import KdedgeError


class RefusedMember(KdedgeError):
    """A member of the archive that a report never holds."""


def extract_stream(tar: tarfile.TarFile, dest: Path, tops: Collection[str]) -> None:
    """Unpack every member of `tar` (opened "r|") into the existing directory `dest`; each member must
    be a regular file or directory named `top` or `top/...` for a top in `tops`."""
    root = Path(os.path.realpath(dest))
    for member in tar:
        parts = _parts(member.name, tops)
        if not (member.isfile() or member.isdir()):
            raise RefusedMember(f"member {member.name!r} is a {_kind(member)}; a report holds only regular "
                                "files and directories")
        target = root.joinpath(*parts)
        if member.isdir():
            _mkdirs(root, target)
            continue
        _mkdirs(root, target.parent)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has a file object
        # O_NOFOLLOW: a name that is (still) a symlink is refused by the kernel, not followed
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except OSError as exc:
            raise RefusedMember(f"member {member.name!r} cannot be written ({exc.strerror})") from None
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out)


def _parts(name: str, tops: Collection[str]) -> list[str]:
    """The path components of a member name, or RefusedMember if it could land outside dest/top."""
    if not name or "\0" in name or "\\" in name or name.startswith("/"):
        raise RefusedMember(f"member {name!r} has an absolute or unusable name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RefusedMember(f"member {name!r} has '..' in its name")
    if not parts or parts[0] not in tops:
        raise RefusedMember(f"member {name!r} is not under {', '.join(sorted(tops))}/, the only entries asked for")
    return parts


def _mkdirs(root: Path, directory: Path) -> None:
    """Create directory (and parents) under root; refuse if anything on the way is not a plain directory."""
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        try:
            current.mkdir(mode=0o755)
        except FileExistsError:
            pass
        if current.is_symlink() or not current.is_dir():
            raise RefusedMember(f"{current.relative_to(root)} is not a directory; the archive tried to write "
                                "through it")
    if os.path.realpath(directory) != str(directory):  # belt and braces: nothing resolves elsewhere
        raise RefusedMember(f"{directory.relative_to(root)} resolves outside the destination")


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symlink (-> {member.linkname!r})"
    if member.islnk():
        return f"hard link (-> {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "fifo"
    return f"member of tar type {member.type!r}"
