"""User-facing errors: one line, naming the field or file, exit code 2 from the CLI."""

from __future__ import annotations

import difflib


class OnemlError(ValueError):
    """A problem with the user's input; its message is shown as a single line."""


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' (did you mean X?)' for the nearest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, choices: list[str] | tuple[str, ...]) -> OnemlError:
    listed = ", ".join(sorted(choices))
    return OnemlError(f"unknown {kind} {name!r}{did_you_mean(name, choices)}; known: {listed}")


class Interrupted(BaseException):
    """A run stopped by a signal (SIGTERM) on purpose: it ends KILLED and resumes when rerun; the CLI exits with
    128 + the signal's number. Not a KeyboardInterrupt, which the CLI framework would turn into a silent exit."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum
