"""Errors that reach the user as one line, never as a traceback.

``IrcError`` is what every layer raises for a problem the user can fix (bad input file, unknown
option, missing weights). The CLI prints ``str(err)`` and exits with ``err.exit_code``.
"""

from __future__ import annotations


class IrcError(Exception):
    """A user-facing failure: the message is complete and fits on one line."""

    exit_code = 1


class UsageError(IrcError):
    """Invalid command-line usage or configuration (exit code 2)."""

    exit_code = 2


class ImageReadError(IrcError):
    """An input image could not be decoded. The message names the file."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(IrcError):
    """Weights could not be resolved, downloaded or verified."""


class WeightsNotFoundError(WeightsError, UsageError):
    """The ``--weights`` argument names nothing: no such file and no such manifest name.

    A usage error (exit code 2, like an option that does not exist), where a download or checksum
    failure of weights that do exist stays a :class:`WeightsError` (exit code 1).
    """

    exit_code = 2


def did_you_mean(word: str, choices) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a mistyped ``word``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word).lower(), [str(c) for c in choices], n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
