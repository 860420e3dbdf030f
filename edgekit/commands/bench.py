"""``edgekit bench ARTIFACT...`` and ``edgekit bench compare A.json B.json``.

Runs with the ``runtime`` extra alone: nothing here imports torch or a
converter; runtimes load inside the measuring child processes.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from edgekit.commands.output import emit_json
from edgekit.commands.remote_options import remote_options
from edgekit.errors import BudgetError, OutputError


class _DefaultGroup(click.Group):
    """A group whose first argument, unless it names a subcommand, goes to ``run``.

    So ``edgekit bench model.onnx`` means ``edgekit bench run model.onnx``,
    while ``edgekit bench compare A.json B.json`` reaches ``compare``.
    """

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


class _IntList(click.ParamType):
    """``"1,2,4"`` → ``[1, 2, 4]``: one value, or a sweep."""

    name = "N[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            numbers = [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError:
            self.fail(f"'{value}' is not a comma-separated list of whole numbers, e.g. 1,2,4", param, ctx)
        if not numbers or min(numbers) < 1:
            self.fail(f"'{value}' must list numbers >= 1, e.g. 1,2,4", param, ctx)
        return list(dict.fromkeys(numbers))


@click.group(cls=_DefaultGroup)
def bench() -> None:
    """Benchmark artifacts with their runtimes only (no torch needed).

    Artifacts without a command mean `run` (see `edgekit bench run -h`).

    \b
      edgekit bench model.tflite model.onnx --threads 1,4 --json > pi4.json
      edgekit bench model.onnx --batch 1,8,32 --micro-batch
      edgekit bench compare pi4.json pi5.json
    """


@bench.command("run")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--threads", type=_IntList(), default="1", show_default=True, help="Thread count, or a sweep: 1,2,4.")
@click.option("--batch", type=_IntList(), default="1", show_default=True, help="Batch size, or a sweep: 1,8,32.")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True, help="Timed inferences.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget in seconds per measurement (replaces --runs).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Inferences before timing.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Real inputs: .npz with arrays named after the inputs, or 'x'.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random inputs.")
@click.option("--micro-batch", "micro_batch", is_flag=True,
              help="Also serve each batch size B through a micro-batcher (max batch B) to B client threads "
                   "sending one sample per request: throughput and per-request latency.")
@click.option("--max-wait", "max_wait", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="The micro-batcher's longest wait for a batch to fill, in ms (with --micro-batch).")
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME_OR_TOML",
              help="Check the latency and RAM budgets of this profile (exit 1 when missed). Repeatable.")
@click.option("--latency-stat", type=click.Choice(["p50", "p90", "p99", "mean"]), default="p50", show_default=True,
              help="Latency statistic compared with max_latency_ms.")
@click.option("--label", default=None, help="A name for this machine in the results, e.g. pi4-lab-2.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout (the table goes to stderr).")
@click.option("--json-out", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the results as JSON to this file.")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path, allow_dash=True), default=None,
              help="Write results as CSV to this file ('-' for stdout).")
@remote_options
def run(
    artifacts: tuple[Path, ...],
    threads: list[int],
    batch: list[int],
    runs: int,
    duration: float | None,
    warmup: int,
    data: Path | None,
    seed: int,
    micro_batch: bool,
    max_wait: float,
    targets: tuple[str, ...],
    latency_stat: str,
    label: str | None,
    as_json: bool,
    json_out: Path | None,
    csv_out: Path | None,
    remote: Any,
) -> None:
    """Measure cold start, latency, throughput and peak memory of ARTIFACTS (.onnx, .tflite, .mlpackage).

    With --remote ssh://user@host the artifacts are copied to that device and
    measured there; the results print here as if measured here, plus where.
    """
    from edgekit import bench as core
    from edgekit.config import load_profile
    from edgekit.errors import DataError
    from edgekit.machine import describe

    _refuse_overwriting(artifacts, json_out, csv_out)
    if as_json and str(csv_out) == "-":
        raise click.UsageError("--json and --csv - both print to stdout; write the CSV to a file")
    if data is not None and not data.is_file():
        raise DataError(f"data file not found: {data}", "Check the path given to --data")
    profiles = [load_profile(name) for name in targets]  # a typo fails before minutes of measuring
    stdout_taken = as_json or str(csv_out) == "-"
    table_console = Console(stderr=stdout_taken)
    status_console = Console(stderr=True)

    with status_console.status("benchmarking") as status:
        if remote is None:
            machine = describe(label)
            results = core.bench(
                list(artifacts), threads, batch, warmup=warmup, runs=runs, duration_s=duration, data=data, seed=seed,
                machine=machine, progress=lambda text: status.update(f"benchmarking {text}"),
                micro_batch=micro_batch, max_wait_ms=max_wait,
            )
        else:
            from edgekit.commands.remote_options import bench_on_device

            on_device = bench_on_device(remote, artifacts, data, _measuring_words(
                threads, batch, runs, duration, warmup, seed, micro_batch, max_wait, label), status.update)
            machine, results = on_device["machine"], on_device["results"]

    failures = _check_profiles(profiles, results, machine, latency_stat, status_console)
    document = core.make_document(results, machine)
    if remote is not None:
        document["remote"] = on_device["remote"]
    _print_results(table_console, document)
    _emit_json(document, as_json, json_out)
    if csv_out is not None:
        _write(csv_out, _to_csv(core.csv_rows(document), core.CSV_COLUMNS))
    if failures:
        missed = "; ".join(
            f"{r['artifact']} (threads {r['threads']}, batch {r['batch']}) on {c['target']}: "
            f"{c['budget']} {c['value']} > {c['limit']}"
            for r, c in failures
        )
        raise BudgetError(
            f"{len(failures)} budget check(s) failed: {missed}",
            "Use a smaller or lower-precision artifact, fewer threads' contention, or relax the profile's budgets",
        )


def _check_profiles(profiles: list[Any], results: list[dict[str, Any]], machine: dict[str, Any], latency_stat: str,
                    console: Console) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Add each profile's latency and RAM verdicts to the results; the failed (result, check) pairs."""
    from edgekit import bench as core
    from edgekit.machine import same_arch

    failures = []
    for profile in profiles:
        if not same_arch(profile.device.arch, machine.get("arch")):
            console.print(
                f"[yellow]note:[/] measured on {machine.get('arch')}; target {profile.name} is {profile.device.arch}. "
                "The verdicts describe this machine, not the target device."
            )
        for result in results:
            if "skipped" in result:
                continue
            checks = core.check_budgets(result, profile.budgets, profile.name, latency_stat)
            result.setdefault("budgets", []).extend(checks)
            failures += [(result, c) for c in checks if c["status"] == "fail"]
    return failures


def _measuring_words(threads: list[int], batch: list[int], runs: int, duration: float | None, warmup: int, seed: int,
                     micro_batch: bool, max_wait: float, label: str | None) -> list[str]:
    """The measuring options as command-line words, for the same bench on a remote device."""
    words = ["--threads", ",".join(map(str, threads)), "--batch", ",".join(map(str, batch)), "--runs", str(runs),
             "--warmup", str(warmup), "--seed", str(seed), "--max-wait", repr(max_wait)]
    words += ["--duration", repr(duration)] if duration is not None else []
    words += ["--micro-batch"] if micro_batch else []
    return words + (["--label", label] if label else [])


@bench.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout (tables go to stderr).")
@click.option("--json-out", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the comparison as JSON to this file.")
def compare(a: Path, b: Path, as_json: bool, json_out: Path | None) -> None:
    """Compare two bench JSON files side by side, with B/A ratios (before/after, Pi 4 vs Pi 5)."""
    from edgekit import bench as core
    from edgekit.errors import DataError
    from edgekit.machine import short_name

    comparison = core.compare(core.load_document(a), core.load_document(b))
    comparison["a_file"], comparison["b_file"] = str(a), str(b)
    if not comparison["pairs"]:
        raise DataError(f"{a.name} and {b.name} have no measured results in common",
                        "Compare files that benchmark the same thread counts and batch sizes")
    console = Console(stderr=as_json)
    name_a, name_b = short_name(comparison["a_machine"]), short_name(comparison["b_machine"])
    console.print(f"A = {a.name}: {name_a}\nB = {b.name}: {name_b}\n"
                  "B/A below 1 means B is faster or smaller (above 1 for throughput); \\[low-high] is its 95 % "
                  "interval from the per-run latencies (colour: over 2 % and the interval excludes 1).")
    for pair in comparison["pairs"]:
        pa, pb = pair["a"], pair["b"]
        title = (f"{pa['artifact']}" if pa["artifact"] == pb["artifact"] else f"{pa['artifact']} → {pb['artifact']}")
        table = Table(title=f"{title}  (threads {pa['threads']}, batch {pa['batch']})")
        for column in ("metric", "A", "B", "B/A"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for m in pair["metrics"]:
            table.add_row(m["metric"], _fmt(m["a"]), _fmt(m["b"]),
                          _ratio(m["ratio"], m["higher_is_better"], m.get("ratio_ci95")))
        console.print(table)
    for side in ("a", "b"):
        for item in comparison[f"only_in_{side}"]:
            console.print(f"only in {side.upper()}: {item['artifact']} threads {item['threads']} batch {item['batch']}")
    _emit_json(comparison, as_json, json_out)


# ------------------------------------------------------------------- output helpers


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _compact(value: float | None) -> str:
    """Large counts in a few characters: 119k, 1.2M."""
    if value is None:
        return "-"
    for limit, unit, suffix in ((1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if value >= limit:
            return f"{value / unit:.3g}{suffix}"
    return f"{value:.0f}" if value >= 1000 else f"{value:.3g}"  # 8230, not 8.23e+03


def _ratio(ratio: float | None, higher_is_better: bool, interval: list[float] | None = None) -> str:
    """``0.93× [0.91-0.95]``; green or red when B is better or worse by more than 2 % and, when there is an
    interval, it excludes 1. (Separate runs of one model on a busy host differ by a few % while each interval
    is far narrower: the interval is within-run precision, the 2 % keeps run-to-run noise white.)"""
    if ratio is None:
        return "-"
    better = ratio > 1 if higher_is_better else ratio < 1
    differs = abs(ratio - 1) > 0.02 and not (interval and interval[0] <= 1 <= interval[1])
    colour = ("green" if better else "red") if differs else "white"
    shown = f" \\[{interval[0]:.2f}-{interval[1]:.2f}]" if interval else ""  # an escaped bracket: text, not rich markup
    return f"[{colour}]{ratio:.2f}×{shown}[/]"


_BUDGET_NAMES = {"max_latency_ms": "latency", "max_ram_mb": "RAM"}
_STATUS_STYLE = {"pass": "green", "fail": "bold red", "skipped": "yellow"}


def _print_results(console: Console, document: dict[str, Any]) -> None:
    from edgekit.machine import short_name

    machine = document["machine"]
    runtimes = ", ".join(f"{k} {v}" for k, v in machine.get("runtimes", {}).items())
    console.print(f"[bold]{short_name(machine)}[/] · {machine.get('cpu')} · {machine.get('cores')} cores · "
                  f"{machine.get('os')} {machine.get('arch')} · Python {machine.get('python')} · {runtimes}")
    columns = ("thr", "bs", "cold", "p50", "p90", "p99", "/s", "peak", "model")
    rows = []
    for result in document["results"]:
        if "skipped" in result:
            rows.append([result["artifact"], *["-"] * 8, "skipped"])
            continue
        lat, mem = result["latency_ms"], result["memory"]
        rows.append([
            result["artifact"], str(result["threads"]), str(result["batch"]), _fmt(result["cold_start_ms"]),
            _fmt(lat["p50"]), _fmt(lat["p90"]), _fmt(lat["p99"]), _compact(result["throughput"]["samples_per_s"]),
            _fmt(mem["peak_rss_mb"]), _fmt(mem["model_rss_mb"]),
        ])
    # Numbers are never clipped: each numeric column is as wide as its widest value, and in a
    # narrow terminal (80 columns over SSH, a pipe) the artifact names fold onto more lines instead.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("artifact", min_width=8, overflow="fold")
    for index, column in enumerate(columns, start=1):
        widest = max([len(column), *(len(row[index]) for row in rows)])
        table.add_column(column, justify="right", no_wrap=True, min_width=widest)
    for row in rows:
        table.add_row(*row[:-1], "[yellow]skipped[/]" if row[-1] == "skipped" else row[-1])
    console.print(table)
    console.print("[dim]times in ms · /s: samples per second · peak: process RSS in MiB · "
                  "model: peak minus the bare runtime's baseline[/]")
    _print_micro_batch(console, document["results"])
    _print_device_warnings(console, document)
    for result in document["results"]:
        if "skipped" in result:
            console.print(f"[yellow]skipped {result['artifact']}:[/] {result['skipped']}")
        for v in result.get("budgets", []):
            style = _STATUS_STYLE.get(v["status"], "white")
            console.print(
                f"budget {v['target']}: {result['artifact']} (threads {result['threads']}, batch {result['batch']}) "
                f"{_BUDGET_NAMES.get(v['budget'], v['budget'])} {_fmt(v['value'])} vs limit {_fmt(v['limit'])} "
                f"({v['note']}) [{style}]{v['status']}[/]",
                highlight=False,
            )


def _print_device_warnings(console: Console, document: dict[str, Any]) -> None:
    """What speaks against trusting the figures (governor, clock, heat, throttling; an older edgekit remotely),
    each warning once."""
    if document.get("remote"):
        remote = document["remote"]
        console.print(f"[dim]measured on {remote['url']} with {remote['python']} (edgekit {remote['edgekit']}), "
                      f"{remote['seconds']} s in all[/]", highlight=False)
    seen: dict[str, list[str]] = {}
    for result in document["results"]:
        for warning in (result.get("device_state") or {}).get("warnings", []):
            seen.setdefault(warning, []).append(f"{result['artifact']} t{result['threads']} b{result['batch']}")
    for warning in (document.get("remote") or {}).get("warnings", []):
        seen.setdefault(warning, [])
    for warning, where in seen.items():
        scope = f" ({', '.join(where)})" if where and len(where) < len(document["results"]) else ""
        console.print(f"[yellow]warning{scope}:[/] {warning}", highlight=False)


def _print_micro_batch(console: Console, results: list[dict[str, Any]]) -> None:
    """The micro-batcher's table (``--micro-batch``), next to the direct batch-B figures of the same run."""
    measured = [r for r in results if "micro_batch" in r]
    if not measured:
        return
    # Direct one-sample calls of the same artifact and threads, when the sweep has batch 1: what a gateway
    # that serves each request on its own gets, so ×bs1 is the gain of batching.
    single = {(r["artifact"], r["threads"]): r["throughput"]["samples_per_s"] for r in measured if r["batch"] == 1}
    columns = ("thr", "B", "direct/s", "micro/s", "×direct", "×bs1", "p50", "p99", "mean bs")
    rows = []
    for result in measured:
        micro, direct = result["micro_batch"], result["throughput"]["samples_per_s"]
        per_s, one = micro["throughput"]["samples_per_s"], single.get((result["artifact"], result["threads"]))
        rows.append([
            result["artifact"], str(result["threads"]), str(result["batch"]), _compact(direct), _compact(per_s),
            _fmt(micro["vs_direct"]), _fmt(per_s / one if per_s and one else None),
            _fmt(micro["latency_ms"]["p50"]), _fmt(micro["latency_ms"]["p99"]), _fmt(micro["mean_batch_size"]),
        ])
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0),
                  title=f"micro-batcher: B clients, 1 sample per request, max batch B, "
                        f"max wait {_fmt(measured[0]['micro_batch']['max_wait_ms'])} ms", title_justify="left")
    table.add_column("artifact", min_width=8, overflow="fold")
    for index, column in enumerate(columns, start=1):
        widest = max([len(column), *(len(row[index]) for row in rows)])
        table.add_column(column, justify="right", no_wrap=True, min_width=widest)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("[dim]direct/s: batch-B calls (the ideal) · ×direct: micro/s over it · ×bs1: over direct "
                  "batch-1 calls · p50, p99: per-request latency in ms, submit to result · mean bs: samples per run[/]")


def _to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _refuse_overwriting(artifacts: tuple[Path, ...], *outputs: Path | None) -> None:
    """Never let an output path clobber an input artifact (e.g. a mistyped --json-out model.onnx)."""
    inputs = {p.resolve() for p in artifacts if p.exists()}
    for out in outputs:
        if out is not None and str(out) != "-" and out.resolve() in inputs:
            raise OutputError(f"refusing to write results over the artifact {out}", "Give --json-out/--csv a new file name")


def _emit_json(document: dict[str, Any], as_json: bool, json_out: Path | None) -> None:
    """--json prints the document on stdout (as every reporting command does), --json-out writes it to a file."""
    if json_out is not None:
        _write(json_out, json.dumps(document, indent=2) + "\n")
    if as_json:
        emit_json(document)


def _write(destination: Path, text: str) -> None:
    if str(destination) == "-":
        click.echo(text, nl=False)
        return
    from edgekit.artifact import atomic_write_bytes

    try:
        atomic_write_bytes(destination, text.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"cannot write {destination}: {exc.strerror or exc}", "Choose a writable path") from None


COMMANDS = [bench]
