"""Shared test helpers: tiny real-data recipes and a CLI runner that keeps stdout and stderr apart."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]

# A tiny but real recipe: scikit-learn digits (1,797 real 8x8 images) and a small MLP.
TINY_RECIPE: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "teacher": {
        "model": {"name": "mlp", "widths": [32], "dropout": 0.1},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.1},
                  "schedule": {"name": "cosine", "warmup_epochs": 0.5}, "augment": False},
    },
}


def deep_update(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_recipe(tmp_path: Path):
    """Write TINY_RECIPE (with overrides) to tmp_path; its runs go to tmp_path/runs."""

    def make(overrides: dict | None = None, *, filename: str = "recipe.yaml", raw: str | None = None) -> Path:
        path = tmp_path / filename
        if raw is not None:
            path.write_text(raw)
            return path
        recipe = deep_update(TINY_RECIPE, {"output_dir": str(tmp_path / "runs"), **(overrides or {})})
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return make


@pytest.fixture
def cli():
    from kdedge.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The machine has 2 cores shared with other jobs; one intra-op thread keeps tests fast and
    # deterministic (resume tests compare bitwise and depend on a fixed thread count).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def interrupt_kd_step_at(monkeypatch, n: int):
    """Make the n-th KD training step (counted over all KD students) raise KeyboardInterrupt, as a
    Ctrl-C would; returns the real step factory so a test can put it back before resuming."""
    import kdedge.stages.distill as distill_module

    real = distill_module.make_distill_step
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        step, adapters = real(*args, **kwargs)

        def wrapped(x, y, idx):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return step(x, y, idx)
        return wrapped, adapters

    monkeypatch.setattr(distill_module, "make_distill_step", interrupting)
    return real
