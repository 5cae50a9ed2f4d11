"""How a model trains on its device: the precision it computes in (fp32, bf16 autocast, fp16 autocast with
a gradient scaler), torch.compile, and the cuDNN/cuBLAS determinism switches. Pure helpers: the loop
(kdedge/train/loop.py) calls them, and records what they resolved to.

- `auto` precision: bf16 on a CUDA GPU that computes it natively (Ampere and newer), fp16 on an older
  CUDA GPU, fp32 on the CPU (bf16 autocast runs on the CPU too, but only CPUs with AMX/AVX512-BF16 gain
  from it, so it is asked for explicitly there).
- fp16 is allowed on the CPU (torch autocasts it there and has a CPU GradScaler) but is emulated and
  slower than fp32 on most CPUs: it exists there to exercise the fp16 path, and says so.
- bf16 has fp32's exponent range, so it needs no loss scaling; fp16 does (GradScaler), and the scaler's
  state is saved in each checkpoint so that a resumed run scales as an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from kdedge.choices import PRECISIONS
from kdedge.errors import KdedgeError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# cuBLAS needs a fixed workspace to be deterministic (NVIDIA's cuBLAS docs, "Results reproducibility")
CUBLAS_DETERMINISTIC = ":4096:8"


def cuda_bf16_native() -> bool:
    """Whether the current CUDA GPU computes bf16 natively (compute capability 8.0+), not emulated."""
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 8


def resolve_precision(name: str, device: torch.device, *, field: str = "train.precision") -> str:
    """fp32, bf16 or fp16: `name` with "auto" chosen for `device`; an impossible choice is a user error
    naming `field` (e.g. student.train.precision)."""
    if name not in PRECISIONS:
        raise KdedgeError(f"{field}: unknown precision {name!r}; allowed: {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_bf16_native() else "fp16"
        return "fp32"
    if name == "bf16" and device.type == "cuda" and not cuda_bf16_native():
        raise KdedgeError(f"{field}: bf16 needs a GPU of compute capability 8.0 or newer (Ampere), this one is "
                          f"{torch.cuda.get_device_name()}; set {field}: fp16 (or auto)")
    return name


def precision_note(precision: str, device: torch.device) -> str | None:
    """A warning to print for a precision that runs but is a poor choice on this device, else None."""
    if precision == "fp16" and device.type == "cpu":
        return "fp16 on the cpu is emulated and slower than fp32; it is there to check the fp16 path (use fp32 or bf16)"
    return None


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    """The forward pass's context: torch.autocast in bf16/fp16 (convs and matmuls in half precision; on
    CUDA softmax and the losses in fp32, as torch's op lists say; the CPU's list is shorter, and kdedge's
    logit losses cast to fp32 themselves), nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (whose small gradients would underflow unscaled); None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                  after_backward: Callable[[], None] | None = None) -> None:
    """loss.backward() and optimizer.step(), through the scaler when there is one (a step whose scaled
    gradients overflowed is skipped and the scale lowered, as GradScaler does). `after_backward` runs
    between the two (data-parallel runs average the gradients DDP does not own there)."""
    if scaler is None:
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if after_backward is not None:
        after_backward()
    scaler.step(optimizer)
    scaler.update()


# what inductor builds with: C++ kernels on the CPU; on CUDA, Triton compiles its small C launcher
_COMPILERS = {"cpu": ("CXX", ("g++", "c++", "clang++"), "a C++ compiler (g++ or clang++)"),
              "cuda": ("CC", ("cc", "gcc", "clang"), "a C compiler (gcc or clang, for Triton)")}


def compile_model(model: nn.Module, device: torch.device, *, field: str = "train.compile") -> None:
    """torch.compile `model` in place (nn.Module.compile: its state_dict keys stay as they are, so
    checkpoints and model files do not change). Without the compiler inductor needs, that is a user
    error here, not a failure deep inside the first step."""
    env, names, what = _COMPILERS.get(device.type, ("", (), ""))
    if names and not any(shutil.which(cc) for cc in (os.environ.get(env, ""), *names) if cc):
        raise KdedgeError(f"{field}: torch.compile on {device.type} needs {what} on PATH; "
                          f"install one or set {field}: false")
    model.compile()


def set_determinism(device: torch.device, deterministic: bool) -> None:
    """On CUDA, `deterministic` selects deterministic kernels (torch.use_deterministic_algorithms, no cuDNN
    autotuning, cuBLAS's fixed workspace); otherwise cuDNN autotunes convolutions (fastest, not bitwise
    repeatable). Each fit sets both ways, so one model's setting does not leak into the next. On the CPU
    torch's kernels are already repeatable for a fixed thread count, so nothing is changed there."""
    if device.type != "cuda":
        return
    if deterministic:
        # read by cuBLAS when it creates its handle: set it before the first matmul of the process (the
        # README says to export it when a GPU run must be bitwise repeatable from its first step)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
