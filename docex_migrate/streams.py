"""stdout and stderr that a reader going away cannot stop: ``docex-migrate upgrade ... | head -1``.

Python ignores SIGPIPE, so a write into a pipe nobody reads any more raises BrokenPipeError,
which would stop a migration half way (after its tenant's commit, before the ledger hears of
it) or turn a read-only command into an error. As the command-line tools people know do, the
output is then dropped, and the command goes on to its end and its own exit code: the run
finishes and is recorded as it went, whoever stopped reading.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class _Forgiving:
    """A text stream whose writes go nowhere once its reader has gone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
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
        setattr(sys, name, _Forgiving(stream))
