"""A hostile device behind `kdedge bench --host`: the archive it sends back, the report in it, the text it
prints, and the files a bench reads or sends by the paths in a (crafted) manifest.

The archives are built here, member by member, with tarfile; the device's side of ssh is replaced by a
local process that writes them to stdout (ssh_argv patched), so the real copy_from -> unpack -> check ->
rename path runs. The oracle for "nothing written outside": a walk of the whole temp directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from kdedge.errors import KdedgeError
from kdedge.remote import ssh
from kdedge.remote.target import SshTarget
from kdedge.stages.bench import REPORT_SCHEMA

TARGET = SshTarget.parse("nobody@127.0.0.1:9")  # never contacted: ssh_argv is replaced
CONTROL = [chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0), 0x202E, 0x2066)]

REPORT = {  # the fields the report readers use, as a local bench writes them
    "schema": REPORT_SCHEMA, "run": "/device/run", "recipe": "tiny", "device": "cpu", "threads": 1, "batch": 4,
    "timing": {"rounds": 1, "runs_per_round": 1}, "data": {"test_images": 2, "dataset": "digits"},
    "models": {"student": {"parameters": 10, "macs": 100, "runtimes": {"ort": {
        "size_bytes": 1000, "accuracy": 0.5, "nll": 1.0, "ece": 0.1, "mce": 0.2,
        "batch1": {"median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.1}}}}},
    "ratios": {}, "calibration": {"bins": {}}, "machine": {"cpu": "x86", "logical_cores": 2}, "versions": {},
}


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, link, mode, len(data)
    return info, data


def tar_bytes(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def report_archive(report: dict | bytes) -> bytes:
    body = report if isinstance(report, bytes) else json.dumps(report).encode()
    return tar_bytes(member("./bench", tarfile.DIRTYPE, mode=0o755), member("./bench/report.json", data=body))


@pytest.fixture
def device(monkeypatch, tmp_path):
    """serve(archive_bytes, stderr=b"", code=0): the next ssh call prints them as the device would."""
    script = tmp_path / "device.py"

    def serve(archive: bytes = b"", stderr: bytes = b"", code: int = 0) -> None:
        (tmp_path / "device.tar").write_bytes(archive)
        (tmp_path / "device.err").write_bytes(stderr)
        script.write_text(
            "import sys\n"
            f"sys.stdout.buffer.write(open({str(tmp_path / 'device.tar')!r}, 'rb').read())\n"
            f"sys.stderr.buffer.write(open({str(tmp_path / 'device.err')!r}, 'rb').read())\n"
            f"sys.exit({code})\n")

    monkeypatch.setattr(ssh, "ssh_argv", lambda *a, **k: [sys.executable, str(script)])
    return serve


def tree(root: Path) -> dict[str, str]:
    """Every path under root (links not followed) -> its kind."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            mode = os.lstat(Path(dirpath) / name).st_mode
            kind = "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else \
                "file" if stat.S_ISREG(mode) else "other"
            out[str((Path(dirpath) / name).relative_to(root))] = kind
    return out


# ---------------------------------------------------------------------------------------------------
# the archive


def test_copy_from_unpacks_files_and_directories_with_plain_modes(device, tmp_path):
    device(tar_bytes(member("./bench", tarfile.DIRTYPE, mode=0o777), member("./bench/a.json", data=b"{}", mode=0o4777),
                     member("./bench/trt/x.log", data=b"log")))  # no entry for trt/: made on the way
    [got] = ssh.copy_from(TARGET, ["/device/run/bench"], tmp_path / "in", timeout=30)
    assert got == tmp_path / "in" / "bench"
    assert tree(tmp_path / "in") == {"bench": "dir", "bench/a.json": "file", "bench/trt": "dir",
                                     "bench/trt/x.log": "file"}
    assert (got / "a.json").read_bytes() == b"{}" and (got / "trt" / "x.log").read_bytes() == b"log"
    assert stat.S_IMODE((got / "a.json").stat().st_mode) & 0o7133 == 0  # no setuid, no exec, not world-writable


HOSTILE = {
    # name: (members, what the one-line error says); the first three pass tarfile's "data" filter
    "symlink inside": ([member("./bench", tarfile.DIRTYPE), member("./bench/r.json", tarfile.SYMTYPE, link="x")],
                       "symlink"),
    "bench is a symlink": ([member("./bench", tarfile.SYMTYPE, link="."), member("./report.json", data=b"{}")],
                           "symlink"),
    "hard link": ([member("./bench", tarfile.DIRTYPE), member("./bench/a", data=b"a"),
                   member("./bench/b", tarfile.LNKTYPE, link="bench/a")], "hard link"),
    "symlink out": ([member("./bench", tarfile.DIRTYPE), member("./bench/p", tarfile.SYMTYPE, link="/etc/passwd")],
                    "symlink"),
    "device": ([member("./bench", tarfile.DIRTYPE), member("./bench/d", tarfile.CHRTYPE)], "device file"),
    "fifo": ([member("./bench", tarfile.DIRTYPE), member("./bench/f", tarfile.FIFOTYPE)], "fifo"),
    "dot-dot": ([member("./bench/../../outside", data=b"x")], "'..'"),
    "absolute": ([member("ABSOLUTE", data=b"x")], "absolute"),
    "outside the asked-for entry": ([member("./report.json", data=b"x")], "not under bench/"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_copy_from_refuses_every_member_a_report_never_holds(device, tmp_path, case):
    members, says = HOSTILE[case]
    members = [member(str(tmp_path / "outside"), data=b"x") if info.name == "ABSOLUTE" else (info, data)
               for info, data in members]
    device(tar_bytes(*members))
    before = tree(tmp_path)
    with pytest.raises(KdedgeError, match="refused the archive the device sent") as e:
        ssh.copy_from(TARGET, ["/device/run/bench"], tmp_path / "in", timeout=30)
    assert says in e.value.message
    after = tree(tmp_path)
    assert not (tmp_path / "outside").exists()
    new = {path: kind for path, kind in after.items() if path not in before}
    assert set(new.values()) <= {"dir", "file"}, new  # never a link, device or fifo
    assert all(path.startswith("in") for path in new), new


# ---------------------------------------------------------------------------------------------------
# the report put in place as RUN/bench


@pytest.fixture
def run_with_report(tmp_path) -> Path:
    run = tmp_path / "run"
    (run / "bench").mkdir(parents=True)
    (run / "bench" / "report.json").write_text('{"old": true}')
    return run


def fetch(run: Path):
    from kdedge.remote.fetch_report import fetch_report

    return fetch_report(TARGET, "/device/run", run, timeout=30)


def test_a_complete_report_is_localised_and_put_in_place(device, run_with_report):
    device(report_archive(REPORT))
    report = fetch(run_with_report)
    assert report["run"] == str(run_with_report) and report["host"] == str(TARGET)
    assert json.loads((run_with_report / "bench" / "report.json").read_text()) == report
    assert "kdedge bench: tiny" in (run_with_report / "bench" / "report.md").read_text()
    assert tree(run_with_report) == {"bench": "dir", "bench/report.json": "file", "bench/report.md": "file"}


def test_bench_as_a_symlink_to_the_run_is_refused_and_the_old_report_kept(device, run_with_report):
    # passes the data filter (the link stays inside the staging directory); renamed into place, RUN/bench
    # would have become a link to RUN itself
    device(tar_bytes(member("./bench", tarfile.SYMTYPE, link="."), member("./report.json", data=json.dumps(REPORT).encode())))
    with pytest.raises(KdedgeError, match="symlink"):
        fetch(run_with_report)
    assert not (run_with_report / "bench").is_symlink()
    assert tree(run_with_report) == {"bench": "dir", "bench/report.json": "file"}
    assert (run_with_report / "bench" / "report.json").read_text() == '{"old": true}'


@pytest.mark.parametrize("broken, says", [
    ({"schema": REPORT_SCHEMA}, "no valid field 'recipe'"),
    ({**REPORT, "models": []}, "no valid field 'models'"),
    ({**REPORT, "batch": "4"}, "no valid field 'batch'"),
    ({**REPORT, "models": {"student": {"parameters": 1, "macs": 1, "runtimes": {"ort": {}}}}}, "incomplete"),
    ({**REPORT, "machine": {}}, "incomplete"),
    ({**REPORT, "models": {"[/bold]": REPORT["models"]["student"]}}, "model or runtime named '[/bold]'"),
    ({**REPORT, "models": {"student": {**REPORT["models"]["student"], "runtimes": {"[link=x]ort": {}}}}},
     "named '[link=x]ort'"),
    (b"[1, 2", "no readable report.json"),
])
def test_a_report_missing_fields_is_one_line_and_keeps_the_old_one(device, run_with_report, broken, says):
    device(report_archive(broken))
    with pytest.raises(KdedgeError, match="remote") as e:
        fetch(run_with_report)
    assert says in e.value.message and "\n" not in e.value.message
    assert tree(run_with_report) == {"bench": "dir", "bench/report.json": "file"}
    assert (run_with_report / "bench" / "report.json").read_text() == '{"old": true}'


def test_a_missing_old_report_stays_missing_on_failure(device, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    device(report_archive({"schema": REPORT_SCHEMA}))
    with pytest.raises(KdedgeError):
        fetch(run)
    assert tree(run) == {}


# ---------------------------------------------------------------------------------------------------
# what the device prints

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m\rover\u009b2J\u202eevil\x00"


def clean_text(text: str) -> None:
    assert not any(c in text for c in CONTROL), repr(text)


def test_remote_stderr_and_report_strings_lose_control_characters(device, run_with_report):
    from kdedge.remote.bench_job import _remote_error

    device(stderr=f"kdedge: error: {ESCAPES} done\n".encode(), code=2)
    proc = ssh.run(TARGET, ["kdedge", "bench"], timeout=30)
    clean_text(proc.stderr)
    message = _remote_error(proc)
    clean_text(message)
    assert message == "]0;owned[2J[31mred[0m"  # text mode reads the CR as a line end: the line before it

    device(tar_bytes(), stderr=f"tar: {ESCAPES}\n".encode(), code=2)  # a copy that fails: stderr in the error
    with pytest.raises(KdedgeError) as e:
        ssh.copy_from(TARGET, ["/device/run/bench"], run_with_report / "x", timeout=30)
    clean_text(e.value.message)
    assert "tar: ]0;owned[2J[31mred" in e.value.message

    device(stderr=f"{ESCAPES}\n".encode(), code=1)  # the reachability check quotes ssh's stderr too
    with pytest.raises(KdedgeError) as e:
        ssh.check_reachable(TARGET, timeout=30)
    clean_text(e.value.message)
    assert "owned" in e.value.message

    device(report_archive({**REPORT, "recipe": ESCAPES, "machine": {"cpu": ESCAPES, "logical_cores": 2},
                           "versions": {ESCAPES: ESCAPES}}))
    report = fetch(run_with_report)
    for text in (json.dumps(report, ensure_ascii=False), (run_with_report / "bench" / "report.md").read_text()):
        clean_text(text.replace("\n", ""))
    assert report["recipe"] == "]0;owned[2J[31mred[0mover2Jevil"


def test_control_characters_are_stripped_over_a_real_ssh(sshd):
    proc = ssh.run(sshd, ["sh", "-c", "printf '\\033]0;owned\\007\\033[2Jx\\r\\302\\233y\\n' >&2; exit 3"], timeout=30)
    assert proc.returncode == 3 and proc.stderr == "]0;owned[2Jx\ny\n"  # CR read as a line end


# ---------------------------------------------------------------------------------------------------
# files read or sent by the paths in a manifest


def crafted_run(tmp_path: Path, file: str) -> Path:
    """A run directory whose manifest records one export at `file`, and a secret beside the run."""
    run = tmp_path / "run"
    (run / "student").mkdir(parents=True)
    (run / "exports" / "student").mkdir(parents=True)
    (run / "student" / "model.pt").write_bytes(b"weights")
    (run / "exports" / "student" / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "secret").write_bytes(b"secret")
    (run / "exports" / "student" / "link.onnx").symlink_to(tmp_path / "secret")
    # the checksum of what the path reaches, so that only the path check can stop it
    exports = {"student": {"onnx": {"file": file, "sha256": hashlib.sha256((run / file).read_bytes()).hexdigest()}}}
    (run / "manifest.json").write_text(json.dumps({"exports": exports}))
    return run


OUTSIDE = ["../secret", "exports/../../secret", "/etc/passwd", "exports/student/link.onnx"]


def _stage(run: Path, tmp_path: Path):
    from kdedge.remote.bench_job import _stage_bundle
    from kdedge.run import RunDir
    from kdedge.stages.context import StageContext

    manifest = json.loads((run / "manifest.json").read_text())
    return _stage_bundle(RunDir(run), manifest, ["student"], tmp_path / "bundle" / "run", StageContext())


@pytest.mark.parametrize("file", OUTSIDE)
def test_the_bundle_refuses_export_paths_outside_the_run(tmp_path, file):
    run = crafted_run(tmp_path, file)
    with pytest.raises(KdedgeError, match=r"exports\.student\.onnx\.file"):
        _stage(run, tmp_path)
    sent = [p for p in (tmp_path / "bundle").rglob("*") if p.is_file()] if (tmp_path / "bundle").exists() else []
    assert all(p.read_bytes() != b"secret" for p in sent)
    assert (tmp_path / "secret").read_bytes() == b"secret"  # not overwritten through a ../ in the bundle


@pytest.mark.parametrize("how", ["symlink", "linked stage directory", "not a file"])
def test_the_bundle_sends_only_the_runs_own_model_file(tmp_path, how):
    run = crafted_run(tmp_path, "exports/student/model.onnx")
    model = run / "student" / "model.pt"
    model.unlink()
    if how == "symlink":
        model.symlink_to(tmp_path / "secret")
    elif how == "linked stage directory":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        shutil.copy(tmp_path / "secret", elsewhere / "model.pt")
        (run / "student").rmdir()
        (run / "student").symlink_to(elsewhere)
    else:
        model.mkdir()
    with pytest.raises(KdedgeError, match=r"student/model\.pt: not a regular file of the run"):
        _stage(run, tmp_path)
    assert not (tmp_path / "bundle" / "run" / "student" / "model.pt").exists()


@pytest.mark.parametrize("file", OUTSIDE)
def test_jetson_builds_only_from_export_files_inside_the_run(tmp_path, monkeypatch, file):
    from kdedge.bench import jetson

    run = crafted_run(tmp_path, file)
    calls = []
    monkeypatch.setattr(jetson, "find_trtexec", lambda: "/fake/trtexec")
    monkeypatch.setattr(jetson, "_build_and_time", lambda *a, **k: calls.append(a) or {"engine": None, "error": "x"})
    exports = {"student": {"onnx": {"file": file}}}
    with pytest.raises(KdedgeError, match=r"exports\.student\.onnx\.file"):
        jetson.trtexec_models(run, exports, ["student"], (1, 8, 8), 4, run / "bench", print)
    assert calls == [] and not (run / "bench").exists()
    # the same export recorded at its own path is built
    jetson.trtexec_models(run, {"student": {"onnx": {"file": "exports/student/model.onnx"}}}, ["student"],
                          (1, 8, 8), 4, run / "bench", print)
    assert [Path(a[1]) for a in calls] == [(run / "exports" / "student" / "model.onnx").resolve()]
