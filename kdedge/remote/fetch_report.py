"""The report a remote bench sends back, put in place as RUN/bench only once it is checked.

The device is not trusted: its bench/ arrives through kdedge.remote.archive (files and directories
only, nothing outside the staging directory), must be a real directory with a report.json of this
kdedge's schema and the fields the report readers need, and every string in it is stripped of terminal
control characters. Any failure is one line and leaves the previous report as it was.
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kdedge.bench.report import write_markdown
from kdedge.errors import KdedgeError
from kdedge.io import write_json
from kdedge.layout import BENCH_DIR
from kdedge.remote import ssh
from kdedge.remote.target import SshTarget
from kdedge.stages.bench import REPORT_SCHEMA


def fetch_report(target: SshTarget, remote_run: str, run_root: Path, *, timeout: float) -> dict[str, Any]:
    """The remote bench/ as RUN/bench: fetched into a temp dir beside it, checked, then renamed into place."""
    staging = Path(tempfile.mkdtemp(prefix=".bench-remote-", dir=run_root))
    try:
        [fetched] = ssh.copy_from(target, [posixpath.join(remote_run, BENCH_DIR)], staging, timeout=timeout)
        if fetched.is_symlink() or not fetched.is_dir():  # renamed into place, a link could point anywhere
            raise KdedgeError(f"{target}: the remote bench/ came back as a "
                              f"{'symlink' if fetched.is_symlink() else 'non-directory'}; the old report is kept")
        report = _localised_report(fetched, run_root, target, remote_run)
        _replace_dir(fetched, run_root / BENCH_DIR)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _localised_report(bench_dir: Path, run_root: Path, target: SshTarget, remote_run: str) -> dict[str, Any]:
    path = bench_dir / "report.json"
    try:
        if path.is_symlink():
            raise ValueError("it is a symlink")
        # every string in it is printed here: no terminal escape sequences (ssh.clean)
        report = _cleaned(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise KdedgeError(f"{target}: the remote bench wrote no readable report.json ({ssh.clean(str(exc))}); "
                          "the old report is kept") from None
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        found = report.get("schema") if isinstance(report, dict) else None
        raise KdedgeError(f"{target}: the remote report has schema {found!r}, this kdedge reads "
                          f"{REPORT_SCHEMA!r}; install the same kdedge version on both (`pip install -U kdedge`)")
    for field, kind in _REPORT_FIELDS.items():
        if not isinstance(report.get(field), kind) or isinstance(report.get(field), bool):
            raise KdedgeError(f"{target}: the remote report.json has no valid field {field!r} "
                              f"(expected {kind.__name__}); the old report is kept; rerun the bench")
    # the names the terminal table shows as rich text: "[/x]" would be a MarkupError there, "[link=...]" a link
    runtimes = [r for m in report["models"].values() if isinstance(m, dict) and isinstance(m.get("runtimes"), dict)
                for r in m["runtimes"]]
    for name in (report["device"], *report["models"], *runtimes):
        if not isinstance(name, str) or not _NAME.match(name):
            raise KdedgeError(f"{target}: the remote report.json has a device, model or runtime named {name!r}; "
                              "kdedge names them with letters, digits and - _ . only; the old report is kept")
    # paths as they are here; the target as the user typed it (no key or option is recorded)
    report.update(run=str(run_root), host=str(target), remote_run=remote_run)
    try:
        write_markdown(report, bench_dir)  # its title and header name this run and the host
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise KdedgeError(f"{target}: the remote report.json is incomplete ({type(exc).__name__}: "
                          f"{ssh.clean(str(exc))[:120]}); the old report is kept; rerun the bench") from None
    write_json(path, report)
    return report


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# what write_markdown and the terminal table read at the top level of a report
_REPORT_FIELDS: dict[str, type] = {
    "recipe": str, "device": str, "threads": int, "batch": int, "timing": dict, "data": dict, "models": dict,
    "ratios": dict, "calibration": dict, "machine": dict, "versions": dict}


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return ssh.clean(value)
    if isinstance(value, dict):
        return {ssh.clean(k) if isinstance(k, str) else k: _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    return value


def _replace_dir(new: Path, dest: Path) -> None:
    """new -> dest by renames: the old directory moves aside first and is deleted only once new is in."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=".bench-old-", dir=dest.parent))
        dest.rename(old / dest.name)
    try:
        new.rename(dest)
    except OSError:
        if old is not None:
            (old / dest.name).rename(dest)  # put the previous report back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
