"""The report page's "What attackers see" section: robust accuracy against eps, and membership leakage.

Reads the manifest's ``attacks`` (how the suite was made, FP32's own
figures) and each artifact's ``attacks`` record (edgekit.attacks). The plot
draws, per artifact, the worst of FGSM and PGD accuracy at each eps, with
FP32 as a thick dashed line; the table gives the judged figures with their
intervals. The limits of both attacks are stated next to them.
"""

from __future__ import annotations

from typing import Any

from edgekit.report.markup import escape, img, new_figure, number, percent, png

LIMITS = (
    "Adversarial examples are crafted on the FP32 torch model and transferred to each artifact: they show how much "
    "more easily an artifact is fooled than FP32 by the same inputs, not what a white-box attack on the artifact "
    "itself (or an attacker querying it many times) could do, so robust accuracy here is an upper bound. The "
    "membership attack thresholds the per-sample loss (or confidence); an AUC near 0.5 bounds this attack only."
)


def _worst_curve(robustness: dict[str, Any]) -> list[float]:
    curves = [c for c in (robustness.get("accuracy") or {}).values() if isinstance(c, list)]
    return [min(values) for values in zip(*curves, strict=True)] if curves else []


def robustness_chart(manifest: dict[str, Any]) -> str | None:
    """Base64 PNG of robust accuracy (worst attack) against eps, one line per artifact; None without data."""
    suite = manifest.get("attacks") or {}
    eps = suite.get("eps")
    lines = [(f"{a.get('target')} · {a.get('format')} {a.get('precision')}", _worst_curve(a["attacks"]["robustness"]))
             for a in manifest.get("artifacts") or [] if "robustness" in (a.get("attacks") or {})]
    lines = [(label, curve) for label, curve in lines if len(curve) == len(eps or [])]
    if not eps or not lines:
        return None
    try:
        figure, axes = new_figure()
    except ModuleNotFoundError:
        return None
    for index, (label, curve) in enumerate(lines):
        axes.plot(eps, [v * 100 for v in curve], marker="o", linewidth=1.2, color=f"C{index % 10}", label=label)
    fp32 = _worst_curve((suite.get("fp32") or {}).get("robustness") or {})
    if len(fp32) == len(eps):
        axes.plot(eps, [v * 100 for v in fp32], color="black", linestyle="--", linewidth=2.2, label="FP32 torch model")
    if suite.get("judged_eps") is not None:
        axes.axvline(suite["judged_eps"], color="grey", linestyle=":", linewidth=1, label="judged eps")
    axes.set_xscale("log")
    axes.set_xlabel("eps (input units, log scale)")
    axes.set_ylabel("accuracy under attack (%), worst of FGSM / PGD")
    axes.set_title("Robust accuracy against perturbation size")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return png(figure)


def _robust_cells(record: dict[str, Any], metrics: dict[str, Any]) -> str:
    robustness = record.get("robustness")
    if not robustness:
        return '<td colspan="4" class="muted">not measured</td>'
    interval = (f'<br><span class="src">95% CI {percent(metrics.get("robust_accuracy_ci95_low"))}–'
                f'{percent(metrics.get("robust_accuracy_ci95_high"))}</span>')
    drop = robustness.get("robust_accuracy_drop")
    corruptions = robustness.get("corruptions") or {}
    return (f'<td class="num">{percent(robustness.get("clean_accuracy"))}</td>'
            f'<td class="num">{percent(robustness.get("robust_accuracy"))}{interval}</td>'
            f'<td class="num">{number(drop * 100 if isinstance(drop, (int, float)) else None, "+.1f", " pp")}</td>'
            f'<td class="num">{", ".join(f"{escape(k)} {percent(v)}" for k, v in corruptions.items()) or "–"}</td>')


def _membership_cells(record: dict[str, Any]) -> str:
    found = record.get("membership")
    if not found:
        return '<td colspan="2" class="muted">not measured</td>'
    low, high = (found.get("auc_ci95") or [None, None])[:2]
    return (f'<td class="num">{number(found.get("auc"), ".3f")}<br><span class="src">95% CI {number(low, ".3f")}–'
            f'{number(high, ".3f")} · {escape(found.get("score"))}</span></td>'
            f'<td class="num">{number(found.get("advantage"), ".3f")}</td>')


def _suite_line(suite: dict[str, Any]) -> str:
    """How the suite was made, as escaped HTML, with the parts that were skipped and why."""
    parts = [f"crafted on {suite.get('crafted_on')}", f"{suite.get('samples')} attacked samples",
             f"correct = {suite.get('targets')}"]
    if isinstance(suite.get("eps"), list) and isinstance(suite.get("judged_eps"), (int, float)):
        parts.append(f"eps {', '.join(f'{e:g}' for e in suite['eps'])} (judged at {suite['judged_eps']:g}), "
                     f"PGD {suite.get('pgd_steps')} steps")
    if "members" in suite:
        parts.append(f"{suite['members']} training samples as members, the attacked samples as non-members")
    skipped = [f"{what} not measured: {suite[key]}" for what, key in
               (("robustness", "robustness_skipped"), ("membership", "membership_skipped")) if suite.get(key)]
    return escape(" · ".join(parts)) + "".join(f'<br><span class="src">{escape(s)}</span>' for s in skipped)


def attacks_section(manifest: dict[str, Any]) -> str:
    """The section's HTML, or "" when the build ran no attack suite."""
    suite = manifest.get("attacks")
    if not isinstance(suite, dict):
        return ""
    head = ("<tr><th>artifact</th><th>samples</th><th>clean accuracy</th><th>robust accuracy</th>"
            "<th>drop vs FP32</th><th>corruptions</th><th>membership AUC</th><th>advantage</th></tr>")
    rows = []
    for artifact in manifest.get("artifacts") or []:
        record = artifact.get("attacks") or {}
        rows.append(f"<tr><td><b>{escape(artifact.get('target'))}</b> {escape(artifact.get('format'))} "
                    f"{escape(artifact.get('precision'))}</td><td class=\"num\">{escape(record.get('samples', '–'))}</td>"
                    f"{_robust_cells(record, artifact.get('metrics') or {})}{_membership_cells(record)}</tr>")
    return "\n".join([
        "<h2>What attackers see</h2>",
        f'<p class="small">{_suite_line(suite)}</p>',
        img(robustness_chart(manifest), "Accuracy under the worst of FGSM and PGD at each eps; dashed: FP32 torch model"),
        f"<table>{head}{''.join(rows)}</table>",
        f'<p class="muted small">{escape(LIMITS)}</p>',
    ])

