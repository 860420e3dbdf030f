"""Version strings: parsing and ordering for releases, apps and runtimes.

Release versions are Semantic Versioning 2.0 (``MAJOR.MINOR.PATCH`` with an
optional ``-prerelease`` and ``+build``); a downgrade check depends on their
order, so it follows the semver precedence rules exactly. App and runtime
versions in the wild are looser (``1.17``, ``2``): ``parse_loose`` accepts one
to three numeric parts and pads the missing ones with zeros.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from edgekit.errors import InputError

# The regular expression published with the semver 2.0 specification.
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
LOOSE_PATTERN = r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"

# ASCII: Python's \d also matches other scripts' digits, which no version uses.
_SEMVER = re.compile(SEMVER_PATTERN, re.ASCII)
_LOOSE = re.compile(LOOSE_PATTERN, re.ASCII)


@total_ordering
@dataclass(frozen=True)
class Version:
    """A parsed version; ordering is semver precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    text: str = ""

    def _key(self) -> tuple[object, ...]:
        # A version without a prerelease ranks above any prerelease of it;
        # numeric identifiers rank below alphanumeric ones and compare as numbers.
        pre: tuple[object, ...] = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"


def is_semver(text: str) -> bool:
    """True if ``text`` is a full semver 2.0 version (no trailing newline)."""
    return _SEMVER.match(text) is not None and not text.endswith("\n")


def parse_semver(text: str, what: str = "version") -> Version:
    """Parse a strict ``X.Y.Z[-pre][+build]`` version or raise InputError naming ``what``."""
    match = _SEMVER.match(text)
    if match is None or text.endswith("\n"):
        raise InputError(
            f"{what} {text!r} is not a semantic version",
            "Use MAJOR.MINOR.PATCH, for example 1.4.0 or 2.0.0-rc.1",
        )
    major, minor, patch, pre, _build = match.groups()
    return Version(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else (), text)


def parse_loose(text: str, what: str = "version") -> Version:
    """Parse ``X[.Y[.Z]][-pre][+build]`` (missing parts are zero) or raise InputError."""
    match = _LOOSE.match(text)
    if match is None or text.endswith("\n"):
        raise InputError(f"{what} {text!r} is not a version", "Use numbers separated by dots, for example 2.3 or 2.3.1")
    major, minor, patch, pre = match.groups()
    return Version(int(major), int(minor or 0), int(patch or 0), tuple(pre.split(".")) if pre else (), text)
