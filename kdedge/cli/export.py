"""`kdedge export`: the run's models as fp32 ONNX, INT8 for ONNX Runtime and TensorRT, TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from kdedge.choices import CalibMethod, Int8Quantization
from kdedge.cli.app import ThreadsOpt, app, stage_context, user_errors


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory made by `kdedge distill`.")],
    int8: Annotated[bool, typer.Option("--int8", help="fp32 ONNX + ONNX Runtime INT8 + TensorRT-form INT8 "
                                                      "(the last where nvidia-modelopt is installed).")] = False,
    mc_dropout: Annotated[Optional[int], typer.Option("--mc-dropout", metavar="N", help="MC dropout inside the "
                                                      "model: model.mc.onnx (N samples per call -> mean probabilities, "
                                                      "entropy, variance) and its INT8 forms; models with dropout "
                                                      "only.")] = None,
    format_: Annotated[Optional[list[str]], typer.Option("--format", "-f", help="Formats to write (repeat or "
                                                         "comma-separate); `kdedge list formats` shows them.")] = None,
    models: Annotated[Optional[str], typer.Option("--models", help="Comma list: teacher,student,baseline,"
                                                  "student_qat (default: every finished one).")] = None,
    calib_images: Annotated[Optional[int], typer.Option("--calib-images", min=1, help="Real training images "
                                                        "(stratified) that set the INT8 ranges (default: recipe, "
                                                        "else 512).")] = None,
    calib_method: Annotated[Optional[CalibMethod], typer.Option("--calib-method", help="INT8 range calibration "
                                                                "of ONNX Runtime INT8 (default: recipe, else minmax).")] = None,
    quantization: Annotated[Int8Quantization, typer.Option("--quantization", help="ONNX Runtime INT8 form; auto = "
                                                           "dynamic for models without convolutions.")] = "auto",
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", help="Parity gate: least top-1 "
                                                           "agreement with fp32 (default: recipe, else 0.99).")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Parity gate: largest accuracy drop, "
                                                      "0.005 = 0.5 pt (default: recipe, else 0.005).")] = None,
    max_fp32_layers: Annotated[Optional[int], typer.Option("--max-fp32-layers", min=0, help="An INT8 export that "
                                                           "fails the gate keeps up to N of its most sensitive layers "
                                                           "in fp32; 0: refuse at once (default: recipe, else 3).")] = None,
    allow_drop: Annotated[bool, typer.Option("--allow-drop", help="Keep INT8 exports that fail the parity gate "
                                             "(recorded as such in the manifest).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing exports made with other settings.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Export the run's models: fp32 ONNX, INT8 for ONNX Runtime and TensorRT, TensorRT engines."""
    from kdedge.export.formats import MC_DEFAULT, int8_default, parse_formats
    from kdedge.export.onnx_mc import DEFAULT_SAMPLES, check_samples
    from kdedge.export.parity import ParityThresholds
    from kdedge.stages.export import ExportOptions, ExportRefusals, export_run

    ctx = stage_context(None, threads)
    requested = list(format_ or [])
    if int8:
        # escaped: the install hint `pip install 'kdedge[modelopt]'` is not rich markup
        requested += int8_default(lambda why: ctx.print(f"[yellow]note[/]: {escape(why)}"))
    if mc_dropout is not None:
        check_samples(mc_dropout)
        requested += int8_default(lambda why: ctx.print(f"[yellow]note[/]: {escape(why)}"), MC_DEFAULT)
    formats = parse_formats(requested or ["onnx"])
    settings = export_settings(run_dir, min_agreement=min_agreement, max_accuracy_drop=max_drop,
                               calib_images=calib_images, calib_method=calib_method, max_fp32_layers=max_fp32_layers)
    options = ExportOptions(
        formats=formats, models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        calib_images=settings.calib_images, calib_method=settings.calib_method,
        quantization=quantization,
        thresholds=ParityThresholds(settings.min_agreement, settings.max_accuracy_drop),
        allow_drop=allow_drop, force=force, max_fp32_layers=settings.max_fp32_layers,
        mc_samples=DEFAULT_SAMPLES if mc_dropout is None else mc_dropout)
    try:
        exports = export_run(run_dir, ctx, options)
    except ExportRefusals as exc:  # what passed is recorded: show it, then the refusals (exit 2)
        if exc.exports:
            ctx.print(export_table(run_dir, exc.exports))
        raise
    ctx.print(export_table(run_dir, exports))


def export_settings(run_root: Path, **given: Any):
    """The recipe's export: section (defaults where it has none) with the command-line values that
    were given (not None) on top."""
    from pydantic import ValidationError

    from kdedge.errors import KdedgeError
    from kdedge.recipe import ExportConfig
    from kdedge.run import RunDir

    raw = RunDir(run_root).read_manifest()["recipe"].get("export") or {}
    merged = {**raw, **{k: v for k, v in given.items() if v is not None}}
    try:
        return ExportConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise KdedgeError(f"export setting {field}: {first['msg']}") from None


def export_table(run_root: Path, exports: dict[str, Any]):
    from rich.table import Table

    from kdedge.export.formats import FORMATS
    from kdedge.export.route import int8_route

    table = Table(title=f"exports of {escape(str(run_root))} (parity on the test split)")
    table.add_column("model")
    table.add_column("format")
    for column in ("KiB", "agree", "acc", "Δ pt"):
        table.add_column(column, justify="right")
    table.add_column("gate")
    table.add_column("INT8 route")
    notes = []
    for stage, formats in exports.items():
        for name, entry in formats.items():
            p = entry["parity"]
            fp32 = name in FORMATS and not FORMATS[name].gated
            gate = "fp32" if fp32 else ("passed" if not entry["parity_failures"] else "[yellow]allowed[/]")
            table.add_row(stage, name, f"{entry['bytes'] / 1024:.0f}", f"{p['agreement']:.2%}",
                          f"{p['accuracy']:.4f}", f"{0.0 - p['accuracy_drop'] * 100:+.2f}", gate,
                          escape(int8_route(stage, {"format": name, **entry}, short=True) or "-"))
            notes += fp32_layer_notes(stage, name, entry)
    table.caption = "\n".join(notes) or None
    return table


def fp32_layer_notes(stage: str, fmt: str, entry: dict[str, Any]) -> list[str]:
    """Below the table, one line per export that kept layers in fp32: which, and their speed cost."""
    from kdedge.export.route import fp32_layers, int8_route

    layers = fp32_layers(entry)
    if not layers:
        return []
    line = f"{stage} {fmt}: {int8_route(stage, {'format': fmt, **entry})}, in fp32: {', '.join(layers)}"
    speed = (entry.get("fp32_fallback") or {}).get("speed") or {}
    if speed.get("measured"):
        line += f" ({speed['fallback_over_int8']:.2f}× the plain INT8 time)"
    return [escape(line)]
