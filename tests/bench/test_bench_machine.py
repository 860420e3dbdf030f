"""edgekit.machine: the description every bench result carries."""

from __future__ import annotations

import platform

from edgekit import machine


def test_describe_has_what_merging_results_needs() -> None:
    described = machine.describe("pi4-lab-2")
    for key in ("label", "hostname", "cpu", "cores", "os", "arch", "python", "edgekit", "runtimes"):
        assert key in described, key
    assert described["label"] == "pi4-lab-2" and described["arch"] == platform.machine()
    assert described["python"] == platform.python_version() and described["cores"] >= 1
    assert "numpy" in described["runtimes"] and described["cpu"]


def test_short_name_prefers_label_then_board() -> None:
    assert machine.short_name({"label": "lab-1", "board": "Raspberry Pi 5"}) == "lab-1"
    assert machine.short_name({"label": None, "board": "Raspberry Pi 5"}) == "Raspberry Pi 5"
    assert machine.short_name({"cpu": "Cortex-A76", "arch": "aarch64"}) == "Cortex-A76 (aarch64)"


def test_arch_names_of_the_same_instruction_set_match() -> None:
    assert machine.same_arch("aarch64", "arm64") and machine.same_arch("arm64", "aarch64")
    assert machine.same_arch("x86_64", "AMD64")
    assert not machine.same_arch("aarch64", "x86_64")
    assert not machine.same_arch("xtensa-lx7", "x86_64")


def test_this_host_matches_its_own_arch() -> None:
    assert machine.same_arch(platform.machine())
