"""A/B on the device: deterministic routing, automatic abort of a faulty candidate, promote, and the store's part."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.release import candidate as store_candidate
from edgekit.release.experiment import AbortRule, CandidatePlan
from edgekit.runtime import audit
from edgekit.runtime.model import Model

UNITS = [f"user-{i}" for i in range(10_000)]


def _experiment(rt: ModuleType, root: Path, keys, bundles, version: str, percentage: int,
                rule: AbortRule | None = None) -> Path:
    rt.install(bundles["1.0.0"], root, keys)
    result = rt.install(bundles[version], root, keys, candidate=CandidatePlan(percentage, rule or AbortRule()))
    assert result.status == "candidate"
    return root


def _state(root: Path) -> dict:
    return json.loads((root / "state.json").read_text())


def test_ten_percent_of_ten_thousand_units_reach_the_candidate_the_same_ones_every_run(rt, tmp_path, keys,
                                                                                        bundles) -> None:
    root = _experiment(rt, tmp_path / "store", keys, bundles, "1.1.0", 10)
    with Model.open(root, audit_log=None) as model:
        first = [model.arm_for(unit) for unit in UNITS]
    with Model.open(root, audit_log=None) as model:  # a restart, as after a reboot
        second = [model.arm_for(unit) for unit in UNITS]
        served = {unit: model.predict({"x": rt.samples(1)}, unit_id=unit).provenance for unit in UNITS[:300]}
    share = first.count("candidate") / len(UNITS)
    assert 0.09 <= share <= 0.11, share
    assert first == second
    for unit, provenance in served.items():
        arm = first[UNITS.index(unit)]
        assert provenance.arm == arm and provenance.version == {"control": "1.0.0", "candidate": "1.1.0"}[arm]
    assert model.arm_for(None) == "control"  # no unit id: the control


def test_raising_the_percentage_only_adds_units(rt, tmp_path, keys, bundles) -> None:
    root = _experiment(rt, tmp_path / "store", keys, bundles, "1.1.0", 10)
    with Model.open(root, audit_log=None, refresh_s=0.0) as model:
        before = {u for u in UNITS if model.arm_for(u) == "candidate"}
        store_candidate.set_percentage(root, 50)
        model.refresh()
        after = {u for u in UNITS if model.arm_for(u) == "candidate"}
    assert before < after and 0.48 <= len(after) / len(UNITS) <= 0.52


@pytest.mark.parametrize(("version", "rule", "broken"), [
    ("1.2.0", AbortRule(error_rate=0.05, p99_ratio=None, min_requests=20), "error_rate"),
    ("1.3.0", AbortRule(error_rate=0.05, p99_ratio=3.0, min_requests=20), "p99_ratio"),
])
def test_a_faulty_candidate_is_aborted_and_traffic_returns_to_the_control(rt, tmp_path, keys, bundles, version, rule,
                                                                           broken) -> None:
    root = _experiment(rt, tmp_path / "store", keys, bundles, version, 50, rule)
    answers = []
    with Model.open(root, audit_sync_every=64) as model:
        for index, unit in enumerate(UNITS[:400]):
            answers.append(model.predict({"x": rt.samples(1, index)}, unit_id=unit))
        stats = model.stats()
    assert all(a.outputs["logits"].shape == (1, 4) for a in answers)  # every request got an answer
    (event,) = stats["aborted"]
    assert event["reason"]["rule"] == broken and event["persisted"] is True
    assert set(stats["arms"]) == {"control"}
    cut = next(i for i, a in enumerate(answers) if i > 0 and all(b.provenance.version == "1.0.0" for b in answers[i:]))
    assert cut < 120, "traffic must return to the control soon after min_requests candidate requests"
    # The store ended the experiment too: no candidate, the version blocked and its files gone.
    state = _state(root)
    assert "candidate" not in state and version in state["rolled_back"]
    assert not (root / "versions" / version).exists()
    log = [json.loads(line) for line in (root / "install.log").read_text().splitlines()]
    assert log[-1]["event"] == "experiment-abort" and log[-1]["reason"]["by"] == "runtime"
    # The audit log of the run verifies and shows the candidate's requests, the abort, then only the control.
    checked = audit.verify(root / "predictions.log")
    assert checked.ok, checked.problems
    records = list(audit.find(root / "predictions.log"))
    aborted_at = next(i for i, r in enumerate(records) if r["event"] == "experiment-abort")
    assert any(r.get("version") == version for r in records[:aborted_at])
    assert all(r["version"] == "1.0.0" for r in records[aborted_at + 1:])
    if broken == "error_rate":
        assert all("error" in r and r["arm"] == "candidate" for r in records[:aborted_at] if r["version"] == version)
        assert any(r.get("fallback_from") == version for r in records)


def _rewrite(path: Path, change) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    change(lines)
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder"])
def test_tampering_with_the_runs_audit_log_is_caught_and_named(rt, tmp_path, keys, bundles, tamper) -> None:
    root = _experiment(rt, tmp_path / "store", keys, bundles, "1.1.0", 50)
    with Model.open(root) as model:
        for index, unit in enumerate(UNITS[:30]):
            model.predict({"x": rt.samples(1, index)}, unit_id=unit)
    log = root / "predictions.log"
    assert audit.verify(log).ok

    def edit(lines: list[bytes]) -> None:
        assert b'"cached":false' in lines[10]
        lines[10] = lines[10].replace(b'"cached":false', b'"cached":true')

    changes = {"edit": edit, "delete": lambda lines: lines.pop(10),
               "reorder": lambda lines: lines.insert(11, lines.pop(10))}
    _rewrite(log, changes[tamper])
    checked = audit.verify(log)
    assert not checked.ok
    assert any(problem.seq in (10, 11) for problem in checked.problems), checked.problems


def test_promote_makes_the_candidate_current_and_a_running_model_follows(rt, tmp_path, keys, bundles) -> None:
    root = _experiment(rt, tmp_path / "store", keys, bundles, "1.1.0", 10)
    with Model.open(root, refresh_s=0.0, audit_log=None) as model:
        before = {model.predict({"x": rt.samples(1)}, unit_id=u).provenance.version for u in UNITS[:50]}
        outcome = rt.run("experiment", "promote", "--into", root, "--json")
        assert outcome.exit_code == 0, outcome.stderr
        after = {model.predict({"x": rt.samples(1)}, unit_id=u).provenance.version for u in UNITS[:50]}
    assert before == {"1.0.0", "1.1.0"} and after == {"1.1.0"}
    state = _state(root)
    assert state["current"]["version"] == "1.1.0" and state["previous"]["version"] == "1.0.0"
    assert "candidate" not in state and set(state["current"]) == {"version", "manifest_sha256", "sha256",
                                                                  "installed_at", "key_id"}
    assert rt.run("rollback", "--into", root).exit_code == 0  # the control was kept for rollback
    assert _state(root)["current"]["version"] == "1.0.0"


def test_the_cli_starts_shows_ramps_and_aborts_an_experiment(rt, tmp_path, keys, bundles) -> None:
    root = tmp_path / "store"
    assert rt.run("install", bundles["1.0.0"], "--into", root, "--key", keys.public).exit_code == 0
    started = rt.run("install", bundles["1.1.0"], "--into", root, "--key", keys.public, "--candidate", "10",
                     "--abort-if", "p99_ms=40", "--abort-if", "p99_ratio=off", "--json")
    assert started.exit_code == 0, started.stderr
    assert started.json()["status"] == "candidate" and started.json()["previous"] == "1.0.0"
    shown = rt.run("experiment", "show", "--into", root, "--json").json()
    assert shown["control"] == "1.0.0" and shown["candidate"]["percentage"] == 10
    assert shown["candidate"]["abort"] == {"error_rate": 0.05, "p99_ms": 40.0, "p99_ratio": None, "p99_slack_ms": 1.0,
                                           "min_requests": 50}
    assert rt.run("experiment", "percentage", "25", "--into", root).exit_code == 0
    assert "25% of units" in rt.run("experiment", "show", "--into", root).stdout
    again = rt.run("install", bundles["1.2.0"], "--into", root, "--key", keys.public, "--candidate", "10")
    assert again.exit_code == 2 and "an experiment with candidate 1.1.0 is running" in again.stderr
    aborted = rt.run("experiment", "abort", "--into", root, "--reason", "wrong labels")
    assert aborted.exit_code == 0 and "1.0.0 serves every unit" in aborted.stdout
    assert "no experiment is running" in rt.run("experiment", "show", "--into", root).stdout
    assert rt.run("experiment", "promote", "--into", root).exit_code == 2
    reinstalled = rt.run("install", bundles["1.1.0"], "--into", root, "--key", keys.public, "--json")
    assert reinstalled.json()["status"] == "blocked"  # an aborted candidate stays out unless forced


@pytest.mark.parametrize(("args", "message"), [
    (("--candidate", "10", "--abort-if", "latency=3"), "unknown abort rule latency"),
    (("--candidate", "10", "--abort-if", "error_rate=2"), "error_rate='2' is not a valid bound"),
    (("--abort-if", "error_rate=0.1"), "--abort-if applies to a candidate only"),
    (("--candidate", "0"), "0 is not in the range 1<=x<=100"),
])
def test_bad_experiment_options_are_refused(rt, tmp_path, keys, bundles, args, message) -> None:
    root = tmp_path / "store"
    rt.install(bundles["1.0.0"], root, keys)
    outcome = rt.run("install", bundles["1.1.0"], "--into", root, "--key", keys.public, *args)
    assert outcome.exit_code == 2 and message in outcome.stderr, outcome.stderr
    assert _state(root)["current"]["version"] == "1.0.0" and "candidate" not in _state(root)


def test_a_candidate_needs_a_control_and_differs_from_it(rt, tmp_path, keys, bundles) -> None:
    root = tmp_path / "store"
    with pytest.raises(InputError, match="a candidate needs a control"):
        rt.install(bundles["1.1.0"], root, keys, candidate=CandidatePlan(10, AbortRule()))
    rt.install(bundles["1.0.0"], root, keys)
    with pytest.raises(InputError, match="is the current version"):
        rt.install(bundles["1.0.0"], root, keys, candidate=CandidatePlan(10, AbortRule()))


@pytest.mark.parametrize("ending", ["install", "rollback"])
def test_an_install_or_rollback_ends_the_experiment_and_leaves_no_orphan(rt, tmp_path, keys, bundles, ending) -> None:
    root = tmp_path / "store"
    rt.install(bundles["1.0.0"], root, keys)
    rt.install(bundles["1.1.0"], root, keys)
    rt.install(bundles["1.2.0"], root, keys, candidate=CandidatePlan(10, AbortRule()))
    if ending == "install":
        rt.install(bundles["1.3.0"], root, keys)
        kept = {"1.3.0", "1.1.0"}
    else:
        assert rt.run("rollback", "--into", root).exit_code == 0
        kept = {"1.0.0", "1.1.0"}
    state = _state(root)
    assert "candidate" not in state
    assert {p.name for p in (root / "versions").iterdir()} == kept
    log = [json.loads(line) for line in (root / "install.log").read_text().splitlines()]
    assert log[-1]["ended_experiment"] == "1.2.0"


def test_a_damaged_candidate_record_is_refused_by_name(rt, tmp_path, keys, bundles) -> None:
    root = _experiment(rt, tmp_path / "store", keys, bundles, "1.1.0", 10)
    state = _state(root)
    state["candidate"]["percentage"] = 300
    (root / "state.json").write_text(json.dumps(state))
    outcome = rt.run("experiment", "show", "--into", root)
    assert outcome.exit_code == 2 and "the candidate's percentage is not 1..100" in outcome.stderr


def test_outputs_of_both_arms_are_kept_apart_in_the_stats(rt, tmp_path, keys, bundles) -> None:
    # Latency is not this test's subject: a busy host must not abort the (sound) candidate.
    root = _experiment(rt, tmp_path / "store", keys, bundles, "1.1.0", 50, AbortRule(p99_ratio=None))
    with Model.open(root, audit_log=None) as model:
        for index, unit in enumerate(UNITS[:200]):
            model.predict({"x": rt.samples(2, index)}, unit_id=unit)
        arms = model.stats()["arms"]
    assert arms["control"]["requests"] + arms["candidate"]["requests"] == 200
    for arm in arms.values():
        assert arm["errors"] == 0 and arm["latency_p99_ms"] > 0 and sum(arm["top1_counts"].values()) == 2 * arm[
            "requests"]
    assert arms["control"]["output_mean"] != pytest.approx(arms["candidate"]["output_mean"])
    assert np.isfinite(arms["candidate"]["output_std"])


def test_a_candidate_that_cannot_load_leaves_the_control_serving(rt, tmp_path, keys, bundles) -> None:
    root = tmp_path / "store"
    rt.install(bundles["1.0.0"], root, keys)
    garbage = rt.bundle(rt.make_build(tmp_path / "build", "1.4.0", "garbage"), "1.4.0", keys, tmp_path / "out")
    rt.install(garbage, root, keys, candidate=CandidatePlan(100, AbortRule()))
    with Model.open(root, audit_log=None) as model:
        answers = [model.predict({"x": rt.samples(1)}, unit_id=unit) for unit in UNITS[:20]]
        (note,) = model.stats()["aborted"]
    assert {a.provenance.version for a in answers} == {"1.0.0"}
    assert note["event"] == "candidate-not-loaded" and "no artifact" in note["reason"]
