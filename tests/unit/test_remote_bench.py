"""`kdedge bench RUN --host`: the remote bench end to end against the real sshd of tests/conftest.py (the
"device" is this machine, running the repo's own kdedge with --device cpu), its one-line errors, the
test-split file it sends (--test-data), and the Jetson additions (device facts, trtexec) with fake
nvpmodel / dpkg-query / tegrastats / trtexec programs that print the fixtures of tests/data.

Oracles: onnxruntime sessions run here on the digits test split, the accuracy each model's training
recorded in the manifest, the local bench report of the same run, and numbers read by regex straight
from the fixture texts.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kdedge.errors import KdedgeError
from tests.conftest import REPO, free_port
from tests.unit.test_bench import digits_test, exported_run  # noqa: F401 - the fixture, shared

ort = pytest.importorskip("onnxruntime")

KDEDGE = REPO / ".venv" / "bin" / "kdedge"
DATA = REPO / "tests" / "data"
MARK = "-----8<----- output -----8<-----\n"
FAST = ("--runs", "1", "--mc-samples", "2", "--threads", "1")


def fixture_output(path: Path) -> str:
    return path.read_text().split(MARK, 1)[1]


def ssh_flags(target) -> list[str]:
    """The sshd fixture's client options as a user would pass them: --ssh-option KEY=VALUE."""
    opts = list(target.extra_options)
    assert opts[:2] == ["-F", "/dev/null"]
    flags = []
    for flag, value in zip(opts[2::2], opts[3::2], strict=True):
        assert flag == "-o"
        flags += ["--ssh-option", value]
    return flags


def remote_temps() -> set[Path]:
    return set(Path("/tmp").glob("kdedge-bench.*"))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdedge: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture
def run_copy(exported_run, tmp_path) -> Path:  # noqa: F811 - exported_run is the imported fixture
    dst = tmp_path / "b"
    shutil.copytree(exported_run, dst)
    return dst


@pytest.fixture(scope="module")
def remote_kdedge() -> str:
    if not KDEDGE.exists():
        pytest.skip(f"{KDEDGE} not installed (make install-dev)")
    return str(KDEDGE)


# ---------------------------------------------------------------------------------------------------
# end to end over ssh


def test_remote_bench_over_ssh_matches_local_and_independent_numbers(sshd, run_copy, remote_kdedge, cli):
    local = json.loads((run_copy / "bench" / "report.json").read_text())  # the fixture's local bench
    before = remote_temps()
    result = cli("bench", run_copy, "--host", str(sshd), "--device", "cpu", "--remote-kdedge", remote_kdedge,
                 "--connect-timeout", "20", *FAST, *ssh_flags(sshd))
    assert result.exit_code == 0, result.stderr
    r = json.loads((run_copy / "bench" / "report.json").read_text())
    assert r["schema"] == "kdedge-bench-report-3" and r["device"] == "cpu"
    assert r["host"] == str(sshd) and r["run"] == str(run_copy)
    assert not Path(r["remote_run"]).exists() and remote_temps() == before  # the remote temp dir is gone
    assert not list(run_copy.glob(".bench-*"))  # no local staging left either
    assert r["data"]["test_sha256"] == local["data"]["test_sha256"]  # the very same test images
    assert r["data"]["source"].endswith("test_data.npz") and r["uncertainty"]["samples"] == 2

    x, labels = digits_test()
    manifest = json.loads((run_copy / "manifest.json").read_text())
    for stage in ("teacher", "student"):
        got = r["models"][stage]["runtimes"]
        assert {"torch", "ort", "ort-int8"} <= set(got)  # + openvino, openvino-int8 where installed
        # torch: what training measured on the test split; ONNX: sessions run here on the same images
        assert got["torch"]["accuracy"] == pytest.approx(manifest["stages"][stage]["test"]["accuracy"])
        for fmt, runtime in (("onnx", "ort"), ("onnx-int8", "ort-int8")):
            path = run_copy / manifest["exports"][stage][fmt]["file"]
            logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
            assert got[runtime]["accuracy"] == pytest.approx(float((logits.argmax(1) == labels.numpy()).mean()))
        for runtime, metrics in got.items():  # and what the local bench of the same run measured
            want = local["models"][stage]["runtimes"][runtime]
            assert metrics["accuracy"] == pytest.approx(want["accuracy"])
            assert metrics["ece"] == pytest.approx(want["ece"], abs=1e-6)
    md = (run_copy / "bench" / "report.md").read_text()
    assert f"on `{sshd}` over SSH" in md and str(run_copy) in md
    assert (run_copy / "bench" / "reliability.png").is_file()


def test_remote_failure_is_one_line_cleans_up_and_keeps_the_old_report(sshd, run_copy, remote_kdedge, cli):
    old = (run_copy / "bench" / "report.json").read_bytes()
    before = remote_temps()
    result = cli("bench", run_copy, "--host", str(sshd), "--remote-kdedge", remote_kdedge, "--runtime", "tflite",
                 *FAST, *ssh_flags(sshd))
    line = one_line_error(result)
    assert f"kdedge bench on {sshd} failed (exit 2): --runtime 'tflite': unknown runtime" in line
    assert remote_temps() == before
    assert (run_copy / "bench" / "report.json").read_bytes() == old


def test_missing_remote_kdedge_says_to_install_it(sshd, run_copy, cli, tmp_path):
    result = cli("bench", run_copy, "--host", str(sshd), "--remote-kdedge", str(tmp_path / "nowhere" / "kdedge"),
                 *ssh_flags(sshd))
    line = one_line_error(result)
    assert f"kdedge is not installed on {sshd}" in line and "pip install kdedge" in line
    assert "--remote-kdedge" in line


def test_remote_escape_sequences_never_reach_the_terminal(sshd, run_copy, cli, tmp_path):
    """A device whose kdedge prints terminal escapes (title, clear screen, a C1 CSI, bidi override):
    the one-line error keeps the words and drops every control character."""
    fake = tmp_path / "kdedge"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$2" = "--help" ]; then echo "--test-data"; exit 0; fi\n'
                    "printf 'kdedge: error: \\033]0;owned\\007\\033[2Jbad \\302\\233data\\342\\200\\256 here\\n' >&2\n"
                    "exit 2\n")
    fake.chmod(0o755)
    old = (run_copy / "bench" / "report.json").read_bytes()
    result = cli("bench", run_copy, "--host", str(sshd), "--remote-kdedge", str(fake), *FAST, *ssh_flags(sshd))
    line = one_line_error(result)
    assert line.endswith("failed (exit 2): ]0;owned[2Jbad data here")
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", result.stdout + result.stderr)
    assert (run_copy / "bench" / "report.json").read_bytes() == old


def test_unreachable_host_fails_within_the_timeout(run_copy, cli):
    host = f"nobody@127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    result = cli("bench", run_copy, "--host", host, "--connect-timeout", "3")
    elapsed = time.monotonic() - t0
    line = one_line_error(result)
    assert f"cannot reach {host} within 3s" in line and "Connection refused" in line
    assert elapsed < 15


@pytest.mark.parametrize("args, expect", [
    (["--device", "cuda"], "--device cuda with --host: valid: cpu, jetson"),
    (["--test-data", "x.npz"], "--test-data is for the bench that --host starts"),
    (["--ssh-option", "-oProxyCommand=x"], "--ssh-option '-oProxyCommand=x': write KEY=VALUE"),
    (["--remote-kdedge", "'unclosed"], "--remote-kdedge"),
])
def test_bad_remote_options_are_one_line(run_copy, cli, args, expect):
    result = cli("bench", run_copy, "--host", "nobody@127.0.0.1:9", *args)
    assert expect in one_line_error(result)


def test_bad_host_spec_and_run_without_exports(tmp_path, make_recipe, cli):
    from tests.conftest import TINY_RECIPE

    recipe = make_recipe({"student": {"model": {"name": "mlp", "widths": [8]}, "train": TINY_RECIPE["teacher"]["train"]},
                          "distill": {"losses": [{"name": "hinton", "weight": 1.0}], "baseline": False}})
    assert cli("distill", recipe).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    assert "kdedge export" in one_line_error(cli("bench", run, "--host", "nobody@127.0.0.1:9"))
    assert "bad host" in one_line_error(cli("bench", run, "--host", "nobody@-oProxyCommand=x"))


def test_jetson_without_host_on_another_machine_mentions_host(run_copy, cli, monkeypatch, tmp_path):
    from kdedge.bench import jetson

    monkeypatch.setattr(jetson, "NV_TEGRA_RELEASE", tmp_path / "absent")
    line = one_line_error(cli("bench", run_copy, "--device", "jetson"))
    assert "not a Jetson" in line and "--host user@addr" in line


# ---------------------------------------------------------------------------------------------------
# the test-split file


def _split(run: Path):
    from kdedge.run import RunDir
    from kdedge.stages.bench import dataset_split
    from kdedge.stages.context import StageContext

    run_dir = RunDir(run)
    return dataset_split(run_dir, run_dir.read_manifest(), StageContext())


def test_test_data_file_round_trip(run_copy, tmp_path):
    from kdedge.bench.split_file import read_split, write_split

    split, classes = _split(run_copy)
    manifest = json.loads((run_copy / "manifest.json").read_text())
    path = write_split(tmp_path / "t.npz", split, classes)
    back = read_split(path, manifest, [])
    assert torch.equal(back.images, split.images) and torch.equal(back.labels, split.labels)
    assert back.images.dtype == torch.uint8 and back.sha256 == split.sha256 and back.stats == split.stats
    x, labels = digits_test()  # the test's own normalisation of the digits test split
    from kdedge.inputs import normalise

    assert np.allclose(normalise(back.images.numpy(), back.stats), x, atol=1e-6)
    assert torch.equal(back.labels, labels)


def _rewrite(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["header"]))
    header.update(changes.pop("header", {}))
    arrays.update(changes, header=np.array(json.dumps(header)))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_test_data_file_refusals(run_copy, tmp_path, cli):
    from kdedge.bench.split_file import BenchSplit, read_split, write_split

    split, classes = _split(run_copy)
    manifest = json.loads((run_copy / "manifest.json").read_text())
    entries = [(e["file"], e) for e in manifest["exports"]["student"].values()]

    def refused(path: Path, match: str, manifest=manifest) -> None:
        with pytest.raises(KdedgeError, match=match):
            read_split(path, manifest, entries)

    good = write_split(tmp_path / "good.npz", split, classes)
    tampered = tmp_path / "sha.npz"
    shutil.copy(good, tampered)
    _rewrite(tampered, header={"sha256": "0" * 64})
    refused(tampered, r"sha\.npz: field sha256 does not match")
    pixel = tmp_path / "pixel.npz"
    shutil.copy(good, pixel)
    images = split.images.numpy().copy()
    images[0, 0, 0, 0] ^= 1
    _rewrite(pixel, images=images)
    refused(pixel, "field sha256 does not match")

    small = BenchSplit(split.dataset, split.images[:, :, :4, :4].contiguous(), split.labels, split.stats, "", "x")
    cropped = write_split(tmp_path / "cropped.npz", small, classes)
    refused(cropped, r"input_shape is \[1, 4, 4\] but the run was made with \[1, 8, 8\]")
    no_data = {k: v for k, v in manifest.items() if k != "data"}  # then the exports' input spec decides
    refused(cropped, r"cropped\.npz: field images is \[N, 1, 4, 4\] but exports/student/model\.onnx takes "
                     r"\[batch, 1, 8, 8\]", manifest=no_data)
    wrong = BenchSplit(split.dataset, split.images, split.labels.clone().fill_(10), split.stats, "", "x")
    refused(write_split(tmp_path / "labels.npz", wrong, classes), r"field labels range 10\.\.10 but the run has 10 "
                                                                     r"classes")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    refused(tmp_path / "junk.npz", "cannot read it as a test-data file")
    refused(tmp_path / "missing.npz", "no such test-data file")
    # through the command: one line, exit 2
    line = one_line_error(cli("bench", run_copy, "--test-data", tampered, "--runtime", "ort", "--runs", "1"))
    assert "field sha256" in line and "--host" in line


# ---------------------------------------------------------------------------------------------------
# on a Jetson: device facts and trtexec, with fake tools (fixture numbers, not measurements)

FAKE_TOOL = """#!{python}
import sys, time
from pathlib import Path
DATA = Path({data!r})
MARK = "-----8<----- output -----8<-----\\n"
out = lambda name: (DATA / name).read_text().split(MARK, 1)[1]
tool = Path(sys.argv[0]).name
with open({log!r}, "a") as log:
    log.write(" ".join([tool] + sys.argv[1:]) + "\\n")
if tool == "nvpmodel":
    print(out("jetson/nvpmodel_q_agx_orin_jp6.txt"), end="")
elif tool == "dpkg-query":
    print(out("jetson/dpkg_query_nvidia_jetpack_6.txt"), end="")
elif tool == "tegrastats":
    print(out("jetson/tegrastats_agx_orin_jp6.txt"), end="", flush=True)
    time.sleep(60)  # like the real one: runs until it is stopped
elif tool == "trtexec":
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
    if "saveEngine" in args:
        Path(args["saveEngine"]).write_bytes(b"fake engine")
    int8 = "--int8" in sys.argv or ".int8." in args.get("loadEngine", "")
    print(out("trtexec/trt10.3_jetson_orin_nx_int8_build.txt" if int8 else "trtexec/trt8.6_desktop_rtx2080_fp16.txt"))
"""


def _fake_tools(bin_dir: Path, log: Path, tools: tuple[str, ...]) -> None:
    bin_dir.mkdir()
    for tool in tools:
        path = bin_dir / tool
        path.write_text(FAKE_TOOL.format(python=sys.executable, data=str(DATA), log=str(log)))
        path.chmod(0o755)


def _fixture_number(name: str, pattern: str) -> float:
    return float(re.search(pattern, fixture_output(DATA / name))[1])


def test_jetson_device_info_and_trtexec_from_fake_tools(run_copy, cli, monkeypatch, tmp_path):
    """The numbers asserted here are the fixtures' (tests/data/jetson, tests/data/trtexec) printed by fake
    tools, not measurements: this checks the parsing and the report wiring without a Jetson."""
    from kdedge.bench import jetson

    log = tmp_path / "calls.log"
    _fake_tools(tmp_path / "bin", log, ("nvpmodel", "dpkg-query", "tegrastats", "trtexec"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    release = tmp_path / "nv_tegra_release"
    release.write_text(fixture_output(DATA / "jetson" / "nv_tegra_release_r36.txt"))
    monkeypatch.setattr(jetson, "NV_TEGRA_RELEASE", release)
    from kdedge.stages import bench as bench_stage

    seen = {}
    original = bench_stage.exported_uncertainty

    def spy(*args, **kwargs):  # the MC bench gets the trtexec section and the folder the engines are in
        seen.update(kwargs, engines=sorted(p.name for p in (kwargs["bench_dir"] / "trt").glob("*.engine")))
        return original(*args, **kwargs)

    monkeypatch.setattr(bench_stage, "exported_uncertainty", spy)
    result = cli("bench", run_copy, "--device", "jetson", "--runtime", "ort", "--batch", "8", "--runs", "1",
                 "--mc-samples", "0")
    assert result.exit_code == 0, result.stderr
    r = json.loads((run_copy / "bench" / "report.json").read_text())
    assert seen["trtexec"]["available"] and "student.fp16.engine" in seen["engines"]

    info = r["device_info"]
    assert info["power_mode"] == {"available": True, "name": "MAXN", "id": 0}
    assert (info["release"]["l4t"], info["release"]["jetpack"]) == ("36.4.3", "6.2.1")
    assert info["tensorrt"] == {"available": True, "version": "10.3.0", "source": "trtexec"}  # no tensorrt module here
    stats = info["tegrastats"]
    assert stats["available"] and stats["samples"] >= 1
    assert stats["gpu_load_percent"]["max"] == 97.0 and stats["gpu_freq_mhz"]["max"] == 1300
    assert stats["temperature_c_max"]["GPU"] == 51.093 and "CV0" not in stats["temperature_c_max"]  # -256 = off
    assert stats["input_power_mw"] is None  # the AGX Orin devkit has no VDD_IN rail
    assert stats["rails_mw"]["VDD_GPU_SOC"]["max"] == 9842.0

    manifest = json.loads((run_copy / "manifest.json").read_text())
    trt = r["trtexec"]
    assert trt["available"] and set(trt["models"]) == set(manifest["exports"])  # every exported model
    int8_qps = _fixture_number("trtexec/trt10.3_jetson_orin_nx_int8_build.txt", r"Throughput: ([\d.]+) qps")
    fp16_median = _fixture_number("trtexec/trt8.6_desktop_rtx2080_fp16.txt",
                                  r"\] Latency: .*?median = ([\d.]+) ms")
    for stage, by_precision in trt["models"].items():
        expected = {"fp16"} | ({"int8"} if "onnx-int8-trt" in manifest["exports"][stage] else set())
        assert set(by_precision) == expected
        fp16 = by_precision["fp16"]
        assert fp16["export"] == "onnx" and fp16["batch1"]["latency"]["median_ms"] == fp16_median
        assert fp16["batch8"]["tensorrt_version"] == "8.6.1"  # the load-and-time run at --batch
        assert (run_copy / "bench" / "trt" / fp16["engine"]).read_bytes() == b"fake engine"
        if "int8" in by_precision:
            assert by_precision["int8"]["batch1"]["throughput_qps"] == int8_qps
            assert by_precision["int8"]["batch1"]["int8"] is True

    calls = log.read_text().splitlines()
    build = next(c for c in calls if c.startswith("trtexec") and "student.fp16.engine" in c and "--onnx" in c)
    assert "--minShapes=images:1x1x8x8 --optShapes=images:8x1x8x8 --maxShapes=images:8x1x8x8" in build
    assert "--shapes=images:1x1x8x8" in build and "--int8" not in build and "--fp16" in build
    load = next(c for c in calls if c.startswith("trtexec --loadEngine=") and "student.fp16.engine" in c)
    assert load.endswith("--shapes=images:8x1x8x8")
    assert "tegrastats --interval 500" in calls and "nvpmodel -q" in calls
    md = (run_copy / "bench" / "report.md").read_text()
    assert "## Device" in md and "MAXN (id 0)" in md and "L4T 36.4.3, JetPack 6.2.1" in md
    assert "## TensorRT (trtexec, engines built on the device)" in md


def test_jetson_without_its_tools_still_benches(run_copy, cli, monkeypatch, tmp_path):
    from kdedge.bench import jetson

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(jetson, "JETSON_TRTEXEC", str(tmp_path / "no-trtexec"))
    release = tmp_path / "nv_tegra_release"
    release.write_text(fixture_output(DATA / "jetson" / "nv_tegra_release_r36.txt"))
    monkeypatch.setattr(jetson, "NV_TEGRA_RELEASE", release)
    result = cli("bench", run_copy, "--device", "jetson", "--runtime", "ort", "--runs", "1", "--mc-samples", "0")
    assert result.exit_code == 0, result.stderr
    r = json.loads((run_copy / "bench" / "report.json").read_text())
    info = r["device_info"]
    assert info["power_mode"] == {"available": False, "reason": "nvpmodel not found"}
    assert info["release"]["l4t"] == "36.4.3" and info["release"]["jetpack"] is None
    assert info["tegrastats"] == {"available": False, "reason": "tegrastats not found"}
    assert info["tensorrt"]["available"] is False
    assert r["trtexec"]["available"] is False and "trtexec not found" in r["trtexec"]["reason"]
    assert r["models"]["student"]["runtimes"]["ort"]["accuracy"] > 0.5
    assert "unavailable (nvpmodel not found)" in (run_copy / "bench" / "report.md").read_text()


def test_trtexec_builds_the_mc_graph_as_its_own_engine_not_the_trt_runtimes(tmp_path, monkeypatch):
    """A TensorRT-form MC export (onnx-mc-int8-trt) is built and timed like the INT8 one, recorded under
    precision mc-int8, and never becomes the engine the `trt` runtime runs (its outputs are MC statistics)."""
    from kdedge.bench import jetson

    log = tmp_path / "calls.log"
    _fake_tools(tmp_path / "bin", log, ("trtexec",))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    root = tmp_path / "run"
    (root / "exports").mkdir(parents=True)
    exports = {}
    for fmt, name in (("onnx-mc-int8-trt", "model.mc.int8-trt.onnx"), ("onnx-int8-trt", "model.int8-trt.onnx")):
        (root / "exports" / name).write_bytes(b"onnx")
        exports[fmt] = {"file": f"exports/{name}", "input": {"name": "images"}}
    out = tmp_path / "bench"
    results, engines = jetson.trtexec_models(root, {"student": exports}, ["student"], (1, 8, 8), 4, out,
                                             lambda _: None)
    built = results["models"]["student"]
    assert set(built) == {"int8", "mc-int8"} and built["mc-int8"]["export"] == "onnx-mc-int8-trt"
    assert engines == {"student": out / "trt" / "student.int8.engine"}
    assert (out / "trt" / built["mc-int8"]["engine"]).read_bytes() == b"fake engine"
    mc_build = next(c for c in log.read_text().splitlines() if "--onnx=" in c and "model.mc.int8-trt.onnx" in c)
    assert "--int8" in mc_build and "--saveEngine=" in mc_build and "student.mc-int8.engine" in mc_build
    assert "--fp16" not in mc_build  # the MC statistics (softmax, log, entropy) stay fp32
    # MC-only run: the MC engine is still not the `trt` runtime's
    _, engines = jetson.trtexec_models(root, {"student": {"onnx-mc-int8-trt": exports["onnx-mc-int8-trt"]}},
                                       ["student"], (1, 8, 8), 4, tmp_path / "bench2", lambda _: None)
    assert engines == {}


def test_trtexec_commands_for_one_engine_at_two_batches():
    from kdedge.bench.trtexec import batch_profile_args, trtexec_command, trtexec_load_command

    extra = batch_profile_args("images", (1, 28, 28), 64)
    assert extra == ["--minShapes=images:1x1x28x28", "--optShapes=images:64x1x28x28", "--maxShapes=images:64x1x28x28"]
    build = trtexec_command("m.onnx", "m.engine", shapes={"images": (1, 1, 28, 28)}, int8=False, extra_args=extra)
    assert build == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--fp16", "--shapes=images:1x1x28x28",
                     *extra]
    assert trtexec_load_command("dir with space/m.engine", shapes={"images": (64, 1, 28, 28)}, iterations=50) == [
        "trtexec", "--loadEngine=dir with space/m.engine", "--shapes=images:64x1x28x28", "--iterations=50",
        "--duration=0"]
    with pytest.raises(KdedgeError, match="max_batch=0"):
        batch_profile_args("images", (1, 28, 28), 0)
