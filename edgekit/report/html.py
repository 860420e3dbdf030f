"""``build_dir/report.html``: a build's artifacts, metrics, budgets and benchmarks in one file.

The page is self-contained: inline CSS, charts as base64 PNGs drawn by
matplotlib's Agg canvas, no scripts, fonts or links to fetch, so it opens from
a bundle or an e-mail attachment with no network. Every value taken from the
manifest or a bench file is HTML-escaped.

Latency comes from three sources and is always labelled with its source:
``bench`` (``build_dir/bench/*.json`` from ``edgekit bench`` on a device,
matched to artifacts by sha256, then file name), ``build host`` (the
manifest's ``metrics.latency_p50_ms``, measured where the build ran), and
``estimate`` (the manifest's roofline ``estimate``; see edgekit.estimate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import ArtifactError, DataError
from edgekit.report.markup import escape, img, new_figure, number, percent, png, size

REPORT_NAME = "report.html"
BENCH_DIR = "bench"

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1160px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 8px}.muted{color:#656d76}.small{font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;font-size:13px;margin:6px 0 12px}
th,td{padding:6px 8px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.pass{background:#dafbe1;color:#116329}.fail{background:#ffebe9;color:#a40e26}.other{background:#fff8c5;color:#7d4e00}
.chip{display:inline-block;margin:1px 2px;padding:0 6px;border-radius:4px;font-size:11px;white-space:nowrap}
.est{font-style:italic;color:#8250df}.src{font-size:11px;color:#656d76}
figure{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:10px 0;padding:8px;text-align:center}
figure img{max-width:100%;height:auto}figcaption{font-size:12px;color:#656d76}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}@media(max-width:900px){.grid{grid-template-columns:1fr}}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:6px 10px;font-size:13px}
"""

_ESTIMATE_NOTE = (
    "Estimates are a roofline (max of compute and weight-memory time, plus a per-call overhead) from the "
    "graph's MACs and the profile's device figures; they can be off by 2–3× (see docs/bench.md). "
    "Measured figures always win when present."
)


# ------------------------------------------------------------------- loading


def _load_manifest(build_dir: Path) -> dict[str, Any]:
    path = build_dir / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"no manifest.json in {build_dir}", "Point at the output folder of `edgekit build`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not readable JSON ({exc})", "Rebuild with `edgekit build`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts", []), list):
        raise DataError(f"{path} is not an edgekit build manifest", "Rebuild with `edgekit build`")
    return manifest


def _load_bench(build_dir: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Bench documents under ``build_dir/bench`` and notes about files that are not one."""
    from edgekit.bench import load_document
    from edgekit.errors import EdgekitError

    documents, notes = [], []
    for path in sorted((build_dir / BENCH_DIR).glob("*.json")):
        try:
            documents.append((path.name, load_document(path)))
        except EdgekitError as exc:
            notes.append(f"skipped {path.name}: {exc.problem}")
    return documents, notes


def _load_searches(build_dir: Path, manifest: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Search records of searched artifacts, from the reports beside them, and notes about unreadable ones."""
    records, notes = {}, []
    for artifact in manifest.get("artifacts", []):
        if not isinstance(artifact, dict) or not artifact.get("search") or not artifact.get("report"):
            continue
        path = build_dir / str(artifact["report"])
        try:
            record = json.loads(path.read_text(encoding="utf-8")).get("search")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            notes.append(f"the search table of {artifact.get('path')} is missing: {path.name} is unreadable ({exc})")
            continue
        if isinstance(record, dict):
            records[str(artifact.get("path"))] = record
    return records, notes


# ------------------------------------------------------------------- formatting


def _badge(status: Any) -> str:
    text = str(status)
    cls = "pass" if text in ("pass", "passed", "True") else "fail" if text in ("fail", "failed", "False") else "other"
    return f'<span class="badge {cls}">{escape(text)}</span>'


def _checks(checks: list[dict[str, Any]]) -> str:
    chips = []
    for check in checks:
        status = str(check.get("status"))
        cls = "pass" if status == "pass" else "fail" if status == "fail" else "other"
        value = number(check.get("value"), ".4g")
        where = f"{check['target']}: " if check.get("target") and check.get("from_bench") else ""
        title = escape(check.get("note") or "")
        chips.append(f'<span class="chip {cls}" title="{title}">{escape(where)}{escape(check.get("budget"))} '
                     f"{escape(value)} / {escape(check.get('limit'))} {'✓' if cls == 'pass' else '✗' if cls == 'fail' else '?'}"
                     "</span>")
    return " ".join(chips) or '<span class="muted">–</span>'


# ------------------------------------------------------------------- latency sources


def _bench_results(documents: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    from edgekit.machine import short_name

    rows = []
    for file_name, document in documents:
        for result in document.get("results", []):
            machine = result.get("machine") or document.get("machine") or {}
            rows.append({**result, "_file": file_name, "_machine": short_name(machine)})
    return rows


def _bench_for(artifact: dict[str, Any], bench: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bench results of this artifact: same sha256; by file name only for results without a hash.

    Builds reuse file names across targets (``pi4/m.int8.tflite``, ``esp32/m.int8.tflite``),
    so a name alone must never pair a measurement with a different file.
    """
    measured = [r for r in bench if "skipped" not in r]
    digest = artifact.get("sha256")
    name = Path(str(artifact.get("path", ""))).name
    return [r for r in measured
            if (r.get("sha256") and r.get("sha256") == digest) or (not r.get("sha256") and name and r.get("artifact") == name)]


def _latencies(artifact: dict[str, Any], bench: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
    """(source kind, ms, label) for every latency figure known for an artifact."""
    figures = []
    for result in _bench_for(artifact, bench):
        p50 = result.get("latency_ms", {}).get("p50")
        if isinstance(p50, (int, float)):
            figures.append(("bench", p50, f"{result['_machine']} · {result.get('threads')}t b{result.get('batch')}"))
    metrics = artifact.get("metrics") or {}
    if isinstance(metrics.get("latency_p50_ms"), (int, float)):
        figures.append(("build host", metrics["latency_p50_ms"], "p50 measured on the build host"))
    estimate = artifact.get("estimate") or {}
    if isinstance(estimate.get("latency_ms"), (int, float)):
        figures.append(("estimate", estimate["latency_ms"], estimate.get("method", "roofline estimate")))
    return figures


def _latency_cell(figures: list[tuple[str, float, str]]) -> str:
    if not figures:
        return '<span class="muted">–</span>'
    lines = []
    for kind, ms, label in figures:
        cls = ' class="est"' if kind == "estimate" else ""
        where = f"bench · {label}" if kind == "bench" else kind
        lines.append(f'<span{cls} title="{escape(label)}">{escape(number(ms, ".3g"))} ms</span> <span class="src">{escape(where)}</span>')
    return "<br>".join(lines)


# ------------------------------------------------------------------- charts


def _size_accuracy_chart(manifest: dict[str, Any]) -> str | None:
    artifacts = manifest.get("artifacts", [])
    key = "accuracy" if any(isinstance((a.get("metrics") or {}).get("accuracy"), (int, float)) for a in artifacts) \
        else "top1_agreement"
    points = [(a, (a.get("metrics") or {}).get(key)) for a in artifacts]
    points = [(a, y) for a, y in points if isinstance(y, (int, float)) and isinstance(a.get("size_bytes"), (int, float))]
    if not points:
        return None
    figure, axes = new_figure()
    targets = sorted({str(a.get("target")) for a, _ in points})
    colours = {t: f"C{i % 10}" for i, t in enumerate(targets)}
    seen = set()
    for artifact, y in points:
        target, fmt = str(artifact.get("target")), str(artifact.get("format"))
        label = f"{target} · {fmt}"
        axes.scatter(artifact["size_bytes"] / 1024, y * 100, s=60, color=colours[target], marker=_marker(fmt),
                     edgecolors="black" if artifact.get("passed") else "red", linewidths=0.8,
                     label=None if label in seen else label)
        seen.add(label)
        axes.annotate(str(artifact.get("precision")), (artifact["size_bytes"] / 1024, y * 100), fontsize=8,
                      xytext=(4, 4), textcoords="offset points")
    reference = (manifest.get("reference") or {}).get(key) if key == "accuracy" else 1.0
    if isinstance(reference, (int, float)):
        axes.axhline(reference * 100, color="grey", linestyle="--", linewidth=1, label="FP32 reference")
    sizes = [a["size_bytes"] for a, _ in points]
    if max(sizes) > 8 * min(sizes):
        axes.set_xscale("log")
    axes.set_xlabel("artifact size (KB)")
    axes.set_ylabel("accuracy (%)" if key == "accuracy" else "top-1 agreement with FP32 (%)")
    axes.set_title("Size vs " + ("accuracy" if key == "accuracy" else "agreement with FP32"))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return png(figure)


def _latency_chart(manifest: dict[str, Any], bench: list[dict[str, Any]]) -> str | None:
    rows = []
    for artifact in manifest.get("artifacts", []):
        figures = _latencies(artifact, bench)
        if figures:
            label = f"{artifact.get('target')}\n{artifact.get('format')} {artifact.get('precision')}"
            # One bar per source: the first figure of each kind (bench results at batch 1 sort first).
            ordered = sorted(figures, key=lambda f: (f[0] != "bench", not f[2].endswith(" b1")))
            rows.append((str(artifact.get("precision")), label, {kind: ms for kind, ms, _ in reversed(ordered)}))
    if not rows:
        return None
    rows.sort(key=lambda r: (r[0], r[1]))
    kinds = [k for k in ("bench", "build host", "estimate") if any(k in r[2] for r in rows)]
    figure, axes = new_figure(max(6.0, 0.9 * len(rows) + 2), 4.2)
    width = 0.8 / len(kinds)
    styles = {"bench": dict(color="C0"), "build host": dict(color="C2"),
              "estimate": dict(color="white", edgecolor="C4", hatch="//")}
    for k, kind in enumerate(kinds):
        xs = [i + (k - (len(kinds) - 1) / 2) * width for i in range(len(rows))]
        values = [r[2].get(kind, 0.0) for r in rows]
        axes.bar(xs, values, width, label=kind if kind != "estimate" else "estimate (not measured)", **styles[kind])
    values = [v for r in rows for v in r[2].values() if v > 0]
    if values and max(values) > 30 * min(values):
        axes.set_yscale("log")
    axes.set_xticks(range(len(rows)))
    axes.set_xticklabels([r[1] for r in rows], fontsize=8)
    axes.set_ylabel("latency per inference (ms)")
    axes.set_title("Latency per precision (p50; estimates hatched)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return png(figure)


def _bench_chart(bench: list[dict[str, Any]]) -> str | None:
    measured = [r for r in bench if "skipped" not in r and isinstance(r.get("latency_ms"), dict)]
    if not measured:
        return None
    figure, axes = new_figure(9.0, 0.4 * len(measured) + 1.4)
    labels = [f"{r['_machine'][:28]} · {r['artifact']} · {r.get('threads')}t b{r.get('batch')}" for r in measured]
    p50 = [r["latency_ms"]["p50"] for r in measured]
    p90 = [r["latency_ms"]["p90"] for r in measured]
    p99 = [r["latency_ms"]["p99"] for r in measured]
    ys = range(len(measured))
    axes.barh(ys, p50, height=0.6, color="C0", label="p50")
    axes.scatter(p90, ys, color="C1", marker="|", s=200, label="p90", zorder=3)
    axes.scatter(p99, ys, color="C3", marker="|", s=200, label="p99", zorder=3)
    axes.set_yticks(list(ys))
    axes.set_yticklabels(labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("latency (ms)")
    axes.set_title("Measured on devices (edgekit bench)")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png(figure)


def _charts(manifest: dict[str, Any], bench: list[dict[str, Any]]) -> tuple[dict[str, str | None], str | None]:
    """Base64 PNGs by name, or a note saying why there are none."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return {}, 'Charts need matplotlib: pip install "edgekit[report]", then rebuild the report.'
    return {
        "size_accuracy": _size_accuracy_chart(manifest),
        "latency": _latency_chart(manifest, bench),
        "bench": _bench_chart(bench),
    }, None


def _marker(fmt: Any) -> str:
    from edgekit.backends import REGISTRY

    entry = REGISTRY.get(str(fmt))
    return entry.marker if entry is not None else "D"


# ------------------------------------------------------------------- page


def _coverage_cell(coverage: Any) -> str:
    """Share of weights in the requested precision, fast-path ops, and the largest ops left float with why."""
    if not isinstance(coverage, dict) or "weights_share" not in coverage:
        return "–"
    lines = [f"{percent(coverage['weights_share'])} of weights"]
    if isinstance(coverage.get("fast_share"), (int, float)):
        lines.append(f"{percent(coverage['fast_share'])} of compute ops on the fast path")
    if coverage.get("partial"):
        lines.append(f"<b>partial</b> (below {percent(coverage.get('floor'))})")
    floats = coverage.get("float_ops") or []
    for op in floats[:5]:
        where = f" ({escape(op.get('module'))})" if op.get("module") else ""
        lines.append(f'<span class="src">float: {escape(op.get("name"))}{where}: {escape(op.get("reason"))}</span>')
    if len(floats) > 5:
        lines.append(f'<span class="src">… {len(floats) - 5} more float op(s) in the report JSON</span>')
    return "<br>".join(lines)


def _artifact_table(artifacts: list[dict[str, Any]], bench: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    head = ("<tr><th>artifact</th><th>size</th><th>accuracy</th><th>agreement with FP32</th><th>coverage</th>"
            "<th>latency (p50)</th><th>budgets</th><th>verdict</th></tr>")
    rows = []
    for a in artifacts:
        m = a.get("metrics") or {}
        accuracy = percent(m.get("accuracy"))
        if isinstance(m.get("accuracy_drop"), (int, float)):
            accuracy += f'<br><span class="src">drop {escape(number(m["accuracy_drop"] * 100, ".2f"))} pp</span>'
        agreement = []
        if isinstance(m.get("top1_agreement"), (int, float)):
            agreement.append(f"top-1 {percent(m['top1_agreement'])}")
        if isinstance(m.get("cosine"), (int, float)):
            agreement.append(f"cosine {number(m['cosine'], '.4f')}")
        if isinstance(m.get("sqnr_db"), (int, float)):
            agreement.append(f"SQNR {number(m['sqnr_db'], '.1f')} dB")
        if isinstance(m.get("max_abs_error"), (int, float)):
            agreement.append(f"max |err| {number(m['max_abs_error'], '.3g')}")
        if isinstance(m.get("samples"), (int, float)) and isinstance(m.get("samples_available"), (int, float)) \
                and m["samples"] < m["samples_available"]:
            low, high = m.get("cosine_ci95_low"), m.get("cosine_ci95_high")
            interval = f", cosine 95% CI {number(low, '.4f')}–{number(high, '.4f')}" if low is not None else ""
            agreement.append(f"on {int(m['samples'])} of {int(m['samples_available'])} samples{interval}")
        judged = a.get("quality_decided_by")
        if isinstance(judged, list):
            agreement.append("quality judged on: " + (", ".join(str(j) for j in judged) or "nothing"))
        checks = list(a.get("checks") or [])
        for result in _bench_for(a, bench):
            checks += [{**c, "from_bench": True, "note": f"bench on {result['_machine']}: {c.get('note', '')}"}
                       for c in result.get("budgets", [])]
        recipe = "/".join(str(x) for x in (a.get("model_variant"), a.get("variant")) if x)
        name = (f"<b>{escape(a.get('format'))} {escape(a.get('precision'))}</b> <span class=\"src\">{escape(recipe)}</span>"
                f"<br><span class=\"src\">{escape(a.get('path'))}</span>")
        rows.append(
            f"<tr><td>{name}</td><td class=\"num\">{size(a.get('size_bytes'))}</td><td class=\"num\">{accuracy}</td>"
            f"<td>{'<br>'.join(escape(x) for x in agreement) or '–'}</td><td>{_coverage_cell(a.get('coverage'))}</td>"
            f"<td class=\"num\">{_latency_cell(_latencies(a, bench))}</td><td>{_checks(checks)}</td>"
            f"<td>{_badge('pass' if a.get('passed') else 'fail' if a.get('passed') is False else 'unknown')}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _bench_table(bench: list[dict[str, Any]]) -> str:
    head = ("<tr><th>machine</th><th>artifact</th><th>runtime</th><th>threads</th><th>batch</th><th>cold start</th>"
            "<th>p50</th><th>p90</th><th>p99</th><th>samples/s</th><th>peak RSS</th><th>budgets</th><th>file</th></tr>")
    rows = []
    for r in bench:
        if "skipped" in r:
            rows.append(f"<tr><td>{escape(r['_machine'])}</td><td>{escape(r.get('artifact'))}</td>"
                        f"<td colspan=\"10\" class=\"muted\">skipped: {escape(r['skipped'])}</td><td>{escape(r['_file'])}</td></tr>")
            continue
        lat, mem = r.get("latency_ms", {}), r.get("memory", {})
        ms = lambda v: number(v, ".3g", " ms")  # noqa: E731
        rows.append(
            f"<tr><td>{escape(r['_machine'])}</td><td>{escape(r.get('artifact'))}</td>"
            f"<td>{escape(r.get('runtime'))} {escape(r.get('runtime_version'))}</td><td class=\"num\">{escape(r.get('threads'))}</td>"
            f"<td class=\"num\">{escape(r.get('batch'))}</td><td class=\"num\">{ms(r.get('cold_start_ms'))}</td>"
            f"<td class=\"num\">{ms(lat.get('p50'))}</td><td class=\"num\">{ms(lat.get('p90'))}</td>"
            f"<td class=\"num\">{ms(lat.get('p99'))}</td>"
            f"<td class=\"num\">{number((r.get('throughput') or {}).get('samples_per_s'), ',.0f')}</td>"
            f"<td class=\"num\">{number(mem.get('peak_rss_mb'), '.1f', ' MiB')}</td>"
            f"<td>{_checks(r.get('budgets', []))}</td><td class=\"src\">{escape(r['_file'])}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def render_report(manifest: dict[str, Any], bench_documents: list[tuple[str, dict[str, Any]]],
                  notes: list[str] | None = None, searches: dict[str, dict[str, Any]] | None = None) -> str:
    """The report page for a manifest and (file name, bench document) pairs.

    ``searches`` maps an artifact's path to its search record (from its
    ``.report.json``); each gets a Pareto plot and a table of candidates.
    """
    bench = _bench_results(bench_documents)
    charts, chart_note = _charts(manifest, bench)
    notes = list(notes or []) + ([chart_note] if chart_note else [])
    model = manifest.get("model") or {}
    data = manifest.get("data") or {}
    reference = manifest.get("reference") or {}
    toolkit = manifest.get("toolkit") or {}
    artifacts = manifest.get("artifacts") or []
    targets = manifest.get("targets") or [{"name": t} for t in dict.fromkeys(a.get("target") for a in artifacts)]
    passed = sum(1 for a in artifacts if a.get("passed"))
    title = f"{model.get('name', 'model')} {model.get('version', '')}".strip()

    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>edgekit report: {escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f"<div class=\"muted small\">built {escape(manifest.get('created_at'))} with edgekit {escape(toolkit.get('edgekit'))}"
        f" · source sha256 {escape(str(model.get('source_sha256', ''))[:16])}…"
        f" · {escape(', '.join(f'{k} {v}' for k, v in (toolkit.get('versions') or {}).items()))}</div>",
        "<div class=\"cards\">",
        f"<div class=\"card\"><span class=\"muted\">artifacts passing</span><b>{passed} / {len(artifacts)}</b></div>",
        f"<div class=\"card\"><span class=\"muted\">targets</span><b>{len(targets)}</b></div>",
        f"<div class=\"card\"><span class=\"muted\">FP32 reference accuracy</span><b>{percent(reference.get('accuracy'))}</b></div>",
        f"<div class=\"card\"><span class=\"muted\">evaluation data</span><b>{escape(data.get('evaluation_size', '–'))}</b>"
        f"<span class=\"src\">{escape(data.get('file', ''))}{' · labelled' if data.get('labelled') else ''}</span></div>",
        f"<div class=\"card\"><span class=\"muted\">bench results</span><b>{len(bench)}</b>"
        f"<span class=\"src\">{len(bench_documents)} file(s)</span></div>",
        "</div>",
    ]
    parts += [f'<p class="note">{escape(n)}</p>' for n in notes]
    if charts.get("size_accuracy") or charts.get("latency"):
        parts.append("<h2>Overview</h2><div class=\"grid\">")
        parts.append(img(charts.get("size_accuracy"), "Size against accuracy; red edge = artifact misses a budget"))
        parts.append(img(charts.get("latency"), "p50 latency per artifact; hatched bars are estimates, not measurements"))
        parts.append("</div>")
    for target in targets:
        name = target.get("name")
        mine = [a for a in artifacts if a.get("target") == name]
        status = target.get("status") or ("passed" if mine and all(a.get("passed") for a in mine) else "failed")
        parts.append(f"<h2>{escape(name)} {_badge(status)}</h2>")
        for message in target.get("messages") or []:
            parts.append(f'<p class="note">{escape(message)}</p>')
        parts.append(_artifact_table(mine, bench, reference) if mine else '<p class="muted">no artifacts</p>')
        for artifact in mine:
            record = (searches or {}).get(str(artifact.get("path")))
            if record:
                from edgekit.report.search import search_section

                parts.append(search_section(artifact, record))
    from edgekit.report.attacks import attacks_section

    parts.append(attacks_section(manifest))
    if bench:
        parts.append("<h2>Device benchmarks</h2>")
        parts.append(img(charts.get("bench"), "p50 bars with p90 and p99 ticks, per machine, artifact, threads and batch"))
        parts.append(_bench_table(bench))
    parts.append(f'<p class="muted small">{escape(_ESTIMATE_NOTE)}</p></main></body></html>')
    return "\n".join(parts)


def write_report(build_dir: Path) -> Path:
    """Write ``build_dir/report.html`` from ``manifest.json`` and ``bench/*.json``; return its path."""
    from edgekit.artifact import atomic_write_bytes

    build_dir = Path(build_dir)
    manifest = _load_manifest(build_dir)
    documents, notes = _load_bench(build_dir)
    searches, search_notes = _load_searches(build_dir, manifest)
    path = build_dir / REPORT_NAME
    atomic_write_bytes(path, render_report(manifest, documents, notes + search_notes, searches).encode("utf-8"))
    return path
