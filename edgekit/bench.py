"""Runtime-only benchmark of model artifacts: latency, cold start, throughput, memory.

This module imports no torch and no converter; runtimes load through
``edgekit.backends.open_session``, so it runs where only ``edgekit[runtime]``
is installed (a Raspberry Pi, a phone-class board, a CI runner).

How one measurement works (``run_isolated``):

1. The parent process spawns ``python -m edgekit.bench REQUEST.json RESULT.json``.
   A fresh child makes the peak resident memory the artifact's own footprint
   (plus the interpreter and runtime, reported apart as the *baseline*), and
   turns a runtime that crashes on a corrupt file into a clear error.
2. The child imports the runtime and records the baseline peak RSS, then times
   the *cold start*: loading the artifact plus the first inference.
3. It runs ``warmup`` untimed-for-stats inferences, then ``runs`` timed ones
   (or as many as fit a time budget, sized from the warm-up timings).
4. It writes statistics (p50/p90/p99, mean, stdev, min, max in milliseconds),
   throughput and memory to RESULT.json, or the error it met.

Sessions that time themselves (``time_runs(feeds, runs, warmup) -> list[float]``
in seconds, e.g. a LiteRT interpreter living in its own process) are timed by
that method so IPC never enters the figures; other sessions are timed here
with ``time.perf_counter`` around ``session.run``.

With ``micro_batch`` set, the child then also serves the artifact through a
``MicroBatcher(max_batch=batch)`` fed by ``batch`` client threads that each
send one sample per request (``measure_micro_batch``): the gateway's view, next
to the direct batch-``batch`` figures it approaches at best.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import errors
from edgekit.bench_stats import latency_samples, metric_interval
from edgekit.device_state import DeviceProbe, around

if TYPE_CHECKING:
    from edgekit.backends import Session, TensorSpec
    from edgekit.config import Budgets

SCHEMA = "edgekit-bench"
SCHEMA_VERSION = 1
STATISTICS = ("p50", "p90", "p99", "mean", "stdev", "min", "max")
# A time budget still takes enough runs for a p90 to mean something, and never
# so many that a sub-microsecond model loops for minutes of Python overhead.
MIN_RUNS_FOR_DURATION = 20
MAX_RUNS = 1_000_000
# Integer inputs get small non-negative values: valid indices for embedding
# tables and gathers in most models. Real data (--data) is better for these.
INTEGER_INPUT_HIGH = 16


@dataclass(frozen=True)
class BenchRequest:
    """One measurement: an artifact at one thread count and batch size.

    ``runs`` timed inferences follow ``warmup`` untimed ones; with
    ``duration_s`` set, the number of runs is chosen to fill about that many
    seconds instead. ``data`` is an ``.npz`` of real inputs (arrays named after
    the inputs, or ``x``); without it inputs are random with a fixed ``seed``.
    With ``micro_batch``, the same session is also measured through a
    micro-batcher of ``max_batch=batch`` and ``max_wait_ms`` (``measure_micro_batch``).
    """

    artifact: str
    threads: int = 1
    batch: int = 1
    warmup: int = 10
    runs: int = 100
    duration_s: float | None = None
    data: str | None = None
    seed: int = 0
    micro_batch: bool = False
    max_wait_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.threads < 1 or self.batch < 1:
            raise errors.InputError("threads and batch must be at least 1", "Pass --threads/--batch values >= 1")
        if self.runs < 1 or self.warmup < 0:
            raise errors.InputError("runs must be >= 1 and warmup >= 0", "Fix --runs/--warmup")
        if self.duration_s is not None and self.duration_s <= 0:
            raise errors.InputError("the time budget must be positive", "Pass --duration in seconds, e.g. 5")
        if not math.isfinite(self.max_wait_ms) or self.max_wait_ms < 0:
            raise errors.InputError("the micro-batcher's wait must be >= 0 ms", "Pass --max-wait in ms, e.g. 2")


# ------------------------------------------------------------------- memory


def _proc_status_kb(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of /proc/<pid>/status (Linux), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rusage_maxrss_mb(who: str) -> float | None:
    """``ru_maxrss`` of this process or its reaped children in MiB (kB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN)
    divisor = 2**20 if sys.platform == "darwin" else 1024
    return usage.ru_maxrss / divisor if usage.ru_maxrss else None


def peak_rss_mb() -> float | None:
    """This process's peak resident set size so far (VmHWM on Linux, ru_maxrss elsewhere)."""
    kb = _proc_status_kb("VmHWM")
    return kb / 1024 if kb is not None else _rusage_maxrss_mb("self")


# ------------------------------------------------------------------- inputs


def _concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """The shape to feed ``spec`` at ``batch``; dynamic non-batch dims cannot be guessed."""
    if not spec.shape:
        return ()
    first, rest = spec.shape[0], spec.shape[1:]
    if first is not None and first != batch:
        raise errors.DataError(
            f"input '{spec.name}' has a fixed batch size of {first}, so batch {batch} cannot run",
            f"Bench this artifact with --batch {first}, or export it with a dynamic batch dimension",
        )
    for axis, dim in enumerate(rest, start=1):
        if dim is None:
            raise errors.DataError(
                f"input '{spec.name}' has a dynamic dimension at axis {axis}, so random inputs cannot be shaped",
                "Give real inputs with --data FILE.npz (arrays named after the inputs, or 'x')",
            )
    return (batch, *rest)


def random_inputs(specs: list[TensorSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays of each input's shape and dtype (floats ~ N(0, 1); see INTEGER_INPUT_HIGH)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = _concrete_shape(spec, batch)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            array = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            array = rng.random(shape) < 0.5
        elif dtype.kind in "iu" and dtype.itemsize == 1:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        elif dtype.kind in "iu":
            array = rng.integers(0, INTEGER_INPUT_HIGH, size=shape, dtype=dtype)
        else:
            raise errors.DataError(
                f"input '{spec.name}' has dtype {spec.dtype}, which edgekit cannot make random data for",
                "Give real inputs with --data FILE.npz",
            )
        feeds[spec.name] = np.ascontiguousarray(array)
    return feeds


def _take_batch(array: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` samples, repeating the data when it holds fewer."""
    if len(array) >= batch:
        return array[:batch]
    repeats = math.ceil(batch / len(array))
    return np.concatenate([array] * repeats)[:batch]


def npz_inputs(specs: list[TensorSpec], batch: int, path: Path) -> dict[str, np.ndarray]:
    """Real inputs from an ``.npz``, checked against the model's inputs.

    Float data may feed int8/uint8 inputs (sessions quantize integer-I/O
    models); float data for any other integer or bool input is refused
    because casting would silently truncate it.
    """
    from edgekit.data import bind_inputs, load_npz

    dataset = bind_inputs(load_npz(path), [s.name for s in specs], path.name)
    feeds = {}
    for spec in specs:
        array = dataset.inputs[spec.name]
        want = spec.shape[1:]
        got = array.shape[1:]
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = tuple("?" if w is None else w for w in want)
            raise errors.DataError(
                f"{path.name}: samples for input '{spec.name}' have shape {got} but the model expects {shown}",
                "Store arrays shaped (samples, *input shape); `edgekit inspect` shows the input shapes",
            )
        dtype = np.dtype(spec.dtype)
        quantized_io = dtype.kind in "iu" and dtype.itemsize == 1
        if array.dtype.kind == "f" and dtype.kind in "iub" and not quantized_io:
            raise errors.DataError(
                f"{path.name}: input '{spec.name}' takes {spec.dtype} but the data is {array.dtype}",
                f"Store '{spec.name}' as an integer array",
            )
        if spec.shape and spec.shape[0] is not None and spec.shape[0] != batch:
            _concrete_shape(spec, batch)  # raises the fixed-batch error
        feeds[spec.name] = np.ascontiguousarray(_take_batch(array, batch) if spec.shape else array)
    return feeds


# ------------------------------------------------------------------- timing


def time_runs(session: Session, feeds: dict[str, np.ndarray], runs: int, warmup: int = 0) -> list[float]:
    """Seconds per inference for ``runs`` inferences after ``warmup`` ones.

    Uses the session's own ``time_runs`` when it has one (it times inside the
    runtime's process); otherwise a minimal loop: one ``perf_counter`` pair
    around each ``session.run``, preallocated storage, no per-run allocation.
    """
    native = getattr(session, "time_runs", None)
    if callable(native):
        return [float(t) for t in native(feeds, runs, warmup)]
    run = session.run
    for _ in range(warmup):
        run(feeds)
    clock = time.perf_counter
    times = [0.0] * runs
    for i in range(runs):
        start = clock()
        run(feeds)
        times[i] = clock() - start
    return times


def summarize(times_s: list[float]) -> dict[str, float]:
    """Latency statistics in milliseconds: p50, p90, p99 (linear interpolation), mean, stdev, min, max."""
    if not times_s:
        raise errors.InternalError("no timings to summarize")
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    stats = {
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "mean": ms.mean(),
        "stdev": ms.std(ddof=1) if len(ms) > 1 else 0.0,
        "min": ms.min(),
        "max": ms.max(),
    }
    return {k: round(float(v), 5) for k, v in stats.items()}


# ------------------------------------------------------------------- sessions


def skip_reason(fmt: str) -> str | None:
    """Why this machine cannot measure ``fmt`` (Core ML off macOS), or None when it can."""
    from edgekit.backends import bench_unavailable

    return bench_unavailable(fmt)


def _open(path: Path, fmt: str, threads: int) -> Session:
    """A session of the runtime the *device* uses for ``fmt`` (not the host's emulator)."""
    from edgekit.backends import bencher

    return bencher(fmt).open_session(path, threads=threads)


def _bare_runtime_peak_mb(fmt: str) -> float | None:
    """Peak RSS of a bare child that imports only numpy and ``fmt``'s native runtime.

    It is the baseline of a session whose runtime lives in its own process: that
    process's peak minus this is the model's footprint. Being the first child this
    process reaps, its peak is what RUSAGE_CHILDREN reports right after.
    """
    from edgekit.backends import info

    for name in info(fmt).native_modules:
        code = f"import numpy, {name}"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, env=_child_env())
        if done.returncode == 0:
            return _rusage_maxrss_mb("children")
    return None


def _runtime_version(fmt: str) -> str | None:
    from edgekit.backends import bencher

    return bencher(fmt).runtime_version()


# ------------------------------------------------------------------- measurement


def measure(request: BenchRequest) -> dict[str, Any]:
    """Measure one artifact in *this* process (``run_isolated`` runs it in a fresh one).

    Memory figures describe the calling process, so they mean "the artifact's
    footprint" only in a fresh process.
    """
    from edgekit.artifact import sha256_file, size_bytes
    from edgekit.backends import bencher, detect_format, info

    path = Path(request.artifact)
    fmt = detect_format(path)
    import_start = time.perf_counter()
    bencher(fmt)  # import the runtime now: its cost belongs to the baseline, not the cold start
    import_ms = (time.perf_counter() - import_start) * 1e3
    baseline_mb = peak_rss_mb()
    child_baseline_mb = _bare_runtime_peak_mb(fmt)

    start = time.perf_counter()
    session = _open(path, fmt, request.threads)
    loaded = time.perf_counter()
    if request.data:
        feeds = npz_inputs(session.inputs, request.batch, Path(request.data))
    else:
        feeds = random_inputs(session.inputs, request.batch, request.seed)
    first_start = time.perf_counter()
    session.run(feeds)
    first_end = time.perf_counter()

    warm = time_runs(session, feeds, request.warmup, 0) if request.warmup else []
    runs = request.runs
    if request.duration_s is not None:
        per_run = float(np.median(warm)) if warm else max(time_runs(session, feeds, 1, 0)[0], 1e-7)
        runs = int(min(MAX_RUNS, max(MIN_RUNS_FOR_DURATION, request.duration_s / max(per_run, 1e-7))))
    times = time_runs(session, feeds, runs, 0)
    stats = summarize(times)
    micro = measure_micro_batch(session, feeds, request, runs, request.batch * 1e3 / stats["mean"]
                                if stats["mean"] > 0 else None) if request.micro_batch else None

    memory = _memory(session, baseline_mb, child_baseline_mb)
    runtime_name, runtime_version = info(fmt).runtime, _runtime_version(fmt)
    if runtime_version and " " in runtime_version:  # "<distribution> <version>": the runtime actually used
        runtime_name, runtime_version = runtime_version.split(" ", 1)
    return {
        "artifact": path.name,
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "size_bytes": size_bytes(path),
        "format": fmt,
        "runtime": runtime_name,
        "runtime_version": runtime_version,
        "delegate": getattr(session, "delegate", None) or info(fmt).delegate,
        "threads": request.threads,
        "batch": request.batch,
        "inputs": {
            "source": Path(request.data).name if request.data else f"random (seed {request.seed})",
            "specs": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in feeds.items()],
        },
        "warmup": request.warmup,
        "runs": runs,
        "duration_s": request.duration_s,
        "timed_by": "session.time_runs" if callable(getattr(session, "time_runs", None)) else "perf_counter",
        "import_ms": round(import_ms, 3),
        "load_ms": round((loaded - start) * 1e3, 3),
        "first_inference_ms": round((first_end - first_start) * 1e3, 3),
        "cold_start_ms": round(((loaded - start) + (first_end - first_start)) * 1e3, 3),
        "latency_ms": stats,
        "latency_samples_ms": latency_samples(times),  # per-run, for bench compare's intervals
        "throughput": {
            "inferences_per_s": round(1e3 / stats["mean"], 3) if stats["mean"] > 0 else None,
            "samples_per_s": round(request.batch * 1e3 / stats["mean"], 3) if stats["mean"] > 0 else None,
        },
        "memory": memory,
        **({"cold_start_note": "includes starting the runtime's isolated process"}
           if memory["process"] == "runtime child process" else {}),
        **({"micro_batch": micro} if micro is not None else {}),
    }


# ------------------------------------------------------------------- micro-batching


def measure_micro_batch(session: Session, feeds: dict[str, np.ndarray], request: BenchRequest, runs: int,
                        direct_samples_per_s: float | None) -> dict[str, Any]:
    """Serve ``session`` through ``MicroBatcher(max_batch=B, max_wait_ms)`` to B client threads (B = batch).

    Each client owns one sample (a row of ``feeds``) and sends it one request at a time: ``warmup`` untimed
    requests, then ``runs`` timed ones (with a time budget, until it runs out), so the timed phase carries as
    many samples as the direct measurement. Latency is per request, submit to result; throughput is every
    timed sample over the phase's wall time; batch counts cover the timed phase only. ``vs_direct`` divides
    the throughput by ``direct_samples_per_s`` (direct batch-B calls in the same process: the ideal).
    """
    from edgekit.runtime.batcher import MicroBatcher

    clients = request.batch
    samples = [{name: array[i : i + 1] for name, array in feeds.items()} for i in range(clients)]
    marks: dict[str, Any] = {}
    with MicroBatcher(session.run, max_batch=clients, max_wait_ms=request.max_wait_ms) as batcher:

        def start() -> None:  # the barrier's action: once, after every client's warm-up, before any timed request
            marks["stats"], marks["start"] = batcher.stats(), time.perf_counter()

        times = _drive_clients(batcher, samples, request.warmup, runs, request.duration_s, start)
        wall_s = time.perf_counter() - marks["start"]
        before, after = marks["stats"], batcher.stats()
    batches = int(after["batches"] - before["batches"])
    sizes = {int(key.removeprefix("batches_of_")): int(count - before.get(key, 0.0))
             for key, count in after.items() if key.startswith("batches_of_")}
    samples_per_s = len(times) / wall_s if wall_s > 0 else None
    return {
        "max_batch": clients,
        "max_wait_ms": request.max_wait_ms,
        "clients": clients,
        "requests": len(times),
        "samples_per_request": 1,
        "latency_ms": summarize(times),
        "throughput": {"samples_per_s": None if samples_per_s is None else round(samples_per_s, 3)},
        "batches": batches,
        "mean_batch_size": round((after["samples"] - before["samples"]) / batches, 3) if batches else None,
        "batch_sizes": {str(size): count for size, count in sorted(sizes.items()) if count > 0},
        "vs_direct": round(samples_per_s / direct_samples_per_s, 4)
        if samples_per_s and direct_samples_per_s else None,
    }


def _drive_clients(call: Any, samples: list[dict[str, np.ndarray]], warmup: int, runs: int,
                   duration_s: float | None, on_start: Any) -> list[float]:
    """Seconds per timed request of one thread per sample, all started together; a client's error is re-raised.

    ``on_start()`` runs once every client has warmed up and before any timed request; with ``duration_s`` the
    clients stop once that many seconds have passed (after at least MIN_RUNS_FOR_DURATION requests each).
    """
    per_client: list[list[float]] = [[] for _ in samples]
    failures: list[BaseException] = []
    deadline: list[float] = []

    def started() -> None:
        on_start()
        deadline.append(time.perf_counter() + duration_s if duration_s is not None else math.inf)

    ready = threading.Barrier(len(samples), action=started)

    def client(index: int) -> None:
        sample, times, clock = samples[index], per_client[index], time.perf_counter
        try:
            for _ in range(warmup):
                call(sample)
            ready.wait()
            for done in range(1, runs + 1):
                begin = clock()
                call(sample)
                end = clock()
                times.append(end - begin)
                if end > deadline[0] and done >= MIN_RUNS_FOR_DURATION:
                    break
        except threading.BrokenBarrierError:
            pass  # another client failed before the start: its error is the one reported
        except Exception as exc:
            failures.append(exc)
            ready.abort()  # release the clients waiting for this one

    threads = [threading.Thread(target=client, args=(i,), name=f"bench-client-{i}", daemon=True)
               for i in range(len(samples))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [t for times in per_client for t in times]


def _memory(session: Session, baseline_mb: float | None, child_baseline_mb: float | None) -> dict[str, Any]:
    """Peak RSS of whichever process ran the model, and that process's pre-load baseline.

    A session whose runtime lives in a child process and that has ``close()``
    is measured there: after ``close`` the child is reaped and RUSAGE_CHILDREN
    holds its peak, which is what the device pays for the model. Its baseline
    is a bare child that imported the same runtime (``_bare_runtime_peak_mb``).
    """
    process, peak, baseline = "bench process", peak_rss_mb(), baseline_mb
    close = getattr(session, "close", None)
    if callable(close):
        close()
        reaped = _rusage_maxrss_mb("children")
        if reaped is not None and child_baseline_mb is not None and reaped > child_baseline_mb:
            process, peak, baseline = "runtime child process", reaped, child_baseline_mb
    return {
        "peak_rss_mb": None if peak is None else round(peak, 2),
        "baseline_rss_mb": None if baseline is None else round(baseline, 2),
        "model_rss_mb": None if peak is None or baseline is None else round(max(peak - baseline, 0.0), 2),
        "process": process,
        "method": "VmHWM" if process == "bench process" and _proc_status_kb("VmHWM") is not None else "ru_maxrss",
    }


def _child_main(argv: list[str]) -> int:
    """``python -m edgekit.bench REQUEST.json RESULT.json``: one measurement, result or error as JSON."""
    if len(argv) != 2:
        print("usage: python -m edgekit.bench REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request_path, result_path = map(Path, argv)
    try:
        request = BenchRequest(**json.loads(request_path.read_text(encoding="utf-8")))
        payload: dict[str, Any] = {"result": measure(request)}
    except errors.EdgekitError as exc:
        payload = {"error": {"type": type(exc).__name__, "problem": exc.problem, "fix": exc.fix}}
    except Exception as exc:  # a bug: carry the traceback to the parent for --debug
        payload = {
            "error": {
                "type": "InternalError",
                "problem": f"the benchmark failed: {type(exc).__name__}: {exc}",
                "fix": None,
                "traceback": traceback.format_exc(),
            }
        }
    result_path.write_text(json.dumps(payload), encoding="utf-8")
    return 0


def _reraise(error: dict[str, Any]) -> None:
    cls = getattr(errors, str(error.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.EdgekitError)):
        cls = errors.InternalError
    exc = cls(error["problem"], error.get("fix"))
    if error.get("traceback"):
        exc.add_note("child traceback:\n" + error["traceback"])
    raise exc


def _child_env() -> dict[str, str]:
    """The parent's environment, with edgekit importable even from an uninstalled checkout."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_isolated(request: BenchRequest, python: str | None = None) -> dict[str, Any]:
    """Measure ``request`` in a fresh child interpreter; errors come back as edgekit errors."""
    from edgekit.backends import detect_format

    path = Path(request.artifact)
    fmt = detect_format(path)  # fail fast, before paying for a child process
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        request_file, result_file = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request_file.write_text(json.dumps(asdict(request)), encoding="utf-8")
        command = [python or sys.executable, "-m", "edgekit.bench", str(request_file), str(result_file)]
        proc = subprocess.run(command, capture_output=True, text=True, env=_child_env(), check=False)
        if result_file.is_file():
            payload = json.loads(result_file.read_text(encoding="utf-8"))
            if "error" in payload:
                _reraise(payload["error"])
            return payload["result"]
    how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with code {proc.returncode}"
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    raise errors.ArtifactError(
        f"the {fmt} runtime {how} while benchmarking {path.name}" + (f" ({tail})" if tail else ""),
        "The file may be corrupt or use an op this runtime cannot run: check it with `edgekit inspect`, "
        "rebuild it, or upgrade the runtime",
    )


def bench(
    artifacts: list[Path],
    threads: list[int],
    batches: list[int],
    *,
    warmup: int = 10,
    runs: int = 100,
    duration_s: float | None = None,
    data: Path | None = None,
    seed: int = 0,
    machine: dict[str, Any] | None = None,
    progress: Any = None,
    micro_batch: bool = False,
    max_wait_ms: float = 2.0,
    probe: DeviceProbe | None = None,
) -> list[dict[str, Any]]:
    """Measure every artifact × thread count × batch size, each in its own child process.

    Artifacts this machine cannot run (Core ML off macOS) give one result with
    a ``skipped`` reason instead of figures. ``progress(text)`` is called before
    each measurement. Every result carries ``machine``. With ``micro_batch``
    each result also holds ``micro_batch``: the same artifact served through a
    micro-batcher of max batch = the batch size (``measure_micro_batch``).
    Each measured result carries ``device_state``: the CPU governor, clock,
    temperature and throttling before and after it, read through ``probe``
    (default: this machine's /sys and vcgencmd), with ``warnings``.
    """
    from edgekit.backends import detect_format

    if machine is None:
        from edgekit.machine import describe

        machine = describe()
    probe = probe or DeviceProbe()
    formats = {path: detect_format(path) for path in artifacts}  # all bad paths fail before any measuring
    results = []
    for path in artifacts:
        reason = skip_reason(formats[path])
        if reason:
            results.append({"artifact": path.name, "path": str(path.resolve()), "format": formats[path],
                            "skipped": reason, "machine": machine})
            continue
        for thread_count in threads:
            for batch in batches:
                if progress:
                    progress(f"{path.name}: threads={thread_count} batch={batch}")
                request = BenchRequest(str(path), thread_count, batch, warmup, runs, duration_s,
                                       None if data is None else str(data), seed, micro_batch, max_wait_ms)
                before = probe.snapshot()
                measured = run_isolated(request)
                results.append({**measured, "machine": machine, "device_state": around(probe, before)})
    return results


# ------------------------------------------------------------------- budgets and documents


def check_budgets(result: dict[str, Any], budgets: Budgets, target: str, statistic: str = "p50") -> list[dict[str, Any]]:
    """Verdicts of one result against a profile's latency and RAM budgets (``validate.device_checks``).

    Latency compares the chosen statistic; RAM the peak resident memory of the
    process that ran the model. A figure this OS could not measure is "skipped".
    """
    from edgekit.validate import device_checks

    checks = device_checks(budgets, result["latency_ms"][statistic], result["memory"]["peak_rss_mb"],
                           f"{statistic} latency, ms", "not measured on this OS")
    return [{"target": target, **c.as_dict()} for c in checks]


def make_document(results: list[dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    """The JSON document ``edgekit bench --json`` writes (see docs/bench.md for the keys)."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "results": results,
    }


def load_document(path: Path) -> dict[str, Any]:
    """Read a bench JSON file, refusing anything that is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.DataError(f"bench result file not found: {path}", "Check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.DataError(
            f"{path} is not a readable JSON file ({exc})", "Give a file written by `edgekit bench --json`"
        ) from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA or not isinstance(document.get("results"), list):
        raise errors.DataError(f"{path} is not an edgekit bench result", "Give a file written by `edgekit bench --json`")
    if document.get("schema_version", 0) > SCHEMA_VERSION:
        raise errors.DataError(
            f"{path} uses bench schema version {document['schema_version']}, newer than this edgekit understands",
            "Upgrade edgekit",
        )
    return document


CSV_COLUMNS = (
    "machine", "artifact", "format", "runtime", "runtime_version", "threads", "batch", "runs", "cold_start_ms",
    *(f"{s}_ms" for s in STATISTICS), "inferences_per_s", "samples_per_s", "peak_rss_mb", "baseline_rss_mb",
    "model_rss_mb", "budget_verdicts", "skipped",
    # Empty unless measured with --micro-batch; last, so the columns above keep their positions.
    "micro_batch_samples_per_s", "micro_batch_p50_ms", "micro_batch_p99_ms", "micro_batch_mean_batch_size",
    "micro_batch_vs_direct",
)


def csv_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per result, with the columns of CSV_COLUMNS."""
    from edgekit.machine import short_name

    rows = []
    for result in document["results"]:
        latency = result.get("latency_ms", {})
        memory = result.get("memory", {})
        throughput = result.get("throughput", {})
        verdicts = result.get("budgets", [])
        micro = result.get("micro_batch") or {}
        rows.append({
            "machine": short_name(result.get("machine") or document.get("machine", {})),
            "artifact": result.get("artifact"),
            "format": result.get("format"),
            "runtime": result.get("runtime"),
            "runtime_version": result.get("runtime_version"),
            "threads": result.get("threads"),
            "batch": result.get("batch"),
            "runs": result.get("runs"),
            "cold_start_ms": result.get("cold_start_ms"),
            **{f"{s}_ms": latency.get(s) for s in STATISTICS},
            "inferences_per_s": throughput.get("inferences_per_s"),
            "samples_per_s": throughput.get("samples_per_s"),
            "peak_rss_mb": memory.get("peak_rss_mb"),
            "baseline_rss_mb": memory.get("baseline_rss_mb"),
            "model_rss_mb": memory.get("model_rss_mb"),
            "budget_verdicts": "; ".join(f"{v['target']}:{v['budget']}={v['status']}" for v in verdicts),
            "skipped": result.get("skipped", ""),
            "micro_batch_samples_per_s": micro.get("throughput", {}).get("samples_per_s"),
            "micro_batch_p50_ms": micro.get("latency_ms", {}).get("p50"),
            "micro_batch_p99_ms": micro.get("latency_ms", {}).get("p99"),
            "micro_batch_mean_batch_size": micro.get("mean_batch_size"),
            "micro_batch_vs_direct": micro.get("vs_direct"),
        })
    return rows


# ------------------------------------------------------------------- compare

# (label, getter, higher_is_better)
COMPARED_METRICS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("cold start ms", ("cold_start_ms",), False),
    ("p50 ms", ("latency_ms", "p50"), False),
    ("p90 ms", ("latency_ms", "p90"), False),
    ("p99 ms", ("latency_ms", "p99"), False),
    ("mean ms", ("latency_ms", "mean"), False),
    ("throughput /s", ("throughput", "samples_per_s"), True),
    ("peak RSS MiB", ("memory", "peak_rss_mb"), False),
    ("model RSS MiB", ("memory", "model_rss_mb"), False),
)
# Compared only when either side was measured with --micro-batch, so other comparisons keep their rows.
MICRO_BATCH_METRICS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("micro-batch /s", ("micro_batch", "throughput", "samples_per_s"), True),
    ("micro-batch p50 ms", ("micro_batch", "latency_ms", "p50"), False),
    ("micro-batch p99 ms", ("micro_batch", "latency_ms", "p99"), False),
)


def _get(result: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, (int, float)) else None


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Pair the measured results of two bench documents and compute B/A ratios.

    Each ratio comes with ``ratio_ci95``, its 95 % interval from the per-run
    latencies (``bench_stats.metric_interval``), or None where the results
    hold too few runs or none (files from before edgekit kept them).

    Results pair by (artifact name, threads, batch) first: the same artifact on
    two machines. Those left over pair in order by (threads, batch): a before
    and after artifact with different names. Anything still unpaired is listed.
    """
    left = [r for r in a["results"] if "skipped" not in r]
    right = [r for r in b["results"] if "skipped" not in r]
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for keyfunc in (lambda r: (r["artifact"], r["threads"], r["batch"]), lambda r: (r["threads"], r["batch"])):
        unpaired_right = list(right)
        still_left = []
        for result in left:
            match = next((r for r in unpaired_right if keyfunc(r) == keyfunc(result)), None)
            if match is None:
                still_left.append(result)
            else:
                unpaired_right.remove(match)
                pairs.append((result, match))
        left, right = still_left, unpaired_right
    rows = []
    for ra, rb in pairs:
        metrics = []
        micro = MICRO_BATCH_METRICS if "micro_batch" in ra or "micro_batch" in rb else ()
        for label, keys, higher_is_better in (*COMPARED_METRICS, *micro):
            va, vb = _get(ra, keys), _get(rb, keys)
            ratio = round(vb / va, 4) if va and vb is not None else None
            metrics.append({"metric": label, "a": va, "b": vb, "ratio": ratio, "higher_is_better": higher_is_better,
                            "ratio_ci95": metric_interval(label, keys, ra, rb) if ratio is not None else None})
        rows.append({
            "a": {"artifact": ra["artifact"], "threads": ra["threads"], "batch": ra["batch"]},
            "b": {"artifact": rb["artifact"], "threads": rb["threads"], "batch": rb["batch"]},
            "metrics": metrics,
        })
    brief = lambda r: {"artifact": r["artifact"], "threads": r["threads"], "batch": r["batch"]}  # noqa: E731
    return {
        "a_machine": a.get("machine", {}),
        "b_machine": b.get("machine", {}),
        "pairs": rows,
        "only_in_a": [brief(r) for r in left],
        "only_in_b": [brief(r) for r in right],
    }


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
