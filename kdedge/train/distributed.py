"""Data-parallel training across processes (torchrun / torch's elastic launcher), gloo on CPU, NCCL on CUDA.

Every rank runs the same command and pipeline. The recipe's batch size stays the *global* batch: each
step takes the same seeded global batch as a one-process run and every rank trains on its own slice of
it (what a DistributedSampler does, batch by batch), so results are comparable with one process. The
model is wrapped in DDP (gradients averaged, BatchNorm buffers broadcast from rank 0 at each forward and
again after each epoch); helper modules outside the model (hint adapters) have their gradients averaged
here. Only rank 0 prints, locks the run and writes files (kdedge.io.WriteRole); the other ranks meet it
after each write, then read what it wrote — so the run directory must be on storage every node sees.
"""

from __future__ import annotations

import hashlib
import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from kdedge import ranks
from kdedge.errors import KdedgeError
from kdedge.io import WriteRole, set_write_role

# a rank stuck waiting for one that died is released by the launcher; this bounds anything else
_TIMEOUT = timedelta(minutes=30)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


class _RankWrites(WriteRole):
    def __init__(self, writer: bool) -> None:
        self.is_writer = writer
        self.collective = True

    def before_write(self) -> None:
        if self.collective:
            barrier()

    def after_write(self) -> None:
        if self.collective:
            barrier()

    def sync(self) -> None:
        if self.collective:
            barrier()

    def stop_waiting(self) -> None:
        self.collective = False


def init_from_env(device_name: str | None = None) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); False in a plain process.
    CUDA ranks use NCCL on their LOCAL_RANK GPU, CPU ranks gloo."""
    if not ranks.launched() or active():
        return active()
    use_cuda = device_name in (None, "auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        if ranks.local_rank() >= torch.cuda.device_count():
            raise KdedgeError(f"--nproc-per-node: worker {ranks.local_rank()} has no GPU of its own (this node has "
                              f"{torch.cuda.device_count()}); start at most {torch.cuda.device_count()} processes "
                              "per node, or use --device cpu")
        torch.cuda.set_device(ranks.local_rank())
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=_TIMEOUT)
    set_write_role(_RankWrites(writer=dist.get_rank() == 0))
    return True


@contextmanager
def process_group(device_name: str | None) -> Iterator[bool]:
    """Joined for the block when launched by torchrun (yields whether it is a multi-process run)."""
    joined = init_from_env(device_name)
    try:
        yield joined
    finally:
        if joined:
            shutdown()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    set_write_role(None)


def barrier() -> None:
    if active():
        dist.barrier()


def local_slice(n: int) -> tuple[int, int]:
    """This rank's contiguous [start, end) of n items (ranks differ by at most one item)."""
    size, r = world(), rank()
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as the training step should call it: DDP in a multi-process run, itself otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # BatchNorm buffers from rank 0 at every forward (the keyword was renamed in newer torch)
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": True}
    # unused parameters are allowed: a recipe whose only loss is a hint term leaves the classifier without
    # gradients, which DDP would otherwise refuse at the second step
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True, **sync)


def wrap_for_training(model: nn.Module, device: torch.device, *, channels_last: bool, sync_bn: bool = False,
                      field: str = "train.sync_bn") -> nn.Module:
    """`model` on its device in its memory format, wrapped in DDP, when this is a multi-process run
    (DDP is built on the final parameters, so the loop's own moves are then no-ops). `sync_bn` swaps its
    BatchNorm layers for SyncBatchNorm in place (same state_dict keys), which only CUDA supports."""
    if sync_bn and device.type != "cuda":
        raise KdedgeError(f"{field}: SyncBatchNorm runs on CUDA only (this run trains on {device}); set "
                          f"{field}: false — BatchNorm statistics then come from rank 0")
    if not active():
        return model
    from kdedge.inference import uses_conv

    if sync_bn:
        for name, child in list(model.named_children()):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    model.to(device)
    if channels_last and uses_conv(model):
        model.to(memory_format=torch.channels_last)
    return wrap(model, device)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside a DDP wrapper (for feature paths, saving, evaluation)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _comm_device(t: torch.Tensor) -> torch.device:
    """NCCL moves CUDA tensors only, gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (a new tensor on t's device); t itself when not distributed."""
    if not active():
        return t
    buf = t.detach().to(_comm_device(t)).clone()
    dist.all_reduce(buf)
    return buf.to(t.device)


def average_gradients(modules: nn.Module | None) -> None:
    """Average the gradients of modules trained outside DDP (hint adapters) over ranks."""
    if not active() or modules is None:
        return
    for p in modules.parameters():
        if p.grad is not None:
            p.grad.copy_(all_reduce_sum(p.grad) / world())


def broadcast_buffers(*modules: nn.Module | None) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if not active():
        return
    for module in modules:
        if module is None:
            continue
        for b in module.buffers():
            buf = b.detach().to(_comm_device(b)).clone()
            dist.broadcast(buf, src=0)
            b.copy_(buf.to(b.device))


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's `local_slice(n)` rows, in rank order: the whole [n, ...] tensor."""
    if not active():
        return local
    rows = -(-n // world())
    padded = torch.zeros((rows, *local.shape[1:]), dtype=local.dtype, device=_comm_device(local))
    padded[:len(local)] = local.to(padded.device)
    parts = [torch.empty_like(padded) for _ in range(world())]
    dist.all_gather(parts, padded)
    pieces = []
    for r, part in enumerate(parts):
        base, extra = divmod(n, world())
        pieces.append(part[:base + (1 if r < extra else 0)])
    return torch.cat(pieces).to(local.device)


@dataclass(frozen=True)
class RankDigests:
    """SHA-256 of every rank's final weights: the proof that the ranks ended identical."""

    world_size: int
    sha256: list[str]

    @property
    def identical(self) -> bool:
        return len(set(self.sha256)) == 1

    def record(self) -> dict:
        return {"world_size": self.world_size, "weights_sha256_per_rank": self.sha256,
                "ranks_identical": self.identical}


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, t in sorted(unwrap(model).state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_digests(model: nn.Module) -> RankDigests | None:
    """Every rank's weight digest (None outside a multi-process run); raises if the ranks diverged."""
    if not active():
        return None
    mine = weights_digest(model)
    gathered: list[str | None] = [None] * world()
    dist.all_gather_object(gathered, mine)
    digests = RankDigests(world(), [str(d) for d in gathered])
    if not digests.identical:
        raise KdedgeError(f"data-parallel training: the {world()} ranks ended with different weights "
                          f"({', '.join(d[:12] for d in digests.sha256)}); report this with the recipe")
    return digests
