"""The one table of export formats. Each row carries its behaviour: the producer that writes the
artifact, the settings recorded with it, what it needs installed, and the format it is built from;
adding a format is one row here and one producer module. Every request is checked against the table;
a wrong name is an error that lists the valid ones (never auto-corrected)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kdedge.errors import KdedgeError
from kdedge.export import engine, mc_formats, onnx_fp32, ort_int8, trt_qdq
from kdedge.export.job import ExportJob, ExportOptions
from kdedge.extras import MODELOPT, TENSORRT, Requirement


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str       # file name = <model stage>/model<suffix>
    runtime: str
    gated: bool       # checked against the fp32 reference through the parity gate (INT8, fp16, ...);
                      # False only for the reference itself, which is checked against torch
    purpose: str
    produce: Callable[[ExportJob], dict[str, Any]]               # writes job.out; extra manifest fields
    settings: Callable[[ExportOptions, bool], dict[str, Any]]    # (options, own_scales): what shapes it
    needs: tuple[Requirement, ...] = ()
    built_from: str | None = None  # the format whose finished artifact it is made from (exported first)
    needs_modules: bool = False    # works on the model's PyTorch layers (a teacher given as a torch.export
                                   # program or ONNX file has none: skipped for it with a note)
    # INT8 fallback (kdedge/export/fallback.py): ranks the layers the producer can keep in fp32 (job.fp32_layers),
    # most sensitive first; None: the format has no layers of its own to keep (an engine inherits its source's)
    rank_layers: Callable[..., list[Any]] | None = None   # (job, tick=(done, total) -> None)
    cpu_timed: bool = False        # ONNX Runtime on the CPU is its runtime: the fallback's speed cost is timed
    # why the format cannot be made of this torch model (the MC formats need an active nn.Dropout), or None
    not_applicable: Callable[[Any], str | None] | None = None

    def unmet(self) -> str | None:
        """Why this machine cannot make the format (the first requirement missing), or None."""
        return next((reason for r in self.needs if (reason := r.missing()) is not None), None)


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", "onnxruntime, TensorRT, any ONNX runtime", False,
                 "fp32 reference; dynamic batch, opset 18", produce=onnx_fp32.produce, settings=onnx_fp32.settings),
    ExportFormat("onnx-int8", ".int8.onnx", "onnxruntime (CPU)", True,
                 "fast INT8 on CPUs: QDQ, per-channel S8 weights, U8 activations, static calibration",
                 produce=ort_int8.produce, settings=ort_int8.settings, built_from="onnx",
                 rank_layers=ort_int8.rank_layers, cpu_timed=True),
    ExportFormat("onnx-int8-trt", ".int8-trt.onnx", "TensorRT (explicit quantization)", True,
                 "symmetric S8 Q/DQ for TensorRT engines (nvidia-modelopt)",
                 produce=trt_qdq.produce, settings=trt_qdq.settings, needs=(MODELOPT,), needs_modules=True,
                 rank_layers=trt_qdq.rank_layers),
    ExportFormat("engine", ".engine", "TensorRT (this GPU only)", True,
                 "serialized TensorRT engine from the onnx-int8-trt model; build it on the target device",
                 produce=engine.produce, settings=engine.settings, needs=(TENSORRT, engine.CUDA_GPU),
                 built_from="onnx-int8-trt", needs_modules=True),
    ExportFormat("onnx-mc", ".mc.onnx", "onnxruntime (CPU, CUDA), TensorRT", True,
                 "MC dropout in the graph (--mc-dropout N): mean probabilities, entropy, variance in one call",
                 produce=mc_formats.produce, settings=mc_formats.settings, needs_modules=True,
                 not_applicable=mc_formats.not_applicable),
    ExportFormat("onnx-mc-int8", ".mc.int8.onnx", "onnxruntime (CPU)", True,
                 "the MC graph in ONNX Runtime INT8 (as onnx-int8; the MC statistics stay fp32)",
                 produce=mc_formats.produce_int8, settings=mc_formats.settings_int8, built_from="onnx-mc",
                 needs_modules=True, not_applicable=mc_formats.not_applicable),
    ExportFormat("onnx-mc-int8-trt", ".mc.int8-trt.onnx", "TensorRT (explicit quantization)", True,
                 "the MC graph with symmetric S8 Q/DQ for TensorRT (nvidia-modelopt)",
                 produce=mc_formats.produce_trt, settings=mc_formats.settings_trt, needs=(MODELOPT,),
                 built_from="onnx-mc", needs_modules=True, not_applicable=mc_formats.not_applicable),
)}

# INT8 parity is measured against this fp32 export, so asking for any INT8 format exports it too.
REFERENCE = "onnx"
# `kdedge export RUN --int8` asks for these (each only where this machine meets its needs).
INT8_DEFAULT = ("onnx", "onnx-int8", "onnx-int8-trt")
# `kdedge export RUN --mc-dropout N` asks for these (the same way).
MC_DEFAULT = ("onnx-mc", "onnx-mc-int8", "onnx-mc-int8-trt")


def parse_formats(names: list[str]) -> list[ExportFormat]:
    """The formats named (comma lists allowed) and those they are built from, in table order, each
    checked against FORMATS."""
    wanted: list[str] = []
    for item in names:
        for name in (part.strip() for part in item.split(",")):
            if not name:
                continue
            if name not in FORMATS:
                raise KdedgeError(f"--format {name!r}: unknown export format; valid: {', '.join(FORMATS)}")
            wanted.append(name)
    for name in list(wanted):
        source = FORMATS[name].built_from
        while source is not None:
            wanted.append(source)
            source = FORMATS[source].built_from
    if any(FORMATS[n].gated for n in wanted):
        wanted.append(REFERENCE)
    return [f for name, f in FORMATS.items() if name in wanted]


def int8_default(note: Callable[[str], None], names: tuple[str, ...] = INT8_DEFAULT) -> list[str]:
    """What `--int8` (or `--mc-dropout`: names=MC_DEFAULT) asks for on this machine: `names` less the
    formats it cannot make, each noted."""
    chosen = []
    for name in names:
        reason = FORMATS[name].unmet()
        if reason is None:
            chosen.append(name)
        else:
            note(f"{name} skipped: {reason}")
    return chosen


def not_applicable_models(formats: list[ExportFormat], stages: list[str], load: Callable[[str], Any],
                          named: list[str] | None) -> dict[tuple[str, str], str]:
    """(format, model) -> why that format cannot be made of that model (the MC formats: no dropout), each
    model loaded by `load`. An error, before any work, when the user named the model (`named`, --models)
    or when none of the models can have the format."""
    out: dict[tuple[str, str], str] = {}
    models: dict[str, Any] = {}
    for fmt in (f for f in formats if f.not_applicable is not None):
        for stage in stages:
            model = models[stage] = models[stage] if stage in models else load(stage)
            if getattr(model, "foreign_kind", None):
                continue  # no PyTorch layers: skipped by needs_modules, with its own note
            why = fmt.not_applicable(model)
            if why is not None and named is not None:
                raise KdedgeError(f"{stage}: format {fmt.name}: {why}; export it without --mc-dropout, or "
                                  "train it with dropout > 0 in its model spec")
            if why is not None:
                out[fmt.name, stage] = why
        if stages and all((fmt.name, s) in out for s in stages):
            raise KdedgeError(f"format {fmt.name}: no model of the run can have it ({out[fmt.name, stages[0]]}); "
                              "give a model dropout > 0 in its model spec, or export without --mc-dropout")
    return out


def formats_table() -> list[list[str]]:
    def install(f: ExportFormat) -> str:
        return ", ".join(f"kdedge[{r.extra}]" for r in f.needs if r.extra) or "core"

    return [[f.name, f"model{f.suffix}", f.runtime, f.purpose, install(f)] for f in FORMATS.values()]
