"""Quantized distillation vs post-training quantization of the same KD student, over seeds.

For each seed's run of a recipe with `quant:` (made by bench/kd_seeds.py), export the KD student and
the QAT-KD student (`kdedge export --int8`, gate not enforced here so every number is reported),
then compare test accuracy: fp32 KD student, its PTQ INT8 (ONNX Runtime form and TensorRT form,
both run in ONNX Runtime), and the QAT-KD student (simulated INT8 in torch, and its exports).
Writes JSON + Markdown.

    python bench/kd_seeds.py --kd recipes/fmnist_kd_cnn.yaml --out bench/results/kd_seeds_cnn.json
    python bench/qat_vs_ptq.py --runs runs/fmnist_kd_cnn_seed0 runs/fmnist_kd_cnn_seed1 runs/fmnist_kd_cnn_seed2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rich.console import Console

from kdedge.export.formats import parse_formats
from kdedge.io import write_result
from kdedge.markdown import markdown_table
from kdedge.run import RunDir, machine_info, package_versions
from kdedge.stages.context import StageContext
from kdedge.stages.export import ExportOptions, export_run

RESULTS = Path(__file__).resolve().parent / "results" / "qat_vs_ptq.json"
COLUMNS = {
    "fp32": "fp32 KD student (torch)",
    "ptq_ort": "PTQ INT8, ONNX Runtime form",
    "ptq_trt": "PTQ INT8, TensorRT form (run in ORT)",
    "qat_torch": "QAT-KD, simulated INT8 (torch)",
    "qat_trt": "QAT-KD INT8, TensorRT form (run in ORT)",
    "qat_ort": "QAT-KD weights, ONNX Runtime INT8 form",
}


def measure(run_root: Path, ctx: StageContext) -> dict[str, float]:
    options = ExportOptions(formats=parse_formats(["onnx", "onnx-int8", "onnx-int8-trt"]),
                            models=["student", "student_qat"], allow_drop=True)
    exports = export_run(run_root, ctx, options)
    stages = RunDir(run_root).read_manifest()["stages"]
    return {"fp32": stages["student"]["test"]["accuracy"],
            "ptq_ort": exports["student"]["onnx-int8"]["parity"]["accuracy"],
            "ptq_trt": exports["student"]["onnx-int8-trt"]["parity"]["accuracy"],
            "qat_torch": stages["student_qat"]["test"]["accuracy"],
            "qat_trt": exports["student_qat"]["onnx-int8-trt"]["parity"]["accuracy"],
            "qat_ort": exports["student_qat"]["onnx-int8"]["parity"]["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    ctx = StageContext(console=Console())
    per_run = {str(r): measure(r, ctx) for r in args.runs}
    stats = {}
    for key in COLUMNS:
        values = [m[key] for m in per_run.values()]
        stats[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                      "values": values}
    verdict = stats["qat_trt"]["mean"] >= stats["ptq_trt"]["mean"]
    result = {"runs": per_run, "stats": stats, "qat_int8_ge_ptq_int8_tensorrt_form": verdict,
              "qat_ort_ge_ptq_ort": stats["qat_ort"]["mean"] >= stats["ptq_ort"]["mean"],
              "machine": machine_info(), "versions": package_versions()}
    md = (f"# QAT-KD vs PTQ over {len(args.runs)} runs\n\n"
          + markdown_table(["model", "test accuracy % (mean ± std)"],
                           [[label, f"{stats[k]['mean'] * 100:.2f} ± {stats[k]['std'] * 100:.2f}"]
                            for k, label in COLUMNS.items()])
          + f"\n\nQAT-KD INT8 ≥ PTQ INT8 (TensorRT form): {verdict}; (ONNX Runtime form): "
            f"{result['qat_ort_ge_ptq_ort']}\n")
    write_result(args.out, result, md)


if __name__ == "__main__":
    main()
