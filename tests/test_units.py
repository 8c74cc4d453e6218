"""Unit tests beside the scenario tests: the executor's scheduling with a fake backend, the
chain's revision names, the manifest, snapshot differences, the planner and the reporter.
No database: each proves one module's logic on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from docex_migrate import manifest
from docex_migrate.backends import NamespaceState
from docex_migrate.backends.sqlite import SqliteBackend
from docex_migrate.chain import alembic_config, load_chain, script_location
from docex_migrate.config import Settings, parse_settings
from docex_migrate.errors import RevisionError
from docex_migrate.executors import WorkItem, execute
from docex_migrate.reporting import Reporter
from docex_migrate.results import ALREADY_AT_TARGET, Action, CommandReport, TenantResult
from docex_migrate.snapshot import differences
from docex_migrate.states import State, plan, state_of

CHAIN = load_chain()


class FakeBackend(SqliteBackend):
    """Installs fresh tenants by recording them; the tenants named in ``failing`` fail."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__("fake/{tenant_id}.db")
        self.failing = failing
        self.installed: list[str] = []

    def install_fresh(self, tenant_id: str, template: Any, target: str) -> str | None:
        if tenant_id in self.failing:
            raise RuntimeError(f"{tenant_id} fails on purpose")
        self.installed.append(tenant_id)
        return f"fake:{tenant_id}"  # the installed namespace's identity

    @contextmanager
    def transaction(self, tenant_id: str, *, create: bool) -> Iterator[Any]:  # never reached here
        raise AssertionError("the fake backend only installs fresh tenants")
        yield


def items(*tenant_ids: str) -> list[WorkItem]:
    return [WorkItem(t, f"ns_{t}", None, CHAIN.head, create=True, action=Action.PROVISIONED, fresh=True) for t in tenant_ids]


def run(backend: FakeBackend, work: list[WorkItem], max_failures: int | None = None) -> list[TenantResult]:
    return execute(Settings(), backend, work, max_failures=max_failures, template="recording")


def test_the_serial_executor_keeps_order_and_returns_failures_as_values():
    backend = FakeBackend(failing={"b"})
    results = run(backend, items("a", "b", "c"))
    assert [(r.tenant_id, r.action) for r in results] == [
        ("a", Action.PROVISIONED),
        ("b", Action.FAILED),
        ("c", Action.PROVISIONED),
    ]
    assert results[1].message == "RuntimeError: b fails on purpose" and results[1].to_revision is None
    assert backend.installed == ["a", "c"]


def test_max_failures_stops_handing_out_tenants_and_reports_the_rest_not_run():
    backend = FakeBackend(failing={"b", "c"})
    results = run(backend, items("a", "b", "c", "d", "e"), max_failures=2)
    assert [r.action for r in results] == [Action.PROVISIONED, Action.FAILED, Action.FAILED, Action.NOT_RUN, Action.NOT_RUN]
    assert backend.installed == ["a"]
    assert all(r.message == "not attempted: stopped after 2 failure(s)" for r in results[3:])
    assert all(r.incomplete for r in results[1:]) and not results[0].incomplete


def test_chain_resolves_names_prefixes_and_refuses_relative_or_unknown_ones():
    assert CHAIN.resolve("head") == CHAIN.head and CHAIN.resolve("heads") == CHAIN.head
    assert CHAIN.resolve("base") is None
    assert CHAIN.resolve(CHAIN.order[1][:2]) == CHAIN.order[1]  # a unique prefix
    for bad in ("+1", "-1", "head-1", "s1@s2", "nonexistent"):
        with pytest.raises(RevisionError):
            CHAIN.resolve(bad)
    assert CHAIN.position(None) == -1 and CHAIN.position(CHAIN.head) == len(CHAIN.order) - 1


def test_the_chain_is_parsed_once_per_process():
    assert load_chain() is CHAIN
    built: list[int] = []
    assert CHAIN.cached("unit-test", lambda: built.append(1) or "x") == "x"
    assert CHAIN.cached("unit-test", lambda: built.append(1) or "y") == "x"
    assert built == [1]


def test_manifest_chains_checksums_and_finds_edits_reorders_and_new_files(tmp_path: Path):
    files = []
    for name, text in (("a.py", "a"), ("b.py", "b"), ("c.py", "c")):
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    released = manifest.chained(files[:2])
    assert manifest.compare(released, manifest.chained(files)) == ([], ["c.py"])
    (tmp_path / "a.py").write_text("a edited")
    problems, _ = manifest.compare(released, manifest.chained(files))
    assert problems == ["released revision a.py was edited after release (its checksum differs)"]
    problems, _ = manifest.compare(released, manifest.chained([files[1], files[0]]))
    assert "reordered" in problems[0]
    manifest.write(tmp_path / "revisions.sum", released)
    assert manifest.read(tmp_path / "revisions.sum") == released
    assert manifest.read(tmp_path / "missing.sum") is None


def test_snapshot_differences_name_each_place():
    expected = {"tables": {"t": {"columns": {"a": {"type": "TEXT"}}, "indexes": {"i": 1}}}}
    actual = {"tables": {"t": {"columns": {"a": {"type": "INTEGER"}, "b": {"type": "TEXT"}}, "indexes": {}}}}
    assert differences(expected, actual) == [
        "tables.t.columns.a.type: expected 'TEXT', found 'INTEGER'",
        "extra tables.t.columns.b: {'type': 'TEXT'}",
        "missing tables.t.indexes.i: 1",
    ]
    assert differences(expected, expected) == []


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (NamespaceState(exists=False), (None, State.MISSING)),
        (NamespaceState(exists=True, error="boom"), (None, State.UNREADABLE)),
        (NamespaceState(exists=True, table_count=3), (None, State.UNVERSIONED)),
        (NamespaceState(exists=True, versioned=True), (None, State.BEHIND)),
        (NamespaceState(exists=True, versioned=True, revisions=("zzz",)), ("zzz", State.AHEAD)),
        (NamespaceState(exists=True, versioned=True, revisions=("a", "b")), ("a,b", State.CORRUPT)),
    ],
)
def test_state_of(state, expected):
    assert state_of(CHAIN, state) == expected


def test_the_planner_skips_refuses_or_hands_to_alembic():
    settings = parse_settings({}, Path("/etc/docex dir/docex.yaml"))
    head = NamespaceState(exists=True, versioned=True, revisions=(CHAIN.head,))
    first = NamespaceState(exists=True, versioned=True, revisions=(CHAIN.order[0],))
    skipped = plan(CHAIN, "t", "ns", head, CHAIN.head, downgrade=False, settings=settings)
    assert skipped is not None and (skipped.action, skipped.message) == (Action.SKIPPED, ALREADY_AT_TARGET)
    assert plan(CHAIN, "t", "ns", first, CHAIN.head, downgrade=False, settings=settings) is None
    assert plan(CHAIN, "t", "ns", head, CHAIN.order[0], downgrade=True, settings=settings) is None
    refused = plan(CHAIN, "t", "ns", NamespaceState(exists=True, table_count=2), CHAIN.head, downgrade=False, settings=settings)
    assert refused is not None and refused.action == Action.NEEDS_ADOPT and "adopt t" in refused.message
    missing = plan(CHAIN, "t", "ns", NamespaceState(exists=False), CHAIN.head, downgrade=False, settings=settings)
    assert missing is not None and missing.failed and "provision t" in missing.message
    # the commands it names carry the configuration file, quoted for a shell
    assert "`docex-migrate --config '/etc/docex dir/docex.yaml' provision t`" in missing.message


def test_the_reporter_prints_a_table_a_summary_and_json(capsys):
    results = [
        TenantResult("a", "ns_a", Action.UPGRADED, "r1", "r2"),
        TenantResult("b", "ns_b", Action.FAILED, "r1", "r1", "boom"),
        TenantResult("c", "ns_c", Action.SKIPPED, "r2", "r2", ALREADY_AT_TARGET),
    ]
    Reporter(as_json=False).results(CommandReport("upgrade", results))
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["a", "ns_a", "upgraded", "r1", "->", "r2"]
    assert out[1].split()[:4] == ["b", "ns_b", "FAILED", "at"] and out[1].endswith("boom")
    assert out[2] == "1 failed, 1 skipped, 1 upgraded"  # the skipped row without news is not listed
    Reporter(as_json=True).results(CommandReport("upgrade", results, run_id="r-1", target="r2"))
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [r["action"] for r in report["tenants"]] == ["upgraded", "failed", "skipped"]
    assert (report["run_id"], report["target"], report["ok"]) == ("r-1", "r2", False)
    assert report["counts"] == {"failed": 1, "skipped": 1, "upgraded": 1}
    assert "1 failed" in captured.err
    Reporter(as_json=False).results(CommandReport("upgrade", [results[2]]))
    assert capsys.readouterr().out == "nothing to upgrade: all 1 tenant(s) already at the target revision\n"


def test_alembic_options_are_there_when_read(chain_copy):
    """The Config a tenant's migration gets parses its options only when they are read: a
    revision reading or setting one still finds the chain's script_location beside it."""
    config = alembic_config(tenant_id="acme")
    assert config.get_main_option("script_location") == str(script_location()) == str(chain_copy)
    config.set_main_option("sqlalchemy.url", "sqlite://")
    assert (config.get_main_option("sqlalchemy.url"), config.get_main_option("script_location")) == ("sqlite://", str(chain_copy))
    assert config.attributes["tenant_id"] == "acme"


ENDING_STATEMENTS = [
    "COMMIT",
    "-- note\nCOMMIT",
    "/* c */ COMMIT",
    "/* a /* nested */ b */ commit",
    "SELECT 1; COMMIT",
    "commit;",
    "END",
    "abort",
    "ROLLBACK",
    "rollback work",
    "ROLLBACK TRANSACTION AND CHAIN",
    "COMMIT AND CHAIN",
    "PREPARE TRANSACTION 'x'",
    "select 'x;'; end",
    "select $$;$$; commit",
    "select $a$ $$ ; $a$;rollback",
    "select E'\\';'; commit",
    "SELECT 1 AS b\U0001f600$$; COMMIT; SELECT 2 AS c\U0001f600$$",  # any non-ASCII character is a letter
    "SELECT 1; --c\rCOMMIT",  # a comment ends at a carriage return too
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; END",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END; COMMIT",
    "CREATE FUNCTION begin() RETURNS int LANGUAGE sql AS 'select 1'; END",
    "CREATE FUNCTION f(begin atomic) RETURNS int LANGUAGE sql AS 'select 1'; END",
]
NOT_ENDING = [
    "SELECT 1",
    "ROLLBACK TO SAVEPOINT x",
    "rollback work to x",
    "rollback to x",
    "RELEASE SAVEPOINT x",
    "select 'commit'",
    "-- commit\nselect 1",
    "/* commit */ select 1",
    "/* a /* commit */ */ select 1",
    "select $$; commit$$",
    "PREPARE q AS SELECT 1",
    "select 'a'';commit'",
    'select "x;commit"',
    "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.x := format('%%s', 1); RETURN NEW; END $$",
    "CREATE FUNCTION f() RETURNS void AS $body$ BEGIN COMMIT; END $body$ LANGUAGE plpgsql",
    "select E'\\'; commit'",
    "SELECT 1 AS end_",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
    "create or replace procedure p() language sql begin atomic select case when true then 1 end; select 2; end;",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC END",
]


@pytest.mark.parametrize("statement", ENDING_STATEMENTS)
def test_statements_that_end_the_transaction_are_seen_in_any_spelling(statement):
    from docex_migrate.backends.postgresql import ends_transaction

    assert ends_transaction(statement)


@pytest.mark.parametrize("statement", NOT_ENDING)
def test_statements_that_only_mention_an_end_pass(statement):
    """Quoted text, comments and function bodies are not statements (a function's COMMIT is
    refused by the server itself inside our explicit transaction)."""
    from docex_migrate.backends.postgresql import ends_transaction

    assert not ends_transaction(statement)


def test_a_backslash_escapes_a_quote_only_when_standard_conforming_strings_is_off():
    """With standard_conforming_strings off the server reads 'a\\'' as one string, then COMMIT."""
    from docex_migrate.backends.postgresql import ends_transaction

    statement = "select 'a\\''; commit; select 'x'"
    assert ends_transaction(statement, standard_strings=False)
    assert not ends_transaction(statement)
    assert not ends_transaction("select 'a\\'; commit'", standard_strings=False)
