"""Which INT8 route an export took, in words for the tables of `kdedge export`, `kdedge show` and the
bench report: plain post-training quantization (`PTQ`), PTQ with its most sensitive layers kept in
fp32 by the fallback (kdedge/export/fallback.py), or the QAT-KD student (its own INT8 scales).

Read from an export record alone (the manifest's entry, or the bench report's copy of it), so a report
copied off the machine still says it. Imports nothing: `kdedge bench` and `kdedge show` use it.
"""

from __future__ import annotations

from typing import Any

QAT_STAGE = "student_qat"  # kdedge.layout.QAT_STUDENT (spelled here so this module imports nothing)
FP32_FORMATS = ("onnx", "onnx-mc")   # the formats that are not quantized: no route


def fp32_layers(export: dict[str, Any] | None) -> list[str]:
    """The layers an INT8 export kept in fp32 (the producer's list, else the fallback's), or []."""
    export = export or {}
    names = export.get("fp32_layers")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    layers = (export.get("fp32_fallback") or {}).get("layers") or []
    return [str(layer.get("name", "?")) for layer in layers if isinstance(layer, dict)]


def _agreement(fallback: dict[str, Any], when: str) -> float | None:
    value = (fallback.get(when) or {}).get("agreement")
    return value if isinstance(value, (int, float)) else None


def int8_route(stage: str, export: dict[str, Any] | None, *, short: bool = False) -> str | None:
    """'PTQ', 'PTQ + 2 fp32 layers (agreement 95.1% → 99.2%)', 'QAT-KD', ...; None for an fp32 export
    (or none at all: the torch model). short: for a narrow terminal column ('PTQ+2 fp32')."""
    if not export or export.get("format") in FP32_FORMATS:
        return None
    quantization = str(export.get("quantization") or "")
    if stage == QAT_STAGE:
        # its TensorRT form carries the QAT scales; ONNX Runtime's INT8 of it calibrates anew (PTQ of the QAT weights)
        own = quantization.startswith("QAT") or not quantization
        base = "QAT-KD" if own else ("QAT-KD+PTQ" if short else "QAT-KD weights + PTQ")
    else:
        base = ("PTQ dyn" if short else "PTQ (dynamic)") if quantization == "dynamic" else "PTQ"
    if "built_from" in export and not quantization:  # a TensorRT engine: the layers of the file it was built from
        return base if short else f"{base} (as its {export['built_from']})"
    kept = fp32_layers(export)
    if not kept:
        return base
    if short:
        return f"{base}+{len(kept)} fp32"
    route = f"{base} + {len(kept)} fp32 layer{'s' if len(kept) != 1 else ''}"
    fallback = export.get("fp32_fallback") or {}
    before, after = _agreement(fallback, "before"), _agreement(fallback, "after")
    if before is not None and after is not None:
        route += f" (agreement {before:.1%} → {after:.1%})"
    return route


def speed_cost(export: dict[str, Any] | None) -> str:
    """What the fp32 layers cost in speed, as timed by the export ('1.12× the plain INT8 time'), or why not."""
    fallback = (export or {}).get("fp32_fallback") or {}
    speed = fallback.get("speed") or {}
    if not speed.get("measured"):
        if fallback and not fallback.get("passed", True):  # the export times only a fallback that passed
            return "not timed: the gate still failed (kept by --allow-drop)"
        return str(speed.get("why") or "not timed")
    text = f"{speed['fallback_over_int8']:.2f}× the plain INT8 time"
    over = (speed.get("speedup_over_fp32") or {}).get("int8_fallback")
    if isinstance(over, (int, float)):
        text += f", speed-up over fp32 {over:.2f}×"
    return text + f" ({speed.get('runtime', '?')}, batch {speed.get('batch', '?')})"
