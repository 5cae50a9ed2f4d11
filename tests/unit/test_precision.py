"""Training precision (train.precision), torch.compile and determinism switches: the resolve rules, that
autocast really computes the convolutions in bf16/fp16 inside the loop, that bf16 trains as well as fp32
on a tiny problem, that the fp16 gradient scaler's state survives a checkpoint (resume stays bitwise
exact), and that existing recipes keep their hash. The CUDA tests skip without a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.losses.registry import LOSSES
from kdedge.recipe import load_recipe, recipe_from_dict
from kdedge.recipe.yaml_loader import read_yaml
from kdedge.stages.data import prepare_data
from kdedge.train import fit, supervised_step
from kdedge.train.loop import read_resume_state
from kdedge.train.precision import (autocast, make_scaler, precision_note, resolve_precision,
                                    set_determinism)

from tests.conftest import REPO, TINY_RECIPE, deep_update

CPU = torch.device("cpu")
NO_CUDA = "no CUDA GPU in this session"
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)

# A small conv net with dropout and augmentation: every random stream matters for the resume tests.
CONV = deep_update(TINY_RECIPE, {"teacher": {
    "model": {"name": "cnn", "channels": [8, 16], "dropout": 0.3},
    "train": {"epochs": 3, "batch_size": 64, "augment": True, "crop_padding": 1}}})
CONV["teacher"]["model"].pop("widths")
NEW_FIELDS = ("precision", "compile", "deterministic")


def _recipe(**train):
    return recipe_from_dict(deep_update(CONV, {"teacher": {"train": train}}))


def _model(recipe):
    from kdedge.models import build_model

    torch.manual_seed(recipe.seed)
    return build_model(recipe.teacher.model.name, in_channels=1, num_classes=10, image_size=8,
                       **recipe.teacher.model.kwargs)


def _fit(recipe, out_dir: Path, *, device=CPU, resume_state=None, step_wrapper=None, model=None):
    model = model if model is not None else _model(recipe)
    step = supervised_step(model)
    if step_wrapper:
        step = step_wrapper(step)
    data = prepare_data(recipe)
    result = fit(model, step, data=data.training, cfg=recipe.teacher.train, seed=recipe.seed, device=device,
                 out_dir=out_dir, fingerprint="test", resume_state=resume_state)
    return model, result


# --- resolve rules -----------------------------------------------------------------------------------

def test_auto_is_fp32_on_cpu_and_explicit_choices_are_kept():
    assert resolve_precision("auto", CPU) == "fp32"
    assert [resolve_precision(p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(KdedgeError, match="student.train.precision: unknown precision 'fp8'"):
        resolve_precision("fp8", CPU, field="student.train.precision")


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_auto_on_cuda_is_bf16_from_ampere_else_fp16(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a test GPU")
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == expected
    assert resolve_precision("fp16", cuda) == "fp16"
    if expected == "fp16":  # no native bf16: asked for explicitly, a one-line error naming the field
        with pytest.raises(KdedgeError, match=r"teacher.train.precision: bf16 needs .* set teacher.train.precision: fp16"):
            resolve_precision("bf16", cuda, field="teacher.train.precision")
    else:
        assert resolve_precision("bf16", cuda) == "bf16"


def test_fp16_on_cpu_runs_with_a_warning_and_a_cpu_scaler():
    assert precision_note("fp16", CPU) and "slower than fp32" in precision_note("fp16", CPU)
    assert precision_note("bf16", CPU) is None and precision_note("fp32", CPU) is None
    assert make_scaler("fp32", CPU) is None and make_scaler("bf16", CPU) is None
    scaler = make_scaler("fp16", CPU)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()


def test_determinism_switches_leave_the_cpu_alone():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    set_determinism(CPU, True)
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


# --- autocast inside the loop --------------------------------------------------------------------------

def _conv_dtypes(model: nn.Module, seen: list) -> None:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype) if mod.training else None)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_training_forward_runs_in_the_chosen_precision(tmp_path: Path, precision, dtype):
    recipe = _recipe(precision=precision, epochs=1)
    model, seen = _model(recipe), []
    _conv_dtypes(model, seen)
    _, result = _fit(recipe, tmp_path, model=model)
    assert seen and set(seen) == {dtype}  # every training step's convolution
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert result.precision == precision
    assert read_resume_state(tmp_path, "test")["precision"] == precision


def test_bf16_trains_as_well_as_fp32_but_not_identically(tmp_path: Path):
    fp32_model, fp32 = _fit(_recipe(precision="fp32"), tmp_path / "fp32")
    bf16_model, bf16 = _fit(_recipe(precision="bf16"), tmp_path / "bf16")
    a, b = fp32.history[-1], bf16.history[-1]
    assert abs(a["train_loss"] - b["train_loss"]) < 0.1 * a["train_loss"]
    assert abs(a["test_accuracy"] - b["test_accuracy"]) < 0.05
    assert a["test_accuracy"] > 0.5  # it did learn (10 classes: chance is 0.1)
    # bf16 really changed the arithmetic (same seeds, same batches)
    assert any(not torch.equal(p, q) for p, q in zip(fp32_model.parameters(), bf16_model.parameters()))


# the losses on (student logits, teacher logits), with the options they need
LOGIT_LOSSES = {"ce": {}, "hinton": {"alpha": 0.5, "temperature": 4.0},
                "dkd": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}}


@pytest.mark.parametrize("name", list(LOGIT_LOSSES))
def test_logit_losses_under_bf16_autocast_match_fp32(name):
    # student logits come out of autocast in bf16, cached teacher logits are fp32: the losses must take
    # the mix and agree with the fp32 loss of the same (rounded) student logits
    gen = torch.Generator().manual_seed(0)
    s = (torch.randn(32, 10, generator=gen) * 3).bfloat16()
    t = torch.randn(32, 10, generator=gen) * 3
    y = torch.randint(0, 10, (32,), generator=gen)
    options = LOGIT_LOSSES[name]
    fn = LOSSES.get(name).fn
    expected = fn(s.float(), t, y, **options)
    with autocast("bf16", CPU):
        got = fn(s, t, y, **options)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=1e-3)


# --- fp16: the scaler's state is part of the checkpoint ---------------------------------------------------

def _lively_scaler(precision, device):
    # a scale so high that fp16 gradients overflow (skipped steps, backoffs) and a short growth interval:
    # the scaler's state then shapes the weights, so a resume that lost it would differ
    return torch.amp.GradScaler(device.type, init_scale=2.0**24, growth_interval=3) if precision == "fp16" else None


def _interrupt_at(n: int):
    calls = {"n": 0}

    def wrap(step):
        def wrapped(x, y, idx):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return step(x, y, idx)
        return wrapped
    return wrap


def test_fp16_resume_restores_the_scaler_and_is_bitwise_exact(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("kdedge.train.loop.make_scaler", _lively_scaler)
    recipe = _recipe(precision="fp16")
    reference, _ = _fit(recipe, tmp_path / "a")
    final_scaler = read_resume_state(tmp_path / "a", "test")["scaler"]
    assert final_scaler["scale"] != 2.0**24  # it moved: overflows backed it off, growth raised it

    steps = -(-int(len(prepare_data(recipe).training.train)) // 64)
    with pytest.raises(KeyboardInterrupt):
        _fit(recipe, tmp_path / "b", step_wrapper=_interrupt_at(steps + steps // 2))  # mid epoch 2
    state = read_resume_state(tmp_path / "b", "test")
    assert state["epoch"] == 1 and state["precision"] == "fp16"
    assert state["scaler"]["scale"] != 2.0**24  # what a resume must restore is not what a fresh scaler has
    resumed, _ = _fit(recipe, tmp_path / "b", resume_state=state)
    for (k, p), q in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), f"{k} differs after resume"
    assert read_resume_state(tmp_path / "b", "test")["scaler"] == final_scaler

    # the negative control: the same resume from a checkpoint without the scaler's state ends elsewhere
    lost = {**state, "scaler": {}}
    other, _ = _fit(recipe, tmp_path / "c", resume_state=lost)
    assert any(not torch.equal(p, q) for p, q in zip(reference.state_dict().values(), other.state_dict().values()))


# --- the recipe: existing recipes keep their hash ---------------------------------------------------------

def _keys(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_existing_recipes_dump_and_hash_as_before(path: Path):
    recipe = load_recipe(path, require_runs=False)
    assert not _keys(recipe.to_dict()) & set(NEW_FIELDS)  # dumped exactly as before the fields existed
    raw = read_yaml(path)
    if raw["teacher"].get("train") is None:
        return
    raw["teacher"]["train"].update(precision="auto", compile=False, deterministic=False)
    explicit = recipe_from_dict(raw, base_dir=path.parent, require_runs=False)
    assert explicit.hash == recipe.hash
    raw["teacher"]["train"]["precision"] = "bf16"  # trains other weights: another hash
    assert recipe_from_dict(raw, base_dir=path.parent, require_runs=False).hash != recipe.hash
    raw["teacher"]["train"].update(precision="auto", compile=True, deterministic=True)  # rounding only
    assert recipe_from_dict(raw, base_dir=path.parent, require_runs=False).hash == recipe.hash


def test_a_bad_precision_is_a_recipe_error(make_recipe, cli):
    path = make_recipe({"teacher": {**TINY_RECIPE["teacher"], "train": {**TINY_RECIPE["teacher"]["train"],
                                                                        "precision": "half"}}})
    result = cli("train", path)
    assert result.exit_code == 2
    assert "teacher.train.precision" in result.stderr and "Traceback" not in result.stderr


def test_the_stage_record_says_what_it_trained_in(tmp_path: Path, make_recipe, cli):
    train = {**TINY_RECIPE["teacher"]["train"], "epochs": 1, "precision": "bf16"}
    result = cli("train", make_recipe({"teacher": {**TINY_RECIPE["teacher"], "train": train}}))
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "runs" / "tiny"
    record = json.loads((run / "manifest.json").read_text())["stages"]["teacher"]
    assert (record["precision"], record["compiled"]) == ("bf16", False)
    assert json.loads((run / "teacher" / "metrics.json").read_text())["precision"] == "bf16"


# --- torch.compile (inductor builds C++ kernels: tens of seconds on the CPU) --------------------------

@pytest.mark.slow
def test_compiled_training_keeps_its_state_dict_and_learns(tmp_path: Path):
    eager, e = _fit(_recipe(epochs=2), tmp_path / "eager")
    compiled, c = _fit(_recipe(epochs=2, compile=True), tmp_path / "compiled")
    assert c.compiled and not e.compiled
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # no _orig_mod. prefix: files unchanged
    assert abs(c.history[-1]["test_accuracy"] - e.history[-1]["test_accuracy"]) < 0.1


# --- CUDA ---------------------------------------------------------------------------------------------------

@cuda_only
def test_cuda_auto_precision_trains_and_keeps_the_teacher_cache_on_the_gpu(tmp_path: Path):
    from kdedge.train.distill_step import teacher_outputs

    cuda = torch.device("cuda")
    recipe = _recipe(epochs=1)
    model, result = _fit(recipe, tmp_path, device=cuda)
    assert result.precision == resolve_precision("auto", cuda) != "fp32"
    data = prepare_data(recipe).training
    cache = teacher_outputs(model, data.train, data.stats, [], batch_size=256, device=cuda)
    assert cache.logits.device.type == "cuda" and cache.logits.dtype == torch.float32


@cuda_only
def test_cuda_deterministic_resume_is_bitwise_exact(tmp_path: Path):
    cuda = torch.device("cuda")
    recipe = _recipe(deterministic=True)
    reference, _ = _fit(recipe, tmp_path / "a", device=cuda)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    steps = -(-len(prepare_data(recipe).training.train) // 64)
    with pytest.raises(KeyboardInterrupt):
        _fit(recipe, tmp_path / "b", device=cuda, step_wrapper=_interrupt_at(steps + 2))
    resumed, _ = _fit(recipe, tmp_path / "b", device=cuda, resume_state=read_resume_state(tmp_path / "b", "test"))
    for p, q in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)
    set_determinism(cuda, False)


# --- timing and MC dropout on the model's device ------------------------------------------------------------

def test_time_interleaved_reports_what_its_clock_measured():
    from kdedge.bench.timing import time_interleaved

    ticks = iter([0.001 * k for k in range(1, 1000)])  # a fake clock: 1 ms, 2 ms, ... per call in order
    calls = {"a": lambda: None, "b": lambda: None}
    out = time_interleaved(calls, batch=4, rounds=2, runs=3, warmup=1, clock=lambda fn: (fn(), next(ticks))[1])
    # rounds alternate a, b: a gets calls 1-3 and 7-9, b gets 4-6 and 10-12 (ms)
    assert out["a"].runs == 6 and out["a"].median_ms == pytest.approx(5.0) and out["a"].min_ms == pytest.approx(1.0)
    assert out["b"].median_ms == pytest.approx(8.0)


@cuda_only
def test_cuda_event_clock_agrees_with_a_synchronised_wall_clock():
    import time

    from kdedge.bench.timing import cuda_clock

    a = torch.randn(4096, 4096, device="cuda")
    work = lambda: a @ a  # noqa: E731  (queued asynchronously: a clock that does not wait sees ~0)
    work()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        work()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 5
    events = min(cuda_clock()(work) for _ in range(5))
    assert 0.5 * wall < events < 1.5 * wall


@cuda_only
def test_mc_dropout_runs_on_the_models_gpu_by_default():
    from kdedge.models import build_model
    from kdedge.uncertainty.mc_dropout import mc_dropout_predict

    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8, channels=[8, 16], dropout=0.3).cuda()
    x = torch.randn(40, 1, 8, 8)
    fast = mc_dropout_predict(model, x, samples=20, batch_size=16)  # no device: the model's
    naive = mc_dropout_predict(model, x, samples=20, batch_size=16, fast=False)
    torch.testing.assert_close(fast.mean_probs, naive.mean_probs, rtol=1e-4, atol=1e-5)
    assert fast.variance.mean() > 0  # masks were applied


def test_compile_without_a_compiler_is_a_one_line_error(monkeypatch):
    import kdedge.train.precision as precision

    monkeypatch.setattr(precision.shutil, "which", lambda name: None)
    model = nn.Linear(2, 2)
    with pytest.raises(KdedgeError, match="student.train.compile: torch.compile on cpu needs a C\\+\\+ compiler"):
        precision.compile_model(model, CPU, field="student.train.compile")
    assert not hasattr(model, "_compiled_call_impl") or model._compiled_call_impl is None  # left as it was
