"""Trials: recipes run each in its own run directory, one after another or in parallel on Ray Tune.

trial.py        a Trial (name, recipe dict, run directory), running one in process, its outcome, reuse
local.py        the local backend: trials one after another in this process
ray_backend.py  the Ray backend: each trial a Ray Tune trial; a one-machine Ray on 127.0.0.1 or a cluster
live.py         the live table of trials (rich Live)
seeds.py        one run per seed and the mean ± std table (`kdedge distill --seeds`, bench/kd_seeds.py)
"""

from __future__ import annotations

from kdedge.errors import KdedgeError
from kdedge.trials.local import LocalBackend
from kdedge.trials.trial import Stage, Trial, TrialOutcome, TrialsFailed, run_trial

BACKENDS = ("local", "ray")
INSTALL_HINT = "pip install 'kdedge[ray]'"


def require_ray() -> None:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401 -- the [ray] extra is ray[tune]; ray alone is not enough
    except ImportError:
        raise KdedgeError(f"--backend ray needs Ray Tune, which is not installed: {INSTALL_HINT} "
                          "(or use --backend local)") from None


def make_backend(name: str, *, address: str | None = None, cpus_per_trial: float | None = None,
                 gpus_per_trial: float | None = None):
    """The backend named on the command line; Ray's options go with --backend ray only."""
    if name == "local":
        given = [flag for flag, value in (("--address", address), ("--cpus-per-trial", cpus_per_trial),
                                          ("--gpus-per-trial", gpus_per_trial)) if value is not None]
        if given:
            raise KdedgeError(f"{', '.join(given)}: only with --backend ray (the local backend runs the trials one "
                              "after another in this process)")
        return LocalBackend()
    if name == "ray":
        require_ray()  # before anything runs
        from kdedge.trials.ray_backend import RayBackend

        return RayBackend(address=address, cpus_per_trial=1.0 if cpus_per_trial is None else cpus_per_trial,
                          gpus_per_trial=0.0 if gpus_per_trial is None else gpus_per_trial)
    raise KdedgeError(f"--backend {name!r}: unknown; allowed: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "INSTALL_HINT", "LocalBackend", "Stage", "Trial", "TrialOutcome", "TrialsFailed", "make_backend", "require_ray", "run_trial"]
