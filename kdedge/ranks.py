"""Which process of a data-parallel run this is, from the variables torch's launcher sets (torch-free,
so the CLI and kdedge.io can ask without importing torch.distributed).

Under `torchrun` (or `kdedge distill --nproc-per-node N`) every worker runs the same command; RANK,
WORLD_SIZE and LOCAL_RANK say which one it is. Outside a launcher they are absent: one process, rank 0.
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        return default


def world_size() -> int:
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    return _env_int("RANK", 0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def launched() -> bool:
    """True in a worker of a multi-process run."""
    return world_size() > 1


def is_main_process() -> bool:
    """Rank 0: the one process that prints, locks the run and writes its files."""
    return rank() == 0
