"""Where a build keeps its results and runs its tasks: the options `build`, `rebuild` and `fleet build` share.

``--cache DIR`` (default ``$EDGEKIT_CACHE`` or ``~/.cache/edgekit``) keeps trained
models and candidate sets by content, so a rebuild with one profile changed
redoes only what that profile needs; ``--no-cache`` (or ``EDGEKIT_NO_CACHE=1``)
keeps nothing. ``--executor local`` (the default, or ``$EDGEKIT_EXECUTOR``) builds
candidate sets in a process pool sized to the cores, ``serial`` in this
process, ``ray`` on a Ray cluster (``--address``, else a local one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

EXECUTOR_ENV = "EDGEKIT_EXECUTOR"
NO_CACHE_ENV = "EDGEKIT_NO_CACHE"


def execution_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --cache, --no-cache, --executor, --address and --workers to a click command."""
    options = [
        click.option("--cache", "cache_dir", type=click.Path(path_type=Path),
                     help="Cache folder for trained models and candidates (default $EDGEKIT_CACHE or ~/.cache/edgekit)."),
        click.option("--no-cache", is_flag=True, help="Keep nothing between builds (also EDGEKIT_NO_CACHE=1)."),
        click.option("--executor", type=click.Choice(["local", "serial", "ray"]), default=None,
                     help="Where candidates are built: a local process pool (default), this process, or Ray."),
        click.option("--address", help="With --executor ray: the cluster to join (auto, ray://head:10001)."),
        click.option("--workers", type=click.IntRange(min=1), help="Tasks at once (default: the cores)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def open_cache(cache_dir: Path | None, no_cache: bool) -> Any:
    """The cache these options ask for: none with --no-cache (or the environment's), else the folder."""
    from edgekit.cache import BuildCache, NullCache

    if no_cache or (cache_dir is None and os.environ.get(NO_CACHE_ENV, "") not in ("", "0")):
        return NullCache()
    return BuildCache(cache_dir)


@contextlib.contextmanager
def execution(cache_dir: Path | None, no_cache: bool, executor: str | None, address: str | None,
              workers: int | None) -> Iterator[tuple[Any, Any]]:
    """The (cache, executor) pair for a command; the executor is shut down afterwards."""
    from edgekit.pipeline.executor import make_executor

    runner = make_executor(executor or os.environ.get(EXECUTOR_ENV) or "local", address, workers)
    try:
        yield open_cache(cache_dir, no_cache), runner
    finally:
        runner.close()
