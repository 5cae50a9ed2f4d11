"""The extension points of issue 12 behave as the README says: a runtime row marked `default=False`
stays out of the default bench set but is usable by name; `kdedge list` shows every table and registry;
export formats say which one is the fp32 reference."""

from __future__ import annotations

import dataclasses

from kdedge.bench import runtimes
from kdedge.export.formats import FORMATS, REFERENCE
from kdedge.losses import LOSSES


def test_a_non_default_runtime_is_only_used_when_named(monkeypatch):
    extra = dataclasses.replace(runtimes.RUNTIMES["ort"], name="ort-extra", default=False)
    monkeypatch.setitem(runtimes.RUNTIMES, "ort-extra", extra)
    default = [r.name for r in runtimes.parse_runtimes(None, "cpu")]
    assert "ort-extra" not in default and {"torch", "ort", "ort-int8"} <= set(default)
    assert [r.name for r in runtimes.parse_runtimes("ort-extra,torch", "cpu")] == ["ort-extra", "torch"]


def test_list_shows_losses_and_runtimes(cli):
    losses = cli("list", "losses")
    assert losses.exit_code == 0 and losses.output.split() == LOSSES.names()
    table = cli("list", "runtimes")
    assert table.exit_code == 0
    rows = [line.split("|")[1].strip() for line in table.output.splitlines()[2:] if line.startswith("|")]
    assert rows == list(runtimes.RUNTIMES)


def test_only_the_reference_format_is_ungated():
    assert [name for name, fmt in FORMATS.items() if not fmt.gated] == [REFERENCE]
