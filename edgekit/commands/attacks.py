"""`edgekit audit-model`: run the adversarial-robustness and membership-inference checks on an existing build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.commands.output import console, emit_json, progress_reporter
from edgekit.errors import BudgetError


def _table(manifest: dict[str, Any]) -> Any:
    """target × artifact: clean and robust accuracy, the drop against FP32, membership AUC, the attack checks."""
    from rich.table import Table

    suite = manifest.get("attacks") or {}
    title = f"what attackers see — {suite.get('samples')} samples"
    if "judged_eps" in suite:
        title += f", robust accuracy at eps {suite['judged_eps']:g} (worst of FGSM / PGD)"
    table = Table(title=title)
    for column in ("target", "artifact", "clean", "robust", "Δ vs FP32", "MIA AUC [95% CI]", "attack checks"):
        table.add_column(column, justify="left" if column in ("target", "artifact", "attack checks") else "right")
    for artifact in manifest.get("artifacts") or []:
        record = artifact.get("attacks") or {}
        robustness, membership = record.get("robustness") or {}, record.get("membership") or {}
        drop = robustness.get("robust_accuracy_drop")
        interval = membership.get("auc_ci95") or []
        checks = [f"{c['budget']} {c['status']}" for c in artifact.get("checks") or []
                  if c.get("budget") in ("max_robust_accuracy_drop", "max_membership_auc")]
        table.add_row(
            str(artifact.get("target")), f"{artifact.get('format')} {artifact.get('precision')}",
            f"{robustness['clean_accuracy']:.3f}" if robustness else "—",
            f"{robustness['robust_accuracy']:.3f}" if robustness else "—",
            f"{(-drop or 0.0):+.3f}" if drop is not None else "—",
            f"{membership['auc']:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if membership else "—",
            ", ".join(checks) or "no attack budget set",
        )
    return table


@click.command("audit-model")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("config_or_model")
@click.option("--data", type=click.Path(path_type=Path), help="The build's data (.npz), when CONFIG_OR_MODEL is a model.")
@click.option("--train", type=click.Path(path_type=Path), help="The model's training data (.npz): membership inference.")
@click.option("--weights", type=click.Path(path_type=Path), help="Weights for a module:factory model.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled model (runs code from the file).")
@click.option("--max-robust-accuracy-drop", type=click.FloatRange(-1, 1),
              help="Budget: FP32 robust accuracy minus the artifact's (overrides the build's).")
@click.option("--max-membership-auc", type=click.FloatRange(0, 1),
              help="Budget: membership-inference AUC (overrides the build's).")
@click.option("--json", "as_json", is_flag=True, help="Print the updated manifest as JSON.")
def audit_model(build_dir: Path, config_or_model: str, data: Path | None, train: Path | None, weights: Path | None,
                trust_pickle: bool, max_robust_accuracy_drop: float | None, max_membership_auc: float | None,
                as_json: bool) -> None:
    """Attack every artifact of BUILD_DIR and record what attackers achieve.

    CONFIG_OR_MODEL is what the build was made from (an edgekit.toml, a model
    file or module:factory); its sha256 and the data split must match the
    manifest. Adversarial examples (FGSM, PGD) are crafted on that FP32 model
    and transferred to each artifact; a loss-threshold attack tells training
    samples ([data] train or --train) from held-out ones. The manifest,
    reports and report.html are updated; exit 1 when an attack budget fails.
    """
    from edgekit.attacks.audit import audit_build
    from edgekit.commands.build import _config_from_source, with_data

    config = with_data(_config_from_source(config_or_model, trust_pickle, weights), data, train)
    given = {"max_robust_accuracy_drop": max_robust_accuracy_drop, "max_membership_auc": max_membership_auc}
    with progress_reporter(as_json) as reporter:
        manifest = audit_build(build_dir, config, data, reporter, given)
    if as_json:
        emit_json(manifest)
    else:
        console().print(_table(manifest))
        console().print(f"manifest: {build_dir / 'manifest.json'} (report.html updated)")
    if any(not a["passed"] for a in manifest.get("artifacts") or []):
        raise BudgetError("at least one artifact misses its budgets after the audit",
                          "See the attack checks above, or the manifest's checks")


COMMANDS = [audit_model]
