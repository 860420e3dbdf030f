"""The report page's search section: Pareto plot, candidate table, what was not built."""

import base64

from edgekit.report.search import pareto_chart, search_section


def _record() -> dict:
    rows = [
        {"candidate": "model/fp32/fp32", "model": "model", "precision": "fp32", "recipe": "fp32", "size_bytes": 100_000,
         "download_bytes": 90_000, "accuracy": 0.99, "latency_p50_ms": 0.5, "passed": True, "failed": [], "pareto": True},
        {"candidate": "pruned-s0.8/int8/static", "model": "pruned-s0.8", "precision": "int8", "recipe": "static",
         "size_bytes": 30_000, "download_bytes": 9_000, "accuracy": 0.985, "latency_p50_ms": 0.2, "passed": True,
         "failed": [], "pareto": True},
        {"candidate": "model/int4/<w4>", "model": "model", "precision": "int4", "recipe": "<w4>", "size_bytes": 20_000,
         "download_bytes": 15_000, "accuracy": 0.95, "latency_p50_ms": 0.9, "latency_vs_fp32": 1.8, "passed": False,
         "failed": ["max_accuracy_drop"], "pareto": True},
    ]
    return {"objective": "download", "objective_used": "download", "size_axis": "download",
            "chosen": "pruned-s0.8/int8/static", "reason": "smallest download (gzip) among 2 of 3 candidates",
            "candidates": rows, "excluded": [{"candidate": "student-w0.5", "reason": "no prunable <layers>"}]}


def test_search_section_shows_every_candidate_the_winner_and_what_was_left_out() -> None:
    html = search_section({"format": "onnx"}, _record())
    assert "onnx search: shipped pruned-s0.8/int8/static" in html
    assert html.count("<tr") == 4  # header + one row per candidate
    assert "misses max_accuracy_drop" in html and "meets all" in html
    assert "1.80x" in html  # speed against FP32, which can decide the choice
    assert "&lt;w4&gt;" in html and "<w4>" not in html  # values are escaped
    assert "student-w0.5: no prunable &lt;layers&gt;" in html
    assert 'style="background:#fff8c5"' in html  # the shipped row is highlighted


def test_pareto_chart_is_a_png_and_tolerates_missing_latency() -> None:
    record = _record()
    png = base64.b64decode(pareto_chart(record))
    assert png.startswith(b"\x89PNG")
    for row in record["candidates"]:
        del row["latency_p50_ms"]  # emulated runtimes measure no latency
    assert base64.b64decode(pareto_chart(record)).startswith(b"\x89PNG")
    assert pareto_chart({"candidates": []}) is None
