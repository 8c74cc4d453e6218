"""stdout and stderr that a reader going away cannot stop: ``docex-migrate upgrade ... | head -1``.

Python ignores SIGPIPE, so a write into a pipe nobody reads any more raises BrokenPipeError,
which would stop a migration half way (after its tenant's commit, before the ledger hears of
it) or turn a read-only command into an error. As the command-line tools people know do, the
output is then dropped, and the command goes on to its end and its own exit code: the run
finishes and is recorded as it went, whoever stopped reading.

Output that cannot be written for another reason (a full disk: ``> /dev/full``, an I/O error)
is dropped the same way, so the run is never stopped half way either; but then what the
operator asked for is lost, so the command says so on the other stream at its end (not after a
JSON report on stdout, which it would spoil) and, had it otherwise succeeded, exits 1 instead of
0 (as ``cat`` does): a pipeline must not take a truncated JSON report for a whole one.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class _Forgiving:
    """A text stream whose writes go nowhere once its reader has gone, or it cannot be written."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self.name = name
        self.lost: OSError | None = None  # why output was dropped (not for a reader gone away)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._drop(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._drop(exc)

    def _drop(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError) and self.lost is None:
            self.lost = exc
        self._to_devnull()

    def _to_devnull(self) -> None:
        # The file descriptor itself now points at /dev/null: what is still buffered, and the
        # final flush as Python exits, go there too, instead of raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the stream's own
        return getattr(self._stream, name)


def forgive_closed_pipes() -> None:
    """Wrap sys.stdout and sys.stderr, for the life of the process (the command line calls it
    first). A stream closed before the process started (``2>&-``) is /dev/null."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            stream = open(os.devnull, "w")
        setattr(sys, name, _Forgiving(stream, name))


_json_on_stdout = False


def carries_json() -> None:
    """stdout holds a JSON document: nothing else may be written after it (see lost_output)."""
    global _json_on_stdout
    _json_on_stdout = True


def lost_output() -> dict[str, str | None]:
    """For each of stdout and stderr whose output was dropped because it could not be written (a
    full disk...), after flushing what is left: its name -> one line saying so, to be written on
    the other stream (None: nothing can be said there); empty when all was written."""
    lines: dict[str, str | None] = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _Forgiving):
            stream.flush()
            if stream.lost is not None:
                why = stream.lost.strerror or str(stream.lost)
                # on stdout, a line after the JSON would spoil the report: then only exit 1 tells
                spoils = name == "stderr" and _json_on_stdout
                lines[name] = (
                    None if spoils else f"docex-migrate: {name} could not be written ({why}): what it printed there is lost"
                )
    return lines
