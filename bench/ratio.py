"""INT8 student vs fp32 teacher: inference-time ratio on ONNX Runtime CPU at batch 1 and 64, with the
accuracy gap. This is the number a user ships on: how much faster is the deployable student than the
model it replaces, and what does it cost in accuracy.

For each run: the teacher's fp32 ONNX, the student's fp32 ONNX and its INT8 ONNX (and the QAT
student's, if exported) are timed interleaved on the same images and thread count (medians of
rounds x runs timed calls after warm-up, p10/p90 kept). Accuracy is each file's own, measured by
`kdedge export` with ONNX Runtime on the whole test split. A graph that does no arithmetic is timed in
the same rounds: its latency is what one ORT call costs, so teacher / floor is the largest ratio any
student could reach on this machine. Writes bench/results/ratio.{json,md}.

    kdedge export runs/fmnist_kd_cnn_seed0 --int8
    python bench/ratio.py runs/fmnist_kd_cnn_seed0 runs/fmnist_kd_mlp_seed0 --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from export_timing import CALL_FLOOR, time_exports
from kdedge.io import write_result
from kdedge.markdown import markdown_table
from kdedge.run import RunDir, machine_info, package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "ratio.json"
GOAL_RATIO, MAX_GAP_PT = 30.0, 1.0


def pair_result(run: RunDir, *, threads: int, rounds: int, runs: int) -> dict[str, Any]:
    exports = run.read_manifest().get("exports", {})
    picks = {"teacher fp32": ("teacher", "onnx"), "student fp32": ("student", "onnx"),
             "student int8": ("student", "onnx-int8")}
    if "onnx-int8" in exports.get("student_qat", {}):
        picks["student_qat int8"] = ("student_qat", "onnx-int8")
    timed = time_exports(run, picks, threads=threads, rounds=rounds, runs=runs, call_floor=True)
    floor = timed.pop(CALL_FLOOR)
    teacher = timed["teacher fp32"]
    ceiling = {f"batch{b}": teacher[f"batch{b}"]["median_ms"] / floor[f"batch{b}"]["median_ms"] for b in (1, 64)}
    ratios = {}
    for key, entry in timed.items():
        if key == "teacher fp32":
            continue
        gap_pt = (teacher["accuracy"] - entry["accuracy"]) * 100
        ratio = {f"batch{b}": teacher[f"batch{b}"]["median_ms"] / entry[f"batch{b}"]["median_ms"] for b in (1, 64)}
        ratios[key] = {**ratio, "accuracy_gap_pt": gap_pt,
                       "goal_met": min(ratio.values()) >= GOAL_RATIO and gap_pt <= MAX_GAP_PT}
    return {"run": str(run.root), "formats": timed, "ratios_vs_teacher_fp32": ratios,
            "call_floor": {"batch1": floor["batch1"], "batch64": floor["batch64"], "max_ratio": ceiling}}


def markdown(result: dict[str, Any]) -> str:
    lines = ["# INT8 student vs fp32 teacher on ONNX Runtime CPU", "",
             f"{result['machine']['cpu']}, {result['threads']} thread(s), onnxruntime "
             f"{result['versions'].get('onnxruntime')}; medians of {result['rounds']} x {result['runs']} timed runs.",
             f"Goal: ≥ {GOAL_RATIO:.0f}× faster at batch 1 and 64, within {MAX_GAP_PT:.0f} pt of the teacher.", ""]
    for pair in result["pairs"]:
        rows = []
        for key, entry in pair["formats"].items():
            ratio = pair["ratios_vs_teacher_fp32"].get(key)
            rows.append([key, f"{entry['accuracy'] * 100:.2f}",
                         f"{entry['batch1']['median_ms']:.3f} ({entry['batch1']['p10_ms']:.3f}–{entry['batch1']['p90_ms']:.3f})",
                         f"{entry['batch64']['median_ms']:.2f} ({entry['batch64']['p10_ms']:.2f}–{entry['batch64']['p90_ms']:.2f})",
                         f"{entry['bytes'] / 1024:.0f}",
                         f"{ratio['batch1']:.1f}×" if ratio else "1×", f"{ratio['batch64']:.1f}×" if ratio else "1×",
                         f"{ratio['accuracy_gap_pt']:+.2f}" if ratio else "—",
                         ("yes" if ratio["goal_met"] else "no") if ratio else "—"])
        floor = pair["call_floor"]
        lines += [f"## {pair['run']}", "",
                  markdown_table(["model", "test acc %", "batch 1 ms (p10–p90)", "batch 64 ms (p10–p90)", "KiB",
                                  "ratio b1", "ratio b64", "gap pt", "goal"], rows), "",
                  f"One ORT call with no arithmetic takes {floor['batch1']['median_ms']:.4f} ms at batch 1 and "
                  f"{floor['batch64']['median_ms']:.4f} ms at batch 64, so no student can be more than "
                  f"{floor['max_ratio']['batch1']:.0f}× (b1) / {floor['max_ratio']['batch64']:.0f}× (b64) faster "
                  "than this teacher here.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dirs", type=Path, nargs="+", metavar="RUN")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per round and session")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pairs = [pair_result(RunDir(r), threads=args.threads, rounds=args.rounds, runs=args.runs) for r in args.runs_dirs]
    result = {"pairs": pairs, "threads": args.threads, "rounds": args.rounds, "runs": args.runs,
              "goal": {"ratio": GOAL_RATIO, "max_gap_pt": MAX_GAP_PT},
              "machine": machine_info(), "versions": package_versions()}
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
