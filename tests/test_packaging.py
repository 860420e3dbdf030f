"""The wheel users install carries what the source tree keeps outside edgekit/: the device profiles."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_installs_every_profile_as_edgekit_targets(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("edgekit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"edgekit/targets/{p.name}" for p in (ROOT / "targets").glob("*.toml")}
    assert shipped and shipped <= names
    assert "edgekit/targets/__init__.py" in names and "edgekit/release/manifest.schema.json" in names
    assert not any(name.startswith(("targets/", "sample_models/", "tests/")) for name in names)
