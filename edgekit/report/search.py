"""The report page's section for a searched artifact: a Pareto plot and the table of candidates.

The record comes from the artifact's ``.report.json`` (``search``, written by
the build; see edgekit.select). The plot puts size (or download size,
when that was the objective) against accuracy, colours each candidate by its
host latency, draws failing candidates hollow, joins the Pareto front and
stars the candidate that shipped.
"""

from __future__ import annotations

from typing import Any

from edgekit.report.markup import escape, img, new_figure, number, percent, png, size

_PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^", "dynamic-int8": "v", "int4": "D"}


def _quality_key(rows: list[dict[str, Any]]) -> str:
    return "accuracy" if all(isinstance(r.get("accuracy"), (int, float)) for r in rows) else "cosine"


def _front_2d(rows: list[dict[str, Any]], size_key: str, quality: str) -> list[dict[str, Any]]:
    """The size-quality Pareto front (the plot's line), smallest first.

    The table's Pareto column also weighs latency, so it can mark points off this line.
    """
    front: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (r[size_key], -r.get(quality, 0.0))):
        if not front or row.get(quality, 0.0) > front[-1].get(quality, 0.0):
            front.append(row)
    return front


def pareto_chart(record: dict[str, Any]) -> str | None:
    """Base64 PNG of size vs quality (colour = host latency) for one search, or None without matplotlib/rows."""
    rows = [r for r in record.get("candidates") or [] if isinstance(r, dict)]
    if not rows:
        return None
    try:
        from matplotlib import colormaps
        from matplotlib.colors import Normalize
    except ModuleNotFoundError:
        return None
    size_key = "download_bytes" if record.get("size_axis") == "download" else "size_bytes"
    quality = _quality_key(rows)
    scale = 100.0 if quality == "accuracy" else 1.0
    latencies = [r["latency_p50_ms"] for r in rows if isinstance(r.get("latency_p50_ms"), (int, float))]
    norm = Normalize(min(latencies), max(latencies)) if latencies else None
    cmap = colormaps["viridis"]
    figure, axes = new_figure(7.0, 4.4)
    for precision, marker in _PRECISION_MARKERS.items():
        mine = [r for r in rows if r.get("precision") == precision]
        for r in mine:
            colour = cmap(norm(r["latency_p50_ms"])) if norm and "latency_p50_ms" in r else "grey"
            axes.scatter(r[size_key] / 1024, r.get(quality, 0.0) * scale, marker=marker, s=46, linewidths=1.1,
                         facecolors=colour if r.get("passed") else "none", edgecolors=colour if r.get("passed") else "red")
        if mine:
            axes.scatter([], [], marker=marker, color="grey", label=precision)
    front = _front_2d(rows, size_key, quality)
    if len(front) > 1:
        axes.step([r[size_key] / 1024 for r in front], [r.get(quality, 0.0) * scale for r in front], where="post",
                  color="black", linewidth=0.8, alpha=0.6, label="size-quality front")
    chosen = next((r for r in rows if r.get("candidate") == record.get("chosen")), None)
    if chosen is not None:
        axes.scatter(chosen[size_key] / 1024, chosen.get(quality, 0.0) * scale, marker="*", s=260, color="gold",
                     edgecolors="black", linewidths=0.8, zorder=5, label="shipped")
    if norm is not None:
        from matplotlib.cm import ScalarMappable

        figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="host p50 latency (ms)")
    sizes = [r[size_key] for r in rows]
    if max(sizes) > 8 * max(min(sizes), 1):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(("download (gzip) size" if size_key == "download_bytes" else "artifact size") + " (KB)")
    axes.set_ylabel("accuracy (%)" if quality == "accuracy" else "cosine similarity to FP32")
    axes.set_title(f"{len(rows)} candidates; hollow red = misses a budget")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return png(figure)


def search_section(artifact: dict[str, Any], record: dict[str, Any]) -> str:
    """HTML for one searched artifact: why the winner won, the plot, every candidate and what was left out."""
    rows = [r for r in record.get("candidates") or [] if isinstance(r, dict)]
    quality = _quality_key(rows) if rows else "accuracy"
    title = f"{artifact.get('format')} search: shipped {record.get('chosen')}"
    parts = [f"<h3>{escape(title)}</h3>",
             f"<p class=\"small\">objective: <b>{escape(record.get('objective'))}</b> — {escape(record.get('reason'))}"
             + (f"; {escape(record['note'])}" if record.get("note") else "") + "</p>",
             img(pareto_chart(record), "Size against quality; colour = host latency; hollow red = misses a budget; "
                                        "line = Pareto front; star = shipped")]
    head = ("<tr><th>candidate</th><th>model</th><th>precision</th><th>size</th><th>download</th>"
            f"<th>{'accuracy' if quality == 'accuracy' else 'cosine'}</th><th>host p50</th>"
            "<th title=\"host latency over the FP32 model's; above the limit ranks after the rest\">vs FP32</th>"
            "<th title=\"no other candidate is as small, as accurate and as fast, and better on one\">Pareto</th>"
            "<th>budgets</th></tr>")
    body = []
    for r in rows:
        score = percent(r.get("accuracy"), 2) if quality == "accuracy" else number(r.get("cosine"), ".5f")
        verdict = "meets all" if r.get("passed") else "misses " + ", ".join(str(f) for f in r.get("failed") or [])
        style = ' style="background:#fff8c5"' if r.get("candidate") == record.get("chosen") else ""
        body.append(
            f"<tr{style}><td>{escape(r.get('recipe'))}</td><td>{escape(r.get('model'))}</td><td>{escape(r.get('precision'))}</td>"
            f"<td class=\"num\">{size(r.get('size_bytes'))}</td><td class=\"num\">{size(r.get('download_bytes'))}</td>"
            f"<td class=\"num\">{score}</td><td class=\"num\">{number(r.get('latency_p50_ms'), '.3g', ' ms')}</td>"
            f"<td class=\"num\">{number(r.get('latency_vs_fp32'), '.2f', 'x')}</td>"
            f"<td>{'yes' if r.get('pareto') else ''}</td><td>{escape(verdict)}</td></tr>")
    parts.append(f"<table>{head}{''.join(body)}</table>")
    excluded = [x for x in record.get("excluded") or [] if isinstance(x, dict)]
    if excluded:
        items = "".join(f"<li>{escape(x.get('candidate'))}: {escape(x.get('reason'))}</li>" for x in excluded)
        parts.append(f"<p class=\"small muted\">not built:</p><ul class=\"small\">{items}</ul>")
    return "\n".join(parts)
