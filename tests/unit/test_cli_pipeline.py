"""train -> reuse -> calibrate -> show through the CLI, on real data, checked against independent
recomputation from the saved files."""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import torch

from kdedge.inference import predict_logits
from kdedge.temperature import fit_temperature
from kdedge.metrics import ece
from kdedge.modelfile import load_model
from kdedge.recipe import load_recipe
from kdedge.stages.data import prepare_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_train_reuse_force_calibrate_show(tmp_path: Path, make_recipe, cli):
    recipe_path = make_recipe()
    run = tmp_path / "runs" / "tiny"

    result = cli("train", recipe_path)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recipe_hash"] == load_recipe(recipe_path).hash
    assert manifest["data"]["input_shape"] == [1, 8, 8] and manifest["data"]["num_classes"] == 10
    assert manifest["versions"]["torch"] == metadata.version("torch")
    assert manifest["seeds"] == {"seed": 0, "split_seed": 0}
    teacher = manifest["stages"]["teacher"]
    assert teacher["status"] == "complete" and teacher["epochs"] == 3 and teacher["train_time_s"] > 0

    metrics = json.loads((run / "teacher" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert {"train_accuracy", "val_accuracy", "test_accuracy", "val_nll", "test_nll", "epoch_time_s",
            "train_images_per_s"} <= metrics["history"][0].keys()

    # the saved model reproduces the reported test accuracy (independent recomputation)
    model, spec = load_model(run / "teacher" / "model.pt", fix="")
    data = prepare_data(load_recipe(recipe_path))
    logits = predict_logits(model, data.training.test, data.training.stats, batch_size=256,
                            device=torch.device("cpu"))
    acc = (logits.argmax(1) == data.training.test.labels).double().mean().item()
    assert abs(acc - teacher["test"]["accuracy"]) < 1e-12 and acc > 0.85

    # a second call reuses the finished teacher
    mtime = (run / "teacher" / "model.pt").stat().st_mtime_ns
    again = cli("train", recipe_path)
    assert again.exit_code == 0 and "reusing the finished teacher" in again.stdout
    assert (run / "teacher" / "model.pt").stat().st_mtime_ns == mtime

    # calibrate: T* is the NLL fit on the validation split, recomputed here independently
    cal = cli("calibrate", run)
    assert cal.exit_code == 0, cal.stderr
    calibration = json.loads((run / "teacher" / "calibration.json").read_text())
    val_logits = predict_logits(model, data.training.val, data.training.stats, batch_size=256,
                                device=torch.device("cpu"))
    assert abs(calibration["temperature"] - fit_temperature(val_logits, data.training.val.labels)) < 1e-9
    assert calibration["fitted_on"] == "val"
    before = ece(logits.softmax(1), data.training.test.labels)
    after = ece((logits / calibration["temperature"]).softmax(1), data.training.test.labels)
    assert abs(calibration["before"]["test"]["ece"] - before) < 1e-6
    assert abs(calibration["after"]["test"]["ece"] - after) < 1e-6
    assert (run / "teacher" / "reliability.png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((run / "manifest.json").read_text())["temperatures"]["teacher"] == calibration["temperature"]

    shown = cli("show", run)
    assert shown.exit_code == 0 and "teacher" in shown.stdout and "mlp" in shown.stdout and "T*" in shown.stdout

    # --force retrains from scratch
    forced = cli("train", recipe_path, "--force")
    assert forced.exit_code == 0 and "reusing" not in forced.stdout
    assert (run / "teacher" / "model.pt").stat().st_mtime_ns != mtime
    assert json.loads((run / "manifest.json").read_text())["temperatures"] == {}


def test_kdedge_data_env_is_searched(tmp_path: Path, make_recipe, cli):
    import kdedge.data

    embedded = Path(kdedge.data.__file__).parent / "embedded"
    root = tmp_path / "data"
    root.mkdir()
    for f in embedded.glob("*-ubyte.gz"):
        shutil.copy(f, root / f.name)
    recipe = make_recipe({"data": {"dataset": "fashion_mnist"}, "teacher": {"train": {"epochs": 1}}})
    from typer.testing import CliRunner

    from kdedge.cli import app

    result = CliRunner(env={"KDEDGE_DATA": str(root)}).invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())
    assert manifest["data"]["source"].startswith(str(root)) and manifest["data"]["n_test"] == 1000


def test_list_and_schema(cli):
    models = cli("list", "models")
    assert models.exit_code == 0 and "resnet20" in models.stdout.split()
    datasets = cli("list", "datasets")
    assert "fashion_mnist_small" in datasets.stdout.split()
    schema = cli("recipe", "schema")
    assert json.loads(schema.stdout)["title"] == "Recipe"
    bad = cli("list", "widgets")
    assert bad.exit_code == 2 and "allowed: models, datasets, losses, formats, runtimes" in bad.stderr
