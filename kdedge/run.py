"""The run directory: layout, manifest, and the rules that keep finished results safe.

runs/<name>/manifest.json       recipe + hash, versions, seeds, data shape, stage records, temperatures
           teacher/model.pt      final weights + the spec needed to rebuild the model
           teacher/checkpoint.pt training state after the last finished epoch (for --resume)
           teacher/metrics.json  per-epoch history and final metrics
           teacher/calibration.json, teacher/reliability.png
Stages share nothing in memory: each reads the manifest and files, and writes its own.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from kdedge import __version__
from kdedge.errors import KdedgeError
from kdedge.io import write_json
from kdedge.lock import run_lock
from kdedge.ranks import is_main_process
from kdedge.recipe import Recipe, recipe_from_dict

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def read_manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise KdedgeError(f"{self.root}: not a kdedge run directory (no {MANIFEST}); "
                              "give a directory made by `kdedge train RECIPE`") from None
        except OSError as exc:
            raise KdedgeError(f"{self.manifest_path}: cannot read the manifest ({exc.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # no --force hint: a manifest.json that does not parse may be anyone's, and is never cleared
            raise KdedgeError(f"{self.manifest_path}: corrupt manifest ({exc}); not a kdedge run kdedge can use: "
                              "restore the file, or move the directory away and rerun the recipe") from None
        problem = manifest_problem(data)
        if problem:
            raise KdedgeError(f"{self.manifest_path}: not a kdedge manifest ({problem}); give a directory made "
                              "by `kdedge train RECIPE` (kdedge never replaces a directory it did not make)")
        return data

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into the manifest (dicts merge one level deep) and write it atomically."""
        data = self.read_manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        data["updated"] = _now()
        write_json(self.manifest_path, data)
        return data

    def recipe(self) -> Recipe:
        return recipe_from_dict(self.read_manifest()["recipe"], source=str(self.manifest_path))

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.read_manifest().get("stages", {}).get(stage)


def manifest_problem(data: Any) -> str | None:
    """Why `data` is not a kdedge manifest, else None. Strict, because --force clears only a directory
    whose manifest passes: a browser extension's or a web app's manifest.json must not."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("recipe"), dict) or not isinstance(data["recipe"].get("name"), str):
        return "no recipe"
    if not isinstance(data.get("recipe_hash"), str) or not re.fullmatch(r"[0-9a-f]{16}", data["recipe_hash"]):
        return "no recipe_hash"
    for key in ("stages", "temperatures", "exports", "data", "timings"):
        if not isinstance(data.get(key, {}), dict):
            return f"field {key} is not a mapping"
    # the records too: a hand-edited one would otherwise be a traceback deep inside a stage
    records = [(f"stages.{name}", record, _STAGE_FIELDS) for name, record in data.get("stages", {}).items()]
    for stage, formats in data.get("exports", {}).items():
        if not isinstance(formats, dict):
            return f"field exports.{stage} is not a mapping"
        records += [(f"exports.{stage}.{name}", entry, _EXPORT_FIELDS) for name, entry in formats.items()]
    for where, record, fields in records:
        if not isinstance(record, dict):
            return f"field {where} is not a mapping"
        wrong = next((key for key, kind in fields.items() if key in record and not isinstance(record[key], kind)), None)
        if wrong:
            return f"field {where}.{wrong} is not a {fields[wrong].__name__}"
    return None


# the record fields that kdedge reads back, with their types (kdedge.cli.app, summary, stages)
_STAGE_FIELDS = {"status": str, "model": str, "train": dict, "val": dict, "test": dict}
_EXPORT_FIELDS = {"file": str, "format": str, "bytes": int, "sha256": str, "parity": dict, "parity_failures": list,
                  "input": dict, "settings": dict}


def check_run_path(root: Path) -> None:
    """A run directory can be made at `root` (no file in the way)."""
    for parent in [root, *root.parents]:
        if parent.exists() and not parent.is_dir():
            raise KdedgeError(f"{parent}: is a file, so the run directory {root} cannot be made there; "
                              "change the recipe's output_dir or name")


def lock_recipe_run(recipe: Recipe):
    """The recipe's run directory locked for this command (made if missing; removed again if the command
    writes nothing there). Take it before open_run, so what open_run finds cannot change under it."""
    root = recipe.output_dir / recipe.name
    check_run_path(root)
    return run_lock(root, create=True)


def open_run(recipe: Recipe, recipe_file: Path | None, *, force: bool) -> "PlannedRun":
    """Check that `recipe` may use its run directory; nothing is written yet.

    A run made by the same recipe is reopened; one made by a different recipe is refused unless
    `force`. A directory that is not a kdedge run is refused even with `force`. The directory is
    (re)created by `PlannedRun.create`, once the stage's inputs have loaded, so a failing input never
    leaves a half-made or cleared run behind.
    """
    run = RunDir(recipe.output_dir / recipe.name)
    check_run_path(run.root)
    if not _has_contents(run.root):
        return PlannedRun(run, recipe, recipe_file, exists=False, force=force)
    existing = foreign_check(run)
    if force:
        return PlannedRun(run, recipe, recipe_file, exists=False, force=True)
    if existing["recipe_hash"] != recipe.hash:
        raise KdedgeError(
            f"{run.root}: was made by a different recipe (hash {existing['recipe_hash']} from "
            f"{existing.get('recipe_file')}, yours is {recipe.hash}); pass --force to replace "
            "that run or change the recipe's name")
    return PlannedRun(run, recipe, recipe_file, exists=True, force=False)


def foreign_check(run: RunDir) -> dict[str, Any]:
    """The manifest of the non-empty directory `run.root`; a directory kdedge did not make is refused
    (never with a --force hint: --force does not replace it either)."""
    try:
        return run.read_manifest()
    except KdedgeError:
        why = f"no {MANIFEST}" if not run.manifest_path.is_file() else f"its {MANIFEST} is not a kdedge manifest"
        raise KdedgeError(f"{run.root}: exists and is not a kdedge run ({why}); kdedge never replaces a "
                          "directory it did not make: choose another recipe name or output_dir, or move "
                          "that directory away") from None


def _has_contents(root: Path) -> bool:
    return root.is_dir() and any(root.iterdir())


@dataclass(frozen=True)
class PlannedRun:
    run: RunDir
    recipe: Recipe
    recipe_file: Path | None
    exists: bool
    force: bool

    def create(self) -> RunDir:
        """Make the run directory and its manifest (clearing an old run first under --force)."""
        if self.exists:
            return self.run
        root = self.run.root
        if self.force and _has_contents(root) and is_main_process():  # other data-parallel ranks never delete
            foreign_check(self.run)  # checked again right before clearing: only a kdedge run is cleared
            _clear(root)
        root.mkdir(parents=True, exist_ok=True)
        write_json(self.run.manifest_path, {
            "manifest_version": MANIFEST_VERSION,
            "kdedge_version": __version__,
            "created": _now(),
            "recipe_file": str(self.recipe_file) if self.recipe_file else None,
            "recipe_hash": self.recipe.hash,
            "recipe": self.recipe.to_dict(),
            "seeds": {"seed": self.recipe.seed, "split_seed": self.recipe.data.split_seed},
            "versions": package_versions(),
            "stages": {},
            "temperatures": {},
        })
        return self.run

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.run.stage_record(stage) if self.exists else None


def _clear(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform(), "kdedge": __version__}
    for dist in ("torch", "numpy", "onnx", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def machine_info() -> dict[str, Any]:
    """CPU model, core count and SIMD flags, for reports that quote timings."""
    import os

    model_name: str | None = None
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model_name is None:
                model_name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    cpu = model_name or platform.processor() or platform.machine()
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "platform": platform.platform(), "simd": simd_flags(flags)}


def simd_flags(cpu_flags: list[str]) -> list[str]:
    """The flags INT8 speed hinges on: VNNI (AVX512_VNNI / AVX_VNNI) or AMX do u8*s8 dot products in one
    instruction; with AVX2 alone, ONNX Runtime's INT8 kernels are barely faster than fp32."""
    return sorted(f for f in cpu_flags if f.startswith(("avx", "amx")) or "vnni" in f)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def mark_own_stages_stopped(root: Path, status: str, why: str) -> None:
    """Best effort: the stages this process left "running" in the run at `root` say it stopped (failed,
    interrupted) and why. Only stages this process started: a command that failed to get the run's lock
    must not touch the stages of the command that holds it. A full disk may refuse even this."""
    import os

    run = RunDir(root)
    try:
        if not run.manifest_path.is_file():
            return
        stages = run.read_manifest().get("stages", {})
        stopped = {name: {**record, "status": status, "error": why} for name, record in stages.items()
                   if isinstance(record, dict) and record.get("status") == "running"
                   and record.get("pid") == os.getpid()}
        if stopped:
            run.update_manifest(stages=stopped)
    except (KdedgeError, OSError):
        pass
