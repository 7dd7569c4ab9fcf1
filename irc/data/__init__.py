"""Datasets: image folders for training, named benchmarks with their evaluation protocols.

Submodules (imported explicitly, so that ``import irc.data`` stays cheap and torch-free):

* :mod:`irc.data.folders`: ``ImageFolder`` (random crops of clean images), ``PairedFolder``
  (aligned crops of degraded / clean pairs, optionally at an integer scale), ``CubeFolder``
  (hyperspectral crops); synthetic degradations are applied by the training loop
  (:mod:`irc.train.data`).
* :mod:`irc.data.registry`: the named datasets (``BENCHMARKS``, ``TRAINING_SETS``,
  ``PAIR_SETS``), their folders and layouts; ``training_files`` lists a training set.
* :mod:`irc.data.protocols`: :class:`~irc.data.protocols.Protocol`, the exact scoring protocol
  papers use (colour space, crop border, 8-bit rounding, how the degraded input is made, seeds).
* :mod:`irc.data.benchmarks`: ``open_benchmark(name, ...)`` returns the samples of a named test
  set together with its protocol.
* :mod:`irc.data.fetching`: ``fetch_dataset`` downloads and unpacks a set.

Where data lives is one setting, resolved by :func:`data_root`: an explicit path (the CLI's
``--data-root``) wins over the environment variable ``IRC_DATA_ROOT``, which wins over
``<cache_dir()>/data`` (``~/.cache/irc/data`` by default). Each dataset is a folder under that
root; ``irc.data.registry.BENCHMARKS`` documents every folder's layout.

Randomness is keyed, never sequential: every random choice (a crop position, a noise field, a
degradation's parameters) is drawn from a generator seeded with a tuple such as
``(seed, epoch, index)``, so a sample is the same whatever the worker count, the order in which
samples are read, or how many were read before it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ROOT_ENV", "data_root"]

DATA_ROOT_ENV = "IRC_DATA_ROOT"
"""Environment variable naming the data root (second in precedence after an explicit path)."""


def data_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The folder under which every dataset lives.

    Args:
        override: An explicit choice (``--data-root``); wins when not ``None`` or empty.

    Returns:
        ``override`` if given, else ``$IRC_DATA_ROOT`` if set and non-empty, else
        ``cache_dir() / "data"`` (see :func:`irc.download.cache_dir`). ``~`` is expanded; the
        folder is neither created nor checked here.
    """
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    from irc.download import cache_dir

    return cache_dir() / "data"
