"""kdedge.bench.recommend on hand-made reports: every expected pick and number is worked out by hand
from the numbers in the report below."""

from __future__ import annotations

import pytest

from kdedge.bench.recommend import Limits, recommend


def entry(acc: float, ms: float, *, ece: float = 0.02, ms8: float | None = None, precision: str | None = None,
          gate_failed: bool = False) -> dict:
    r = {"accuracy": acc, "ece": ece, "size_bytes": 1000,
         "batch1": {"batch": 1, "median_ms": ms, "images_per_s": 1000 / ms}}
    if ms8 is not None:
        r["batch8"] = {"batch": 8, "median_ms": ms8, "images_per_s": 8000 / ms8}
    if precision:
        r["precision"] = precision
    if gate_failed:
        r["export"] = {"allowed_by_flag": True, "parity_failures": ["agreement 97% < 99%"]}
    return r


def report(**models: dict) -> dict:
    return {"models": {name: {"runtimes": rts} for name, rts in models.items()}}


TEACHER = {"torch": entry(0.90, 5.0), "ort": entry(0.90, 3.0)}


def test_fastest_model_within_the_drop_and_the_runner_up():
    r = report(teacher=TEACHER,
               student={"ort": entry(0.895, 1.0), "ort-int8": entry(0.892, 0.6)},
               baseline={"ort": entry(0.87, 0.9), "ort-int8": entry(0.86, 0.5)})
    rec = recommend(r, Limits(max_drop=1.0))
    # limit: 0.90 - 1 pt = 0.89; the baselines (fastest) are below it
    assert rec["limits"]["min_accuracy"] == pytest.approx(0.89)
    assert rec["limits"]["reference"] == {"model": "teacher", "runtime": "torch", "accuracy": 0.90}
    assert (rec["choice"]["model"], rec["choice"]["runtime"]) == ("student", "ort-int8")
    assert rec["choice"]["precision"] == "int8" and rec["choice"]["drop_pt"] == pytest.approx(0.8)
    assert (rec["runner_up"]["model"], rec["runner_up"]["runtime"]) == ("student", "ort")
    assert rec["meeting"] == 4 and rec["candidates"] == 6  # 2 student + 2 teacher (the teacher may win too)
    assert rec["closest"] is None
    assert rec["lines"][0].startswith("Ship student on ort-int8 (INT8)")
    assert rec["lines"][1].startswith("Runner-up: student on ort (FP32)")


def test_teacher_is_recommended_when_it_is_the_fastest_that_meets_the_limits():
    r = report(teacher={"ort": entry(0.90, 0.2)}, student={"ort": entry(0.80, 0.1)})
    rec = recommend(r)
    assert rec["choice"]["model"] == "teacher" and rec["runner_up"] is None


def test_nothing_meets_names_the_failed_limit_and_by_how_much():
    r = report(teacher={"torch": entry(0.90, 5.0, ece=0.08)},
               student={"ort": entry(0.87, 1.0, ece=0.03)},        # 2.0 pt short of 0.89
               baseline={"ort": entry(0.885, 1.2, ece=0.02)})      # 0.5 pt short: the closest
    rec = recommend(r, Limits(max_drop=1.0, max_ece=0.05))
    assert rec["choice"] is None and rec["runner_up"] is None and rec["meeting"] == 0
    closest = rec["closest"]
    assert closest["model"] == "baseline"
    [miss] = closest["failed"]
    assert miss["limit"] == "max_drop" and miss["by"] == pytest.approx(0.5) and miss["unit"] == "pt"
    assert rec["lines"][0].startswith("Nothing meets the limits. Closest: baseline on ort")
    assert "0.50 pt below 89.00 %" in rec["lines"][0]


def test_fewest_missed_limits_is_closest_and_each_miss_is_measured():
    r = report(teacher={"torch": entry(0.90, 9.0, ece=0.09)},
               student={"ort": entry(0.88, 3.0, ece=0.07)},   # misses accuracy (1 pt) and ECE (0.02)
               baseline={"ort": entry(0.80, 1.5, ece=0.04)})  # misses accuracy only (9 pt)
    rec = recommend(r, Limits(max_drop=1.0, max_ece=0.05, budget_ms=2.0))
    assert rec["closest"]["model"] == "baseline"
    by = {f["limit"]: f["by"] for f in rec["closest"]["failed"]}
    assert by == {"max_drop": pytest.approx(9.0)}
    # the teacher alone, slow and badly calibrated: both misses measured
    teacher = recommend(report(teacher={"torch": entry(0.90, 9.0, ece=0.09)}),
                        Limits(max_drop=1.0, max_ece=0.05, budget_ms=2.0))["closest"]
    assert {f["limit"]: f["by"] for f in teacher["failed"]} == {"max_ece": pytest.approx(0.04),
                                                                "budget_ms": pytest.approx(7.0)}


def test_int8_slower_than_its_own_fp32_is_not_picked():
    # OpenVINO INT8 slower than OpenVINO fp32 (as for MobileNetV3-small): fp32 openvino wins
    r = report(teacher=TEACHER, student={"openvino": entry(0.895, 0.40), "openvino-int8": entry(0.893, 0.46),
                                         "ort": entry(0.895, 0.50)})
    rec = recommend(r)
    assert rec["choice"]["runtime"] == "openvino" and rec["runner_up"]["runtime"] == "ort"
    assert any("openvino-int8" in n and "INT8 not recommended" in n for n in rec["notes"])
    assert all("openvino-int8" not in (c or {}).get("runtime", "") for c in (rec["choice"], rec["runner_up"]))


def test_int8_slower_than_fp32_that_fails_the_limits_may_still_be_picked():
    r = report(teacher=TEACHER, student={"ort": entry(0.895, 0.40, ece=0.09), "ort-int8": entry(0.893, 0.46)})
    rec = recommend(r, Limits(max_ece=0.05))
    assert rec["choice"]["runtime"] == "ort-int8" and not rec["notes"]


def test_budget_at_a_batch_size_ranks_by_that_batch():
    r = report(teacher={"torch": entry(0.90, 1.0, ms8=20.0)},
               student={"ort": entry(0.895, 0.2, ms8=4.0), "ort-int8": entry(0.894, 0.3, ms8=2.5)})
    rec = recommend(r, Limits(budget_ms=3.0, budget_batch=8))
    assert rec["choice"]["runtime"] == "ort-int8" and rec["choice"]["latency_ms"] == 2.5 and rec["choice"]["batch"] == 8
    assert rec["runner_up"] is None and rec["meeting"] == 1
    assert "one batch of 8" in rec["ranked_by"]


def test_no_teacher_means_no_accuracy_limit_and_says_so():
    rec = recommend(report(student={"ort": entry(0.5, 1.0)}))
    assert rec["choice"]["model"] == "student" and rec["limits"]["min_accuracy"] is None
    assert any("no teacher" in n for n in rec["notes"])


def test_int8_kept_past_a_failed_gate_is_marked_in_the_recommendation():
    r = report(teacher=TEACHER, student={"ort-int8": entry(0.895, 0.3, gate_failed=True)})
    rec = recommend(r)
    assert rec["choice"]["gate_failed"] is True
    assert "failed the export gate, kept by --allow-drop" in rec["lines"][0]
