"""The CPU governor, clock, temperature and throttling that ``bench`` records, read from a fake sysfs tree.

The tree is real files in tmp_path laid out as on a Raspberry Pi 4, and
``vcgencmd`` is a real executable script printing what the firmware prints.
"""

from __future__ import annotations

import stat
from pathlib import Path

from edgekit.device_state import DeviceProbe, assess, decode_throttled, parse_throttled


def _board(root: Path, governor: str = "ondemand", khz: int = 1_500_000, celsius: float = 48.3,
           cpus: int = 4) -> Path:
    """/sys of a 4-core Pi (plus cpu10, to prove numeric order) with one CPU thermal zone."""
    for index in [*range(cpus), 10]:
        freq = root / f"sys/devices/system/cpu/cpu{index}/cpufreq"
        freq.mkdir(parents=True, exist_ok=True)
        (freq / "scaling_governor").write_text(governor + "\n")
        (freq / "scaling_cur_freq").write_text(f"{khz}\n")
    (root / "sys/devices/system/cpu/cpufreq").mkdir(exist_ok=True)  # not a cpuN folder: ignored
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "temp").write_text(f"{int(celsius * 1000)}\n")
    (zone / "type").write_text("cpu-thermal\n")
    return root


def _vcgencmd(folder: Path, value: str) -> Path:
    """An executable that answers ``get_throttled`` with ``throttled=<value>`` (rewritten between snapshots)."""
    script = folder / "vcgencmd"
    script.write_text(f'#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled={value}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_decoding_of_the_firmware_throttle_bits() -> None:
    assert parse_throttled("throttled=0x50005\n") == 0x50005
    assert parse_throttled("VCHI initialization failed") is None
    decoded = decode_throttled(0x50005)
    assert decoded["now"] == ["under-voltage", "throttled"]
    assert decoded["since_boot"] == ["under-voltage has occurred", "throttling has occurred"]
    assert decode_throttled(0) == {"raw": "0x0", "now": [], "since_boot": []}


def test_a_steady_performance_board_gives_no_warning(tmp_path: Path) -> None:
    probe = DeviceProbe(_board(tmp_path / "root", governor="performance"), str(_vcgencmd(tmp_path, "0x0")))
    before = probe.snapshot()
    assert list(before["governors"]) == ["cpu0", "cpu1", "cpu2", "cpu3", "cpu10"]
    assert before["freq_khz"]["cpu0"] == 1_500_000
    assert before["temperatures_c"] == {"thermal_zone0": {"type": "cpu-thermal", "celsius": 48.3}}
    assert before["throttled"] == {"raw": "0x0", "now": [], "since_boot": []}
    assert assess(before, probe.snapshot()) == []


def test_governor_clock_change_heat_and_throttling_during_a_run_are_warned(tmp_path: Path) -> None:
    root = _board(tmp_path / "root")
    probe = DeviceProbe(root, str(_vcgencmd(tmp_path, "0x10000")))  # an under-voltage happened before the run
    before = probe.snapshot()
    _board(root, khz=600_000, celsius=82.0)  # the board heated up and dropped its clock
    _vcgencmd(tmp_path, "0x50005")
    after = probe.snapshot()
    text = " | ".join(assess(before, after))
    assert "governor is ondemand" in text
    assert "cpu0 1500->600 MHz" in text
    assert "82.0 °C" in text
    # now-bits are reported; the sticky under-voltage bit that was already set before the run is not new
    assert "under-voltage (now), throttled (now), throttling has occurred" in text and "0x10000 -> 0x50005" in text


def test_a_machine_without_those_files_records_empty_state(tmp_path: Path) -> None:
    probe = DeviceProbe(tmp_path, vcgencmd=None)
    snapshot = probe.snapshot()
    assert snapshot == {"governors": {}, "freq_khz": {}, "temperatures_c": {}, "throttled": None}
    assert assess(snapshot, snapshot) == []


def test_bench_results_carry_the_state_before_and_after(tmp_path: Path, mlp_onnx: Path) -> None:
    from edgekit import bench

    probe = DeviceProbe(_board(tmp_path / "root", governor="powersave"), str(_vcgencmd(tmp_path, "0x0")))
    (result,) = bench.bench([mlp_onnx], [1], [1], runs=5, warmup=1, probe=probe)
    state = result["device_state"]
    assert state["before"]["governors"]["cpu0"] == "powersave" and state["after"]["throttled"]["raw"] == "0x0"
    assert any("governor is powersave" in w for w in state["warnings"])
