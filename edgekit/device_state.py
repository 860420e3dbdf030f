"""The CPU's state around a benchmark: governor, clock, temperature, throttling.

A Raspberry Pi's figures are only as good as the conditions they were taken
in. A Pi 4 under the default ``ondemand``/``schedutil`` governor starts a
short run at 600 MHz and ends it at 1.5 GHz; a hot or under-powered board
caps its clock in the middle of a run. ``bench`` therefore snapshots the
device before and after each measurement and warns when the figures cannot
be trusted (``assess``).

What is read (each only where it exists, so this is a no-op on a laptop):

- ``/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor`` and
  ``scaling_cur_freq`` (kHz), per CPU;
- ``/sys/class/thermal/thermal_zone*/temp`` (millidegrees Celsius) and its
  ``type`` (e.g. ``cpu-thermal``);
- ``vcgencmd get_throttled`` (Raspberry Pi firmware), decoded with
  ``THROTTLE_BITS``. Bits 0-3 describe *now*; bits 16-19 are sticky *since
  boot*, so a run was throttled when a "now" bit is set at either end or a
  sticky bit appears between the two snapshots.

``DeviceProbe(root=...)`` reads a sysfs tree under another root, so tests
parse a fake tree written into a temporary folder. Standard library only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Raspberry Pi firmware, `vcgencmd get_throttled`.
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
    16: "under-voltage has occurred",
    17: "arm frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
STICKY_SHIFT = 16  # bit n + 16 is the "has occurred since boot" twin of "now" bit n
# Pi 4 and Pi 5 firmware start throttling at 80 °C (85 °C hard limit); other boards are close.
HOT_CELSIUS = 80.0
VCGENCMD_TIMEOUT_S = 5


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _indexed(parent: Path, pattern: str) -> list[Path]:
    """Children like cpu0..cpuN or thermal_zone0..N, in numeric order (cpu10 after cpu9)."""
    prefix = pattern.rstrip("*")
    found = [p for p in parent.glob(pattern) if p.name[len(prefix):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix):]))


def decode_throttled(value: int) -> dict[str, Any]:
    """``vcgencmd get_throttled``'s bit mask as names: what holds ``now`` and what happened ``since_boot``."""
    now = [name for bit, name in THROTTLE_BITS.items() if bit < STICKY_SHIFT and value >> bit & 1]
    since_boot = [name for bit, name in THROTTLE_BITS.items() if bit >= STICKY_SHIFT and value >> bit & 1]
    return {"raw": hex(value), "now": now, "since_boot": since_boot}


def parse_throttled(output: str) -> int | None:
    """The mask in ``throttled=0x50005`` (vcgencmd's output), or None when it is not there."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", output)
    return int(match.group(1), 0) if match else None


@dataclass(frozen=True)
class DeviceProbe:
    """Where to read the device's state: a filesystem root and the ``vcgencmd`` command.

    ``root`` is ``/`` on a real device; ``vcgencmd`` is a command name looked
    up on PATH (or a path), or None to skip the firmware query.
    """

    root: Path = field(default_factory=lambda: Path("/"))
    vcgencmd: str | None = "vcgencmd"

    def snapshot(self) -> dict[str, Any]:
        """The state now: ``governors`` and ``freq_khz`` per CPU, ``temperatures_c`` per thermal zone,
        ``throttled`` (decoded, or None without vcgencmd). Missing files leave their entries out."""
        governors: dict[str, str] = {}
        freqs: dict[str, int] = {}
        for cpu in _indexed(self.root / "sys/devices/system/cpu", "cpu*"):
            governor = _text(cpu / "cpufreq/scaling_governor")
            freq = _number(cpu / "cpufreq/scaling_cur_freq")
            if governor:
                governors[cpu.name] = governor
            if freq is not None:
                freqs[cpu.name] = freq
        temperatures: dict[str, dict[str, Any]] = {}
        for zone in _indexed(self.root / "sys/class/thermal", "thermal_zone*"):
            millidegrees = _number(zone / "temp")
            if millidegrees is not None:
                temperatures[zone.name] = {"type": _text(zone / "type"), "celsius": round(millidegrees / 1000, 1)}
        return {"governors": governors, "freq_khz": freqs, "temperatures_c": temperatures,
                "throttled": self._throttled()}

    def _throttled(self) -> dict[str, Any] | None:
        command = shutil.which(self.vcgencmd) if self.vcgencmd else None
        if command is None:
            return None
        try:
            done = subprocess.run([command, "get_throttled"], capture_output=True, text=True,
                                  timeout=VCGENCMD_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        value = parse_throttled(done.stdout)
        if value is None:  # e.g. not in the video group: "VCHI initialization failed"
            return {"error": (done.stderr or done.stdout).strip()[:200] or f"exit code {done.returncode}"}
        return decode_throttled(value)


def assess(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Warnings about a measurement taken between two snapshots (empty when nothing speaks against it)."""
    warnings = []
    governors = sorted({g for snap in (before, after) for g in snap["governors"].values()} - {"performance"})
    if governors:
        warnings.append(f"CPU governor is {', '.join(governors)}, not performance: the clock follows the load, so "
                        "timings mix speeds. Set it with `echo performance | sudo tee "
                        "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor` before benchmarking")
    changed = [f"{cpu} {before['freq_khz'][cpu] / 1000:.0f}->{khz / 1000:.0f} MHz"
               for cpu, khz in after["freq_khz"].items() if cpu in before["freq_khz"] and before["freq_khz"][cpu] != khz]
    if changed:
        warnings.append(f"CPU frequency changed during the run ({', '.join(changed[:4])}"
                        f"{', ...' if len(changed) > 4 else ''}): fix the governor and let the board cool")
    hottest = max((z["celsius"] for snap in (before, after) for z in snap["temperatures_c"].values()), default=None)
    if hottest is not None and hottest >= HOT_CELSIUS:
        warnings.append(f"the board reached {hottest:.1f} °C (throttling starts near {HOT_CELSIUS:.0f} °C): "
                        "add a heatsink or fan, or pause between runs")
    warnings.extend(_throttle_warnings(before.get("throttled"), after.get("throttled")))
    return warnings


def _throttle_warnings(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if not before or not after or "raw" not in before or "raw" not in after:
        return []
    now = [name for name in THROTTLE_BITS.values() if name in before["now"] or name in after["now"]]  # bit order
    new = [name for name in after["since_boot"] if name not in before["since_boot"]]
    found = [*(f"{n} (now)" for n in now), *new]
    if not found:
        return []
    return [f"the firmware reports {', '.join(found)} during this run (vcgencmd get_throttled "
            f"{before['raw']} -> {after['raw']}): the figures are slower than the board can do. Use the "
            "official power supply and cooling, then measure again"]


def around(probe: DeviceProbe, before: dict[str, Any]) -> dict[str, Any]:
    """The record a bench result carries: ``before``, a fresh ``after`` snapshot, and ``warnings``."""
    after = probe.snapshot()
    return {"before": before, "after": after, "warnings": assess(before, after)}
