"""What `kdedge bench --device jetson` adds on the Jetson itself (run there directly, or by `--host`):

- device facts a Jetson timing means nothing without: power mode (`nvpmodel -q`), L4T and JetPack
  releases (/etc/nv_tegra_release, `dpkg-query -W nvidia-jetpack`), the TensorRT version, and a
  tegrastats sample (GPU load and clock, power, temperatures) taken while the models are measured;
- TensorRT engines built on the device with trtexec (engines do not move between GPUs) from each
  model's Q/DQ ONNX (INT8), fp32 ONNX (FP16) and MC-dropout Q/DQ ONNX (when exported), timed by
  trtexec at batch 1 and at --batch.

Every tool is optional: one that is missing or prints something unreadable is recorded as
unavailable, with the reason, and the bench goes on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

from kdedge.bench.jetson_parse import TegrastatsSample, parse_jetson_release, parse_nvpmodel, parse_tegrastats_log
from kdedge.bench.trtexec import JETSON_TRTEXEC, batch_profile_args, trtexec_command, trtexec_load_command
from kdedge.bench.trtexec_parse import parse_trtexec
from kdedge.errors import KdedgeError
from kdedge.io import write_text
from kdedge.layout import run_file

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")  # a module constant so tests can point it at a fixture
TOOL_TIMEOUT_S = 30
TRTEXEC_TIMEOUT_S = 1800      # a build of a large model on a Nano takes minutes
TEGRASTATS_INTERVAL_MS = 500
# (precision, export format, trtexec flags): INT8 from the Q/DQ ONNX (its scales decide what runs in
# INT8), FP16 from the fp32 ONNX, so the report shows what quantization buys on this device
# the MC-dropout graph's TensorRT form (`kdedge export --int8 --mc-dropout N`): its engine's latency is read
# against the INT8 one, and kdedge/bench/mc_onnx.py runs it for the MC statistics. No --fp16: the softmax,
# log and entropy at its end must stay fp32 (a probability's clamp at 1e-38 is 0 in fp16: 0 * log 0 = NaN)
MC_PRECISION = "mc-int8"
TRT_BUILDS = (("int8", "onnx-int8-trt", {"int8": True, "fp16": True}),
              ("fp16", "onnx", {"int8": False, "fp16": True}),
              (MC_PRECISION, "onnx-mc-int8-trt", {"int8": True, "fp16": False}))
TRT_DIR = "trt"               # under <run>/bench: the engines built here and trtexec's full logs


def _run_tool(argv: list[str], timeout: float = TOOL_TIMEOUT_S) -> str:
    """stdout+stderr of a device tool; KdedgeError (a one-line reason) if it is missing or fails."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=timeout)
    except FileNotFoundError:
        raise KdedgeError(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise KdedgeError(f"{argv[0]} did not finish within {timeout:g}s") from None
    if proc.returncode != 0 and not proc.stdout.strip():
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise KdedgeError(f"{' '.join(argv)} failed: {last}")
    return proc.stdout + proc.stderr


def _optional(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except KdedgeError as exc:
        return {"available": False, "reason": exc.message}


def device_info() -> dict[str, Any]:
    """Power mode, L4T/JetPack and TensorRT versions of this Jetson (each {"available": False, ...} if unknown)."""
    return {"power_mode": _optional(_power_mode), "release": _optional(_release),
            "tensorrt": _optional(_tensorrt_python)}


def _power_mode() -> dict[str, Any]:
    return {"available": True, **asdict(parse_nvpmodel(_run_tool(["nvpmodel", "-q"])))}


def _release() -> dict[str, Any]:
    try:
        tegra = NV_TEGRA_RELEASE.read_text(errors="replace")
    except OSError:
        tegra = ""
    try:
        jetpack = _run_tool(["dpkg-query", "-W", "nvidia-jetpack"])
    except KdedgeError:
        jetpack = ""  # L4T without the JetPack meta-package: the L4T release alone still identifies it
    return {"available": True, **asdict(parse_jetson_release(tegra, jetpack))}


def _tensorrt_python() -> dict[str, Any]:
    from kdedge.export.tensorrt_engine import tensorrt_version

    version = tensorrt_version()
    if version is None:
        raise KdedgeError("the tensorrt Python module is not importable")
    return {"available": True, "version": version, "source": "tensorrt Python module"}


def find_trtexec() -> str | None:
    found = shutil.which("trtexec")
    if found:
        return found
    return JETSON_TRTEXEC if os.access(JETSON_TRTEXEC, os.X_OK) else None


# ---------------------------------------------------------------------------------------------------
# tegrastats during the measurements


class TegrastatsSampler:
    """`tegrastats --interval 500` running into a temp file; summary() after stop()."""

    def __init__(self) -> None:
        self._log = tempfile.TemporaryFile(mode="w+b")
        self._proc: subprocess.Popen[bytes] | None = None
        self._reason: str | None = None

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(["tegrastats", "--interval", str(TEGRASTATS_INTERVAL_MS)],
                                          stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        except OSError as exc:
            self._reason = "tegrastats not found" if isinstance(exc, FileNotFoundError) else f"tegrastats: {exc}"

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def summary(self) -> dict[str, Any]:
        if self._reason is not None:
            return {"available": False, "reason": self._reason}
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        self._log.close()
        try:
            samples = parse_tegrastats_log(text)
        except KdedgeError as exc:
            return {"available": False, "reason": exc.message}
        if not samples:
            return {"available": False, "reason": f"tegrastats printed no sample ({text.strip()[:120]!r})"}
        return {"available": True, **summarise_tegrastats(samples)}


@contextmanager
def tegrastats_sampling(enabled: bool) -> Iterator[TegrastatsSampler | None]:
    if not enabled:
        yield None
        return
    sampler = TegrastatsSampler()
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()  # also on errors and Ctrl-C: no tegrastats left running


def summarise_tegrastats(samples: list[TegrastatsSample]) -> dict[str, Any]:
    """Means and maxima over the samples (what matters for a timing: was the GPU busy, hot, throttled)."""
    def stats(values: list[float]) -> dict[str, float] | None:
        return {"mean": sum(values) / len(values), "max": max(values)} if values else None

    temps: dict[str, float] = {}
    for s in samples:
        for name, t in s.temperatures_c.items():
            temps[name] = max(t, temps.get(name, t))
    rails: dict[str, list[float]] = {}
    for s in samples:
        for name, rail in s.rails.items():
            rails.setdefault(name, []).append(rail.current_mw)
    return {
        "interval_ms": TEGRASTATS_INTERVAL_MS, "samples": len(samples),
        "gpu_load_percent": stats([s.gpu_load_percent for s in samples if s.gpu_load_percent is not None]),
        "gpu_freq_mhz": stats([float(s.gpu_freq_mhz) for s in samples if s.gpu_freq_mhz is not None]),
        "cpu_load_percent": stats([s.cpu_load_percent for s in samples if s.cpu_load_percent is not None]),
        "input_power_mw": stats([s.input_power_mw for s in samples if s.input_power_mw is not None]),
        "ram_used_mb_max": max(s.ram_used_mb for s in samples), "ram_total_mb": samples[0].ram_total_mb,
        "temperature_c_max": temps, "rails_mw": {name: stats(v) for name, v in rails.items()},
    }


# ---------------------------------------------------------------------------------------------------
# trtexec: build on the device, time at batch 1 and --batch


def trtexec_models(run_root: Path, exports: dict[str, Any], stages: list[str], image_shape: tuple[int, ...],
                   batch: int, out_dir: Path, print_: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Path]]:
    """({stage: {precision: result}}, {stage: engine for the `trt` runtime}). A build that fails is
    recorded with trtexec's error and the other builds go on."""
    trtexec = find_trtexec()
    if trtexec is None:
        return {"available": False, "reason": f"trtexec not found on PATH or at {JETSON_TRTEXEC}"}, {}
    # the manifest's paths, only as regular files inside the run (no `../`, no symlink out), all checked
    # before the first build writes anything
    builds = [(stage, precision, fmt, entry, flags,
               run_file(run_root, entry.get("file") if isinstance(entry, dict) else None,
                        what=f"exports.{stage}.{fmt}.file"))
              for stage in stages for precision, fmt, flags in TRT_BUILDS
              if (entry := exports.get(stage, {}).get(fmt)) is not None]
    trt_dir = out_dir / TRT_DIR
    trt_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    engines: dict[str, Path] = {}
    for stage, precision, fmt, entry, flags, onnx in builds:
        result = _build_and_time(trtexec, onnx, entry, trt_dir, f"{stage}.{precision}", image_shape, batch, flags)
        results.setdefault(stage, {})[precision] = {"export": fmt, **result}
        if "error" in result:
            print_(f"[yellow]trtexec[/] {stage} {precision}: {result['error']}")
            continue
        if precision != MC_PRECISION:  # the MC engine has other outputs: not the `trt` runtime's
            engines.setdefault(stage, trt_dir / result["engine"])  # INT8 first: the `trt` runtime runs it
        print_(f"[green]trtexec[/] {stage} {precision}: batch 1 {_median(result['batch1'])} ms")
    return {"available": True, "trtexec": trtexec, "models": results}, engines


def _build_and_time(trtexec: str, onnx: Path, entry: dict[str, Any], trt_dir: Path, stem: str,
                    image_shape: tuple[int, ...], batch: int, flags: dict[str, bool]) -> dict[str, Any]:
    name = (entry.get("input") or {}).get("name") or "images"
    engine = trt_dir / f"{stem}.engine"
    build = trtexec_command(onnx, engine, shapes={name: (1, *image_shape)}, trtexec=trtexec,
                            extra_args=batch_profile_args(name, image_shape, batch), **flags)
    out: dict[str, Any] = {"engine": engine.name}
    try:
        out["batch1"] = _trtexec_report(build, trt_dir / f"{stem}.b1.log")
        if not engine.is_file():
            raise KdedgeError(f"trtexec reported success but wrote no engine {engine.name}")
        if batch != 1:
            load = trtexec_load_command(engine, shapes={name: (batch, *image_shape)}, trtexec=trtexec)
            out[f"batch{batch}"] = _trtexec_report(load, trt_dir / f"{stem}.b{batch}.log")
    except KdedgeError as exc:
        return {"engine": None, "error": exc.message, **{k: v for k, v in out.items() if k.startswith("batch")}}
    return out


def _trtexec_report(argv: list[str], log: Path) -> dict[str, Any]:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=TRTEXEC_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KdedgeError(f"trtexec did not finish within {TRTEXEC_TIMEOUT_S}s") from None
    except OSError as exc:
        raise KdedgeError(f"cannot run {argv[0]}: {exc}") from None
    text = proc.stdout + proc.stderr
    write_text(log, text)  # the full log beside the engine: the parser keeps only what it knows
    report = parse_trtexec(text, source=log.name).to_dict()
    return {**report, "returncode": proc.returncode, "log": log.name}


def _median(report: dict[str, Any]) -> str:
    latency = report.get("latency") or {}
    value = latency.get("median_ms")
    return f"{value:.3f}" if isinstance(value, (int, float)) else "?"


def tensorrt_version_from(info: dict[str, Any], trtexec: dict[str, Any]) -> dict[str, Any]:
    """The TensorRT version: the Python module's, else what trtexec printed."""
    if info.get("available"):
        return info
    for by_precision in (trtexec.get("models") or {}).values():
        for result in by_precision.values():
            version = (result.get("batch1") or {}).get("tensorrt_version")
            if version:
                return {"available": True, "version": version, "source": "trtexec"}
    return info
