"""Issue 13, the run directory: manifest paths stay inside the run (2), --force clears only kdedge runs (3),
reuse checks the stage fingerprint (4), model files are verified by SHA-256 (5), an interrupted export is
finished by a rerun and the bench report is replaced as one unit (6, 8). Each test is an attack or a
failure as a user meets it, run through the CLI on a small real run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kdedge.cli import app
from kdedge.errors import KdedgeError
from kdedge.layout import run_file

from tests.conftest import TINY_RECIPE, deep_update

STUDENT = {"student": {"model": {"name": "mlp", "widths": [16], "dropout": 0.2},
                       "train": TINY_RECIPE["teacher"]["train"]},
           "distill": {"losses": [{"name": "hinton", "weight": 1.0}], "baseline": False}}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdedge: error: "), result.stderr
    return lines[0]


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def write_manifest(run: Path, data: dict) -> None:
    (run / "manifest.json").write_text(json.dumps(data))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    """A distilled run (MLP teacher and student with dropout) with its fp32 ONNX exports."""
    root = tmp_path_factory.mktemp("trust")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"output_dir": str(root / "runs"), **STUDENT})))
    assert invoke("distill", recipe).exit_code == 0
    run = root / "runs" / "tiny"
    result = invoke("export", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def run(distilled: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "work" / "run"
    shutil.copytree(distilled, dst)
    return dst


def bench(run: Path, *extra: str):
    return invoke("bench", run, "--runtime", "torch,ort", "--runs", "1", *extra)


# ------------------------------------------------------------------ 2: manifest paths stay in the run


def test_run_file_accepts_only_regular_files_inside_the_run(tmp_path: Path):
    root = tmp_path / "run"
    (root / "exports").mkdir(parents=True)
    (root / "exports" / "model.onnx").write_bytes(b"x")
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    (root / "exports" / "link.onnx").symlink_to(outside)
    (root / "linkdir").symlink_to(tmp_path)
    assert run_file(root, "exports/model.onnx", what="f") == (root / "exports" / "model.onnx").resolve()
    for bad in ("../secret", str(outside), "exports/../../secret", "exports/link.onnx", "linkdir/secret",
                "exports", "exports/missing.onnx", "", None, 7, ["exports/model.onnx"]):
        with pytest.raises(KdedgeError, match="exports.x.file"):
            run_file(root, bad, what="exports.x.file")
    # a file about to be written: may be absent, but not through a symlinked directory
    assert run_file(root, "exports/new.onnx", what="f", must_exist=False).parent == (root / "exports").resolve()
    with pytest.raises(KdedgeError, match="outside"):
        run_file(root, "linkdir/new.onnx", what="f", must_exist=False)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_bench_reads_no_export_outside_the_run(run: Path, how: str):
    data = manifest(run)
    entry = data["exports"]["student"]["onnx"]
    # the attacker's file is a valid model with the recorded checksum: only its place gives it away
    outside = run.parent.parent / "elsewhere" / "model.onnx"
    outside.parent.mkdir()
    shutil.copy(run / entry["file"], outside)
    if how == "symlink":
        (run / entry["file"]).unlink()
        (run / entry["file"]).symlink_to(outside)
    else:
        entry["file"] = "../../elsewhere/model.onnx" if how == "dotdot" else str(outside)
        write_manifest(run, data)
    line = one_line_error(bench(run, "--mc-samples", "0"))
    assert "exports.student.onnx.file" in line
    assert not (run / "bench").exists()


# ------------------------------------------------------------------ 3: --force clears only kdedge runs


@pytest.mark.parametrize("force", [False, True])
def test_force_never_clears_a_directory_with_a_foreign_manifest(tmp_path: Path, force: bool):
    foreign = tmp_path / "runs" / "tiny"
    foreign.mkdir(parents=True)
    # a browser extension: manifest_version, name, and files of its own
    (foreign / "manifest.json").write_text(json.dumps({"manifest_version": 3, "name": "ext", "version": "1.0"}))
    (foreign / "background.js").write_text("console.log('mine')")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"output_dir": str(tmp_path / "runs")})))
    line = one_line_error(invoke("train", recipe, *(["--force"] if force else [])))
    assert str(foreign) in line and "not a kdedge run" in line
    assert "--force" not in line  # it would not help, and must not be suggested
    assert sorted(p.name for p in foreign.iterdir()) == ["background.js", "manifest.json"]
    assert (foreign / "background.js").read_text() == "console.log('mine')"


def test_corrupt_manifest_message_does_not_suggest_force(run: Path):
    (run / "manifest.json").write_text("{not json")
    line = one_line_error(invoke("export", run))
    assert "corrupt manifest" in line and "--force" not in line


# ------------------------------------------------------------------ 4: reuse only a matching fingerprint


def test_finished_stage_with_another_fingerprint_is_not_reused(tmp_path: Path, distilled: Path):
    shutil.copytree(distilled, tmp_path / "runs" / "tiny")
    run = tmp_path / "runs" / "tiny"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"output_dir": str(tmp_path / "runs"), **STUDENT})))
    data = manifest(run)
    assert data["stages"]["student"]["fingerprint"].startswith(data["recipe_hash"])  # recorded when trained
    assert invoke("distill", recipe).exit_code == 0  # same recipe: reused
    # as a concurrent writer left it: the record says "complete" but another recipe trained the model
    data["stages"]["student"]["fingerprint"] = "0123456789abcdef:student:"
    write_manifest(run, data)
    line = one_line_error(invoke("distill", recipe))
    assert str(run / "student") in line and "another recipe" in line


# ------------------------------------------------------------------ 5: model files verified


def _zero_some_weights(path: Path) -> None:
    """Overwrite a tensor's bytes in place: the zip still opens (torch does not check its CRC)."""
    state = torch.load(path, weights_only=True)["state_dict"]
    raw = path.read_bytes()
    weight = max((v for v in state.values() if v.dtype == torch.float32), key=torch.Tensor.numel)
    needle = weight.numpy().tobytes()
    at = raw.find(needle)
    assert at > 0
    path.write_bytes(raw[:at] + bytes(len(needle)) + raw[at + len(needle):])
    torch.load(path, weights_only=True)  # still loads: only the checksum tells


def test_model_sha256_is_recorded_when_written(distilled: Path):
    data = manifest(distilled)
    for stage in ("teacher", "student"):
        assert data["stages"][stage]["model_sha256"] == sha(distilled / stage / "model.pt")


@pytest.mark.parametrize("command", ["export", "bench"])
def test_changed_model_file_is_named_before_use(run: Path, command: str):
    _zero_some_weights(run / "student" / "model.pt")
    args = ("export", run) if command == "export" else ("bench", run, "--runtime", "torch",
                                                                    "--runs", "1", "--mc-samples", "0")
    line = one_line_error(invoke(*args))
    assert str(run / "student" / "model.pt") in line and "changed" in line


@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_changed_model_file_is_not_reused_by_distill(distilled: Path, tmp_path: Path, stage: str):
    # rerunning the recipe must not print "reusing the finished model" over weights that changed
    run = tmp_path / "w" / distilled.name
    shutil.copytree(distilled, run)
    _zero_some_weights(run / stage / "model.pt")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"output_dir": str(tmp_path / "w"), **STUDENT})))
    line = one_line_error(invoke("distill", recipe))
    assert str(run / stage / "model.pt") in line and "changed" in line and "--force" in line


def test_run_made_before_checksums_is_accepted(run: Path):
    data = manifest(run)
    for record in data["stages"].values():
        record.pop("model_sha256", None)
        record.pop("fingerprint", None)
    write_manifest(run, data)
    result = bench(run, "--mc-samples", "0")
    assert result.exit_code == 0, result.output
    assert "changed" not in result.output


def test_from_run_teacher_is_verified_and_its_copy_recorded(tmp_path: Path, distilled: Path):
    source = tmp_path / "source"
    shutil.copytree(distilled, source)
    recipe = deep_update(TINY_RECIPE, {"name": "imp", "output_dir": str(tmp_path / "runs"), **STUDENT})
    recipe["teacher"] = {"from_run": str(source)}
    path = tmp_path / "imp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _zero_some_weights(source / "teacher" / "model.pt")
    line = one_line_error(invoke("distill", path))
    assert str(source / "teacher" / "model.pt") in line and "changed" in line
    shutil.copy(distilled / "teacher" / "model.pt", source / "teacher" / "model.pt")
    result = invoke("distill", path)
    assert result.exit_code == 0, result.output
    imported = tmp_path / "runs" / "imp"
    assert manifest(imported)["stages"]["teacher"]["model_sha256"] == sha(imported / "teacher" / "model.pt")
    assert invoke("distill", path).exit_code == 0  # rerun: the imported teacher is reused, not refused


# ------------------------------------------------------------------ 6: interrupted export, bench report


def test_export_killed_between_rename_and_record_is_finished_by_a_rerun(run: Path, monkeypatch):
    from kdedge.stages import export as stage

    data = manifest(run)
    data["exports"].pop("student")
    write_manifest(run, data)
    (run / "exports" / "student" / "model.onnx").unlink()
    real = stage.package_versions

    def killed():  # the record is built after the rename: a kill here leaves an unrecorded artifact
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "package_versions", killed)
    result = invoke("export", run, "--models", "student")
    assert result.exit_code == 130 and "rerun to finish" in result.stderr
    assert (run / "exports" / "student" / "model.onnx").is_file() and "student" not in manifest(run)["exports"]
    leftover = run / "exports" / "student" / ".model.onnx.x1y2.tmp"
    leftover.write_bytes(b"half")
    monkeypatch.setattr(stage, "package_versions", real)
    result = invoke("export", run, "--models", "student")  # as the message said: rerun, no --force
    assert result.exit_code == 0, result.output
    entry = manifest(run)["exports"]["student"]["onnx"]
    assert entry["sha256"] == sha(run / entry["file"])
    assert not leftover.exists()


def _bench_files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "bench").iterdir())}


def test_rerun_without_mc_dropout_leaves_no_stale_mc_plot(run: Path):
    assert bench(run, "--mc-samples", "3").exit_code == 0
    assert (run / "bench" / "reliability_mc.png").is_file()
    assert bench(run, "--mc-samples", "0").exit_code == 0
    assert not (run / "bench" / "reliability_mc.png").exists()
    assert manifest(run) and json.loads((run / "bench" / "report.json").read_text())["uncertainty"] == {
        "skipped": "--mc-samples 0"}


def test_bench_killed_before_report_json_keeps_the_old_report_set(run: Path, monkeypatch):
    from kdedge.stages import bench as stage

    assert bench(run, "--mc-samples", "0").exit_code == 0
    before = _bench_files(run)
    real = stage.write_json

    def killed(path, obj):
        if Path(path).name == "report.json":
            raise KeyboardInterrupt  # report.md and the plots are written by now
        return real(path, obj)

    monkeypatch.setattr(stage, "write_json", killed)
    assert bench(run, "--mc-samples", "0").exit_code == 130
    assert _bench_files(run) == before  # no new report.md beside the old report.json
    assert not [p for p in run.iterdir() if p.name.startswith(".bench")]  # and no temp directory left


def test_bench_cleans_what_a_killed_bench_left(run: Path):
    assert bench(run, "--mc-samples", "0").exit_code == 0
    (run / "bench" / ".report.json.a1b2.tmp").write_text("{")
    aside = run / ".bench-new-k1ll"
    aside.mkdir()
    (aside / "report.md").write_text("half")
    assert bench(run, "--mc-samples", "0").exit_code == 0
    assert not (run / "bench" / ".report.json.a1b2.tmp").exists() and not aside.exists()
    assert (run / "bench" / "report.json").is_file()
