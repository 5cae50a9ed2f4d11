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
            raise KdedgeError(f"{self.manifest_path}: corrupt manifest ({exc}); "
                              "rerun the recipe with --force to rebuild the run") from None
        if not isinstance(data, dict) or "recipe" not in data or "recipe_hash" not in data:
            raise KdedgeError(f"{self.manifest_path}: not a kdedge manifest (no recipe/recipe_hash); "
                              "rerun the recipe with --force to rebuild the run")
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


def open_run(recipe: Recipe, recipe_file: Path | None, *, force: bool) -> "PlannedRun":
    """Check that `recipe` may use its run directory; nothing is written yet.

    A run made by the same recipe is reopened; one made by a different recipe is refused unless
    `force`. The directory is (re)created by `PlannedRun.create`, once the stage's inputs have loaded,
    so a failing input never leaves a half-made or cleared run behind.
    """
    run = RunDir(recipe.output_dir / recipe.name)
    for parent in [run.root, *run.root.parents]:
        if parent.exists() and not parent.is_dir():
            raise KdedgeError(f"{parent}: is a file, so the run directory {run.root} cannot be made there; "
                              "change the recipe's output_dir or name")
    if run.root.exists() and any(run.root.iterdir()) and not run.manifest_path.is_file():
        # Never replace (even with --force) a directory kdedge did not make: it may be anything.
        raise KdedgeError(f"{run.root}: exists and is not a kdedge run (no {MANIFEST}); "
                          "choose another recipe name or output_dir, or move that directory away")
    if run.root.exists() and any(run.root.iterdir()) and not force:
        existing = run.read_manifest()
        if existing["recipe_hash"] != recipe.hash:
            raise KdedgeError(
                f"{run.root}: was made by a different recipe (hash {existing['recipe_hash']} from "
                f"{existing.get('recipe_file')}, yours is {recipe.hash}); pass --force to replace "
                "that run or change the recipe's name")
        return PlannedRun(run, recipe, recipe_file, exists=True, force=False)
    return PlannedRun(run, recipe, recipe_file, exists=False, force=force)


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
        if self.force and root.exists():
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
