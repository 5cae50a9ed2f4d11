"""Stage: temperature scaling of the teacher (`kdedge calibrate`), fitted on the validation split only.

Writes T* with ECE/NLL before and after to <run>/teacher/calibration.json (the file name runs have
always had) and a reliability diagram beside it; the math is in kdedge/temperature.py.
"""

from __future__ import annotations

from typing import Any

from kdedge.errors import KdedgeError
from kdedge.inference import predict_logits
from kdedge.io import write_json
from kdedge.layout import RELIABILITY_FILE, TEACHER, TEMPERATURE_FILE
from kdedge.metrics import calibration_bins
from kdedge.stage_model import load_stage_model
from kdedge.plots import reliability_diagram
from kdedge.run import RunDir
from kdedge.stages.context import StageContext
from kdedge.stages.data import PreparedData, check_same_data, prepare_data
from kdedge.temperature import apply_temperature, calibrate

N_BINS = 10


def calibrate_teacher(run: RunDir, ctx: StageContext, data: PreparedData | None = None) -> dict[str, Any]:
    """Fit T* on the validation split. `data` may be passed when the caller has already loaded it."""
    recipe = run.recipe()
    record = run.stage_record(TEACHER)
    if not record or record.get("status") != "complete":
        raise KdedgeError(f"{run.root}: the teacher is not trained yet; run `kdedge train` on its recipe first")
    model, _ = load_stage_model(run, TEACHER, fix="retrain the teacher with `kdedge train RECIPE --force`")
    device = ctx.device(recipe.device)
    model.to(device)
    data = data or prepare_data(recipe, ctx.data_roots)
    check_same_data(run.read_manifest().get("data"), data, run.manifest_path)
    batch = recipe.teacher.batch_size
    val = data.training.val
    test = data.training.test
    val_logits = predict_logits(model, val, data.training.stats, batch_size=batch, device=device)
    test_logits = predict_logits(model, test, data.training.stats, batch_size=batch, device=device)

    result = calibrate(val_logits, val.labels, test_logits, test.labels, n_bins=N_BINS)
    t = result.temperature
    bins = {
        "before": calibration_bins(test_logits.softmax(1), test.labels, N_BINS),
        "after": calibration_bins(apply_temperature(test_logits, t).softmax(1), test.labels, N_BINS),
    }
    out_dir = run.stage_dir(TEACHER)
    payload = {"temperature": t, "fitted_on": "val", "n_val": len(val), "n_test": len(test), "n_bins": N_BINS,
               "before": result.before, "after": result.after,
               "test_bins": {k: v.to_dict() for k, v in bins.items()}}
    reliability_diagram({"teacher (T=1)": bins["before"], f"teacher (T*={t:.3f})": bins["after"]},
                        out_dir / RELIABILITY_FILE, title=f"Teacher reliability on test — {recipe.name}")
    write_json(out_dir / TEMPERATURE_FILE, payload)
    run.update_manifest(temperatures={"teacher": t},
                        stages={"calibration": {"status": "complete", "temperature": t,
                                                "test_ece_before": result.before["test"]["ece"],
                                                "test_ece_after": result.after["test"]["ece"],
                                                "test_nll_before": result.before["test"]["nll"],
                                                "test_nll_after": result.after["test"]["nll"]}})
    return payload
