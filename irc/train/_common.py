"""Small helpers shared by the training modules: stream tags, error lines, time.

Random draws are keyed (``irc.data._common.keyed_rng`` / ``keyed_seed``): these tags keep the
streams of one seed apart.
"""

from __future__ import annotations

import datetime
import errno
from pathlib import Path

from irc.data._common import keyed_rng, keyed_seed
from irc.errors import IrcError

__all__ = ["DEGRADE_STREAM", "METHOD_STREAM", "ORDER_STREAM", "PAIRS_STREAM", "keyed_rng", "keyed_seed", "now", "os_error"]

ORDER_STREAM = 0x6F72  # "or": epoch permutations
DEGRADE_STREAM = 0x6467  # "dg": per-sample degradation parameters
METHOD_STREAM = 0x6D74  # "mt": torch RNG of training_step
PAIRS_STREAM = 0x7072  # "pr": crops of real pair set n (so they do not repeat the clean crops' draws)


def os_error(what: str, path: Path | str, err: BaseException) -> IrcError:
    """One line for a failed write, with a hint when the disk is full."""
    code = getattr(err, "errno", None)
    text = str(err).strip()
    reason = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    if code == errno.ENOSPC or "No space left" in str(err) or "file write failed" in str(err):
        reason = "no space left on device; free some space, then continue with --resume auto"
    return IrcError(f"cannot {what} {path}: {reason}")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
