"""`kdedge export`: the run's models as fp32 ONNX, INT8 for ONNX Runtime and TensorRT, TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    allow_drop: Annotated[bool, typer.Option("--allow-drop", help="Keep INT8 exports that fail the parity gate "
                                             "(recorded as such in the manifest).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing exports made with other settings.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Export the run's models: fp32 ONNX, INT8 for ONNX Runtime and TensorRT, TensorRT engines."""
    from kdedge.export.formats import int8_default, parse_formats
    from kdedge.export.parity import ParityThresholds
    from kdedge.stages.export import ExportOptions, export_run, export_settings, export_table

    ctx = stage_context(None, threads)
    requested = list(format_ or [])
    if int8:
        # escaped: the install hint `pip install 'kdedge[modelopt]'` is not rich markup
        requested += int8_default(lambda why: ctx.print(f"[yellow]note[/]: {escape(why)}"))
    formats = parse_formats(requested or ["onnx"])
    settings = export_settings(run_dir, min_agreement=min_agreement, max_accuracy_drop=max_drop,
                               calib_images=calib_images, calib_method=calib_method)
    options = ExportOptions(
        formats=formats, models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
        calib_images=settings.calib_images, calib_method=settings.calib_method,
        quantization=quantization,
        thresholds=ParityThresholds(settings.min_agreement, settings.max_accuracy_drop),
        allow_drop=allow_drop, force=force)
    exports = export_run(run_dir, ctx, options)
    ctx.print(export_table(run_dir, exports))
