"""`kdedge train|distill RECIPE --nproc-per-node N`: start N workers of the same command with torch's
elastic launcher (what `torchrun` runs), so one command trains data-parallel on every core or GPU of a
node; with --nnodes and --rdzv-endpoint the same command joins a multi-node job.

Each worker is `python -m kdedge <command> <args>` without the launch options; torchrun sets RANK,
WORLD_SIZE and LOCAL_RANK, and kdedge.train.distributed joins the process group from them.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from dataclasses import dataclass

from kdedge.errors import KdedgeError


@dataclass(frozen=True)
class LaunchPlan:
    nproc_per_node: int
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # HOST:PORT of the rendezvous (node 0); one node: a free local port
    run_id: str | None = None         # shared by the nodes of one job

    def check(self) -> None:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise KdedgeError(f"--nnodes {self.nnodes}: give --rdzv-endpoint HOST:PORT (the address of node 0, "
                              "the same on every node), and start the same command on each node")
        if self.rdzv_endpoint and ":" not in self.rdzv_endpoint:
            raise KdedgeError(f"--rdzv-endpoint {self.rdzv_endpoint!r}: expected HOST:PORT, e.g. node0:29400")

    def torchrun_args(self, worker_argv: list[str]) -> list[str]:
        """torchrun's command line for this plan (an argument list, never a shell string)."""
        args = ["--nproc-per-node", str(self.nproc_per_node), "--nnodes", str(self.nnodes), "--max-restarts", "0"]
        if self.rdzv_endpoint:
            args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint,
                     "--rdzv-id", self.run_id or "kdedge"]
        else:  # one node: the rendezvous on a free port, reached through localhost
            args += ["--standalone"]
        return [*args, "-m", "kdedge", *worker_argv]


def worker_argv(argv: list[str]) -> list[str]:
    """The command line without the launch options (the workers must not launch again)."""
    out: list[str] = []
    skip = False
    launch_opts = ("--nproc-per-node", "--nnodes", "--rdzv-endpoint")
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in launch_opts:
            skip = True
            continue
        if arg.startswith(tuple(f"{o}=" for o in launch_opts)):
            continue
        out.append(arg)
    return out


def launch(plan: LaunchPlan, argv: list[str] | None = None) -> int:
    """Run the workers to completion; the exit code of the first that failed (0 when all finished).
    Each worker prints its own one-line error; this adds which rank it was."""
    plan.check()
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    argv = sys.argv[1:] if argv is None else argv
    # one CPU thread per worker unless the command says --threads (torchrun's own default, said quietly)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # the launcher's own log lines repeat what the workers and the line below say
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.run").setLevel(logging.CRITICAL)
    args = parse_args(plan.torchrun_args(worker_argv(argv)))
    if args.rdzv_id == "none":
        args.rdzv_id = plan.run_id or uuid.uuid4().hex[:12]
    try:
        run(args)
    except SignalException:  # Ctrl-C / SIGTERM: the launcher has stopped every worker, rank 0 said what was kept
        return 130
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode if isinstance(failure.exitcode, int) else 1
        if code < 0:  # killed by a signal: it printed nothing
            print(f"kdedge: error: data-parallel worker rank {rank} was killed by signal {-code} (out of memory?); "
                  "finished epochs are kept — rerun with --resume", file=sys.stderr)
            return 128 - code
        print(f"kdedge: error: data-parallel worker rank {rank} stopped with exit code {code}"
              + (" (interrupted)" if code == 130 else "; its message is above"), file=sys.stderr)
        return code or 1
    except Exception as exc:  # the rendezvous: an unreachable endpoint, a port in use, nodes that never came
        print(f"kdedge: error: could not start the data-parallel workers ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check --rdzv-endpoint "
              f"{plan.rdzv_endpoint or '(local)'} and that every node runs the same command", file=sys.stderr)
        return 1
    return 0
