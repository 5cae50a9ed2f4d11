"""Issue 13, items 7 and 8 through the CLI: one line (exit 2, nothing half-written) for bad --set values,
manifest fields of the wrong type, a read-only run directory and a full disk; a misspelt key named as
such; rich markup never eats an install hint; plain help, usage and --version; progress labelled by
model; an honest Ctrl-C message; `kdedge show` with exports and bench; the relative-path rule."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.conftest import TINY_RECIPE, deep_update, interrupt_kd_step_at

KD = {"student": {"model": {"name": "mlp", "widths": [8]}, "train": TINY_RECIPE["teacher"]["train"]},
      "distill": {"losses": [{"name": "hinton", "temperature": 4.0}]}}


def _one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdedge: error: "), result.stderr
    return lines[0]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny finished teacher run, trained once; tests copy it."""
    tmp = tmp_path_factory.mktemp("trained")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"output_dir": str(tmp / "runs")})))
    from kdedge.cli import app

    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.stderr
    return tmp / "runs" / "tiny"


def _copy_run(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


# --- item 7 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", ["[1,{", "@x", "!!python/object:os.system"])
def test_sweep_set_value_that_is_not_yaml_is_one_line(values, tmp_path, make_recipe, cli):
    recipe = make_recipe(KD)
    before = _files(tmp_path)
    line = _one_line(cli("sweep", recipe, "--set", f"distill.losses[0].temperature={values}"))
    assert "--set" in line and "not valid YAML" in line
    assert _files(tmp_path) == before and not (tmp_path / "runs").exists()


MANIFEST_MUTATIONS = [
    ("stages", [1], "stages"),
    ("exports", "a string", "exports"),
    ("stages.teacher", 5, "stages.teacher"),
    ("stages.teacher.test", "x", "stages.teacher.test"),
    ("stages.teacher.status", ["complete"], "stages.teacher.status"),
    ("data", 3, "data"),
    ("exports", {"teacher": {"onnx": [1]}}, "exports.teacher.onnx"),
    ("exports", {"teacher": {"onnx": {"file": 7}}}, "exports.teacher.onnx.file"),
    ("exports", {"teacher": "onnx"}, "exports.teacher"),
]


def _set(manifest: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = manifest
    for key in parents:
        node = node[key]
    node[last] = value


@pytest.mark.parametrize("command", ["show", "calibrate", "export", "bench"])
@pytest.mark.parametrize("field,value,named", MANIFEST_MUTATIONS, ids=[m[2] + "=" + type(m[1]).__name__
                                                                       for m in MANIFEST_MUTATIONS])
def test_manifest_field_of_the_wrong_type_is_one_line(field, value, named, command, trained_run, tmp_path, cli):
    run = _copy_run(trained_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    _set(manifest, field, value)
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = _files(run)
    line = _one_line(cli(command, run, *(["--models", "teacher"] if command in ("export", "bench") else [])))
    assert "manifest.json" in line and named in line, line
    assert _files(run) == before


def test_teacher_from_run_whose_manifest_has_wrong_types_is_one_line(trained_run, tmp_path, make_recipe, cli):
    run = _copy_run(trained_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"] = ["teacher"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    recipe = dict(copy.deepcopy(TINY_RECIPE), name="from_run", output_dir=str(tmp_path / "runs"))
    recipe["teacher"] = {"from_run": str(run)}
    path = make_recipe(raw=yaml.safe_dump(recipe))
    line = _one_line(cli("train", path))
    assert "teacher.from_run" in line and "manifest.json" in line
    assert not (tmp_path / "runs").exists()


def _root_can_mount(where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True).returncode == 0
    return ok


def _umount(mnt: Path) -> None:
    done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:  # still busy: detach it anyway, so no mount outlives the test
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    assert done.returncode == 0, done.stderr


def test_read_only_run_directory_is_one_line_naming_the_path(trained_run, tmp_path, cli, monkeypatch):
    """No write permission (what chmod gives a non-root user): every atomic write starts with mkstemp."""
    import kdedge.io

    run = _copy_run(trained_run, tmp_path)

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, ".x.tmp"))

    monkeypatch.setattr(kdedge.io.tempfile, "mkstemp", denied)
    before = _files(run)
    line = _one_line(cli("calibrate", run))
    assert f"{run / 'teacher'}" in line and "Permission denied" in line and ".tmp" not in line, line
    assert "make the directory writable" in line
    line = _one_line(cli("export", run, "--models", "teacher"))
    assert str(run) in line and "Permission denied" in line
    assert _files(run) == before


def test_read_only_filesystem_is_one_line(trained_run, tmp_path, cli):
    """A real read-only mount (EROFS), where root may mount a tmpfs."""
    mnt = tmp_path / "mnt"
    if not _root_can_mount(mnt):
        pytest.skip("needs root and mount (tmpfs) to make a read-only filesystem")
    try:
        run = mnt / "run"
        shutil.copytree(trained_run, run)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = _files(run)
        for args in (["calibrate", run], ["export", run, "--models", "teacher"],
                     ["bench", run, "--runs", "1", "--mc-samples", "0"]):
            line = _one_line(cli(*args))
            assert str(run) in line and "Read-only file system" in line, line
        assert _files(run) == before
    finally:
        _umount(mnt)


def test_disk_full_while_training_is_one_line_and_leaves_nothing_half_written(tmp_path, make_recipe, cli,
                                                                              monkeypatch):
    """ENOSPC from fsync (what a full disk gives; write(2) reports it too) while the first checkpoint is
    written: one line naming checkpoint.pt, no temp file left, and the stage not left "running"."""
    real_fsync = os.fsync

    def fsync(fd):
        if "checkpoint.pt" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")  # like the kernel's: no file name
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    line = _one_line(cli("train", make_recipe()))
    run = tmp_path / "runs" / "tiny"
    assert str(run / "teacher" / "checkpoint.pt") in line and "No space left" in line, line
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert not (run / "teacher" / "checkpoint.pt").exists() and not (run / "teacher" / "model.pt").exists()
    record = json.loads((run / "manifest.json").read_text())["stages"]["teacher"]
    assert record["status"] == "failed" and "No space left" in record["error"]


def test_disk_full_on_a_real_tiny_filesystem(tmp_path, make_recipe, cli):
    mnt = tmp_path / "mnt"
    if not _root_can_mount(mnt):
        pytest.skip("needs root and mount (tmpfs) to make a full disk")
    try:
        subprocess.run(["mount", "-o", "remount,size=64k", str(mnt)], check=True)
        recipe = make_recipe({"output_dir": str(mnt / "runs"), "teacher": {"model": {"widths": [256]}}})
        line = _one_line(cli("train", recipe))
        run = mnt / "runs" / "tiny"
        assert str(run / "teacher") in line and "No space left" in line, line
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
        assert not (run / "teacher" / "model.pt").exists()
        stages = json.loads((run / "manifest.json").read_text())["stages"]
        assert stages["teacher"]["status"] != "running"
    finally:
        _umount(mnt)


# --- item 8 -----------------------------------------------------------------------------------------

def _recipe_with(edit) -> dict:
    recipe = copy.deepcopy(deep_update(TINY_RECIPE, KD))
    edit(recipe)
    return recipe


def _rename(section_path: str, old: str, new: str):
    def edit(recipe: dict) -> None:
        node = recipe
        for key in filter(None, section_path.split(".")):
            node = node[int(key)] if key.isdigit() else node[key]
        node[new] = node.pop(old)
    return edit


@pytest.mark.parametrize("where,old,new,field", [
    ("teacher.train", "epochs", "epoch", "teacher.train.epoch"),
    ("", "teacher", "teachr", "teachr"),
    ("student.model", "name", "nme", "student.model.nme"),
    ("data", "dataset", "datset", "data.datset"),
    ("student.model", "widths", "widht", "student.model.widht"),
    ("distill.losses.0", "temperature", "temprature", "distill.losses[0].temprature"),
])
def test_a_misspelt_key_is_named_with_the_closest_valid_one(where, old, new, field, make_recipe, cli):
    path = make_recipe(raw=yaml.safe_dump(_recipe_with(_rename(where, old, new)), sort_keys=False))
    line = _one_line(cli("recipe", "check", path))
    assert f"{field}: unknown key" in line and f"did you mean {old!r}?" in line, line
    assert "required field is missing" not in line


def test_install_hint_keeps_its_extras_brackets(trained_run, tmp_path, cli, monkeypatch):
    """rich reads `[modelopt]` as a style tag and drops it unless escaped."""
    import kdedge.extras

    real = kdedge.extras._installed
    monkeypatch.setattr(kdedge.extras, "_installed", lambda module: False if module == "modelopt" else real(module))
    run = _copy_run(trained_run, tmp_path)
    result = cli("export", run, "--int8", "--models", "teacher")
    assert result.exit_code == 0, result.stderr
    assert "kdedge[modelopt]" in result.stdout, result.stdout


def test_help_usage_and_version():
    from kdedge import __version__
    from kdedge.cli import app

    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"kdedge {__version__}"
    for command, usage in ((["train"], "kdedge train [OPTIONS] RECIPE"), (["export"], "kdedge export [OPTIONS] RUN"),
                           (["recipe", "check"], "kdedge recipe check [OPTIONS] RECIPE")):
        shown = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0
        text = " ".join(shown.stdout.split())
        assert usage.removeprefix("kdedge") in text, text  # (the runner's program name is not kdedge)
        assert "<bool>" not in text and "{" not in text, text


def test_progress_lines_name_the_baseline_and_ctrl_c_before_an_epoch_promises_nothing(tmp_path, make_recipe,
                                                                                      cli, monkeypatch):
    recipe = make_recipe(KD)
    run = tmp_path / "runs" / "tiny"
    interrupt_kd_step_at(monkeypatch, 1)  # the student's very first step
    result = cli("distill", recipe)
    assert result.exit_code == 130, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "before any epoch finished" in message and "nothing of student was checkpointed" in message, message
    assert "--resume to continue" not in message
    assert not (run / "student" / "checkpoint.pt").exists()  # the oracle: what is really on disk
    assert json.loads((run / "manifest.json").read_text())["stages"]["student"]["status"] == "interrupted"


def test_ctrl_c_after_an_epoch_names_the_checkpointed_epoch(tmp_path, make_recipe, cli, monkeypatch):
    recipe = make_recipe(KD)
    interrupt_kd_step_at(monkeypatch, 25)  # digits: 18 batches per epoch, so inside epoch 2
    result = cli("distill", recipe)
    assert result.exit_code == 130
    saved = torch.load(tmp_path / "runs" / "tiny" / "student" / "checkpoint.pt", weights_only=True)["epoch"]
    assert f"student; epoch {saved}/3 is checkpointed" in result.stderr and "--resume" in result.stderr


def test_baseline_epochs_are_labelled_baseline(tmp_path, make_recipe, cli):
    result = cli("distill", make_recipe(KD))
    assert result.exit_code == 0, result.stderr
    epochs = [line.split()[0] for line in result.stdout.splitlines() if " epoch " in line and "/3" in line]
    assert epochs == ["teacher"] * 3 + ["student"] * 3 + ["baseline"] * 3, epochs


def test_show_lists_exports_and_the_bench_report(trained_run, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich: wide enough that no cell is cut
    run = _copy_run(trained_run, tmp_path)
    shown = cli("show", run)
    assert shown.exit_code == 0 and "exports: none yet" in shown.stdout and "bench: no report yet" in shown.stdout
    assert cli("export", run, "--models", "teacher").exit_code == 0
    assert cli("bench", run, "--runs", "1", "--mc-samples", "0", "--runtime", "torch,ort").exit_code == 0
    shown = cli("show", run)
    assert shown.exit_code == 0, shown.stderr
    entry = json.loads((run / "manifest.json").read_text())["exports"]["teacher"]["onnx"]
    report = json.loads((run / "bench" / "report.json").read_text())
    text = " ".join(shown.stdout.split())
    assert entry["file"] in text and f"{entry['parity']['agreement']:.2%}" in text
    assert f"{report['models']['teacher']['runtimes']['ort']['accuracy']:.4f}" in text
    assert str(run / "bench" / "report.md") in text


def test_relative_paths_rule_data_from_the_recipe_runs_from_the_working_directory(tmp_path, cli, monkeypatch):
    from kdedge.recipe import load_recipe, recipe_json_schema

    recipes = tmp_path / "recipes"
    (recipes / "data").mkdir(parents=True)
    recipe = deep_update(TINY_RECIPE, {"output_dir": "out", "data": {"root": "data"}})
    (recipes / "r.yaml").write_text(yaml.safe_dump(recipe))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_recipe(Path("../recipes/r.yaml"))
    assert loaded.data.root == (recipes / "data").resolve()
    assert loaded.output_dir == Path("out")  # relative to the working directory, resolved there
    checked = cli("recipe", "check", "../recipes/r.yaml")
    assert checked.exit_code == 0 and "run out/tiny" in checked.stdout
    props = recipe_json_schema()
    assert "working directory" in props["properties"]["output_dir"]["description"]
    assert "relative to the recipe file" in props["$defs"]["DataConfig"]["properties"]["root"]["description"]
