"""mc_kd / mc_kd_student: the losses against hand-written torch, the cached teacher MC mean against
kdedge.uncertainty's, recipe errors, and a tiny end-to-end distill on the embedded data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdedge.data import ImageData
from kdedge.errors import KdedgeError
from kdedge.inputs import InputStats, normalise
from kdedge.losses import LOSSES
from kdedge.losses.mc_kd import mc_kd_loss
from kdedge.losses.mc_kd_student import mc_kd_student_loss
from kdedge.models import build_model
from kdedge.recipe import recipe_from_dict
from kdedge.train.distill_step import MC_KD_STREAM, teacher_outputs
from kdedge.uncertainty import mc_dropout_predict

from tests.conftest import TINY_RECIPE, deep_update


def _tempered(p: torch.Tensor, t: float) -> torch.Tensor:
    q = p ** (1.0 / t)  # softmax(log p / T), written the other way round
    return q / q.sum(1, keepdim=True)


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(7)
    n_teacher, k, b, c = 6, 4, 5, 10
    teacher_passes = torch.randn(n_teacher, b, c, generator=g, dtype=torch.float64) * 3
    p_bar = torch.softmax(teacher_passes, 2).mean(0)  # the explicit MC average
    student_passes = torch.randn(k, b, c, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (b,), generator=g)
    return p_bar, student_passes, labels


@pytest.mark.parametrize("t", [1.0, 2.5])
@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_mc_kd_equals_hand_written_kl_and_ce(tensors, t, alpha):
    p_bar, student_passes, labels = tensors
    s = student_passes[0]
    target = _tempered(p_bar, t)
    oracle = alpha * t * t * F.kl_div(F.log_softmax(s / t, 1), target, reduction="batchmean")
    if alpha < 1:
        oracle = oracle + (1 - alpha) * F.cross_entropy(s, labels)
    got = mc_kd_loss(s, p_bar, labels, alpha=alpha, temperature=t, samples=6, seed=0)
    assert torch.allclose(got, oracle, rtol=1e-10, atol=1e-12)
    # unlabeled: the soft term alone, at full weight
    soft = t * t * F.kl_div(F.log_softmax(s / t, 1), target, reduction="batchmean")
    assert torch.allclose(mc_kd_loss(s, p_bar, None, alpha=alpha, temperature=t), soft, rtol=1e-10)


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_mc_kd_student_is_kl_between_the_averaged_distributions(tensors, t):
    p_bar, student_passes, labels = tensors
    alpha = 0.6
    q_bar = torch.softmax(student_passes / t, 2).mean(0)  # the student's explicit MC average
    kl = F.kl_div(q_bar.log(), _tempered(p_bar, t), reduction="batchmean") * t * t
    ce = torch.stack([F.cross_entropy(s, labels) for s in student_passes]).mean()
    got = mc_kd_student_loss(student_passes, p_bar, labels, alpha=alpha, temperature=t, student_samples=4)
    assert torch.allclose(got, alpha * kl + (1 - alpha) * ce, rtol=1e-10, atol=1e-12)
    # not the mean of per-pass KLs (what imitating the teacher pass by pass would give)
    per_pass = torch.stack([F.kl_div(F.log_softmax(s / t, 1), _tempered(p_bar, t), reduction="batchmean")
                            for s in student_passes]).mean() * t * t
    assert not torch.allclose(kl, per_pass)


def test_student_matching_the_teacher_passes_has_zero_soft_loss():
    g = torch.Generator().manual_seed(1)
    passes = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    p_bar = torch.softmax(passes, 2).mean(0)
    loss = mc_kd_student_loss(passes, p_bar, None, alpha=1.0, temperature=1.0)
    assert abs(float(loss)) < 1e-12


def test_cached_mc_mean_is_kdedge_uncertainty_mc_mean():
    torch.manual_seed(0)
    teacher = build_model("cnn", in_channels=1, num_classes=10, image_size=12, channels=[4, 8], dropout=0.4).eval()
    g = torch.Generator().manual_seed(3)
    data = ImageData(torch.randint(0, 256, (37, 1, 12, 12), generator=g, dtype=torch.uint8), torch.zeros(37, dtype=torch.long))
    stats = InputStats((0.4,), (0.3,))
    cache = teacher_outputs(teacher, data, stats, [], batch_size=16, device=torch.device("cpu"),
                            mc=((9, 5, "mean_probs"), (3, 1, "mean_probs"), (9, 5, "mean_log_probs")))
    x = torch.from_numpy(normalise(data.images.numpy(), stats))
    for samples, seed in ((9, 5), (3, 1)):
        oracle = mc_dropout_predict(teacher, x, samples=samples, seed=seed, stream=MC_KD_STREAM, batch_size=16)
        assert torch.allclose(cache.mc_targets[(samples, seed, "mean_probs")], oracle.mean_probs, atol=1e-6)
    # the MC mean is not the deterministic softmax (the dropout did something)
    assert not torch.allclose(cache.mc_targets[(9, 5, "mean_probs")], torch.softmax(cache.logits, 1), atol=1e-3)
    # the mean log-probabilities, from the same 9 passes: by Jensen below the log of the mean probabilities
    oracle = mc_dropout_predict(teacher, x, samples=9, seed=5, stream=MC_KD_STREAM, batch_size=16)
    assert torch.allclose(cache.mc_targets[(9, 5, "mean_log_probs")], oracle.mean_log_probs, atol=1e-5)
    assert (cache.mc_targets[(9, 5, "mean_log_probs")] <= cache.mc_targets[(9, 5, "mean_probs")].log() + 1e-5).all()


def test_losses_are_registered_with_their_options():
    assert {"mc_kd", "mc_kd_student", "mc_kd_dirichlet"} <= set(LOSSES.names())
    assert LOSSES.get("mc_kd_dirichlet").teacher_mc_stat == "mean_log_probs"
    assert not LOSSES.get("mc_kd_dirichlet").student_mc
    assert LOSSES.get("mc_kd").teacher_mc and not LOSSES.get("mc_kd").student_mc
    assert LOSSES.get("mc_kd_student").student_mc
    with pytest.raises(ValueError):
        LOSSES.get("mc_kd_student").params.model_validate({"student_samples": 1})


KD = deep_update(TINY_RECIPE, {
    "student": {"model": {"name": "mlp", "widths": [16], "dropout": 0.2},
                "train": {"epochs": 1, "batch_size": 64, "optimizer": {"lr": 0.1}, "augment": False}},
    "distill": {"losses": [{"name": "mc_kd", "samples": 4}], "baseline": False},
})


@pytest.mark.parametrize("side,loss", [("teacher", "mc_kd"), ("student", "mc_kd_student")])
def test_model_without_dropout_is_a_one_line_recipe_error(side, loss, make_recipe, cli):
    path = make_recipe(deep_update(KD, {side: {"model": {"dropout": 0.0}},
                                        "distill": {"losses": [{"name": loss}]}}))
    result = cli("distill", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "distill.losses[0]" in lines[0] and f"{side}.model.dropout" in lines[0], result.stderr
    assert not (path.parent / "runs").exists() or not any((path.parent / "runs").rglob("model.pt"))


def test_from_run_teacher_without_dropout_fails_before_training(tmp_path: Path):
    from kdedge.stages.students import kd_terms
    from kdedge.train.distill_step import check_mc_terms

    recipe = recipe_from_dict(deep_update(KD, {"distill": {"losses": [{"name": "hinton"}, {"name": "mc_kd"}]}}))
    teacher = build_model("mlp", in_channels=1, num_classes=10, image_size=8, widths=[8])  # no dropout
    with pytest.raises(KdedgeError, match=r"distill.losses\[1\] \(mc_kd\).*teacher.model.dropout"):
        check_mc_terms(kd_terms(recipe, None), teacher)


def test_tiny_distill_with_mc_kd_on_the_embedded_data(tmp_path: Path):
    from kdedge.run import open_run
    from kdedge.stages.context import StageContext
    from kdedge.stages.distill import distill

    raw = deep_update(KD, {
        "output_dir": str(tmp_path / "runs"), "data": {"dataset": "fashion_mnist_small", "val_fraction": 0.1},
        "teacher": {"model": {"name": "mlp", "widths": [32], "dropout": 0.3}, "train": {"epochs": 1}},
        "distill": {"losses": [{"name": "mc_kd", "samples": 6},
                               {"name": "mc_kd_student", "weight": 0.5, "samples": 6, "student_samples": 3}],
                    "transfer": {"reduced": {"per_class": 40}}, "baseline": False}})
    recipe = recipe_from_dict(raw)
    distill(recipe, open_run(recipe, None, force=False), StageContext())
    record = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())["stages"]["student"]
    assert record["status"] == "complete" and record["kd"]["teacher_cached"]
    assert [entry["name"] for entry in record["kd"]["losses"]] == ["mc_kd", "mc_kd_student"]
    assert record["kd"]["losses"][1]["student_samples"] == 3
    assert record["test"]["accuracy"] > 0.2  # learned something in one epoch of 400 images (chance: 0.1)


def test_dirichlet_nll_is_torch_dirichlet_log_prob_of_the_passes():
    """(c): the loss from the cached mean log-probabilities equals torch.distributions.Dirichlet's
    log-density of every teacher pass, averaged (the sufficient-statistic identity), and CE is mixed in."""
    from torch.distributions import Dirichlet

    from kdedge.losses.mc_kd_dirichlet import dirichlet_nll, mc_kd_dirichlet_loss

    g = torch.Generator().manual_seed(4)
    passes = torch.softmax(torch.randn(7, 5, 4, generator=g, dtype=torch.float64) * 2, 2)  # N=7, B=5, C=4
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mean_log = passes.log().mean(0)
    oracle = -torch.stack([Dirichlet(z.exp()).log_prob(passes[n]) for n in range(7)]).mean(0).mean()
    got = dirichlet_nll(z, mean_log, floor=1e-12)
    assert torch.allclose(got, oracle, rtol=1e-7)  # not 1e-10: the soft cap moves log a by ~e^(z - 20)
    y = torch.tensor([0, 1, 2, 3, 0])
    mixed = mc_kd_dirichlet_loss(z, mean_log, y, alpha=0.3, floor=1e-12)
    assert torch.allclose(mixed, 0.3 * oracle / 4 + 0.7 * F.cross_entropy(z, y), rtol=1e-7)
    assert torch.allclose(mc_kd_dirichlet_loss(z, mean_log, None, alpha=0.3, floor=1e-12), oracle / 4, rtol=1e-7)
    # the gradient matches autograd through torch's Dirichlet
    (g1,) = torch.autograd.grad(got, z)
    (g2,) = torch.autograd.grad(oracle, z)
    assert torch.allclose(g1, g2, rtol=1e-6)
    # the floor caps the target: a class no pass gives mass is treated as log(floor), not -inf
    far = torch.full((1, 4), -200.0, dtype=torch.float64)
    assert torch.allclose(dirichlet_nll(z[:1], far, floor=1e-3), dirichlet_nll(z[:1], far.clamp_min(math.log(1e-3)),
                                                                               floor=1e-9))
    with pytest.raises(ValueError, match="batch, classes"):
        dirichlet_nll(z, mean_log[:, :3], floor=1e-4)
    # a floor at 1/C or above flattens every target: refused, naming the field and a value that works
    with pytest.raises(KdedgeError, match=r"floor: 0.25 x 4 classes >= 1 - margin; set floor well below 1/4"):
        dirichlet_nll(z, mean_log, floor=0.25)


def test_dirichlet_fit_stays_finite_on_confident_float32_passes():
    """Confident passes in float32 have sum_c exp(m_c) at 1 (Jensen's gap lost to rounding), where the raw
    NLL falls without bound as the precision grows; the margin keeps a finite minimum that Adam reaches."""
    from kdedge.losses.mc_kd_dirichlet import dirichlet_nll

    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(20, 1, 10)
    logits[..., 0] = 15
    passes = torch.softmax(logits + 0.3 * torch.randn(20, 1, 10, generator=g), 2)
    m = passes.clamp_min(torch.finfo(torch.float32).tiny).log().mean(0)
    assert float(m.exp().sum()) > 1 - 1e-6
    mean = torch.full((1, 10), 1e-4)
    mean[0, 0] = 1 - 9e-4
    nll_at = lambda s: float(dirichlet_nll((s * mean).log(), m, floor=1e-4))  # noqa: E731
    assert nll_at(1e6) > nll_at(1e4)  # bounded below along the precision
    z = torch.zeros(1, 10, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    values = []
    for _ in range(2000):
        opt.zero_grad()
        loss = dirichlet_nll(z, m, floor=1e-4)
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert abs(values[-1] - values[-200]) < 1e-3 and math.isfinite(values[-1])
    a0 = float(z.detach().exp().sum())
    assert 100 < a0 < 1e5 and int(z.argmax()) == 0  # the cap is near (C - 1) / (2 * margin) = 4,500


def test_dirichlet_student_learns_the_teachers_spread():
    """Fitted alone (alpha 1) to passes drawn from a known Dirichlet, the student's concentrations recover
    its mean (softmax(z) = a / a0) and roughly its precision a0 (maximum likelihood from 400 draws)."""
    from torch.distributions import Dirichlet

    from kdedge.losses.mc_kd_dirichlet import mc_kd_dirichlet_loss

    torch.manual_seed(0)
    true = torch.tensor([[6.0, 3.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    passes = Dirichlet(true).sample((400,))  # [N, B, C]
    mean_log = passes.log().mean(0)
    z = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(1500):
        opt.zero_grad()
        mc_kd_dirichlet_loss(z, mean_log, None, alpha=1.0, floor=1e-12).backward()
        opt.step()
    a = z.detach().exp()
    assert torch.allclose(a / a.sum(1, keepdim=True), true / true.sum(1, keepdim=True), atol=0.03)
    assert torch.allclose(a.sum(1), true.sum(1), rtol=0.2)


def test_dirichlet_loss_trains_a_deterministic_student_beside_mc_kd_from_one_teacher_mc_run(tmp_path: Path):
    from kdedge.run import open_run
    from kdedge.stages.context import StageContext
    from kdedge.stages.distill import distill

    raw = deep_update(KD, {
        "output_dir": str(tmp_path / "runs"), "data": {"dataset": "fashion_mnist_small", "val_fraction": 0.1},
        "teacher": {"model": {"name": "mlp", "widths": [32], "dropout": 0.3}, "train": {"epochs": 1}},
        "student": {"model": {"dropout": 0.0}},  # (c) needs no student dropout
        "distill": {"losses": [{"name": "mc_kd_dirichlet", "samples": 6}, {"name": "mc_kd", "samples": 6,
                                                                             "weight": 0.5}],
                    "transfer": {"reduced": {"per_class": 40}}, "baseline": False}})
    recipe = recipe_from_dict(raw)
    distill(recipe, open_run(recipe, None, force=False), StageContext())
    record = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())["stages"]["student"]
    assert record["status"] == "complete" and record["kd"]["teacher_cached"]
    assert record["kd"]["losses"][0]["name"] == "mc_kd_dirichlet" and record["kd"]["losses"][0]["floor"] == 1e-4
    assert record["test"]["accuracy"] > 0.2


def test_uncached_step_uses_the_per_batch_teacher_mc_mean():
    """Augmented inputs: the teacher MC mean is computed per batch (kdedge.uncertainty, masks named by epoch
    and first image), and the step's loss is mc_kd's on it; mc_kd_student runs K student passes."""
    from kdedge.stages.students import kd_terms
    from kdedge.train.distill_step import make_distill_step

    torch.manual_seed(0)
    teacher = build_model("mlp", in_channels=1, num_classes=10, image_size=8, widths=[16], dropout=0.3).eval()
    student = build_model("mlp", in_channels=1, num_classes=10, image_size=8, widths=[8], dropout=0.2).eval()
    recipe = recipe_from_dict(deep_update(KD, {"distill": {"losses": [{"name": "mc_kd", "samples": 5, "seed": 2}]}}))
    step, _ = make_distill_step(student, teacher, kd_terms(recipe, None), label_mode="labels", cache=None,
                                probe=torch.zeros(2, 1, 8, 8))
    step.start_epoch(3)
    g = torch.Generator().manual_seed(0)
    x, y, idx = torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g), torch.arange(40, 46)
    loss, s_logits = step(x, y, idx)
    p_bar = mc_dropout_predict(teacher, x, samples=5, seed=2, stream=f"{MC_KD_STREAM}:3:40", batch_size=6).mean_probs
    assert torch.allclose(loss, mc_kd_loss(s_logits, p_bar, y, alpha=0.5, temperature=1.0), atol=1e-6)

    # (c) on the same batch: the per-batch mean log-probabilities of the same masks
    from kdedge.losses.mc_kd_dirichlet import mc_kd_dirichlet_loss

    recipe = recipe_from_dict(deep_update(KD, {"distill": {"losses": [{"name": "mc_kd_dirichlet", "samples": 5,
                                                                        "seed": 2}]}}))
    step, _ = make_distill_step(student, teacher, kd_terms(recipe, None), label_mode="labels", cache=None,
                                probe=torch.zeros(2, 1, 8, 8))
    step.start_epoch(3)
    loss, s_logits = step(x, y, idx)
    m = mc_dropout_predict(teacher, x, samples=5, seed=2, stream=f"{MC_KD_STREAM}:3:40", batch_size=6).mean_log_probs
    assert torch.allclose(loss, mc_kd_dirichlet_loss(s_logits, m, y, alpha=0.5, floor=1e-4), atol=1e-6)

    recipe = recipe_from_dict(deep_update(KD, {"distill": {"losses": [{"name": "mc_kd_student", "student_samples": 3}]}}))
    step, _ = make_distill_step(student.train(), teacher, kd_terms(recipe, None), label_mode="labels", cache=None,
                                probe=torch.zeros(2, 1, 8, 8))
    step.start_epoch(1)
    loss, s_logits = step(x, y, idx)
    assert s_logits.shape == (6, 10) and torch.isfinite(loss) and loss.requires_grad
