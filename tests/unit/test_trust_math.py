"""DKD as published (issue 13, item 10): CE + min(epoch / warm-up, 1) * DKD, epochs counted from 1 as in
mdistiller's trainer; the warm-up is a per-loss recipe field, part of the recipe hash, and a resumed run
weighs every epoch as an uninterrupted one does. Oracles: the loss written out with torch ops here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.recipe import load_recipe, recipe_from_dict
from kdedge.run import open_run
from kdedge.stages.context import StageContext
from kdedge.stages.distill import distill
from kdedge.stages.students import kd_terms
from kdedge.train.distill_step import make_distill_step

from tests.conftest import REPO, TINY_RECIPE, deep_update, interrupt_kd_step_at

# the paper's CIFAR setting (Zhao et al. 2022; mdistiller configs): CE weight 1, alpha 1, beta 8, T 4
DKD_PAPER = {"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0}
DKD = deep_update(TINY_RECIPE, {
    "teacher": {"model": {"widths": [64]}},
    "student": {"model": {"name": "mlp", "widths": [16]},
                "train": {"epochs": 3, "batch_size": 64, "optimizer": {"lr": 0.1}, "augment": False}},
    "distill": {"losses": [{"name": "ce"}, {**DKD_PAPER, "warmup_epochs": 3}], "baseline": False},
})


def dkd_by_hand(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, T: float) -> torch.Tensor:
    """mdistiller's dkd_loss, written out: TCKD on [p_target, 1 - p_target], NCKD on the renormalised
    non-target classes, KLs summed over classes, batch mean, times T^2."""
    gt = F.one_hot(y, s.shape[1]).bool()
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    bs = torch.stack([ps[gt], ps.masked_fill(gt, 0).sum(1)], 1)
    bt = torch.stack([pt[gt], pt.masked_fill(gt, 0).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean()
    rest_s = F.log_softmax(s / T - 1000.0 * gt, 1)
    rest_t = F.log_softmax(t / T - 1000.0 * gt, 1)
    nckd = (rest_t.exp() * (rest_t - rest_s)).masked_fill(gt, 0).sum(1).mean()
    return (alpha * tckd + beta * nckd) * T * T


def test_step_loss_is_ce_plus_warmed_up_dkd_by_hand() -> None:
    recipe = recipe_from_dict(deep_update(DKD, {"distill": {"losses": [{"name": "ce"},
                                                                        {**DKD_PAPER, "warmup_epochs": 4}]},
                                                "student": {"train": {"epochs": 8}}}))
    terms = kd_terms(recipe, None)
    assert [(t.name, t.weight, t.warmup_epochs) for t in terms] == [("ce", 1.0, 0), ("dkd", 1.0, 4)]
    g = torch.Generator().manual_seed(0)
    student, teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.randn(32, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    step, _ = make_distill_step(student, teacher, terms, label_mode="labels", cache=None, probe=x[:2])
    with torch.no_grad():
        s, t = student(x), teacher(x)
    ce, dkd = F.cross_entropy(s, y), dkd_by_hand(s, t, y, 1.0, 8.0, 4.0)
    for epoch, factor in [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (5, 1.0), (8, 1.0)]:
        step.start_epoch(epoch)
        loss, logits = step(x, y, torch.arange(32))
        assert torch.equal(logits, s)
        torch.testing.assert_close(loss, ce + min(epoch / 4, 1.0) * dkd, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(loss, ce + factor * dkd, rtol=1e-6, atol=1e-7)


def test_a_step_never_told_its_epoch_refuses_to_skip_the_warm_up() -> None:
    recipe = recipe_from_dict(DKD)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    step, _ = make_distill_step(model, model, kd_terms(recipe, None), label_mode="labels", cache=None,
                                probe=torch.zeros(2, 1, 8, 8))
    with pytest.raises(RuntimeError, match="never told the epoch"):
        step(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), torch.arange(4))
    with pytest.raises(ValueError, match="count from 1"):
        step.start_epoch(0)


def test_warmup_is_part_of_the_recipe_hash() -> None:
    base = recipe_from_dict(deep_update(DKD, {"distill": {"losses": [{"name": "ce"}, DKD_PAPER]}}))
    explicit_zero = recipe_from_dict(deep_update(DKD, {"distill": {"losses": [{"name": "ce"},
                                                                               {**DKD_PAPER, "warmup_epochs": 0}]}}))
    warm = recipe_from_dict(DKD)
    assert explicit_zero.hash == base.hash  # no warm-up is spelled as before the field existed
    assert warm.hash != base.hash  # a warm-up shapes the weights
    assert warm.to_dict()["distill"]["losses"][1]["warmup_epochs"] == 3
    assert "warmup_epochs" not in base.to_dict()["distill"]["losses"][1]
    with pytest.raises(KdedgeError, match=r"distill.losses\[1\].warmup_epochs \(9\) is longer than student"):
        recipe_from_dict(deep_update(DKD, {"distill": {"losses": [{"name": "ce"}, {**DKD_PAPER, "warmup_epochs": 9}]}}))
    with pytest.raises(KdedgeError, match="warmup_epochs"):
        recipe_from_dict(deep_update(DKD, {"distill": {"losses": [{"name": "ce", "warmup_epochs": -1}]}}))


def _run(raw: dict, tmp: Path) -> tuple[Path, dict]:
    recipe = recipe_from_dict(deep_update(raw, {"output_dir": str(tmp / "runs")}))
    stages = distill(recipe, open_run(recipe, None, force=False), StageContext())
    return tmp / "runs" / recipe.name, stages


def _weights(run: Path) -> dict:
    return torch.load(run / "student" / "model.pt", weights_only=True)["state_dict"]


def test_warm_up_shapes_training_and_resumes_bitwise(tmp_path: Path, monkeypatch) -> None:
    run, stages = _run(DKD, tmp_path / "full")
    losses = stages["student"]["kd"]["losses"]
    assert [(entry["name"], entry.get("warmup_epochs")) for entry in losses] == [("ce", None), ("dkd", 3)]

    # interrupted in the student's second epoch (digits: 18 batches of 64 per epoch), then resumed
    real = interrupt_kd_step_at(monkeypatch, 25)
    recipe = recipe_from_dict(deep_update(DKD, {"output_dir": str(tmp_path / "cut" / "runs")}))
    with pytest.raises(KeyboardInterrupt):
        distill(recipe, open_run(recipe, None, force=False), StageContext())
    cut = tmp_path / "cut" / "runs" / "tiny"
    assert torch.load(cut / "student" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr("kdedge.stages.students.make_distill_step", real)
    distill(recipe, open_run(recipe, None, force=False), StageContext(), resume=True)
    full, resumed = _weights(run), _weights(cut)
    assert all(torch.equal(full[k], resumed[k]) for k in full)

    # the warm-up is not a no-op: without it the same recipe trains other weights
    _, _ = _run(deep_update(DKD, {"distill": {"losses": [{"name": "ce"}, DKD_PAPER]}}), tmp_path / "cold")
    cold = _weights(tmp_path / "cold" / "runs" / "tiny")
    assert any(not torch.equal(full[k], cold[k]) for k in full)


def test_shipped_dkd_recipes_and_readme_use_the_papers_setting() -> None:
    shipped = [p for p in sorted((REPO / "recipes").glob("*.yaml")) if "dkd" in p.read_text()]
    assert shipped, "a shipped recipe demonstrates DKD"
    for path in shipped:
        recipe = load_recipe(path)
        names = [loss.name for loss in recipe.distill.losses]
        assert "ce" in names, f"{path.name}: DKD as published trains CE + DKD"
        dkd = recipe.distill.losses[names.index("dkd")]
        assert dkd.warmup_epochs >= 1 and dkd.options == {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}, path.name
        assert recipe.distill.losses[names.index("ce")].weight == 1.0
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("A distillation recipe adds a student"):readme.index("Teacher outputs are computed once")]
    entries = [yaml.safe_load(line.split("#")[0].strip().lstrip("- ")) for line in block.splitlines()
               if "{name: dkd" in line or "{name: ce" in line]
    assert {"name": "ce"} in entries
    assert {"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20} in entries
