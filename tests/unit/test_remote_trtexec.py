"""trtexec: the argument list, and the parser on TensorRT 7, 8.4, 8.6, 10.3 and 10.13 output (desktop
GPUs and Jetsons, passed and failed runs). The fixtures in tests/data/trtexec/ say in their header
which published logs their format follows; every number in them is consistent with the others, so
the expected values below are read off the fixture text."""

from __future__ import annotations

import json
import random
import shlex
from pathlib import Path

import pytest

from kdedge.bench.trtexec import JETSON_TRTEXEC, TimeStats, TrtexecReport, trtexec_command
from kdedge.bench.trtexec_parse import _version_from_code, parse_trtexec
from kdedge.errors import KdedgeError

DATA = Path(__file__).resolve().parents[1] / "data" / "trtexec"
MARK = "-----8<----- output -----8<-----\n"


def output(name: str) -> str:
    """The trtexec text of a fixture (below its provenance header)."""
    return (DATA / name).read_text().split(MARK, 1)[1]


def report(name: str) -> TrtexecReport:
    return parse_trtexec(output(name), source=name)


# ---------------------------------------------------------------------------------------------------
# the parser on the fixtures


def test_tensorrt10_jetson_orin_int8_build():
    r = report("trt10.3_jetson_orin_nx_int8_build.txt")
    assert (r.tensorrt_version, r.status, r.device_name, r.compute_capability) == ("10.3.0", "PASSED", "Orin", "8.7")
    assert r.precision == ("FP32", "FP16", "INT8") and r.int8 is True and r.loaded_engine is None
    assert r.explicit_batch is True and r.batch == 32
    assert r.inference_shapes == {"input": (32, 1, 28, 28)}
    assert r.build_shapes == {"input": ((32, 1, 28, 28),) * 3}
    assert (r.iterations, r.duration_s, r.warmup_ms, r.warmup_queries, r.queries) == (200, 0.0, 500.0, 1627, 200)
    assert r.throughput_qps == 2886.3 and r.images_per_s == pytest.approx(2886.3 * 32)
    assert r.latency == TimeStats(0.28418, 0.52832, 0.30144, 0.29736, {90.0: 0.31104, 95.0: 0.32422, 99.0: 0.41455})
    assert (r.gpu_compute.mean_ms, r.gpu_compute.median_ms) == (0.25186, 0.24878)
    assert (r.gpu_compute.p90_ms, r.gpu_compute.p95_ms, r.gpu_compute.p99_ms) == (0.26074, 0.27124, 0.35303)
    assert r.enqueue.p99_ms == 0.22363 and r.h2d.min_ms == 0.02148 and r.d2h.mean_ms == 0.0248
    assert r.end_to_end is None  # TensorRT 10 does not print it
    assert (r.walltime_s, r.gpu_compute_total_s, r.gpu_compute_cv_percent) == (0.0692928, 0.050372, 9.87412)
    assert r.warnings == ("GPU compute time is unstable, with coefficient of variance = 9.87412%.",)
    assert r.errors == ()
    assert r.command.startswith(JETSON_TRTEXEC + " --onnx=/home/jetson/")
    # the fixture's own arithmetic: qps = queries / walltime, Latency = H2D + GPU + D2H
    assert r.throughput_qps == pytest.approx(r.queries / r.walltime_s, rel=1e-4)
    assert r.latency.mean_ms == pytest.approx(r.h2d.mean_ms + r.gpu_compute.mean_ms + r.d2h.mean_ms)


def test_tensorrt86_desktop_fp16_dynamic_batch():
    r = report("trt8.6_desktop_rtx2080_fp16.txt")
    assert (r.tensorrt_version, r.device_name, r.compute_capability) == ("8.6.1", "NVIDIA GeForce RTX 2080", "7.5")
    assert r.precision == ("FP32", "FP16") and r.int8 is False
    assert r.build_shapes == {"input": ((1, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28))}
    assert r.batch == 8 and r.images_per_s == pytest.approx(12236.7 * 8)
    assert (r.iterations, r.duration_s, r.warmup_ms) == (10, 3.0, 200.0)
    assert r.gpu_compute.percentiles_ms == {90.0: 0.0543213, 95.0: 0.0559082, 99.0: 0.0666504}
    assert r.warnings == ("Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be "
                          "under-utilized.",)
    assert r.gpu_compute_cv_percent is None


def test_tensorrt84_jetson_implicit_batch_loaded_engine():
    r = report("trt8.4_jetson_xavier_nx_implicit_batch.txt")
    assert r.tensorrt_version == "8.4.1"  # no "TensorRT version:" line: from the [TensorRT v8401] tag
    assert (r.device_name, r.compute_capability) == ("Xavier", "7.2")
    assert r.loaded_engine == "mnist16.trt" and r.precision == ("FP32",)
    assert r.int8 is None  # a loaded engine: the printed build options say nothing about it
    assert r.explicit_batch is False and r.batch == 16 and r.inference_shapes == {}
    # implicit batch: trtexec already counts images, so images/s is its qps (not qps x 16)
    assert r.images_per_s == r.throughput_qps == 33922.3
    assert r.queries == 101808 and r.warmup_queries == 6784
    assert r.latency.percentiles_ms == {99.0: 0.506836}  # TensorRT 8.4: the 99th percentile only
    assert r.latency.p90_ms is None and r.latency.p95_ms is None
    assert r.end_to_end == TimeStats(0.484375, 0.674805, 0.49902, 0.498047, {99.0: 0.52002})
    assert r.gpu_compute_total_s == pytest.approx(r.gpu_compute.mean_ms * r.queries / 16 / 1000, rel=1e-5)


def test_tensorrt7_legacy_blocks():
    r = report("trt7_desktop_legacy_blocks.txt")
    assert r.tensorrt_version is None and r.status == "PASSED"  # TensorRT 7 prints no version tag
    assert r.device_name == "GeForce GTX 1080 Ti" and r.batch == 4 and r.explicit_batch is True
    assert r.throughput_qps == 324.43 and r.walltime_s == 3.00834 and r.queries == 976
    assert r.latency == TimeStats(3.50342, 5.40967, 3.5807, 3.57129, {99.0: 3.80371})
    assert r.end_to_end == TimeStats(3.55127, 9.51294, 6.0701, 6.06201, {99.0: 7.10156})
    assert r.enqueue == TimeStats(0.451904, 0.912598, None, 0.519043, {})
    assert r.gpu_compute == TimeStats(2.99902, 4.87891, 3.0512, 3.04199, {99.0: 3.26074})
    assert r.gpu_compute_total_s == 2.97797 and r.h2d is None and r.d2h is None
    assert r.int8 is None and r.loaded_engine == "resnet18_fp16.engine"


@pytest.mark.parametrize("name, version, first, last", [
    ("trt8.6_failed_onnx_parse.txt", "8.6.1", "While parsing node number 2", "Engine set up failed"),
    ("trt10.13_failed_build.txt", "10.13.3", "Error Code 4: API Usage Error", "Engine set up failed"),
])
def test_failed_run_is_one_line_quoting_the_errors(name, version, first, last):
    with pytest.raises(KdedgeError) as info:
        report(name)
    message = info.value.message
    assert "\n" not in message and message.startswith(f"{name}: trtexec printed no performance summary")
    assert f"TensorRT {version}, FAILED" in message
    assert f"its last error: '{last}'" in message and first in message


def test_crash_without_error_lines_quotes_the_last_line():
    lines = output("trt10.3_jetson_orin_nx_int8_build.txt").splitlines()
    cut = next(i for i, line in enumerate(lines) if line.endswith("[I] Starting inference"))
    crashed = "\n".join(lines[:cut + 1] + ["Segmentation fault (core dumped)"])
    with pytest.raises(KdedgeError, match=r"\(TensorRT 10\.3\.0, RUNNING\) and no error line; "
                                          r"its last line: 'Segmentation fault \(core dumped\)'"):
        parse_trtexec(crashed)
    with pytest.raises(KdedgeError, match="^trtexec output: .*no performance summary: the output is empty"):
        parse_trtexec(" \n\n")


def test_version_tags():
    assert [_version_from_code(c) for c in (8003, 8201, 8400, 8502, 8601, 100200, 100300, 101303)] == [
        "8.0.3", "8.2.1", "8.4.0", "8.5.2", "8.6.1", "10.2.0", "10.3.0", "10.13.3"]


# ---------------------------------------------------------------------------------------------------
# the parser on variations


def _summary(body: str) -> str:
    return "[11/23/2026-10:00:00] [I] === Performance summary ===\n" + "".join(
        f"[11/23/2026-10:00:00] [I] {line}\n" for line in body.strip().splitlines())


def test_summary_without_equals_signs_and_custom_percentile():
    # as pasted in some issues (e.g. github.com/beyondli/Yolo_on_Jetson/issues/4): "max 6.2 ms" without '='
    r = parse_trtexec(_summary("""
        Throughput: 169.4 qps
        Latency: min = 5.39 ms, max 6.20 ms, mean 5.93 ms, median 6.02 ms, percentile(99%) 6.17 ms
        GPU Compute Time: min = 3.18 ms, max = 3.88 ms, mean = 3.63 ms, median = 3.72 ms, percentile(99.9%) = 3.87 ms
    """))
    assert r.latency == TimeStats(5.39, 6.20, 5.93, 6.02, {99.0: 6.17})
    assert r.gpu_compute.percentile(99.9) == 3.87 and r.gpu_compute.to_dict()["p99.9_ms"] == 3.87


def test_non_finite_numbers_become_none_and_json_stays_strict():
    r = parse_trtexec(_summary("""
        Throughput: 0 qps
        GPU Compute Time: min = inf ms, max = -inf ms, mean = -nan ms, median = nan ms, percentile(99%) = inf ms
    """))
    assert r.throughput_qps == 0.0 and r.gpu_compute == TimeStats()
    json.dumps(r.to_dict(), allow_nan=False)
    json.dumps(report("trt10.3_jetson_orin_nx_int8_build.txt").to_dict(), allow_nan=False)


def test_windows_line_endings_and_wrapper_prefixes():
    text = output("trt8.6_desktop_rtx2080_fp16.txt")
    assert parse_trtexec(text.replace("\n", "\r\n")) == parse_trtexec(text)
    prefixed = "".join(f"[INFO] {line}\n" for line in text.splitlines())  # a wrapper tool's own log prefix
    assert parse_trtexec(prefixed) == parse_trtexec(text)


def test_the_last_of_two_summaries_wins():
    first = output("trt8.6_desktop_rtx2080_fp16.txt")
    second = output("trt10.3_jetson_orin_nx_int8_build.txt")
    r = parse_trtexec(first + second)
    assert r.throughput_qps == 2886.3 and r.gpu_compute.mean_ms == 0.25186 and r.warnings == (
        "GPU compute time is unstable, with coefficient of variance = 9.87412%.",)


JUNK = [
    "", "[I]", "[E", "] [I] [", "&&&&", "&&&& PASSED TensorRT.trtexec", "Throughput: lots qps", "Latency: ",
    "Latency: min = ms", "GPU Compute Time: percentile(%) = 1 ms", "Input inference shape: =", "Input inference "
    "shape: x=1xAx3", "Input build shape: x=1+2", "Batch:", "Precision:", "percentile: at 99%", "min: ms",
    "Host Latency", "[11/23/2026-10:00:00] [V] [TRT] " + "x" * 5000, "\x00\x01\x02 \ufffd binary", "=" * 80,
    "Average on 10 runs - GPU latency: 1 ms - Host latency: 2 ms (enqueue 0.1 ms)", "Duration: s",
]


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.txt")))
def test_never_crashes_on_damaged_output(name):
    """Shuffled, truncated and junk-filled versions of every fixture give a report or a KdedgeError,
    nothing else; junk lines added to a good log leave the report as it was."""
    lines = output(name).splitlines()
    rng = random.Random(name)
    for trial in range(60):
        damaged = lines[:]
        if trial % 3 == 0:
            rng.shuffle(damaged)
        elif trial % 3 == 1:
            damaged = damaged[:rng.randrange(len(damaged) + 1)]
        for _ in range(rng.randrange(8)):
            damaged.insert(rng.randrange(len(damaged) + 1), rng.choice(JUNK))
        try:
            parse_trtexec("\n".join(damaged))
        except KdedgeError as exc:
            assert "\n" not in exc.message
    try:
        clean = parse_trtexec(output(name))
    except KdedgeError:
        return
    noisy = []
    for line in lines:
        noisy.append(line)
        if rng.random() < 0.3:
            noisy.append(rng.choice(JUNK[:4] + JUNK[6:10] + JUNK[18:21]))
    assert parse_trtexec("\n".join(noisy)) == clean


# ---------------------------------------------------------------------------------------------------
# the command


def test_command_is_an_argument_list():
    argv = trtexec_command("/home/jetson/kdedge-bench/student/model.int8-trt.onnx",
                           Path("/home/jetson/kdedge-bench/student/model.engine"),
                           shapes={"input": (32, 1, 28, 28)}, iterations=200, warmup_ms=500, trtexec=JETSON_TRTEXEC)
    assert argv == [JETSON_TRTEXEC, "--onnx=/home/jetson/kdedge-bench/student/model.int8-trt.onnx",
                    "--saveEngine=/home/jetson/kdedge-bench/student/model.engine", "--int8", "--fp16",
                    "--shapes=input:32x1x28x28", "--iterations=200", "--duration=0", "--warmUp=500"]
    # the very command the TensorRT 10.3 fixture echoes
    assert shlex.join(argv) == report("trt10.3_jetson_orin_nx_int8_build.txt").command


def test_command_options():
    argv = trtexec_command("dir with space/m.onnx", "out/m.engine", shapes={"a": [1, 3], "b": (1, 2, 2)},
                           int8=False, fp16=False, duration_s=10, extra_args=["--useSpinWait"])
    assert argv == ["trtexec", "--onnx=dir with space/m.onnx", "--saveEngine=out/m.engine",
                    "--shapes=a:1x3,b:1x2x2", "--duration=10", "--useSpinWait"]
    assert "--shapes" not in " ".join(trtexec_command("m.onnx", "m.engine", shapes=None))


@pytest.mark.parametrize("kwargs, match", [
    ({"shapes": {}}, "at least one input"),
    ({"shapes": {"in,put": (1,)}}, "contains ','"),
    ({"shapes": {"in:put": (1,)}}, "contains ','"),
    ({"shapes": {"input": (1, 0, 28)}}, "positive integer"),
    ({"shapes": {"input": (1, True)}}, "positive integer"),
    ({"shapes": {"input": ()}}, "positive integer"),
    ({"shapes": None, "iterations": 0}, "iterations=0"),
    ({"shapes": None, "duration_s": -1}, "duration_s=-1"),
    ({"shapes": None, "warmup_ms": 1.5}, "warmup_ms=1.5"),
    ({"shapes": None, "extra_args": ["--ok", "rm -rf /"]}, "extra argument 'rm -rf /'"),
])
def test_command_rejects_bad_arguments(kwargs, match):
    with pytest.raises(KdedgeError, match=match):
        trtexec_command("m.onnx", "m.engine", **kwargs)
