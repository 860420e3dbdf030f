"""UTC timestamps as manifests write them: ``YYYY-MM-DDTHH:MM:SSZ``.

Build manifests and bundles take their clock from ``SOURCE_DATE_EPOCH`` when it is set (the
reproducible-builds.org convention), so a rebuild gives the same bytes.
Verification never does: expiry is always judged by the real clock.
"""

from __future__ import annotations

import calendar
import os
import time

from edgekit.errors import InputError

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_utc(epoch: int) -> str:
    """Seconds since the epoch as a manifest timestamp."""
    return time.strftime(FORMAT, time.gmtime(epoch))


def parse_utc(text: str) -> int:
    """A manifest timestamp as seconds since the epoch (raises InputError if malformed)."""
    try:
        return calendar.timegm(time.strptime(text, FORMAT))
    except ValueError:
        raise InputError(f"timestamp {text!r} is not of the form 2026-01-31T12:00:00Z", "Fix the manifest") from None


def release_epoch() -> int:
    """The time a bundle is issued: $SOURCE_DATE_EPOCH if set, else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return int(time.time())
    if not value.isdigit():
        raise InputError(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds",
            "Set it to a Unix time such as $(git log -1 --format=%ct), or unset it",
        )
    return int(value)


def build_time() -> str:
    """When a build or bundle is stamped, as a manifest timestamp: $SOURCE_DATE_EPOCH if set, else now.

    The build manifest's ``created_at`` reads this, so two builds of the same
    inputs with the same SOURCE_DATE_EPOCH write the same manifest bytes.
    """
    return format_utc(release_epoch())
