"""Model.open on a real store: provenance, input checks, cache, the audit trail of each prediction."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.runtime import audit
from edgekit.runtime.digest import input_digest
from edgekit.runtime.model import Model


@pytest.fixture()
def store(rt: ModuleType, tmp_path: Path, keys, bundles) -> Path:
    root = tmp_path / "store"
    rt.install(bundles["1.0.0"], root, keys)
    return root


def test_predict_answers_with_the_installed_artifact_and_says_which_one(rt, store: Path) -> None:
    x = rt.samples(5)
    with Model.open(store) as model:
        answer = model.predict({"x": x})
    np.testing.assert_allclose(answer.outputs["logits"], rt.reference(x), rtol=1e-5, atol=1e-5)
    manifest = json.loads((store / "versions" / "1.0.0" / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    state = json.loads((store / "state.json").read_text())
    provenance = answer.provenance
    assert (provenance.model, provenance.version, provenance.arm) == (rt.MODEL, "1.0.0", "control")
    assert provenance.artifact_sha256 == artifact["sha256"] and provenance.format == artifact["format"]
    assert provenance.key_id == state["current"]["key_id"] and len(provenance.key_id) >= 16
    assert answer.input_digest == input_digest({"x": x}) and not answer.cached


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"y": np.zeros((1, 16), np.float32)}, "missing x; unknown y"),
        ({"x": np.zeros((1, 15), np.float32)}, "dimension 1 differs"),
        ({"x": np.zeros(16, np.float32)}, "leading batch axis"),
        ({"x": [["a"] * 16]}, "not numeric"),
        ({"x": np.full((2, 16), np.nan, np.float32)}, "holds nan at index [0, 0]"),
        ({"x": np.full((1, 16), 255.0)}, "holds 255 at index [0, 0], outside the range the model was calibrated for"),
        ({"x": np.zeros((0, 16), np.float32)}, "dimension 0 differs"),
    ],
)
def test_bad_inputs_are_refused_by_name_before_the_runtime_sees_them(store: Path, inputs, expected: str) -> None:
    with Model.open(store) as model:
        with pytest.raises(InputError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            model.predict(inputs)
        assert model.stats()["arms"]["control"]["requests"] == 0  # a refused request is not a prediction
    assert audit.verify(store / "predictions.log").records == 0


def test_json_numbers_are_cast_within_their_kind_and_the_range_check_can_be_widened(rt, store: Path) -> None:
    x = rt.samples(2).astype(np.float64)
    with Model.open(store, audit_log=None, range_tolerance=None) as model:
        answer = model.predict({"x": x.tolist()})
        np.testing.assert_allclose(answer.outputs["logits"], rt.reference(x), rtol=1e-4, atol=1e-4)
        model.predict({"x": np.full((1, 16), 9.0)})  # outside calibration, accepted when asked
    with Model.open(store, audit_log=None) as model:
        model.predict({"x": np.full((1, 16), 1.4)})  # within the default 25 % of the span


def test_cache_hits_return_identical_outputs_and_count_the_hit_rate(rt, store: Path) -> None:
    requests = [rt.samples(1, seed) for seed in (0, 1, 2, 0, 1, 0, 3, 0)]
    with Model.open(store, cache_size=8) as model:
        answers = [model.predict({"x": x}) for x in requests]
        first = {answer.input_digest: answer for answer in answers if not answer.cached}
        for answer in answers:
            np.testing.assert_array_equal(answer.outputs["logits"], first[answer.input_digest].outputs["logits"])
        answers[0].outputs["logits"][:] = 0  # a caller editing its result must not poison the cache
        again = model.predict({"x": requests[0]})
        cache = model.stats()["cache"]
    assert [a.cached for a in answers] == [False, False, False, True, True, True, False, True]
    assert again.cached and np.abs(again.outputs["logits"]).sum() > 0
    assert (cache["hits"], cache["misses"]) == (5, 4) and cache["hit_rate"] == pytest.approx(5 / 9)
    records = list(audit.find(store / "predictions.log"))
    assert [r["cached"] for r in records] == [a.cached for a in [*answers, again]]


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(rt, store: Path) -> None:
    with Model.open(store, cache_size=2, audit_log=None) as model:
        for seed in (0, 1, 0, 2, 1):  # 0 was used after 1, so 2 evicts 1
            model.predict({"x": rt.samples(1, seed)})
        cache = model.stats()["cache"]
    assert (cache["entries"], cache["hits"], cache["evictions"]) == (2, 1, 2)


def test_every_prediction_is_in_the_audit_log_and_find_answers_which_version_decided(rt, store: Path) -> None:
    x = rt.samples(3)
    with Model.open(store) as model:
        answer = model.predict({"x": x}, unit_id="user-7")
        for seed in range(1, 20):
            model.predict({"x": rt.samples(1, seed)})
    checked = audit.verify(store / "predictions.log")
    assert checked.ok and checked.records == 20
    (found,) = audit.find(store / "predictions.log", input_digest=answer.input_digest)
    assert (found["version"], found["artifact_sha256"], found["arm"]) == ("1.0.0", answer.provenance.artifact_sha256,
                                                                         "control")
    assert found["seq"] == answer.audit_seq and found["key_id"] == answer.provenance.key_id
    assert "x" not in json.dumps(found["outputs"]) and found["outputs"]["logits"]["shape"] == [3, 4]
    assert found["unit_digest"] != "user-7" and len(found["unit_digest"]) == 64  # the id itself is not logged


def test_the_model_follows_an_install_without_a_restart(rt, store: Path, keys, bundles) -> None:
    x = rt.samples(2)
    with Model.open(store, refresh_s=0.0, cache_size=4) as model:
        before = model.predict({"x": x})
        rt.install(bundles["1.1.0"], store, keys)
        after = model.predict({"x": x})
    assert (before.provenance.version, after.provenance.version) == ("1.0.0", "1.1.0")
    assert not after.cached  # the new version's answer, not the old one's cached outputs
    np.testing.assert_allclose(after.outputs["logits"], rt.reference(x, seed=1), rtol=1e-5, atol=1e-5)


def test_an_empty_store_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no model is installed"):
        Model.open(tmp_path / "nothing")
