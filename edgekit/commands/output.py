"""Shared terminal output for commands: JSON on stdout, tables and progress on stderr/stdout."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from edgekit.native_output import terminal_stderr
from rich.table import Table

_console: Console | None = None


def console() -> Console:
    """The console for human-readable output (stdout)."""
    global _console
    if _console is None:
        # Piped output (CI logs) gets a wide table instead of rich's 80-column default.
        _console = Console(highlight=False, width=shutil.get_terminal_size((150, 24)).columns)
    return _console


def emit_json(document: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


class RichReporter:
    """Pipeline progress drawn on stderr, so --json output on stdout stays clean."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(file=terminal_stderr()), transient=True,
        )
        self._task = self._progress.add_task("preparing", total=None)

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total, completed=0)

    def step(self, description: str) -> None:
        self._progress.update(self._task, description=description)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def note(self, message: str) -> None:
        self._progress.console.print(f"[yellow]note[/]: {message}")


@contextlib.contextmanager
def progress_reporter(quiet: bool = False) -> Iterator[Any]:
    from edgekit.pipeline import SilentReporter

    if quiet or not sys.stderr.isatty():
        yield SilentReporter()
        return
    with RichReporter() as reporter:
        yield reporter


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


# Short names of the quality checks a verdict rested on, for the table's "judged on" column.
_QUALITY_SHORT = {"max_accuracy_drop": "acc", "min_cosine": "cos", "min_top1_agreement": "top1", "min_sqnr_db": "sqnr",
                  "max_abs_error": "abs", "float_agreement": "float"}


def _attacks_cell(metrics: dict[str, Any]) -> str:
    """Robust accuracy (and its drop against FP32) and the membership AUC, where the build measured them."""
    parts = []
    if "robust_accuracy" in metrics:
        drop = metrics.get("robust_accuracy_drop")
        parts.append(f"robust {metrics['robust_accuracy']:.3f}" + (f" ({-drop:+.3f})" if drop is not None else ""))
    if "membership_auc" in metrics:
        parts.append(f"MIA {metrics['membership_auc']:.2f}")
    return " ".join(parts) or "—"


def summary_table(manifest: dict[str, Any]) -> Table:
    """target × artifact: size, accuracy, fidelity, coverage, host latency, verdict and what quality it was judged on."""
    from edgekit.coverage import summary as coverage_summary

    model = manifest["model"]
    reference = manifest.get("reference", {})
    title = f"{model['name']} {model['version']}"
    if "accuracy" in reference:
        title += f" — FP32 torch accuracy {reference['accuracy']:.4f}"
    table = Table(title=title)
    for column, justify in [("target", "left"), ("artifact", "left"), ("variant", "left"), ("size KB", "right"),
                            ("accuracy", "right"), ("Δacc", "right"), ("cosine", "right"), ("top-1", "right"),
                            ("coverage", "right"), ("host p50 ms", "right"), ("attacks", "right"), ("judged on", "left"),
                            ("verdict", "left")]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for artifact in manifest["artifacts"]:
        m = artifact["metrics"]
        failed = [c["budget"] for c in artifact["checks"] if c["status"] == "fail"]
        verdict = "[green]pass[/]" if artifact["passed"] else f"[red]FAIL[/] {', '.join(failed)}"
        judged = [_QUALITY_SHORT.get(b, b) for b in artifact.get("quality_decided_by", [])]
        coverage = coverage_summary(artifact["coverage"]) if "coverage" in artifact else "—"
        if artifact.get("coverage", {}).get("partial"):
            coverage = f"[yellow]{coverage}[/]"
        table.add_row(
            artifact["target"], f"{artifact['format']} {artifact['precision']}" + ("" if artifact["io"] == "float" else f" io={artifact['io']}"),
            "/".join(filter(None, [artifact.get("model_variant"), artifact["variant"]])),
            f"{artifact['size_bytes'] / 1024:.1f}", _fmt(m.get("accuracy"), "{:.4f}"),
            _fmt(m.get("accuracy_drop"), "{:+.4f}"), _fmt(m.get("cosine"), "{:.5f}"),
            _fmt(m.get("top1_agreement"), "{:.4f}"), coverage,
            _fmt(m.get("latency_p50_ms"), "{:.3f}") if not artifact.get("emulated") else "emulated",
            _attacks_cell(m), " ".join(judged) or "[red]nothing[/]", verdict,
        )
    for target in manifest["targets"]:
        if target["status"] in ("error", "skipped"):
            table.add_row(target["name"], "—", "—", "", "", "", "", "", "", "", "", "", f"[yellow]{target['status']}[/]")
    return table
