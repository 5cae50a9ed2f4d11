"""Temperature scaling: recovers a planted temperature, is the NLL minimiser, fits on validation only."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar

from kdedge.temperature import CalibrationResult, apply_temperature, calibrate, fit_temperature
from kdedge.metrics import classification_report, nll


def planted(t0: float, n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z and labels y ~ softmax(z / t0): t0 is the true temperature of this data."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * (2.0 * t0)  # z/t0 ~ 2·N(0,1): most informative
    y = torch.multinomial(torch.softmax(z / t0, dim=1), 1, generator=g).squeeze(1)
    return z, y


def nll_at(z: torch.Tensor, y: torch.Tensor, t: float) -> float:
    return nll(apply_temperature(z, t), y)


@pytest.mark.parametrize("t0", [0.5, 1.5, 3.0])
def test_recovers_planted_temperature(t0: float) -> None:
    # MLE spread at N = 200k, C = 10 is ~0.22% (Fisher information), so 1% is > 4 standard errors
    z, y = planted(t0, 200_000, 10, seed=int(t0 * 10))
    t = fit_temperature(z, y)
    assert t == pytest.approx(t0, rel=0.01)


@pytest.mark.parametrize("t0,seed", [(0.7, 1), (2.2, 2), (8.0, 3)])
def test_fit_is_the_nll_minimiser(t0: float, seed: int) -> None:
    z, y = planted(t0, 5_000, 5, seed)
    z = z.float()  # float32 input is fitted in float64 all the same
    t = fit_temperature(z, y)
    f = nll_at(z, y, t)
    assert f <= nll_at(z, y, t * 1.01) and f <= nll_at(z, y, t / 1.01)
    assert f <= nll_at(z, y, t * 1.001) and f <= nll_at(z, y, t / 1.001)
    # independent 1-D oracle: bounded Brent on log T
    res = minimize_scalar(
        lambda u: nll_at(z, y, math.exp(u)), bounds=(math.log(0.05), math.log(100)), method="bounded",
        options={"xatol": 1e-9},
    )
    assert t == pytest.approx(math.exp(res.x), rel=1e-4)


def test_clamps_at_the_bounds() -> None:
    # perfectly separated with a margin: NLL falls all the way to T -> 0, so T* is the lower bound
    z = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, -1.0]])
    y = torch.tensor([0, 1, 0])
    assert fit_temperature(z, y) == pytest.approx(0.05)
    # every prediction wrong: the best is as flat as allowed
    assert fit_temperature(z, 1 - y) == pytest.approx(100.0)


def test_degenerate_inputs_raise() -> None:
    with pytest.raises(ValueError, match="N=0"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="1 class"):
        fit_temperature(torch.zeros(5, 1), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="shape mismatch"):
        fit_temperature(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be"):
        apply_temperature(torch.zeros(2, 2), 0.0)
    with pytest.raises(ValueError, match="temperature must be"):
        apply_temperature(torch.zeros(2, 2), float("nan"))


def test_apply_temperature_divides_and_keeps_dtype() -> None:
    z = torch.tensor([[2.0, -4.0]])
    out = apply_temperature(z, 2.0)
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor([[1.0, -2.0]]))


def test_calibrate_fits_on_val_only_and_lowers_val_nll() -> None:
    # an over-confident model: true temperature 2.5
    val_z, val_y = planted(2.5, 4_000, 10, seed=5)
    test_z, test_y = planted(2.5, 4_000, 10, seed=6)
    res = calibrate(val_z, val_y, test_z, test_y)
    assert isinstance(res, CalibrationResult)
    assert res.temperature == pytest.approx(fit_temperature(val_z, val_y), rel=1e-12)
    assert set(res.before) == set(res.after) == {"val", "test"}
    assert res.after["val"]["nll"] < res.before["val"]["nll"]
    assert res.after["test"]["nll"] < res.before["test"]["nll"]  # it generalises on this planted data
    assert res.before["test"] == classification_report(test_z, test_y)
    assert res.after["val"]["accuracy"] == res.before["val"]["accuracy"]  # T > 0 never changes the argmax

    # changing test changes nothing in the fit ...
    other_test_z, other_test_y = planted(0.5, 3_000, 10, seed=7)
    res2 = calibrate(val_z, val_y, other_test_z, other_test_y)
    assert res2.temperature == res.temperature
    assert res2.before["val"] == res.before["val"] and res2.after["val"] == res.after["val"]
    # ... changing val does
    res3 = calibrate(val_z[:2_000], val_y[:2_000], test_z, test_y)
    assert res3.temperature != res.temperature
    assert res.to_dict()["temperature"] == res.temperature


def test_calibrate_validates_splits() -> None:
    z, y = planted(1.0, 50, 4, seed=0)
    with pytest.raises(ValueError, match="classes"):
        calibrate(z, y, torch.zeros(10, 3), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="shape mismatch"):
        calibrate(z, y[:10], z, y)
