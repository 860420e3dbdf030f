"""The ARM boards edgekit can emulate, and what their CPUs tell software about themselves.

A device here is a QEMU CPU model plus the ``/proc/cpuinfo`` text that board's
kernel prints. Both matter: QEMU's default ``max`` CPU advertises features a
Pi lacks (SVE and newer), so runtimes would pick kernels the board cannot run;
and QEMU 7 passes the host's x86 ``/proc/cpuinfo`` through to the guest, which
made onnxruntime's import segfault, while with none at all LiteRT silently
skips XNNPACK. The values below are those of the boards' own kernels
(64-bit Raspberry Pi OS).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import InputError


@dataclass(frozen=True)
class EmulatedDevice:
    """One emulated board: its short name, QEMU CPU model and the ARM ID registers its kernel reports."""

    name: str
    label: str
    qemu_cpu: str
    profiles: tuple[str, ...]  # target profiles whose device this emulates
    part: str  # "CPU part" (MIDR part number)
    variant: str
    revision: int
    features: str  # the kernel's "Features" line (hwcaps)

    @property
    def validated_on(self) -> str:
        """What a record states as the machine that ran the artifact, e.g. ``emulated cortex-a72``."""
        return f"emulated {self.qemu_cpu}"

    def cpuinfo(self, cpus: int) -> str:
        """``/proc/cpuinfo`` as this board's kernel prints it, for ``cpus`` processors.

        ``cpus`` should be the host's count: runtimes cross-check it with
        ``/sys/devices/system/cpu``, which QEMU passes through from the host.
        """
        block = (
            "processor\t: {index}\n"
            "BogoMIPS\t: 108.00\n"
            f"Features\t: {self.features}\n"
            "CPU implementer\t: 0x41\n"
            "CPU architecture: 8\n"
            f"CPU variant\t: {self.variant}\n"
            f"CPU part\t: {self.part}\n"
            f"CPU revision\t: {self.revision}\n\n"
        )
        return "".join(block.format(index=i) for i in range(max(1, cpus)))


DEVICES: dict[str, EmulatedDevice] = {
    "pi4": EmulatedDevice("pi4", "Raspberry Pi 4", "cortex-a72", ("raspberry-pi-4",), part="0xd08", variant="0x0",
                          revision=3, features="fp asimd evtstrm crc32 cpuid"),
    "pi5": EmulatedDevice("pi5", "Raspberry Pi 5", "cortex-a76", ("raspberry-pi-5",), part="0xd0b", variant="0x4",
                          revision=1, features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                                               "asimdrdm lrcpc dcpop asimddp"),
}


def device(name: str) -> EmulatedDevice:
    """The device called ``name`` (a short name such as ``pi4``, or a target profile name it emulates)."""
    for entry in DEVICES.values():
        if name == entry.name or name in entry.profiles:
            return entry
    known = ", ".join(f"{d.name} ({d.label}, {d.qemu_cpu})" for d in DEVICES.values())
    raise InputError(f"edgekit cannot emulate '{name}'", f"Emulated devices: {known}")


def device_for_profile(profile_name: str) -> EmulatedDevice | None:
    """The device that emulates target profile ``profile_name``, or None when none does."""
    return next((d for d in DEVICES.values() if profile_name in d.profiles), None)
