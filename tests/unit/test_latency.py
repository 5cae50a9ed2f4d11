"""Timing bookkeeping: medians and deciles against a hand-computed case and the statistics module."""

import pytest

from kdedge.bench.timing import summarise_times, time_interleaved


def test_summary_of_known_times():
    seconds = [0.001 * k for k in range(1, 12)]  # 1..11 ms
    t = summarise_times(seconds, batch=64)
    assert t.median_ms == pytest.approx(6.0)
    assert t.min_ms == pytest.approx(1.0)
    assert t.p10_ms == pytest.approx(2.0) and t.p90_ms == pytest.approx(10.0)  # inclusive deciles of 1..11
    assert t.images_per_s == pytest.approx(64 / 0.006)


def test_interleaved_times_every_callable_the_same_number_of_times():
    counts = {"a": 0, "b": 0}

    def make(name):
        def fn():
            counts[name] += 1
        return fn

    result = time_interleaved({"a": make("a"), "b": make("b")}, batch=1, rounds=3, runs=4, warmup=2)
    assert counts == {"a": 14, "b": 14}
    assert all(t.runs == 12 for t in result.values())


def test_simd_flags_keep_what_int8_speed_hinges_on():
    from kdedge.run import simd_flags

    flags = "fpu sse4_2 avx f16c avx2 avx512f avx512_vnni avx_vnni amx_int8 sha_ni".split()
    assert simd_flags(flags) == ["amx_int8", "avx", "avx2", "avx512_vnni", "avx512f", "avx_vnni"]
    assert simd_flags(["fpu", "sse2"]) == []
