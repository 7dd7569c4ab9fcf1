"""What a training run tells: ``metrics.jsonl`` (and TensorBoard), progress on stderr, signals."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from irc.train._common import os_error

METRICS = "metrics.jsonl"

# --------------------------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------------------------


class Metrics:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard, on the main process only."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int | None, quiet: bool):
        self.enabled = enabled
        self.path = run_dir / METRICS
        self.tb = None
        self._fh = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            self._truncate(resume_step)
        try:
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as err:
            raise os_error("write", self.path, err) from None
        if importlib.util.find_spec("tensorboard") is None:
            if not quiet:
                print("tensorboard is not installed: metrics go to metrics.jsonl only (pip install tensorboard)", file=sys.stderr)
            return
        from torch.utils.tensorboard import SummaryWriter

        try:
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1)
        except OSError as err:
            raise os_error("write", run_dir / "tensorboard", err) from None

    def _truncate(self, step: int) -> None:
        """Drop records a run wrote after the checkpoint it is resumed from."""
        from irc.atomic import atomic_write_text

        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        try:
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        except OSError as err:
            raise os_error("write", self.path, err) from None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            self._fh.write(json.dumps(record, sort_keys=False) + "\n")
            self._fh.flush()
        except OSError as err:
            raise os_error("write", self.path, err) from None
        if self.tb is None:
            return
        step = record["step"]
        if "event" not in record:  # a skipped step's values are in the JSONL record only
            for prefix in ("loss", "lr", "grad_norm"):
                for group, value in (record.get(prefix) or {}).items():
                    if isinstance(value, (int, float)):
                        self.tb.add_scalar(f"{prefix}/{group}", value, step)
        for key in ("seconds_per_step", "samples_per_second", "data_seconds_per_step", "gflop_per_s"):
            if isinstance(record.get(key), (int, float)):
                self.tb.add_scalar(f"perf/{key}", record[key], step)
        if "nonfinite" in record:
            self.tb.add_scalar("nonfinite/total", record["nonfinite"], step)
        val = record.get("validation")
        if val:
            for key in ("psnr", "ssim", "sam"):
                if key in val:
                    self.tb.add_scalar(f"val/{val['dataset']}/{key}", val[key], step)

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        if self.tb is not None:
            with contextlib.suppress(Exception):
                self.tb.close()
            self.tb = None


class Signals:
    """SIGINT / SIGTERM set a flag that the loop reads at the end of each step."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Progress:
    """A rich progress bar on stderr (main process, a terminal, not ``--quiet``), else log lines."""

    def __init__(self, total: int, done: int, *, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.lines = False
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            self.lines = True
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console,
        )  # fmt: skip
        self.task = self.bar.add_task("train", total=total, completed=done, loss="", rate="")
        self.bar.start()

    def update(self, step: int, loss: str, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss, rate=f"{rate:.2f} it/s")

    def line(self, text: str) -> None:
        if self.lines:
            print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def format_losses(losses: Mapping[str, float]) -> str:
    return " ".join(f"{g}={v:.4g}" for g, v in losses.items())


def eta_text(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


