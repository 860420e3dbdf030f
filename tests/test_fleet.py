"""`edgekit fleet build`: many models × targets, the same bytes on Ray as serially, a shared cache, contained failures.

The fleets here are the tiny conftest models (a CNN, a two-input token encoder) with small profiles written into
the test's folder (ONNX fp32 and int8 only) and configs that time 5 rounds and skip the attack suite, so one
model builds in seconds. conftest.py sets EDGEKIT_NO_CACHE=1 and EDGEKIT_EXECUTOR=serial: tests pass --cache and
--executor where they need them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekit.config import available_profiles
from edgekit.fleet import load_fleet

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"

DEVICE = '[device]\nkind = "sbc"\narch = "aarch64"\ncores = 4\nram_mb = 1024\n'


def _profile(folder: Path, name: str, precisions: tuple[str, ...], budgets: str = "") -> Path:
    """A profile asking for ONNX at ``precisions``, with only the default fidelity bars unless ``budgets``."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = "".join(f'[[artifacts]]\nformat = "onnx"\nprecision = "{p}"\n' for p in precisions)
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\ndescription = "test"\n{DEVICE}{artifacts}{budgets}')
    return path


def _config(folder: Path, name: str, model_files, data: Path | None = None) -> Path:
    """A build config for a conftest model: 32 calibration samples, 5 timing rounds, no attack suite."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edgekit.toml"
    path.write_text(
        f'[model]\nname = "{name}"\nfactory = "{model_files.factory}"\nweights = "{model_files.weights}"\n'
        f'[data]\npath = "{data or model_files.data}"\ncalibration_size = 32\n'
        "[build]\nlatency_runs = 5\n[attacks]\nenabled = false\n"
    )
    return path


def _fleet(root: Path, text: str) -> Path:
    path = root / "fleet.toml"
    path.write_text(text)
    return path


def _run(*args: str | Path) -> int:
    """``edgekit ARGS`` in this process (for module fixtures, which cannot use the ``cli`` fixture)."""
    from edgekit.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _log(out: Path) -> dict:
    return json.loads((out / "fleet.json").read_text())


def _candidate_files(cache: Path) -> dict[str, dict[str, str]]:
    """Every candidate set a cache holds (by its content key): each candidate file's sha256, by name."""
    sets = {}
    for entry in sorted((cache / "entries" / "candidates").iterdir()):
        files = sorted(p for p in (entry / "files").rglob("*") if p.is_file())
        sets[entry.name] = {p.relative_to(entry).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return sets


@dataclass(frozen=True)
class SerialFleet:
    """Two models × two profiles built serially into ``out`` with the cache ``cache``, in ``seconds``."""

    root: Path
    fleet: Path
    out: Path
    cache: Path
    seconds: float


@pytest.fixture(scope="module")
def serial_fleet(tmp_path_factory: pytest.TempPathFactory, tiny_cnn, token_encoder) -> SerialFleet:
    root = tmp_path_factory.mktemp("fleet")
    _profile(root / "profiles", "edge-a", ("fp32", "int8"))
    _profile(root / "profiles", "edge-b", ("int8",), "[budgets]\nmax_size_mb = 4.0\n")
    _config(root / "cnn", "cnn", tiny_cnn)
    _config(root / "tokens", "tokens", token_encoder)
    fleet = _fleet(root, 'output = "out"\ntargets = ["profiles/edge-a.toml", "profiles/edge-b.toml"]\n'
                         '[[models]]\nconfig = "cnn/edgekit.toml"\n[[models]]\nconfig = "tokens/edgekit.toml"\n')
    started = time.perf_counter()
    code = _run("fleet", "build", fleet, "--executor", "serial", "--cache", root / "cache-serial", "--json")
    seconds = time.perf_counter() - started
    assert code in (0, 1), _log(root / "out")  # built; a tiny random model may miss a fidelity bar
    return SerialFleet(root, fleet, root / "out", root / "cache-serial", seconds)


@pytest.mark.slow
def test_ray_builds_the_bytes_a_serial_build_makes(serial_fleet: SerialFleet, cli) -> None:
    """The same fleet on a local single-node Ray (2 workers) gives byte-identical candidates and artifacts.

    Each build has its own cache, so Ray's workers really build every candidate (a shared cache would hand
    them the serial build's files). Which recipe ships can depend on host timing, and Ray times candidates
    two at a time (marked ``timed_under_load``), so an int8 winner may legitimately differ. The sound
    comparison is therefore per recipe: every candidate set (the same content keys in both caches) holds
    byte-identical files for every recipe; every shipped artifact has the same path in both builds and,
    when the same recipe won (always for fp32, which has one), the same sha256; when another recipe won,
    its bytes are those the serial build made for that recipe.
    """
    out, cache = serial_fleet.root / "out-ray", serial_fleet.root / "cache-ray"
    started = time.perf_counter()
    result = cli("fleet", "build", serial_fleet.fleet, "-o", out, "--executor", "ray", "--workers", "2",
                 "--cache", cache, "--json")
    seconds = time.perf_counter() - started
    assert result.code in (0, 1), result.err
    ray_log, serial_log = json.loads(result.out), _log(serial_fleet.out)
    assert ray_log["executor"] == {"name": "ray", "workers": 2}
    assert [m["exit_code"] for m in ray_log["models"]] == [m["exit_code"] for m in serial_log["models"]]

    serial_sets, ray_sets = _candidate_files(serial_fleet.cache), _candidate_files(cache)
    assert serial_sets and ray_sets == serial_sets
    built_by_serial = {sha for files in serial_sets.values() for sha in files.values()}
    compared = 0
    for model in ("cnn", "tokens"):
        serial = {(a["target"], a["path"]): a for a in json.loads((serial_fleet.out / model / "manifest.json").read_text())["artifacts"]}
        ray = {(a["target"], a["path"]): a for a in json.loads((out / model / "manifest.json").read_text())["artifacts"]}
        assert set(ray) == set(serial) and len(ray) == 3  # edge-a: fp32 + int8, edge-b: int8
        for where, artifact in ray.items():
            assert hashlib.sha256((out / model / artifact["path"]).read_bytes()).hexdigest() == artifact["sha256"]
            assert artifact["sha256"] in built_by_serial
            if artifact["variant"] == serial[where]["variant"]:
                assert artifact["sha256"] == serial[where]["sha256"], where
                compared += 1
            assert artifact["metrics"].get("timed_under_load") == 2.0  # two sets ran at once on the 2 workers
            assert "timed_under_load" not in serial[where]["metrics"]
    assert compared >= 2  # at least each model's fp32 artifact, byte for byte
    print(f"\nfleet of 2 models x 2 profiles: serial {serial_fleet.seconds:.1f} s, ray {seconds:.1f} s "
          "(Ray start included)")


@pytest.mark.slow
def test_a_second_run_takes_every_candidate_set_from_the_cache(serial_fleet: SerialFleet, cli) -> None:
    out = serial_fleet.root / "out-again"
    started = time.perf_counter()
    result = cli("fleet", "build", serial_fleet.fleet, "-o", out, "--executor", "serial", "--cache",
                 serial_fleet.cache, "--json")
    seconds = time.perf_counter() - started
    assert result.code in (0, 1), result.err
    first, again = _log(serial_fleet.out), json.loads(result.out)
    assert again == _log(out)
    for before, after in zip(first["models"], again["models"], strict=True):
        assert before["candidate_sets"]["built"] == 2 and before["candidate_sets"]["from_cache"] == 0
        assert after["candidate_sets"] == {"from_cache": 2, "built": 0}
        log = json.loads((out / after["output"] / "build.json").read_text())
        assert {s["origin"] for s in log["sets"]} == {"cache"}
        assert after["artifacts"] == before["artifacts"] and after["targets"] == before["targets"]
        shipped = [(a["path"], a["sha256"]) for a in json.loads((out / after["manifest"]).read_text())["artifacts"]]
        earlier = json.loads((serial_fleet.out / before["manifest"]).read_text())["artifacts"]
        assert shipped == [(a["path"], a["sha256"]) for a in earlier]
    assert seconds < serial_fleet.seconds
    print(f"\nfleet from the cache: {seconds:.1f} s (built: {serial_fleet.seconds:.1f} s)")


@pytest.mark.parametrize(("entry", "expected"), [
    ('[[models]]\nconfig = "missing/edgekit.toml"\n', "build config file not found"),
    ('[[models]]\nconfig = "cnn/edgekit.toml"\ntragets = ["edge"]\n', "unknown key 'models.0.tragets'"),
    ('[[models]]\nconfig = "cnn/edgekit.toml"\ntargets = ["rasberry-pi-4"]\n', "unknown target 'rasberry-pi-4'"),
    ('[[models]]\nconfig = "cnn/edgekit.toml"\n[[models]]\nconfig = "cnn/edgekit.toml"\n', "two models"),
    ('[[models]]\nconfig = "cnn/edgekit.toml"\nsource = "m.pt2"\n', "exactly one of config and source"),
    ('[[models]]\nsource = "model.py:create"\n', "needs data"),
])
def test_a_bad_entry_is_refused_before_any_build(tmp_path: Path, tiny_cnn, cli, entry: str, expected: str) -> None:
    _config(tmp_path / "cnn", "cnn", tiny_cnn)
    fleet = _fleet(tmp_path, f'output = "out"\ntargets = ["jetson-orin-nano"]\n{entry}')
    result = cli("fleet", "build", fleet)
    assert result.code == 2
    assert result.err.startswith("error: ") and str(fleet) in result.err and expected in result.err, result.err
    assert "Traceback" not in result.err + result.out
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failing_model_is_recorded_and_the_others_are_built(tmp_path: Path, tiny_cnn, cli) -> None:
    _profile(tmp_path, "tight", ("fp32",), "[budgets]\nmax_size_mb = 0.001\n")
    _config(tmp_path / "broken", "broken", tiny_cnn, data=tmp_path / "missing.npz")
    fleet = _fleet(tmp_path, f'output = "out"\ntargets = ["tight.toml"]\n'
                             '[[models]]\nconfig = "broken/edgekit.toml"\n'
                             f'[[models]]\nsource = "{tiny_cnn.factory}"\nweights = "{tiny_cnn.weights}"\n'
                             f'data = "{tiny_cnn.data}"\nname = "gateway"\n')
    result = cli("fleet", "build", fleet)
    assert result.code == 2, result.err  # the worst model's: bad input
    assert "1 of 2 models could not be built (broken)" in result.err and "Traceback" not in result.err
    assert "gateway" in result.out and "max_size_mb" in result.out and "fleet.json" in result.out
    log = _log(tmp_path / "out")
    broken, gateway = log["models"]
    assert broken["exit_code"] == 2 and "missing.npz" in broken["error"] and broken["manifest"] is None
    assert gateway["exit_code"] == 1 and gateway["error"] is None  # built; misses the 1 KB budget
    assert gateway["artifacts"] == {"passed": 0, "failed": 1}
    assert gateway["targets"] == [{"name": "tight", "status": "failed", "artifacts": 1, "passed": 0,
                                   "failed_budgets": ["max_size_mb"]}]
    assert (tmp_path / "out" / gateway["manifest"]).is_file()
    assert log["exit_code"] == 2


def _ray_cluster_on_this_host() -> bool:
    """Whether a Ray cluster runs here: "auto" then joins it (Ray finds it by its processes' --gcs-address)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"--gcs-address" in cmdline.read_bytes():
                return True
        except OSError:  # the process ended
            continue
    return False


@pytest.mark.parametrize(("address", "message"), [("auto", "could not reach a Ray cluster at auto"),
                                                 ("ray://127.0.0.1:1", "could not reach a Ray cluster at ray://"),
                                                 ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1")])
def test_an_unreachable_ray_cluster_is_a_clear_error(tmp_path: Path, tiny_cnn, cli, monkeypatch,
                                                      address: str, message: str) -> None:
    if address == "auto" and _ray_cluster_on_this_host():
        pytest.skip("a Ray cluster runs on this host, and --address auto joins it")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # "auto" looks for a running cluster here: none
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _config(tmp_path / "cnn", "cnn", tiny_cnn)
    fleet = _fleet(tmp_path, 'output = "out"\ntargets = ["jetson-orin-nano"]\n[[models]]\nconfig = "cnn/edgekit.toml"\n')
    result = cli("fleet", "build", fleet, "--executor", "ray", "--address", address)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


def test_targets_all_relative_paths_and_per_model_targets(tmp_path: Path, tiny_cnn) -> None:
    _profile(tmp_path / "profiles", "mine", ("fp32",))
    _config(tmp_path / "cnn", "cnn", tiny_cnn)
    _config(tmp_path / "cnn2", "cnn2", tiny_cnn)
    fleet = load_fleet(_fleet(tmp_path, 'output = "out"\ntargets = ["all"]\n[[models]]\nconfig = "cnn/edgekit.toml"\n'
                                        '[[models]]\nconfig = "cnn2/edgekit.toml"\nname = "second"\n'
                                        'targets = ["profiles/mine.toml", "esp32-s3"]\n'), output=None)
    first, second = fleet.models
    assert first.name == "cnn" and first.targets == tuple(available_profiles())
    assert second.name == "second" and second.targets == (str(tmp_path / "profiles" / "mine.toml"), "esp32-s3")
    assert fleet.output == tmp_path / "out"
    assert load_fleet(tmp_path / "fleet.toml", output=tmp_path / "elsewhere").output == tmp_path / "elsewhere"


def test_the_sample_fleet_loads_two_samples_for_one_device() -> None:
    fleet = load_fleet(SAMPLES / "fleet.toml")
    assert sorted(m.name for m in fleet.models) == ["digits-mlp", "digits-tokens"]
    assert all(m.targets == ("jetson-orin-nano",) for m in fleet.models)
    assert fleet.output == (SAMPLES.parent / "build" / "fleet").resolve()
