"""Shared fixtures: the data pack (IRC_DATA_ROOT, default ../shared/data) and small real crops."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("IRC_DATA_ROOT", REPO.parent / "shared" / "data"))
if DATA_ROOT.is_dir():
    # code under test finds the pack the way users' runs do: through the setting
    os.environ.setdefault("IRC_DATA_ROOT", str(DATA_ROOT))


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA_ROOT.is_dir():
        pytest.skip(f"data pack not found at {DATA_ROOT} (set IRC_DATA_ROOT)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def real_rgb(data_root) -> np.ndarray:
    """A 64x80 RGB crop of a real photo, float32 (3, H, W) in [0, 1]."""
    from PIL import Image

    with Image.open(data_root / "CBSD68" / sorted(os.listdir(data_root / "CBSD68"))[0]) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr[100:164, 120:200].transpose(2, 0, 1))


@pytest.fixture(scope="session")
def real_grey(real_rgb) -> np.ndarray:
    """The same crop as luminance, (1, H, W) in [0, 1]."""
    return (real_rgb * np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]).sum(0, keepdims=True)


@pytest.fixture(scope="session")
def example_rgb() -> np.ndarray:
    """A 64x80 RGB crop of the bundled ``examples/chelsea.png`` (no data pack needed), float32
    (3, H, W) in [0, 1]: fur, whiskers and a flat background."""
    from PIL import Image

    with Image.open(Path(__file__).resolve().parents[1] / "examples" / "chelsea.png") as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr[120:184, 200:280].transpose(2, 0, 1))


@pytest.fixture(scope="session")
def example_grey(example_rgb) -> np.ndarray:
    """The same crop as luminance, (1, H, W) in [0, 1]."""
    return (example_rgb * np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]).sum(0, keepdims=True)


@pytest.fixture
def time_limit():
    """Fail (rather than hang) a test that takes more than 20 s (network tests use it)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded 20 s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
