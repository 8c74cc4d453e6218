"""What the commands print: aligned human tables, or JSON on stdout (human text then on stderr)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .results import ALREADY_AT_TARGET, Action, CheckStatus, TenantResult
from .states import State, TenantStatus

if TYPE_CHECKING:
    from .checks import CheckResult


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


class Reporter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.human: TextIO = sys.stderr if as_json else sys.stdout

    def say(self, line: str) -> None:
        self.human.write(line + "\n")

    def warn(self, line: str) -> None:
        sys.stderr.write(f"warning: {line}\n")

    def emit_json(self, payload: object) -> None:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")

    def table(self, rows: Sequence[Sequence[str]]) -> None:
        _table(rows, self.human)

    def statuses(self, rows: list[TenantStatus], empty: str) -> None:
        if self.as_json:
            self.emit_json([r.as_dict() for r in rows])
            return
        if not rows:
            self.say(empty)
            return
        _table(
            [("TENANT", "NAMESPACE", "REVISION", "STATE")]
            + [(r.tenant_id, r.namespace, r.revision or "-", _state(r)) for r in rows],
            self.human,
        )

    def checks(self, results: list[CheckResult]) -> None:
        if self.as_json:
            self.emit_json(
                {
                    "passed": all(r.status in (CheckStatus.PASSED, CheckStatus.SKIPPED) for r in results),
                    "checks": [r.as_dict() for r in results],
                }
            )
        for line in _check_lines(results):
            self.say(line)
        counts = Counter(r.status.value for r in results)
        self.say(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))

    def results(self, results: list[TenantResult], verb: str) -> None:
        for result in results:
            for warning in result.warnings:
                self.warn(f"{result.tenant_id}: {warning}")
        if self.as_json:
            self.emit_json([r.as_dict() for r in results])
        counts = Counter(r.action.value for r in results)
        # A fleet at the target is one line, not a row per tenant; skipped rows show only with news.
        rows = [r for r in results if r.action != Action.SKIPPED or r.message != ALREADY_AT_TARGET]
        if rows:
            _table(
                [(r.tenant_id, r.namespace, r.action.value.upper() if r.failed else r.action.value, _detail(r)) for r in rows],
                self.human,
            )
            for r in rows:
                for line in r.details:
                    self.say(f"  {r.tenant_id}: {line}")
        if not results:
            self.say(f"nothing to {verb}: no tenants found")
        elif counts[Action.SKIPPED.value] == len(results):
            self.say(f"nothing to {verb}: all {len(results)} tenant(s) already at the target revision")
        else:
            self.say(", ".join(f"{n} {action}" for action, n in sorted(counts.items())))


def _check_lines(results: list[CheckResult]) -> list[str]:
    lines = []
    for r in results:
        lines.append(f"{r.status.value.upper():7} {r.name}: {r.message}")
        lines += [f"          {line}" for line in r.evidence[:50]]
        if len(r.evidence) > 50:
            lines.append(f"          ... and {len(r.evidence) - 50} more")
    return lines


def _state(r: TenantStatus) -> str:
    if r.state == State.UNVERSIONED and r.adopt == "unknown":
        return f"unversioned ({r.error})"
    if r.state == State.UNVERSIONED and r.adopt:
        return f"unversioned (matches {r.matches}, adopt: {r.adopt})"
    if r.error:
        return f"{r.state.value}: {r.error}"
    return r.state.value


def _detail(r: TenantResult) -> str:
    if r.incomplete:
        return f"at {r.to_revision or 'base'}: {r.message}"
    if r.action in (Action.ADOPTED, Action.WOULD_ADOPT):
        return r.message
    if r.action == Action.SKIPPED:
        return f"at {r.to_revision or 'base'} ({r.message})"
    if r.action == Action.SCRIPTED:
        return f"at {r.to_revision or 'base'}: {r.message}"
    return f"{r.from_revision or 'base'} -> {r.to_revision or 'base'}" + (f" ({r.message})" if r.message else "")
