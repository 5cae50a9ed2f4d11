"""Facts about a Jetson that a benchmark must record next to its timings, parsed from what the device
prints: the power mode (`nvpmodel -q`), the L4T and JetPack releases (`/etc/nv_tegra_release`,
`dpkg-query -W nvidia-jetpack`) and tegrastats samples (RAM, CPU, GPU load and clock, temperatures,
power rails).

A Jetson's speed depends on its power mode and clocks as much as on the model, so a latency without
them cannot be compared with another. The formats differ between boards and JetPack releases (rails
"VDD_IN 3140/3208" on JetPack 4 vs "VDD_IN 4939mW/4939mW" on 5 and 6, per-GPC clocks "@[1300,1300]"
on Orin); the parsers take the fields they recognise and leave the rest out rather than fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from kdedge.errors import KdedgeError


# ---------------------------------------------------------------------------------------------------
# nvpmodel -q


@dataclass(frozen=True)
class PowerMode:
    name: str             # "MAXN", "15W", "MODE_15W_6CORE", "MAXN_SUPER": names come from /etc/nvpmodel.conf
    id: int | None        # the number for `nvpmodel -m`; the same name has different ids on different boards


_POWER_MODE = re.compile(r"NV Power Mode\s*:\s*(?P<name>\S.*?)\s*$")


def parse_nvpmodel(text: str) -> PowerMode:
    """`nvpmodel -q` (or -q --verbose): "NV Power Mode: MAXN" then the mode id on its own line.
    NVPM ERROR/WARN/VERB lines (printed e.g. when run without sudo) are skipped."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        m = _POWER_MODE.search(line)
        if m is None:
            continue
        mode_id = None
        for following in lines[i + 1:]:
            if not following or following.startswith("NVPM "):
                continue
            if re.fullmatch(r"\d+", following):
                mode_id = int(following)
            break
        return PowerMode(name=m["name"], id=mode_id)
    raise KdedgeError(f"nvpmodel -q printed no 'NV Power Mode:' line ({_first_line(text)!r}); "
                      "is this a Jetson with nvpmodel installed?")


# ---------------------------------------------------------------------------------------------------
# /etc/nv_tegra_release and dpkg-query -W nvidia-jetpack


@dataclass(frozen=True)
class JetsonRelease:
    l4t: str | None              # "36.4.3" (Jetson Linux, from /etc/nv_tegra_release)
    l4t_major: int | None        # 36
    board: str | None            # "generic", "t186ref", "t210ref"
    jetpack: str | None          # "6.2.1" (the nvidia-jetpack package; absent when only L4T is installed)
    jetpack_package: str | None  # "6.2.1+b38", the package version as dpkg has it


_L4T = re.compile(r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<rev>\d+(?:\.\d+)*)"
                  r"(?:.*?\bBOARD:\s*(?P<board>[^,\s]+))?")
_JETPACK = re.compile(r"^(?:nvidia-jetpack(?::\w+)?\s+)?(?P<v>\d+(?:\.\d+)+)(?P<build>[-+~][\w.+~-]*)?$")


def parse_jetson_release(nv_tegra_release: str, dpkg_jetpack: str = "") -> JetsonRelease:
    """From the text of /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic,
    ...") and of `dpkg-query -W nvidia-jetpack` ("nvidia-jetpack<TAB>6.2.1+b38"; a bare version from
    `-f '${Version}'` works too, and "no packages found" gives jetpack None)."""
    l4t = l4t_major = board = None
    if (m := _L4T.search(nv_tegra_release)) is not None:
        l4t_major = int(m["major"])
        l4t = f"{l4t_major}.{m['rev']}"
        board = m["board"]
    jetpack = package = None
    for line in dpkg_jetpack.splitlines():
        if (j := _JETPACK.match(line.strip())) is not None:
            jetpack, package = j["v"], j["v"] + (j["build"] or "")
            break
    if l4t is None and jetpack is None:
        raise KdedgeError(f"no L4T release in /etc/nv_tegra_release ({_first_line(nv_tegra_release)!r}) and no "
                          "nvidia-jetpack package version: is this a Jetson?")
    return JetsonRelease(l4t=l4t, l4t_major=l4t_major, board=board, jetpack=jetpack, jetpack_package=package)


# ---------------------------------------------------------------------------------------------------
# tegrastats


@dataclass(frozen=True)
class CpuCore:
    load_percent: float | None   # None: the core is off
    freq_mhz: int | None

    @property
    def online(self) -> bool:
        return self.load_percent is not None


@dataclass(frozen=True)
class PowerRail:
    current_mw: float
    average_mw: float | None     # tegrastats' running average since it started


@dataclass(frozen=True)
class TegrastatsSample:
    ram_used_mb: int
    ram_total_mb: int
    timestamp: str | None = None                  # "10-05-2026 21:03:35" (JetPack 5+ prints it)
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpus: tuple[CpuCore, ...] = ()
    gpu_load_percent: float | None = None         # GR3D_FREQ %
    gpu_freq_mhz: int | None = None               # the highest GPC clock where Orin prints one per GPC
    emc_load_percent: float | None = None         # memory controller
    emc_freq_mhz: int | None = None
    temperatures_c: Mapping[str, float] = field(default_factory=dict)  # sensors that read -256 (off) left out
    rails: Mapping[str, PowerRail] = field(default_factory=dict)       # "VDD_IN" -> current/average mW

    @property
    def input_power_mw(self) -> float | None:
        """Whole-module input power: VDD_IN (TX2, Xavier, Orin Nano/NX) or POM_5V_IN (Nano); the AGX Orin
        devkit has no input rail in tegrastats, so None there (summing its rails would undercount)."""
        for name in ("VDD_IN", "POM_5V_IN"):
            if name in self.rails:
                return self.rails[name].current_mw
        return None

    @property
    def cpu_load_percent(self) -> float | None:
        """Mean load of the online cores."""
        loads = [c.load_percent for c in self.cpus if c.load_percent is not None]
        return sum(loads) / len(loads) if loads else None


_TIMESTAMP = re.compile(r"^(?P<ts>\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (?P<used>\d+)/(?P<total>\d+)MB")
_SWAP = re.compile(r"\bSWAP (?P<used>\d+)/(?P<total>\d+)MB")
_CPU = re.compile(r"\bCPU \[(?P<cores>[^\]]*)\](?:@(?P<freq>\d+))?")  # JetPack 4.2-: "CPU [1%,5%]@102"
_CORE = re.compile(r"^(?P<load>\d+(?:\.\d+)?)%(?:@(?P<freq>\d+))?$")
_GPU = re.compile(r"\bGR3D_FREQ (?P<load>\d+(?:\.\d+)?)%(?:@\[?(?P<freq>\d+(?:,\d+)*)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (?P<load>\d+(?:\.\d+)?)%(?:@(?P<freq>\d+))?")
_TEMP = re.compile(r"(?<![\w%@])(?P<name>[A-Za-z][A-Za-z0-9_]*)@(?P<t>-?\d+(?:\.\d+)?)C\b")
# "VDD_IN 4939mW/4939mW" (JetPack 5+), "VDD_IN 3140/3208" (JetPack 4), "VDD_IN 5765mW" (no average)
_RAIL = re.compile(r"\b(?P<name>[A-Z][A-Z0-9_]*) (?P<cur>\d+(?:\.\d+)?)(?P<u1>mW)?"
                   r"(?:/(?P<avg>\d+(?:\.\d+)?)(?P<u2>mW)?)?\b")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}
_SENSOR_OFF = -256.0


def parse_tegrastats(line: str) -> TegrastatsSample:
    """One tegrastats line. A line without "RAM used/totalMB" is not tegrastats output: KdedgeError."""
    ram = _RAM.search(line)
    if ram is None:
        raise KdedgeError(f"not a tegrastats line (no 'RAM used/totalMB'): {_first_line(line)!r}")
    values: dict = {"ram_used_mb": int(ram["used"]), "ram_total_mb": int(ram["total"])}
    if (m := _TIMESTAMP.match(line.strip())) is not None:
        values["timestamp"] = m["ts"]
    if (m := _SWAP.search(line)) is not None:
        values["swap_used_mb"], values["swap_total_mb"] = int(m["used"]), int(m["total"])
    if (m := _CPU.search(line)) is not None:
        values["cpus"] = tuple(_core(c.strip(), m["freq"]) for c in m["cores"].split(",") if c.strip())
    if (m := _GPU.search(line)) is not None:
        values["gpu_load_percent"] = float(m["load"])
        if m["freq"]:
            values["gpu_freq_mhz"] = max(int(f) for f in m["freq"].split(","))
    if (m := _EMC.search(line)) is not None:
        values["emc_load_percent"] = float(m["load"])
        values["emc_freq_mhz"] = int(m["freq"]) if m["freq"] else None
    values["temperatures_c"] = {m["name"]: float(m["t"]) for m in _TEMP.finditer(line)
                                if float(m["t"]) != _SENSOR_OFF}
    rails = {}
    for m in _RAIL.finditer(line):
        if m["name"] in _NOT_RAILS or (m["avg"] is None and m["u1"] is None):
            continue  # "APE 174", "VIC_FREQ 729": clocks, not power
        rails[m["name"]] = PowerRail(current_mw=float(m["cur"]),
                                     average_mw=float(m["avg"]) if m["avg"] is not None else None)
    values["rails"] = rails
    return TegrastatsSample(**values)


def parse_tegrastats_log(text: str) -> list[TegrastatsSample]:
    """Every tegrastats line of a log (`tegrastats --interval 500 --logfile F`); other lines are skipped."""
    return [parse_tegrastats(line) for line in text.splitlines() if _RAM.search(line)]


def _core(text: str, shared_freq: str | None) -> CpuCore:
    m = _CORE.match(text)
    if m is None:  # "off", or something this parser does not know
        return CpuCore(load_percent=None, freq_mhz=None)
    freq = m["freq"] or shared_freq
    return CpuCore(load_percent=float(m["load"]), freq_mhz=int(freq) if freq else None)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:160]
    return ""
