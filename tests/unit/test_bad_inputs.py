"""The bad-input corpus: every case gets one line on stderr naming the file and the field or thing at
fault, exit code 2, no traceback, and leaves the directory exactly as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.conftest import TINY_RECIPE, deep_update


@dataclass
class Case:
    id: str
    # builds the inputs in tmp_path and returns the CLI arguments
    setup: Callable[[Path, Callable], list[str]]
    expect: tuple[str, ...]  # substrings the one-line error must contain


def _recipe(overrides=None, *, raw=None):
    def setup(tmp: Path, make) -> list[str]:
        return ["train", str(make(overrides, raw=raw))]
    return setup


def _trained(then: Callable[[Path, Path], list[str]], overrides=None):
    """Train the tiny recipe first, then build the failing call from (tmp, recipe path)."""
    def setup(tmp: Path, make) -> list[str]:
        path = make(overrides)
        _run_ok(["train", str(path)])
        return then(tmp, path)
    return setup


def _run_ok(args: list[str]) -> None:
    from typer.testing import CliRunner

    from kdedge.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr


def _corrupt_idx(tmp: Path, make) -> list[str]:
    root = tmp / "fmnist"
    root.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (root / name).write_bytes(b"\x00\x00\x08\x03garbage that is not an idx payload")
    return ["train", str(make({"data": {"dataset": "fashion_mnist", "root": str(root)}}))]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_checkpoint(tmp: Path, path: Path) -> list[str]:
    ckpt = tmp / "runs" / "tiny" / "teacher" / "checkpoint.pt"
    _truncate(ckpt)
    (tmp / "runs" / "tiny" / "teacher" / "model.pt").unlink()  # as if killed before the end
    _drop_teacher_record(tmp)
    return ["train", str(path), "--resume"]


def _drop_teacher_record(tmp: Path) -> None:
    import json

    manifest = tmp / "runs" / "tiny" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["stages"].pop("teacher")
    manifest.write_text(json.dumps(data))


def _unfinished_without_resume(tmp: Path, path: Path) -> list[str]:
    (tmp / "runs" / "tiny" / "teacher" / "model.pt").unlink()
    _drop_teacher_record(tmp)
    return ["train", str(path)]


def _other_recipe(tmp: Path, path: Path) -> list[str]:
    other = tmp / "other.yaml"
    other.write_text(yaml.safe_dump(deep_update(yaml.safe_load(path.read_text()),
                                                {"teacher": {"train": {"epochs": 4}}})))
    return ["train", str(other)]


def _corrupt_model_for_calibrate(tmp: Path, path: Path) -> list[str]:
    _truncate(tmp / "runs" / "tiny" / "teacher" / "model.pt")
    return ["calibrate", str(tmp / "runs" / "tiny")]


def _corrupt_manifest(tmp: Path, path: Path) -> list[str]:
    (tmp / "runs" / "tiny" / "manifest.json").write_text("{not json")
    return ["calibrate", str(tmp / "runs" / "tiny")]


def _output_dir_is_a_file(tmp: Path, make) -> list[str]:
    (tmp / "afile").write_text("not a directory")
    return ["train", str(make({"output_dir": str(tmp / "afile")}))]


def _foreign_dir_with_force(tmp: Path, make) -> list[str]:
    foreign = tmp / "runs" / "tiny"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("not made by kdedge")
    return ["train", str(make()), "--force"]


def _image_folder(break_it: Callable[[Path], None]):
    """A tiny image folder next to the recipe, broken by `break_it`, trained with `kdedge train`."""
    def setup(tmp: Path, make) -> list[str]:
        from PIL import Image

        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                (tmp / "imgs" / split / cls).mkdir(parents=True)
                for i in range(3):
                    Image.new("RGB", (9, 7), (i * 50, 9, 9)).save(tmp / "imgs" / split / cls / f"{i}.png")
        break_it(tmp / "imgs")
        return ["train", str(make({"data": {"dataset": "image_folder", "root": "imgs", "image_size": 8}}))]
    return setup


CASES = [
    Case("unknown-top-level-key", _recipe({"epochs": 3}), ("recipe.yaml", "epochs: unknown key", "allowed keys here")),
    Case("unknown-nested-key", _recipe({"teacher": {"train": {"epoch": 3}}}),
         ("teacher.train.epoch: unknown key", "epochs")),
    Case("wrong-type", _recipe({"teacher": {"train": {"epochs": "ten"}}}), ("teacher.train.epochs", "integer")),
    Case("negative-epochs", _recipe({"teacher": {"train": {"epochs": -1}}}), ("teacher.train.epochs", "greater than")),
    Case("zero-batch", _recipe({"teacher": {"train": {"batch_size": 0}}}), ("teacher.train.batch_size",)),
    Case("unknown-model", _recipe({"teacher": {"model": {"name": "resnet21"}}}),
         ("teacher.model.name: unknown model 'resnet21'", "resnet20")),
    Case("unknown-model-option", _recipe({"teacher": {"model": {"widths": [8], "depth": 3}}}),
         ("teacher.model.depth: unknown key", "widths (model option), dropout (model option)")),
    Case("bad-model-value", _recipe({"teacher": {"model": {"dropout": 1.5}}}), ("teacher.model.dropout",)),
    Case("unknown-dataset", _recipe({"data": {"dataset": "imagenet"}}), ("data.dataset: unknown dataset", "digits")),
    Case("missing-data-root", _recipe({"data": {"root": "/nonexistent/kdedge-data"}}),
         ("data.root", "/nonexistent/kdedge-data", "does not exist")),
    Case("val-fraction-out-of-range", _recipe({"data": {"val_fraction": 1.5}}), ("data.val_fraction", "less than 1")),
    Case("unknown-optimizer", _recipe({"teacher": {"train": {"optimizer": {"name": "adam"}}}}),
         ("teacher.train.optimizer.name", "'sgd' or 'adamw'")),
    Case("bad-device", _recipe({"device": "tpu"}), ("device", "'auto', 'cpu' or 'cuda'")),
    Case("bad-run-name", _recipe({"name": "../escape"}), ("name", "pattern")),
    Case("invalid-yaml", _recipe(raw="name: [unclosed\n"), ("recipe.yaml", "not valid YAML")),
    Case("not-a-mapping", _recipe(raw="- just\n- a list\n"), ("recipe.yaml", "must be a YAML mapping")),
    Case("missing-teacher", _recipe(raw="name: x\ndata: {dataset: digits}\n"), ("teacher: required field",)),
    Case("recipe-not-found", lambda tmp, make: ["train", str(tmp / "nope.yaml")], ("nope.yaml", "not found")),
    Case("corrupt-idx-file", _corrupt_idx, ("train-images-idx3-ubyte",)),
    Case("truncated-checkpoint", _trained(_truncated_checkpoint), ("checkpoint.pt", "corrupt or truncated", "--force")),
    Case("unfinished-without-resume", _trained(_unfinished_without_resume), ("checkpoint.pt", "--resume")),
    Case("run-from-another-recipe", _trained(_other_recipe), ("runs/tiny", "different recipe", "--force")),
    Case("calibrate-not-a-run", lambda tmp, make: ["calibrate", str(tmp)], ("not a kdedge run directory",)),
    Case("calibrate-corrupt-model", _trained(_corrupt_model_for_calibrate), ("model.pt", "corrupt or truncated")),
    Case("corrupt-manifest", _trained(_corrupt_manifest), ("manifest.json", "corrupt manifest")),
    Case("string-for-int", _recipe({"teacher": {"train": {"epochs": "5"}}}), ("teacher.train.epochs", "integer")),
    Case("int-for-bool", _recipe({"teacher": {"train": {"augment": 1}}}), ("teacher.train.augment", "boolean")),
    Case("duplicate-key", _recipe(raw="name: a\nname: b\ndata: {dataset: digits}\n"), ("line 2", "'name' appears twice")),
    Case("warmup-longer-than-training", _recipe({"teacher": {"train": {"schedule": {"warmup_epochs": 9}}}}),
         ("teacher.train", "warmup_epochs (9.0) is longer than epochs (3)")),
    Case("milestones-out-of-range", _recipe({"teacher": {"train": {"schedule": {"name": "step", "milestones": [2, 7]}}}}),
         ("teacher.train", "milestones must be increasing epochs in 1..2")),
    Case("data-key-typo", _recipe({"data": {"val_fracton": 0.2}}), ("data.val_fracton: unknown key", "val_fraction")),
    Case("dataset-option-out-of-range", _recipe({"data": {"dataset": "image_folder", "root": "/", "image_size": 0}}),
         ("data.image_size", "greater than or equal to 4")),
    Case("image-folder-empty-class", _image_folder(lambda r: (r / "train" / "owl").mkdir()),
         ("imgs/train/owl", "no images", "remove the folder")),
    Case("image-folder-corrupt-file", _image_folder(lambda r: (r / "test" / "dog" / "x.jpg").write_bytes(b"\xff\xd8no")),
         ("imgs/test/dog/x.jpg", "cannot read image", "bad_files: skip")),
    Case("image-folder-class-missing-from-test", _image_folder(lambda r: (r / "train" / "owl").mkdir() or
                                                                 (r / "train" / "owl" / "a.png").write_bytes(
                                                                     (r / "train" / "cat" / "0.png").read_bytes())),
         ("imgs/test", "owl", "add test images")),
    Case("calibrate-given-a-file", lambda tmp, make: ["calibrate", str(make())], ("recipe.yaml", "not a kdedge run")),
    Case("output-dir-is-a-file", _output_dir_is_a_file, ("afile", "is a file", "output_dir")),
    Case("force-never-deletes-a-foreign-dir", _foreign_dir_with_force, ("runs/tiny", "not a kdedge run", "move")),
    Case("cuda-without-gpu", lambda tmp, make: ["train", str(make()), "--device", "cuda"], ("cuda", "--device cpu")),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory (an empty run directory left behind counts as written)."""
    return {str(p.relative_to(root)) + ("/" if p.is_dir() else ""): (p.stat().st_size if p.is_file() else 0,
                                                                      p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_gets_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path, make_recipe, cli):
    if case.id == "cuda-without-gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present, so --device cuda is valid here")
    args = case.setup(tmp_path, make_recipe)
    before = _snapshot(tmp_path)
    result = cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdedge: error: "), result.stderr
    for needle in case.expect:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert "Traceback" not in result.stdout + result.stderr
    assert _snapshot(tmp_path) == before, "a failing command wrote or changed files"


def test_corpus_is_large_enough():
    assert len(CASES) >= 15


def test_real_console_script_prints_one_line_and_exits_2(tmp_path: Path):
    """Through the installed entry point in a fresh process, not the in-process runner."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deep_update(TINY_RECIPE, {"teacher": {"train": {"epochs": -3}}})))
    exe = Path(sys.executable).with_name("kdedge")
    env = {**os.environ, "COLUMNS": "60"}
    proc = subprocess.run([str(exe), "train", str(bad)], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "teacher.train.epochs" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()
    # usage errors (missing argument, bad option value) are one line too, not a help box
    for args in (["train"], ["train", str(bad), "--threads", "0"], ["no-such-command"]):
        usage = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert usage.returncode == 2 and usage.stderr.startswith("kdedge: error: "), usage.stderr
        assert usage.stderr.count("\n") == 1, usage.stderr


def test_diverging_training_stops_with_one_line_naming_the_lr(tmp_path: Path):
    """A loss that turns non-finite stops training with a KdedgeError naming the lr field, before the
    epoch's checkpoint is written (injected NaN: real divergence is too seed-dependent to test)."""
    import torch

    from kdedge.errors import KdedgeError
    from kdedge.models import build_model
    from kdedge.recipe import recipe_from_dict
    from kdedge.stages.data import prepare_data
    from kdedge.train import fit, supervised_step

    recipe = recipe_from_dict(TINY_RECIPE)
    data = prepare_data(recipe)
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8, widths=[8])
    step = supervised_step(model)
    calls = {"n": 0}

    def nan_in_epoch_2(x, y, idx):
        calls["n"] += 1
        loss, logits = step(x, y, idx)
        return (loss * float("nan") if calls["n"] > 25 else loss), logits

    with pytest.raises(KdedgeError, match=r"teacher: training diverged .* epoch 2.*teacher\.train\.optimizer\.lr"):
        fit(model, nan_in_epoch_2, data=data.training, cfg=recipe.teacher.train, seed=0,
            device=torch.device("cpu"), out_dir=tmp_path, fingerprint="f")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1  # epoch 2 never saved
