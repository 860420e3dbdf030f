"""edgekit serve's HTTP endpoint, on a real socket with waitress."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edgekit.release.experiment import AbortRule, CandidatePlan
from edgekit.runtime import audit
from edgekit.runtime.model import Model
from edgekit.runtime.server import create_server


@pytest.fixture()
def served(rt: ModuleType, tmp_path: Path, keys, bundles) -> Iterator[tuple[str, Path, Model]]:
    root = tmp_path / "store"
    rt.install(bundles["1.0.0"], root, keys)
    rt.install(bundles["1.1.0"], root, keys, candidate=CandidatePlan(50, AbortRule(p99_ratio=None)))
    model = Model.open(root, cache_size=16, max_batch=8, max_wait_ms=1.0)
    server = create_server(model, "127.0.0.1", 0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}", root, model
    finally:
        server.close()
        thread.join(timeout=10)
        model.close()


def _call(url: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_predict_over_http_matches_the_python_api_and_records_provenance(rt, served) -> None:
    url, root, _ = served
    x = rt.samples(3)
    status, answer = _call(url + "/v1/predict", {"inputs": {"x": x.tolist()}, "unit_id": "user-1"})
    assert status == 200
    expected = {"1.0.0": rt.reference(x, 0), "1.1.0": rt.reference(x, 1)}[answer["provenance"]["version"]]
    np.testing.assert_allclose(answer["outputs"]["logits"], expected, rtol=1e-4, atol=1e-4)
    assert answer["provenance"]["arm"] in ("control", "candidate") and answer["audit_seq"] == 0
    (found,) = audit.find(root / "predictions.log", input_digest=answer["input_digest"])
    assert found["version"] == answer["provenance"]["version"]


def test_concurrent_requests_are_micro_batched_and_each_gets_its_own_rows(rt, served) -> None:
    url, _, model = served
    inputs = [rt.samples(1, seed) for seed in range(48)]
    answers: dict[int, Any] = {}

    def client(seed: int) -> None:
        answers[seed] = _call(url + "/v1/predict", {"inputs": {"x": inputs[seed].tolist()}})

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed, (status, answer) in answers.items():
        assert status == 200
        np.testing.assert_allclose(answer["outputs"]["logits"], rt.reference(inputs[seed]), rtol=1e-4, atol=1e-4)
    batcher = model.stats()["arms"]["control"]["batcher"]
    assert batcher["requests"] == 48


def test_stats_interface_and_health_describe_what_is_served(served) -> None:
    url, _, _ = served
    for index in range(20):
        _call(url + "/v1/predict", {"inputs": {"x": [[0.1] * 16]}, "unit_id": f"u{index}"})
    status, stats = _call(url + "/v1/stats")
    assert status == 200 and set(stats["arms"]) == {"control", "candidate"}
    assert sum(arm["requests"] for arm in stats["arms"].values()) == 20
    assert stats["cache"]["hits"] >= 18  # the same input 20 times: at most one miss per arm
    assert _call(url + "/v1/interface")[1]["inputs"] == [
        {"name": "x", "shape": [None, 16], "dtype": "float32", "range": [-1.0, 1.0]}]
    assert _call(url + "/v1/health")[1] == {"ok": True, "model": "digits-mlp",
                                            "versions": {"control": "1.0.0", "candidate": "1.1.0"}}


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "not JSON"),
    ({"inputs": {"x": [[5.0] * 16]}}, 400, "outside the range the model was calibrated for"),
    ({"inputs": {"x": [[0.0] * 15]}}, 400, "dimension 1 differs"),
    ({"input": {"x": [[0.0] * 16]}}, 400, "the request has no inputs"),
    ({"inputs": {"x": [[0.0] * 16]}, "unit_id": 7}, 400, "unit_id is not a string"),
])
def test_bad_requests_get_400_with_the_reason(served, body, status, message) -> None:
    url, _, _ = served
    got, answer = _call(url + "/v1/predict", body)
    assert got == status and message in answer["error"]


def test_unknown_paths_and_methods_and_huge_bodies_are_refused(rt, tmp_path, keys, bundles) -> None:
    root = tmp_path / "store"
    rt.install(bundles["1.0.0"], root, keys)
    with Model.open(root, audit_log=None) as model:
        server = create_server(model, "127.0.0.1", 0, max_body=1024)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.effective_port}"
        try:
            assert _call(url + "/v2/predict", {"inputs": {}})[0] == 404
            assert _call(url + "/v1/predict", method="GET")[0] == 405
            request = urllib.request.Request(url + "/v1/predict", data=b"[" + b"0," * 2000 + b"0]", method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 413
        finally:
            server.close()
            thread.join(timeout=10)


def test_serve_refuses_a_port_in_use(rt, tmp_path, keys, bundles) -> None:
    root = tmp_path / "store"
    rt.install(bundles["1.0.0"], root, keys)
    with Model.open(root, audit_log=None) as model:
        first = create_server(model, "127.0.0.1", 0)
        try:
            outcome = rt.run("serve", root, "--port", first.effective_port, "--no-audit")
        finally:
            first.close()
    assert outcome.exit_code == 2 and "cannot listen on 127.0.0.1" in outcome.stderr
