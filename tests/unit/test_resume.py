"""Resume: an interrupted run continued with --resume ends bitwise equal to an uninterrupted one, and a
checkpoint write killed half-way never leaves a file that loads as valid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from kdedge.errors import KdedgeError
from kdedge.recipe import recipe_from_dict
from kdedge.stages.data import prepare_data
from kdedge.train import fit, supervised_step
from kdedge.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from kdedge.train.loop import read_resume_state

from tests.conftest import TINY_RECIPE, deep_update

# A conv net with dropout and augmentation, so every random stream (order, crops, flips, dropout) matters.
CONV = deep_update(TINY_RECIPE, {"teacher": {
    "model": {"name": "cnn", "channels": [8, 16], "dropout": 0.3},
    "train": {"epochs": 4, "batch_size": 32, "augment": True, "crop_padding": 1, "channels_last": True}}})
CONV["teacher"]["model"].pop("widths")


def _fresh(recipe):
    torch.manual_seed(recipe.seed)
    from kdedge.models import build_model

    kwargs = recipe.teacher.model.kwargs
    return build_model(recipe.teacher.model.name, in_channels=1, num_classes=10, image_size=8, **kwargs)


def _fit(recipe, data, out_dir: Path, *, resume_state=None, step_wrapper=None):
    model = _fresh(recipe)
    step = supervised_step(model)
    if step_wrapper:
        step = step_wrapper(step)
    fit(model, step, data=data.training, cfg=recipe.teacher.train, seed=recipe.seed,
        device=torch.device("cpu"), out_dir=out_dir, fingerprint="test", resume_state=resume_state)
    return model


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_resume_after_mid_epoch_interrupt_is_bitwise_identical(tmp_path: Path):
    recipe = recipe_from_dict(CONV)
    data = prepare_data(recipe)
    reference = _fit(recipe, data, tmp_path / "a").state_dict()

    calls = {"n": 0}
    steps_per_epoch = -(-len(data.training.train) // recipe.teacher.train.batch_size)

    def interrupt_in_epoch_3(step):
        def wrapped(x, y, idx):
            calls["n"] += 1
            if calls["n"] == 2 * steps_per_epoch + steps_per_epoch // 2:
                raise KeyboardInterrupt
            return step(x, y, idx)
        return wrapped

    with pytest.raises(KeyboardInterrupt):
        _fit(recipe, data, tmp_path / "b", step_wrapper=interrupt_in_epoch_3)
    state = read_resume_state(tmp_path / "b", "test")
    assert state["epoch"] == 2
    resumed = _fit(recipe, data, tmp_path / "b", resume_state=state)
    _assert_same_weights(reference, resumed.state_dict())
    # and the history is complete and continuous
    assert [h["epoch"] for h in read_resume_state(tmp_path / "b", "test")["history"]] == [1, 2, 3, 4]


def test_different_seed_gives_different_weights(tmp_path: Path):
    """Guards the bitwise test above against passing because nothing is random."""
    recipe = recipe_from_dict(CONV)
    data = prepare_data(recipe)
    a = _fit(recipe, data, tmp_path / "a").state_dict()
    b = _fit(recipe_from_dict(deep_update(CONV, {"seed": 1})), data, tmp_path / "b").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_checkpoint_from_another_configuration_is_refused(tmp_path: Path):
    recipe = recipe_from_dict(deep_update(CONV, {"teacher": {"train": {"epochs": 1}}}))
    _fit(recipe, prepare_data(recipe), tmp_path)
    with pytest.raises(KdedgeError, match="another training configuration"):
        read_resume_state(tmp_path, "other-fingerprint")


# ------------------------------------------------------------------------------ real signals, real CLI

SLOW_CONV = deep_update(CONV, {"teacher": {"train": {"epochs": 8, "batch_size": 8}}})


def _default_sigint() -> None:
    # A job started in the background (`cmd &`, nohup, some CI runners) inherits SIGINT as ignored,
    # and Python then installs no KeyboardInterrupt handler; the test needs Ctrl-C as a user sends it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kdedge(*args: str, **kwargs) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("kdedge")
    return subprocess.Popen([str(exe), *args, "--threads", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint, **kwargs)


def _write(tmp: Path, name: str, recipe: dict) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(deep_update(recipe, {"name": name, "output_dir": str(tmp / "runs")})))
    return path


def _model_state(run: Path) -> dict:
    return torch.load(run / "teacher" / "model.pt", weights_only=True)["state_dict"]


def _wait_for_checkpoint(run: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    ckpt = run / "teacher" / "checkpoint.pt"
    deadline = time.monotonic() + timeout
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_cli_interrupted_by_signal_then_resumed_matches_uninterrupted(sig, tmp_path: Path):
    reference = _write(tmp_path, "ref", SLOW_CONV)
    assert _kdedge("train", str(reference)).wait(timeout=300) == 0

    interrupted = _write(tmp_path, "cut", SLOW_CONV)
    run = tmp_path / "runs" / "cut"
    proc = _kdedge("train", str(interrupted))
    _wait_for_checkpoint(run, proc)
    # at once: epoch 2 of 8 has just begun (an idle fast machine runs this tiny epoch in ~0.06 s, so
    # waiting here could let training finish first)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "training finished although the signal was sent during epoch 2 of 8"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (run / "teacher" / "model.pt").exists()
    ckpt_epoch = torch.load(run / "teacher" / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= ckpt_epoch < 8

    resumed = _kdedge("train", str(interrupted), "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming after epoch {ckpt_epoch}/8" in out
    _assert_same_weights(_model_state(tmp_path / "runs" / "ref"), _model_state(run))


def test_checkpoint_write_killed_midway_never_leaves_a_loadable_partial(tmp_path: Path):
    """SIGKILL a process that rewrites a large checkpoint in a loop: whatever is left at the path is a
    complete earlier checkpoint (atomic rename), never a partial one."""
    ckpt = tmp_path / "checkpoint.pt"
    script = textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from kdedge.train.checkpoint import save_checkpoint
        big = torch.arange(8_000_000, dtype=torch.float32)  # ~32 MB, so a write takes a while
        i = 0
        while True:
            save_checkpoint(Path({str(ckpt)!r}), {{"epoch": i, "model": {{"w": big + i}}, "fingerprint": "f"}})
            print(i, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # one complete write has happened
    time.sleep(0.15)  # now (very likely) inside a later write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(ckpt, fingerprint="f")
    assert state["format"] == CHECKPOINT_FORMAT
    expected = torch.arange(8_000_000, dtype=torch.float32) + state["epoch"]
    assert torch.equal(state["model"]["w"], expected)  # complete and self-consistent
    leftovers = [p for p in tmp_path.iterdir() if p.name != ckpt.name]
    assert all(p.name.startswith(".checkpoint.pt.") and p.suffix == ".tmp" for p in leftovers)


def test_eval_every_changes_only_when_metrics_are_taken(tmp_path: Path):
    """Evaluating every 3rd epoch (and after the last) trains bitwise the same weights as evaluating
    every epoch, so the recipe hash leaves eval_every out and a finished run is still reused."""
    every = recipe_from_dict(CONV)
    sparse = recipe_from_dict(deep_update(CONV, {"teacher": {"train": {"epochs": 4, "eval_every": 3}}}))
    data = prepare_data(every)
    a = _fit(every, data, tmp_path / "a")
    b = _fit(sparse, data, tmp_path / "b")
    _assert_same_weights(a.state_dict(), b.state_dict())
    history = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["history"]
    assert [r["epoch"] for r in history if "val_accuracy" in r] == [3, 4]
    assert sparse.hash == every.hash
    assert recipe_from_dict(deep_update(CONV, {"teacher": {"train": {"epochs": 5}}})).hash != every.hash
