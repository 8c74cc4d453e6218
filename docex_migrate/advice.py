"""The `docex-migrate ...` commands printed for the user to run next, all spelled by one function
so that each runs as printed from any directory: with ``--config FILE`` (absolute, quoted for a
shell) whenever the settings came from a configuration file (``--config``, ``$DOCEX_CONFIG`` or
``~/.docex/config.yaml``), and every argument quoted for a shell. Pure."""

from __future__ import annotations

import shlex

from .config import Settings


def command(settings: Settings | None, *args: str) -> str:
    """`docex-migrate [--config FILE] ARGS...`, as a user pastes it into a shell."""
    config = ("--config", str(settings.source.absolute())) if settings is not None and settings.source is not None else ()
    return " ".join(["docex-migrate", *map(shlex.quote, (*config, *args))])
