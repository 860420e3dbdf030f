"""`import edgekit` and `edgekit --help` must not pull in heavy frameworks."""

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "coremltools", "onnxruntime", "onnx", "litert_torch", "ai_edge_litert", "matplotlib")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_edgekit_is_light() -> None:
    loaded = _modules_after("import edgekit")
    assert not loaded & set(HEAVY)


def test_cli_help_is_light() -> None:
    loaded = _modules_after(
        "import contextlib, io\nfrom edgekit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass"
    )
    assert "edgekit.cli" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_version_flag() -> None:
    from edgekit import __version__

    out = subprocess.run([sys.executable, "-m", "edgekit", "--version"], check=True, capture_output=True, text=True)
    assert __version__ in out.stdout
