"""OOD evidence: AUROC against sklearn (ties included), score orientation, the input-contract conversion
(against Pillow), the bench's OOD section, and bad --ood values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from kdedge.bench.ood import OodSet, load_ood, ood_report, report_lines, to_contract
from kdedge.errors import KdedgeError
from kdedge.inputs import InputStats
from kdedge.metrics.ood import auroc, ood_auroc, ood_scores
from kdedge.models import build_model


def _sklearn(a, b) -> float:
    return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))


@pytest.mark.parametrize("seed", range(4))
def test_auroc_equals_sklearn_continuous_and_tied(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, 200), rng.normal(0.7, 1.3, 150)
    assert auroc(a, b) == pytest.approx(_sklearn(a, b), abs=1e-12)
    ta, tb = rng.integers(0, 5, 300).astype(float), rng.integers(1, 6, 80).astype(float)  # many ties
    assert auroc(torch.from_numpy(ta), torch.from_numpy(tb)) == pytest.approx(_sklearn(ta, tb), abs=1e-12)


def test_auroc_edge_cases():
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5  # all tied: chance
    assert auroc([0.0, 0.1], [0.2, 0.3]) == 1.0
    assert auroc([0.2, 0.3], [0.0, 0.1]) == 0.0
    with pytest.raises(ValueError, match="empty"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        auroc([np.nan], [1.0])


def test_scores_point_towards_ood():
    confident = torch.tensor([[0.97, 0.01, 0.01, 0.01]])
    unsure = torch.full((1, 4), 0.25)
    s_conf, s_unsure = ood_scores(confident), ood_scores(unsure)
    for name in ("entropy", "max_prob"):
        assert float(s_unsure[name]) > float(s_conf[name])  # the uncertain image scores as more OOD
    assert float(s_unsure["entropy"]) == pytest.approx(np.log(4))
    with pytest.raises(ValueError, match="logits"):
        ood_scores(torch.tensor([[3.0, -1.0]]))


def test_ood_auroc_matches_sklearn_on_both_scores():
    g = torch.Generator().manual_seed(0)
    p_in = torch.softmax(torch.randn(50, 10, generator=g) * 4, 1)
    p_out = torch.softmax(torch.randn(40, 10, generator=g), 1)
    got = ood_auroc(p_in, p_out)
    ent = lambda p: (-(p.double() * p.double().log()).sum(1)).numpy()  # noqa: E731
    assert got["entropy"] == pytest.approx(_sklearn(ent(p_in), ent(p_out)), abs=1e-12)
    assert got["max_prob"] == pytest.approx(_sklearn(-p_in.max(1).values.double().numpy(),
                                                     -p_out.max(1).values.double().numpy()), abs=1e-12)


def test_conversion_to_the_input_contract_matches_pillow():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 3, 9, 9), dtype=np.uint8)  # [N, C, H, W]
    grey, note = to_contract(torch.from_numpy(rgb), channels=1, size=(9, 9))
    pil = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in rgb])
    assert np.abs(grey[:, 0].numpy().astype(int) - pil.astype(int)).max() <= 1 and "grey" in note
    g = torch.from_numpy(rng.integers(0, 256, (2, 1, 8, 8), dtype=np.uint8))
    up, note = to_contract(g, channels=3, size=(8, 8))
    assert up.shape == (2, 3, 8, 8) and all(torch.equal(up[:, c], g[:, 0]) for c in range(3))
    flat = torch.full((1, 1, 8, 8), 77, dtype=torch.uint8)
    big, note = to_contract(flat, channels=1, size=(28, 28))
    assert big.shape == (1, 1, 28, 28) and bool((big == 77).all()) and "resized 8x8 -> 28x28" in note


def test_load_ood_registered_dataset_and_folder(tmp_path: Path):
    from PIL import Image

    digits = load_ood("digits", [], channels=3, size=(28, 28))
    assert digits.images.shape[1:] == (3, 28, 28) and digits.images.dtype == torch.uint8 and len(digits.images) > 100
    with pytest.raises(KdedgeError, match="own dataset"):
        load_ood("digits", [], channels=1, size=(8, 8), own_dataset="digits")
    (tmp_path / "sub").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)).save(tmp_path / "sub" / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = load_ood(str(tmp_path), [], channels=1, size=(8, 8))
    assert folder.images.shape == (3, 1, 8, 8) and sorted(int(x) for x in folder.images[:, 0, 4, 4]) == [0, 40, 80]


def test_ood_report_per_model_and_predictor():
    torch.manual_seed(0)
    models = {"teacher": build_model("mlp", in_channels=1, num_classes=10, image_size=8, widths=[16], dropout=0.3),
              "student": build_model("mlp", in_channels=1, num_classes=10, image_size=8, widths=[8])}
    g = torch.Generator().manual_seed(1)
    in_images = torch.randn(30, 1, 8, 8, generator=g).numpy()
    ood = OodSet("noise", torch.randint(0, 256, (20, 1, 8, 8), generator=g, dtype=torch.uint8), "test", "none")
    stats = InputStats((0.5,), (0.25,))
    report = ood_report(models, in_images, ood, stats, samples=5, seed=0, device=torch.device("cpu"))
    assert set(report["models"]["teacher"]) == {"torch", "torch-mc"}  # MC only where there is dropout
    assert set(report["models"]["student"]) == {"torch"}
    # the deterministic AUROC is sklearn's on the models' own softmax entropies
    x_out = (ood.images.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        p_in = torch.softmax(models["student"].eval()(torch.from_numpy(in_images)).double(), 1)
        p_out = torch.softmax(models["student"](x_out).double(), 1)
    ent = lambda p: (-(p * p.log()).sum(1)).numpy()  # noqa: E731
    assert report["models"]["student"]["torch"]["entropy"] == pytest.approx(_sklearn(ent(p_in), ent(p_out)), abs=1e-6)
    text = "\n".join(report_lines({"ood": report}))
    assert "AUROC (entropy)" in text and "torch, MC dropout" in text and "noise" in text
    assert report_lines({}) == []


@pytest.mark.parametrize("value", ["nonsense", "image_folder"])
def test_bad_ood_value_is_one_line_exit_2(value, tmp_path: Path, cli):
    result = cli("bench", tmp_path, "--ood", value)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdedge: error: --ood") and "mnist_5k" in lines[0]
