"""Jetson facts: nvpmodel -q, /etc/nv_tegra_release + dpkg-query nvidia-jetpack, tegrastats lines of
JetPack 4 (Nano, AGX Xavier) and JetPack 5/6 (AGX Orin, Orin Nano). Each fixture in tests/data/jetson/
says in its header where its format comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdedge.bench.jetson_parse import (CpuCore, JetsonRelease, PowerMode, PowerRail, parse_jetson_release,
                                       parse_nvpmodel, parse_tegrastats, parse_tegrastats_log)
from kdedge.errors import KdedgeError

DATA = Path(__file__).resolve().parents[1] / "data" / "jetson"
MARK = "-----8<----- output -----8<-----\n"


def output(name: str) -> str:
    return (DATA / name).read_text().split(MARK, 1)[1]


@pytest.mark.parametrize("name, mode", [
    ("nvpmodel_q_agx_orin_jp6.txt", PowerMode("MAXN", 0)),
    ("nvpmodel_q_nano_jp4_without_sudo.txt", PowerMode("5W", 1)),
    ("nvpmodel_q_verbose_xavier_nx.txt", PowerMode("MODE_15W_6CORE", 2)),
])
def test_nvpmodel(name, mode):
    assert parse_nvpmodel(output(name)) == mode


def test_nvpmodel_variants():
    assert parse_nvpmodel("NV Power Mode: MAXN_SUPER\n2\n") == PowerMode("MAXN_SUPER", 2)
    assert parse_nvpmodel("NV Power Mode: 15W") == PowerMode("15W", None)  # id line missing
    assert parse_nvpmodel("NV Power Mode: 15W\nNVPM WARN: x\n\n3") == PowerMode("15W", 3)
    with pytest.raises(KdedgeError, match="no 'NV Power Mode:' line .*'bash: nvpmodel: command not found'"):
        parse_nvpmodel("bash: nvpmodel: command not found\n")


def test_release_jetpack6():
    r = parse_jetson_release(output("nv_tegra_release_r36.txt"), output("dpkg_query_nvidia_jetpack_6.txt"))
    assert r == JetsonRelease(l4t="36.4.3", l4t_major=36, board="generic", jetpack="6.2.1",
                              jetpack_package="6.2.1+b38")


def test_release_jetpack4():
    r = parse_jetson_release(output("nv_tegra_release_r32.txt"), output("dpkg_query_nvidia_jetpack_4.txt"))
    assert r == JetsonRelease(l4t="32.7.1", l4t_major=32, board="t210ref", jetpack="4.6.1",
                              jetpack_package="4.6.1-b110")


def test_release_variants():
    l4t = output("nv_tegra_release_r36.txt")
    # `dpkg-query -W -f '${Version}' nvidia-jetpack` prints the bare version
    assert parse_jetson_release(l4t, "6.2.1+b38").jetpack == "6.2.1"
    # nvidia-jetpack not installed (only Jetson Linux): dpkg-query's complaint gives no JetPack
    r = parse_jetson_release(l4t, "dpkg-query: no packages found matching nvidia-jetpack\n")
    assert (r.l4t, r.jetpack, r.jetpack_package) == ("36.4.3", None, None)
    assert parse_jetson_release("# R32(release), REVISION: 6.1, GCID: 1, BOARD: t186ref, EABI: aarch64").l4t == "32.6.1"
    assert parse_jetson_release("", "nvidia-jetpack\t5.1.2-b104").jetpack == "5.1.2"
    with pytest.raises(KdedgeError, match="no L4T release .*is this a Jetson"):
        parse_jetson_release("cat: /etc/nv_tegra_release: No such file or directory", "")


def test_tegrastats_agx_orin():
    s = parse_tegrastats(output("tegrastats_agx_orin_jp6.txt"))
    assert s.timestamp == "11-23-2026 10:00:21"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (5421, 62801, 0, 31400)
    assert len(s.cpus) == 12 and s.cpus[4] == CpuCore(9.0, 2201) and s.cpus[-1] == CpuCore(0.0, 729)
    assert s.cpu_load_percent == pytest.approx(20 / 12)
    assert (s.gpu_load_percent, s.gpu_freq_mhz, s.emc_load_percent, s.emc_freq_mhz) == (97.0, 1300, 21.0, 3199)
    assert s.temperatures_c["tj"] == 51.093 and s.temperatures_c["GPU"] == 51.093
    assert "CV0" not in s.temperatures_c and len(s.temperatures_c) == 8  # -256C: sensor off
    assert s.rails["VDD_GPU_SOC"] == PowerRail(9842.0, 8013.0)
    assert set(s.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "NC", "VDDQ_VDD2_1V8AO"}
    assert s.input_power_mw is None  # the AGX Orin devkit has no VDD_IN in tegrastats


def test_tegrastats_xavier_jetpack4():
    s = parse_tegrastats(output("tegrastats_xavier_jp4.txt"))
    assert s.timestamp is None and s.swap_total_mb is None
    assert [c.online for c in s.cpus] == [True] * 4 + [False] * 4
    assert s.cpus[0] == CpuCore(12.0, 1190) and s.cpu_load_percent == pytest.approx(45 / 4)
    assert (s.gpu_load_percent, s.gpu_freq_mhz, s.emc_load_percent, s.emc_freq_mhz) == (73.0, None, 6.0, None)
    assert s.rails["VDD_IN"] == PowerRail(7904.0, 6921.0) and s.input_power_mw == 7904.0
    assert s.rails["VDD_4V0_WIFI"] == PowerRail(0.0, 0.0) and len(s.rails) == 6
    assert s.temperatures_c["PMIC"] == 100.0 and s.temperatures_c["Tdiode"] == 40.25


def test_tegrastats_nano():
    s = parse_tegrastats(output("tegrastats_nano_jp4.txt"))
    assert (s.ram_used_mb, s.ram_total_mb) == (1843, 3956)  # not IRAM's numbers
    assert (s.gpu_load_percent, s.gpu_freq_mhz, s.emc_freq_mhz) == (64.0, 921, 1600)
    assert set(s.rails) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}  # not IRAM, APE
    assert s.input_power_mw == 4256.0


def test_tegrastats_log_of_orin_nano():
    samples = parse_tegrastats_log(output("tegrastats_orin_nano_jp6_log.txt"))
    assert len(samples) == 2  # the line that is not tegrastats is skipped
    idle, busy = samples
    assert (idle.gpu_load_percent, idle.gpu_freq_mhz, idle.input_power_mw) == (0.0, 305, 4939.0)
    assert (busy.gpu_load_percent, busy.gpu_freq_mhz) == (99.0, 624)
    assert busy.rails["VDD_CPU_GPU_CV"] == PowerRail(2540.0, 1509.0) and busy.input_power_mw == 7421.0
    assert busy.temperatures_c["gpu"] == 47.968 and [c.online for c in busy.cpus].count(False) == 2


def test_tegrastats_variants():
    # JetPack 4.2 and older: one clock for all cores after the bracket
    s = parse_tegrastats("RAM 220/3955MB (lfb 847x4MB) CPU [1%,5%,0%,off]@102 EMC_FREQ 0%@1600 GR3D_FREQ 0%@76")
    assert s.cpus == (CpuCore(1.0, 102), CpuCore(5.0, 102), CpuCore(0.0, 102), CpuCore(None, None))
    # a rail without its average
    assert parse_tegrastats("RAM 1/2MB VDD_IN 5765mW VDD_SOC 1497mW").rails["VDD_IN"] == PowerRail(5765.0, None)
    s = parse_tegrastats("RAM 1/2MB")
    assert (s.cpus, s.gpu_load_percent, s.rails, s.cpu_load_percent) == ((), None, {}, None)
    with pytest.raises(KdedgeError, match="not a tegrastats line"):
        parse_tegrastats("tegrastats: command not found")
