"""Distillation losses against independent oracles: PyTorch's own KL/CE, hand-computed numbers,
and the DKD paper's decomposition identity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from kdedge.errors import KdedgeError
from kdedge.losses import (
    LOSSES,
    CEParams,
    DKDParams,
    HintAdapter,
    HintonParams,
    HintParams,
    LossDef,
    ce_loss,
    dkd_loss,
    hint_loss,
    hinton_loss,
    make_hint_adapter,
    resolve_temperature,
    soft_target_loss,
)
from kdedge.losses.dkd import dkd_parts


def _logits(seed: int, b: int = 5, c: int = 7, scale: float = 3.0) -> tuple[torch.Tensor, ...]:
    """float64 student (requires grad), teacher and labels, so oracles can be compared tightly."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(b, c, generator=g, dtype=torch.float64) * scale).requires_grad_()
    t = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


# --- registry and params ------------------------------------------------------------------------


def test_registry_holds_each_loss_with_its_params() -> None:
    assert LOSSES.names() == ["ce", "dkd", "hint", "hinton", "mc_kd", "mc_kd_dirichlet", "mc_kd_student"]
    for name, params in (("ce", CEParams), ("hinton", HintonParams), ("dkd", DKDParams), ("hint", HintParams)):
        d = LOSSES.get(name)
        assert isinstance(d, LossDef) and d.params is params
    assert LOSSES.get("hint").kind == "features" and LOSSES.get("hinton").kind == "logits"
    assert LOSSES.get("ce").needs_labels and LOSSES.get("dkd").needs_labels
    with pytest.raises(KdedgeError, match="available: ce, dkd, hint, hinton, mc_kd, mc_kd_dirichlet, mc_kd_student"):
        LOSSES.get("fitnet")


@pytest.mark.parametrize(
    "params, bad",
    [
        (HintonParams, {"temperature": 0}),
        (HintonParams, {"temperature": -1.0}),
        (HintonParams, {"temperature": "hot"}),
        (HintonParams, {"temperature": "4"}),  # a string is a YAML mistake, not a number
        (HintonParams, {"temperature": float("inf")}),
        (HintonParams, {"alpha": 1.5}),
        (HintonParams, {"alpha": -0.1}),
        (HintonParams, {"alhpa": 0.5}),
        (HintonParams, {"weight": 1.0}),  # weight belongs to the recipe entry, not the loss
        (DKDParams, {"beta": -1.0}),
        (DKDParams, {"alpha": -0.5}),
        (DKDParams, {"temperature": 0.0}),
        (DKDParams, {"gamma": 1.0}),
        (CEParams, {"label_smoothing": 0.1}),
        (HintParams, {"student": "stages.1"}),  # teacher path missing
        (HintParams, {"student": "", "teacher": "stages.1"}),
        (HintParams, {"student": "a", "teacher": "b", "adapter": "conv"}),
    ],
)
def test_params_reject_bad_values(params: type, bad: dict) -> None:
    with pytest.raises(ValidationError):
        params(**bad)


def test_params_accept_good_values_and_are_frozen() -> None:
    p = HintonParams(alpha=1, temperature="calibrated")
    assert p.alpha == 1 and p.temperature == "calibrated"
    assert DKDParams(alpha=0, beta=8, temperature=4).model_dump() == {"alpha": 0, "beta": 8, "temperature": 4}
    assert HintParams(student="stages.1", teacher="stages.2").teacher == "stages.2"
    with pytest.raises(ValidationError):
        p.alpha = 0.3  # type: ignore[misc]


def test_ce_is_torchs_cross_entropy_and_needs_labels() -> None:
    s, t, y = _logits(3)
    torch.testing.assert_close(ce_loss(s, t, y), F.cross_entropy(s, y), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(ce_loss(s, t, y), s)
    (want,) = torch.autograd.grad(F.cross_entropy(s, y), s)
    torch.testing.assert_close(grad, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="ce needs labels"):
        ce_loss(s, t, None)


def test_resolve_temperature() -> None:
    assert resolve_temperature(4, None) == 4.0
    assert resolve_temperature("calibrated", 1.7) == 1.7
    with pytest.raises(KdedgeError, match="calibrate"):
        resolve_temperature("calibrated", None)
    with pytest.raises(KdedgeError):
        resolve_temperature("calibrated", 0.0)


# --- hinton -------------------------------------------------------------------------------------


def _hinton_oracle(s, t, y, alpha, T):
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    return kl * T * T * alpha + (1 - alpha) * F.cross_entropy(s, y)


@pytest.mark.parametrize("T", [1.0, 2.5, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8, 1.0])
def test_hinton_matches_oracle_in_value_and_gradient(T: float, alpha: float) -> None:
    s, t, y = _logits(int(T * 10 + alpha * 100))
    got = hinton_loss(s, t, y, alpha=alpha, temperature=T)
    want = _hinton_oracle(s, t, y, alpha, T)
    (g_got,) = torch.autograd.grad(got, s)
    (g_want,) = torch.autograd.grad(want, s)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


def test_hinton_float32_and_inference_teacher() -> None:
    s, t, y = _logits(3)
    s32 = s.detach().float().requires_grad_()
    with torch.inference_mode():  # the pipeline runs the teacher like this
        t32 = t.float() * 1.0
    got = hinton_loss(s32, t32, y, alpha=0.5, temperature=4.0)
    got.backward()
    torch.testing.assert_close(got, _hinton_oracle(s, t, y, 0.5, 4.0).float(), rtol=1e-5, atol=1e-6)
    assert s32.grad is not None and torch.isfinite(s32.grad).all()


def test_soft_term_is_zero_when_student_equals_teacher() -> None:
    s, _, _ = _logits(1, scale=10.0)
    for T in (1.0, 4.0, 20.0):
        assert soft_target_loss(s, s.detach().clone(), temperature=T).abs().item() <= 1e-7
        s32 = s.detach().float()
        assert soft_target_loss(s32, s32.clone(), temperature=T).abs().item() <= 1e-7


def test_soft_term_is_finite_when_teacher_probabilities_underflow() -> None:
    s = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1000.0, -float("inf")]])  # probs of exactly 0 and 1; a masked class
    loss = soft_target_loss(s, t, temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_t_squared_keeps_gradient_scale_constant_across_temperatures() -> None:
    # high-temperature regime: small logits, so p = softmax(z/T) is near-linear in z/T and
    # d KL / d s ~ (s - t) / (C T^2); the T^2 factor cancels that, leaving a T-independent norm
    s, t, _ = _logits(7, b=8, c=10, scale=0.5)
    with_t2, without_t2 = [], []
    for T in (4.0, 8.0, 16.0, 32.0):
        (g,) = torch.autograd.grad(soft_target_loss(s, t, temperature=T), s)
        with_t2.append(g.norm().item())
        without_t2.append(g.norm().item() / (T * T))
    assert max(with_t2) / min(with_t2) < 1.1
    # what it would be without T^2: falls like 1/T^2, i.e. 64x from T=4 to T=32
    assert without_t2[0] / without_t2[-1] == pytest.approx(64, rel=0.1)


def test_hinton_without_labels_is_the_full_weight_soft_term() -> None:
    s, t, y = _logits(11)
    T = 3.0
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    for alpha in (0.0, 0.5, 1.0):
        torch.testing.assert_close(hinton_loss(s, t, None, alpha=alpha, temperature=T), kl)
    # alpha = 1 with labels is the same soft term: CE gets zero weight
    torch.testing.assert_close(hinton_loss(s, t, y, alpha=1.0, temperature=T), kl)


def test_hinton_does_not_backprop_into_the_teacher() -> None:
    s, t, y = _logits(2)
    t.requires_grad_()
    hinton_loss(s, t, y, alpha=0.5, temperature=4.0).backward()
    assert t.grad is None and s.grad is not None


def test_logit_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="logits"):
        hinton_loss(torch.zeros(4, 10), torch.zeros(4, 5), None, alpha=0.5, temperature=4.0)
    with pytest.raises(ValueError, match="logits"):
        y = torch.zeros(1, dtype=torch.long)
        dkd_loss(torch.zeros(10), torch.zeros(10), y, alpha=1, beta=1, temperature=1)


# --- dkd ----------------------------------------------------------------------------------------


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_dkd_on_a_hand_computed_three_class_case() -> None:
    s = [1.0, 2.0, 0.5]
    t = [3.0, 1.0, -1.0]
    target, T = 0, 2.0
    ps, pt = _softmax([v / T for v in s]), _softmax([v / T for v in t])
    # binary distributions: [p(target), p(all non-target)]
    bs, bt = [ps[0], ps[1] + ps[2]], [pt[0], pt[1] + pt[2]]
    tckd = _kl(bt, bs)
    # non-target classes only, renormalised: softmax over logits 1 and 2
    ns, nt = [ps[1] / bs[1], ps[2] / bs[1]], [pt[1] / bt[1], pt[2] / bt[1]]
    nckd = _kl(nt, ns)
    # the same numbers from the non-target logits directly
    assert ns[0] == pytest.approx(math.exp(2.0 / T) / (math.exp(2.0 / T) + math.exp(0.5 / T)))
    alpha, beta = 1.0, 8.0
    want = (alpha * tckd + beta * nckd) * T * T

    st, tt = torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)
    y = torch.tensor([target])
    got_t, got_n = dkd_parts(st, tt, y, temperature=T)
    assert got_t.item() == pytest.approx(tckd, rel=1e-12)
    assert got_n.item() == pytest.approx(nckd, rel=1e-12)
    assert dkd_loss(st, tt, y, alpha=alpha, beta=beta, temperature=T).item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_obeys_the_papers_decomposition_of_kd(T: float) -> None:
    # KD = TCKD + (1 - p_target^teacher) * NCKD, per sample (Zhao et al. 2022, Eq. 7)
    s, t, y = _logits(5, b=6, c=9)
    for i in range(s.shape[0]):
        si, ti, yi = s[i : i + 1], t[i : i + 1], y[i : i + 1]
        kd = F.kl_div(F.log_softmax(si / T, 1), F.softmax(ti / T, 1), reduction="batchmean")
        tckd, nckd = dkd_parts(si, ti, yi, temperature=T)
        pt_target = F.softmax(ti / T, 1)[0, yi].item()
        assert kd.item() == pytest.approx((tckd + (1 - pt_target) * nckd).item(), abs=1e-6)
        # the loss itself, alpha = beta = 1: T^2 * (TCKD + NCKD)
        loss = dkd_loss(si, ti, yi, alpha=1, beta=1, temperature=T)
        torch.testing.assert_close(loss, (tckd + nckd) * T * T)


def test_dkd_gradients_and_edge_cases() -> None:
    s, t, y = _logits(9)
    loss = dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0)
    (g,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # student = teacher: both parts vanish
    assert dkd_loss(s, s.detach(), y, alpha=1.0, beta=8.0, temperature=4.0).abs().item() <= 1e-7
    s32 = s.detach().float() * 5
    assert dkd_loss(s32, s32.clone(), y, alpha=1.0, beta=8.0, temperature=4.0).abs().item() <= 1e-7
    # a certain teacher (probabilities of exactly 0 and 1) stays finite
    s32 = torch.randn(3, 4, requires_grad=True)
    t32 = torch.tensor([[500.0, 0, 0, 0], [0, -500.0, 0, 0], [0, 0, 0, 900.0]])
    loss = dkd_loss(s32, t32, torch.tensor([0, 1, 2]), alpha=1.0, beta=8.0, temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s32.grad).all()
    with pytest.raises(ValueError, match="labels"):
        dkd_loss(s, t, None, alpha=1.0, beta=8.0, temperature=4.0)


# --- hint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s_shape, t_shape, out_shape",
    [
        ((2, 3, 8, 8), (2, 5, 8, 8), (2, 5, 8, 8)),  # channels only
        ((2, 3, 8, 8), (2, 5, 4, 4), (2, 5, 4, 4)),  # student larger: student pooled
        ((2, 3, 4, 4), (2, 5, 8, 8), (2, 5, 4, 4)),  # teacher larger: teacher pooled
        ((2, 3, 6, 4), (2, 5, 3, 8), (2, 5, 3, 4)),  # each dimension to its smaller size
        ((2, 16), (2, 64), (2, 64)),  # vectors: Linear
    ],
)
def test_hint_adapter_shapes_and_loss_oracle(s_shape, t_shape, out_shape) -> None:
    torch.manual_seed(0)
    sf = torch.randn(*s_shape, requires_grad=True)
    tf = torch.randn(*t_shape)
    adapter = make_hint_adapter(sf, tf)
    assert isinstance(adapter.proj, torch.nn.Conv2d if len(s_shape) == 4 else torch.nn.Linear)
    pred, target = adapter(sf), adapter.match_teacher(tf)
    assert pred.shape == target.shape == out_shape
    # oracle: pool (PyTorch's adaptive pool) the larger side by hand, then conv / linear, then MSE
    if len(s_shape) == 4:
        size = out_shape[2:]
        ps = F.adaptive_avg_pool2d(sf, size) if s_shape[2:] != size else sf
        pt = F.adaptive_avg_pool2d(tf, size) if t_shape[2:] != size else tf
        want = F.mse_loss(F.conv2d(ps, adapter.proj.weight, adapter.proj.bias), pt)
    else:
        want = F.mse_loss(F.linear(sf, adapter.proj.weight, adapter.proj.bias), tf)
    loss = hint_loss(sf, tf, adapter)
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert sf.grad is not None and sf.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


def test_hint_loss_is_zero_for_an_identity_adapter_and_takes_inference_teachers() -> None:
    sf = torch.randn(2, 4, 5, 5, requires_grad=True)
    adapter = HintAdapter(4, 4, (5, 5), (5, 5))
    with torch.no_grad():
        adapter.proj.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        adapter.proj.bias.zero_()
    with torch.inference_mode():
        tf = sf.detach().clone()
    loss = hint_loss(sf, tf, adapter)
    assert loss.item() == 0.0
    loss.backward()  # an inference-mode teacher feature never needs saving for backward


def test_hint_adapter_rejects_mixed_kinds() -> None:
    with pytest.raises(ValueError, match="both"):
        HintAdapter(4, 8, (4, 4), ())
    with pytest.raises(ValueError, match="student"):
        make_hint_adapter(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
