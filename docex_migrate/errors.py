"""The exception hierarchy and the exit codes it maps to (caught in one place: cli.main)."""

import signal
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # some tenant or check failed
EXIT_USAGE = 2  # bad usage, input, configuration or connection


class DocexMigrateError(Exception):
    """Base class: a one-line message that says what is wrong and how to fix it."""

    exit_code = EXIT_USAGE
    # A tenant's failure (exit 1) may carry the tenants' results, for the command's report
    # (deprovision's: its tenant, failed, with this message).
    results: list[Any] | None = None


class ConfigError(DocexMigrateError):
    """The configuration file or environment is invalid."""


class InvalidTenantError(DocexMigrateError):
    """A tenant id, or the namespace it would produce, is refused."""


class RevisionError(DocexMigrateError):
    """A revision named by the user is unknown or ambiguous."""


class DatabaseUnavailableError(DocexMigrateError):
    """The database cannot be reached (message never carries a password)."""


class UsageError(DocexMigrateError):
    """Conflicting or missing options."""


class ToolMissingError(DocexMigrateError):
    """An external tool a check needs (squawk) is not installed: the check cannot run."""


class UnsupportedStepError(DocexMigrateError):
    """A revision asked for what a tenant's single transaction cannot give (a per-tenant failure)."""


class TenantNotFoundError(DocexMigrateError):
    """The tenant's namespace does not exist (a per-tenant failure, not bad usage)."""

    exit_code = EXIT_FAILED


class TenantMovedError(DocexMigrateError):
    """undo found, under the tenant's lock, that another run has moved it since the run being
    undone: it is left alone (skipped, not failed)."""

    exit_code = EXIT_FAILED

    def __init__(self, now_at: str | None, left_at: str, *, recreated: bool = False) -> None:
        if recreated:
            why = f"dropped and created again since the run being undone (now at {now_at or 'base'}): not the one it moved"
        else:
            why = f"moved since the run being undone (now at {now_at or 'base'}, it left it at {left_at})"
        super().__init__(f"{why}: left alone")
        self.now_at = now_at


class TenantBusyError(DocexMigrateError):
    """Another process held the tenant's lock past the wait allowed (a per-tenant failure)."""

    exit_code = EXIT_FAILED


class DeprovisionRefusedError(DocexMigrateError):
    """deprovision stopped before dropping anything: the tenant is in use, something outside
    it depends on it, or its backup could not be written or verified."""

    exit_code = EXIT_FAILED


class RestoreRefusedError(DocexMigrateError):
    """restore will not bring this backup back as this tenant (it exists, the backup is not its,
    not intact, or at a revision this chain does not know): nothing changed, exit 2."""


class TenantNotReadyError(DocexMigrateError):
    """ensure_tenant could not bring a tenant to head (that tenant's failure, not bad usage)."""

    exit_code = EXIT_FAILED


class RecognitionError(DocexMigrateError):
    """adopt could not recognise or repair a tenant (that tenant's failure)."""

    exit_code = EXIT_FAILED


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run (the CLI turns both into this; a library caller's
    Ctrl-C is a plain KeyboardInterrupt, which the executors treat alike).

    A KeyboardInterrupt, not an Exception: no ``except Exception`` on the way swallows it, and
    each tenant's transaction context manager rolls back as it passes. ``results`` holds every
    tenant's outcome once migrating had begun: done, rolled back, or not attempted."""

    def __init__(self, signum: int = signal.SIGINT, results: list[Any] | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.results = results

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal killed: 130, 143
