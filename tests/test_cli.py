"""Every command through typer's CliRunner, on real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest
import sqlalchemy as sa
import yaml
from helpers import (
    cli,
    database_section,
    head_tables,
    migrate_to,
    reported,
    tenant_engine,
    tenant_snapshot,
    version_of,
    write_config,
)

from docex_migrate.chain import load_chain
from docex_migrate.cli import app

HEAD = load_chain().head


def table_names(env, tenant_id: str) -> set[str]:
    return set(tenant_snapshot(env, tenant_id)["tables"])


def test_main_job_end_to_end(env):
    result = cli("provision", "acme_corp", "globex_corp")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("provisioned") == 3  # two rows and the summary "2 provisioned"

    rows = json.loads(cli("status", "--json").stdout)
    assert [(r["tenant_id"], r["revision"], r["state"]) for r in rows] == [
        ("acme_corp", HEAD, "current"),
        ("globex_corp", HEAD, "current"),
    ]
    assert rows[0]["namespace"] == env.namespace("acme_corp")

    result = cli("upgrade", "--all-tenants")
    assert result.exit_code == 0
    assert "nothing to upgrade" in result.stdout

    result = cli("downgrade", "base", "--tenant", "acme_corp", "--yes")
    assert result.exit_code == 0, result.output
    assert table_names(env, "acme_corp") == set()
    assert version_of(env, "acme_corp") == ()
    status = {r["tenant_id"]: r for r in json.loads(cli("status", "--json").stdout)}
    assert (status["acme_corp"]["revision"], status["acme_corp"]["state"]) == (None, "behind")
    assert status["globex_corp"]["state"] == "current"

    result = cli("upgrade", "--tenant", "acme_corp")
    assert result.exit_code == 0, result.output
    assert version_of(env, "acme_corp") == (HEAD,)
    assert table_names(env, "acme_corp") == head_tables()


def test_upgrade_and_downgrade_to_a_named_revision(env):
    cli("provision", "acme_corp")
    result = cli("downgrade", "s4", "--tenant", "acme_corp", "--yes", "--json")  # a unique prefix
    assert result.exit_code == 0, result.output
    (row,) = reported(result.stdout)
    assert (row["action"], row["from_revision"], row["to_revision"]) == ("downgraded", HEAD, "s4_docex_2_6_1")
    assert version_of(env, "acme_corp") == ("s4_docex_2_6_1",)
    assert cli("status", "--tenant", "acme_corp", "--json").stdout.count('"behind"') == 1
    result = cli("upgrade", "s6_docex_2_8_8", "--all-tenants")
    assert result.exit_code == 0
    assert version_of(env, "acme_corp") == ("s6_docex_2_8_8",)
    # Already past the target: skipped, nothing runs.
    result = cli("upgrade", "s5_docex_2_8_4", "--tenant", "acme_corp")
    assert result.exit_code == 0 and "nothing to upgrade" in result.stdout
    assert version_of(env, "acme_corp") == ("s6_docex_2_8_8",)


def test_status_and_tenants_create_nothing(env):
    before = env.everything()
    result = cli("status", "--tenant", "ghost", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {"tenant_id": "ghost", "namespace": env.namespace("ghost"), "revision": None, "state": "missing"}
    ]
    assert cli("status").stdout.strip() == "no tenants found"
    assert cli("tenants").stdout.strip() == "no tenants found"
    assert json.loads(cli("tenants", "--json").stdout) == []
    assert env.everything() == before


def test_tenants_lists_discovered_namespaces(env):
    cli("provision", "acme_corp", "b2")
    rows = json.loads(cli("tenants", "--json").stdout)
    assert rows == [
        {"tenant_id": "acme_corp", "namespace": env.namespace("acme_corp")},
        {"tenant_id": "b2", "namespace": env.namespace("b2")},
    ]
    assert cli("tenants").stdout.splitlines() == [f"acme_corp\t{env.namespace('acme_corp')}", f"b2\t{env.namespace('b2')}"]


BAD_IDS = ["Acme", "acme;drop", "acme'", "../etc", "a/b", "acme\x00", "ａcme", " acme", "x" * 64, "_docex_system_", "acme.corp"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_tenant_ids_change_nothing(env, bad):
    before = env.everything()
    result = cli("provision", "good_one", bad)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid tenant id"), result.stderr
    assert "Traceback" not in result.output
    assert env.everything() == before  # not even the valid one was created


@pytest.mark.parametrize(
    "args, message",
    [
        (["upgrade", "nonexistent_rev", "--all-tenants"], "unknown revision"),
        (["upgrade", "+1", "--all-tenants"], "relative revision"),
        (["downgrade", "zzz", "--all-tenants", "--yes"], "unknown revision"),
        (["upgrade", "--tenant", "x", "--all-tenants"], "exclude each other"),
        (["upgrade"], "--all-tenants"),
        (["downgrade", "base", "--all-tenants"], "--yes"),
        (["status", "--tenant", "Bad;Id"], "invalid tenant id"),
        # found in review: str.isdigit() took other scripts' digits (٠/٣ ran shard 0 of 3; ² crashed in int())
        (["upgrade", "--all-tenants", "--shard", "\u0660/\u0663"], "use K/N"),
        (["upgrade", "--all-tenants", "--shard", "0/\uff13"], "use K/N"),
        (["status", "--shard", "\u00b2/3"], "use K/N"),
    ],
)
def test_bad_usage_exits_2_with_one_line(env, args, message):
    cli("provision", "acme_corp")
    before = (env.everything(), tenant_snapshot(env, "acme_corp"))
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (env.everything(), tenant_snapshot(env, "acme_corp")) == before


@pytest.mark.parametrize("flag", ["--lock-timeout", "--statement-timeout", "--tenant-lock-wait"])
@pytest.mark.parametrize("value", ["inf", "nan", "1e12", "1e300", "-1"])
def test_out_of_range_timeouts_exit_2_before_any_tenant(env, flag, value):
    # PostgreSQL takes int milliseconds up to 2147483647, sqlite3 the same: refused up front,
    # not as one OverflowError or "invalid value for parameter" per tenant.
    migrate_to(env, "acme_corp", "s4_docex_2_6_1")
    before = (env.everything(), tenant_snapshot(env, "acme_corp"))
    result = cli("upgrade", "--all-tenants", f"{flag}={value}")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag[2:]} must be") and "2147483" in lines[0], result.stderr
    assert (env.everything(), tenant_snapshot(env, "acme_corp")) == before


def _backend_with_timeouts(env, seconds: float):
    from dataclasses import replace

    from docex_migrate.backends import backend_for
    from docex_migrate.config import Timeouts

    timeouts = Timeouts(lock_timeout=seconds, statement_timeout=seconds, tenant_lock_wait=seconds)
    return backend_for(replace(env.settings, timeouts=timeouts))


@pytest.mark.postgres
@pytest.mark.parametrize("seconds, shown", [(0.0004, "1ms"), (1.1, "1100ms"), (0, "0")])
def test_postgres_timeouts_round_up_never_to_no_limit(pg_env, seconds, shown):
    # PostgreSQL takes whole milliseconds and 0 means "no limit": 0.4 ms must be 1 ms, not 0.
    backend = _backend_with_timeouts(pg_env, seconds)
    try:
        with backend.transaction("acme_corp", create=True) as conn:
            assert [conn.exec_driver_sql(f"SHOW {name}").scalar() for name in ("lock_timeout", "statement_timeout")] == [
                shown
            ] * 2
    finally:
        backend.dispose()


def test_no_limit_on_sqlite_is_its_longest_wait_not_no_wait(sqlite_env):
    # sqlite3 has no "no limit": 0 becomes its longest wait; a longer one overflowed to 0, no waiting at all.
    from docex_migrate.config import MAX_TIMEOUT_SECONDS

    backend = _backend_with_timeouts(sqlite_env, 0)
    with backend.transaction("acme_corp", create=True) as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == MAX_TIMEOUT_SECONDS * 1000


def test_timeout_help_states_the_bound():
    result = cli("upgrade", "--help")
    assert result.exit_code == 0 and result.stdout.count("2147483") >= 3


def test_a_path_template_with_an_escaped_placeholder_is_refused_before_anything(sqlite_env):
    # '{{tenant_id}}' formats to the literal '{tenant_id}': every tenant would be one file, and
    # `deprovision globex --yes` deleted acme-corp's data.
    config = sqlite_env.workdir / "escaped.yaml"
    config.write_text(yaml.safe_dump({"database": {"sqlite": {"path_template": "storage/{{tenant_id}}/docex.db"}}}))
    for args in (["provision", "acme-corp"], ["tenants"], ["deprovision", "globex", "--yes"], ["status"]):
        result = cli(*args, "--config", str(config))
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "database.sqlite.path_template" in lines[0] and "plain {tenant_id} field" in lines[0]
    assert not (sqlite_env.workdir / "storage").exists()


def test_a_two_row_version_table_is_reported_corrupt_not_ahead(env):
    cli("provision", "acme_corp")
    engine = tenant_engine(env, "acme_corp")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('r2')")
    engine.dispose()
    before = tenant_snapshot(env, "acme_corp")
    (row,) = json.loads(cli("status", "--json").stdout)
    assert row == {
        "tenant_id": "acme_corp",
        "namespace": env.namespace("acme_corp"),
        "revision": f"{HEAD},r2",
        "state": "corrupt",
    }
    human = cli("status")
    assert "corrupt" in human.stdout and human.exit_code == 1
    expected = f"has 2 rows in alembic_version ({HEAD}, r2): a corrupt or branched version table"
    for args in (
        ["upgrade", "--tenant", "acme_corp"],
        ["downgrade", "base", "--all-tenants", "--yes"],
        ["provision", "acme_corp", "--exist-ok"],
        ["provision", "acme_corp"],
        ["adopt", "acme_corp"],
    ):
        result = cli(*args, "--json")
        assert result.exit_code == 1, result.output
        (done,) = reported(result.stdout)
        assert done["action"] == "failed" and expected in done["message"] and "newer docex-migrate" not in done["message"]
    assert tenant_snapshot(env, "acme_corp") == before


def test_status_help_names_every_state():
    states = ("current", "behind", "ahead", "corrupt", "unversioned", "missing", "unreadable")
    assert all(state in cli("status", "--help").stdout for state in states)


def test_a_directory_as_config_exits_2_with_one_line(tmp_path):
    result = cli("status", "--config", str(tmp_path))
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: config file {str(tmp_path)!r} named by --config is a directory, not a file: name the YAML file itself"
    )


def test_a_url_without_a_database_exits_2_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCEX_CONFIG", raising=False)
    monkeypatch.setenv("DOCEX_DATABASE_URL", "postgresql://postgres:hunter2-secret@127.0.0.1:5432")
    result = cli("provision", "acme_corp")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "names no database" in lines[0] and "None" not in lines[0] and "hunter2" not in result.output


def test_connection_messages_never_say_none_for_a_missing_database_name():
    from docex_migrate.backends.postgresql import PostgresBackend

    backend = PostgresBackend(sa.engine.make_url("postgresql+psycopg://u@db:5432"), "tenant_{tenant_id}")
    error = sa.exc.OperationalError("connect", {}, Exception('FATAL:  database "u" does not exist'))
    message = backend._explain(error)
    assert "None" not in message and "None" not in backend.where(), message
    assert "database.postgres.database" in message


def test_schema_template_problems_are_config_errors(env, monkeypatch, tmp_path):
    config = yaml.safe_load(env.config_file.read_text())
    block = "postgres" if env.kind == "postgres" else "sqlite"
    key = "schema_template" if env.kind == "postgres" else "path_template"
    for template in ("no_placeholder", "x';drop table y;--{tenant_id}", "{tenant_id}/../../../x"):
        config["database"][block][key] = template
        env.config_file.write_text(yaml.safe_dump(config))
        before = env.everything()
        result = cli("provision", "acme_corp")
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: database.") or "leaves" in result.stderr
        assert env.everything() == before


def test_malformed_config_is_refused(env):
    env.config_file.write_text("database: [unclosed\n")
    result = cli("provision", "acme_corp")
    assert result.exit_code == 2
    assert "not valid YAML at line" in result.stderr
    assert not (env.workdir / "storage").exists()


def test_provision_of_an_existing_tenant(env):
    assert cli("provision", "acme_corp").exit_code == 0
    result = cli("provision", "acme_corp")
    assert result.exit_code == 1
    assert "already exists" in result.stdout and "--exist-ok" in result.stdout
    result = cli("provision", "acme_corp", "--exist-ok")
    assert result.exit_code == 0
    assert "nothing to provision" in result.stdout


def test_row_level_refuses_until_enabled(env):
    config = yaml.safe_load(env.config_file.read_text())
    config["security"]["multi_tenancy_model"] = "row_level"
    config["logging"] = {"level": "INFO"}
    env.config_file.write_text(yaml.safe_dump(config))
    before = env.everything()
    result = cli("provision", "acme_corp")
    assert result.exit_code == 2
    assert "row_level" in result.stderr and "--enable-multi-tenancy" in result.stderr
    assert env.everything() == before

    result = cli("provision", "acme_corp", "--enable-multi-tenancy")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(env.config_file.read_text())
    assert written["security"] == {"multi_tenancy_model": "database_level", "tenant_database_routing": True}
    assert written["logging"] == {"level": "INFO"} and written["database"] == config["database"]
    assert version_of(env, "acme_corp") == (HEAD,)


def test_verify_leaves_no_trace(env):
    result = cli("provision", "acme_corp", "--verify")
    assert result.exit_code == 0, result.output
    assert "verified" in result.stdout
    engine = tenant_engine(env, "acme_corp")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM docbasket")).scalar() == 0
    engine.dispose()


def test_verify_fails_when_an_index_is_missing(env):
    cli("provision", "acme_corp")
    engine = tenant_engine(env, "acme_corp")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX idx_document_basket_name")
    engine.dispose()
    result = cli("provision", "acme_corp", "--exist-ok", "--verify")
    assert result.exit_code == 1
    assert "index idx_document_basket_name is missing" in result.stdout


def test_one_failing_tenant_does_not_stop_the_others_and_stays_untouched(env):
    for tenant in ("a1", "b2", "c3"):
        migrate_to(env, tenant, "s4_docex_2_6_1")
    # b2 already has the third index S5 creates: S5 fails there after creating two indexes.
    engine = tenant_engine(env, "b2")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX idx_document_metadata_doc_key_value ON document_metadata(id)")
    engine.dispose()
    before = tenant_snapshot(env, "b2")

    result = cli("upgrade", "--all-tenants", "--json")
    assert result.exit_code == 1
    rows = {r["tenant_id"]: r for r in reported(result.stdout)}
    assert rows["a1"]["action"] == rows["c3"]["action"] == "upgraded"
    assert rows["b2"]["action"] == "failed"
    assert rows["b2"]["to_revision"] == "s4_docex_2_6_1"
    assert "idx_document_metadata_doc_key_value" in rows["b2"]["message"]
    assert version_of(env, "a1") == version_of(env, "c3") == (HEAD,)
    # Atomic: b2 is exactly as it was, without the two indexes S5 created before failing.
    assert version_of(env, "b2") == ("s4_docex_2_6_1",)
    assert tenant_snapshot(env, "b2") == before
    assert "b2" in result.stderr and "FAILED" in result.stderr


def test_unversioned_tenant_with_tables_is_not_touched(env):
    migrate_to(env, "legacy", HEAD)
    engine = tenant_engine(env, "legacy")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
    before = tenant_snapshot(env, "legacy")
    status = json.loads(cli("status", "--json").stdout)
    assert [(r["tenant_id"], r["state"]) for r in status] == [("legacy", "unversioned")]
    result = cli("upgrade", "--all-tenants")
    assert result.exit_code == 1
    assert "no alembic_version" in result.stdout
    assert tenant_snapshot(env, "legacy") == before


def test_upgrade_of_a_missing_tenant_fails_and_creates_nothing(env):
    before = env.everything()
    result = cli("upgrade", "--tenant", "ghost")
    assert result.exit_code == 1
    assert "does not exist" in result.stdout and "provision" in result.stdout
    assert env.everything() == before


def test_history_and_heads():
    result = cli("heads")
    assert result.exit_code == 0 and result.stdout.strip() == HEAD
    history = cli("history").stdout.splitlines()
    order = load_chain().order
    assert len(history) == len(order)
    assert history[0].startswith(f"{order[-2]} -> {HEAD} (head)")
    assert history[-1].startswith("<base> -> s1_docex_0_2_0,")
    rows = json.loads(cli("history", "--json").stdout)
    assert [r["revision"] for r in rows][::-1] == load_chain().order


@pytest.mark.parametrize("command", sorted(c.name or c.callback.__name__ for c in app.registered_commands if c.callback))
def test_every_command_has_help(command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "--json" in result.stdout and "--verbose" in result.stdout
    assert app.registered_commands and all(c.callback.__doc__ for c in app.registered_commands)


def test_discovery_ignores_lookalikes_and_reserved_namespaces(env):
    cli("provision", "acme_corp")
    prefix = env.settings.postgres.schema_template.split("{")[0] if env.kind == "postgres" else None
    if env.kind == "postgres":
        with env.engine().begin() as conn:
            # '_' is a LIKE wildcard: 'tXXXXXXXXYother' must not pass for a tenant of 'tXXXXXXXX_{tenant_id}'.
            conn.exec_driver_sql(f'CREATE SCHEMA "{prefix[:-1]}Yother"')
            conn.exec_driver_sql(f'CREATE SCHEMA "{prefix}Upper"')
    else:
        for name in ("storage/tenant_Upper/docex.db", "storage/tenantXother/docex.db", "storage/tenant_x/other.db"):
            (env.workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (env.workdir / name).write_bytes(b"")
    assert [r["tenant_id"] for r in json.loads(cli("tenants", "--json").stdout)] == ["acme_corp"]


@pytest.mark.postgres
def test_reserved_namespaces_under_a_bare_template_are_not_tenants(pg_url, tmp_path):
    # With schema_template '{tenant_id}' every schema matches the pattern; public and pg_* are not tenants.
    config = write_config(tmp_path / "bare.yaml", {"database": database_section("postgres", "{tenant_id}", pg_url)})
    result = cli("tenants", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    names = [r["tenant_id"] for r in json.loads(result.stdout)]
    assert "public" not in names and not any(n.startswith("pg_") for n in names)


@pytest.mark.postgres
def test_postgres_warns_about_names_docex_refuses(pg_env):
    result = cli("provision", "acme-corp")
    assert result.exit_code == 0
    assert "warning: acme-corp:" in result.stderr and "DocEX's PostgreSQL runtime" in result.stderr


@pytest.mark.postgres
@pytest.mark.parametrize(
    "change, expected",
    [
        ({"port": 1}, "nothing answers at 127.0.0.1:1/"),
        ({"username": "no_such_role_x"}, "has no user no_such_role_x"),
        ({"database": "no_such_database_x"}, "database 'no_such_database_x' does not exist"),
    ],
)
def test_connection_problems_are_one_line_with_the_fix(pg_url, tmp_path, monkeypatch, change, expected):
    monkeypatch.chdir(tmp_path)
    url = pg_url.set(host="127.0.0.1", password="hunter2-secret", **change)
    monkeypatch.setenv("DOCEX_DATABASE_URL", url.render_as_string(hide_password=False))
    result = cli("provision", "acme_corp")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot connect to PostgreSQL") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "hunter2" not in result.output


@pytest.mark.postgres
def test_missing_create_privilege_names_the_grant(pg_url, tmp_path, monkeypatch):
    role = f"docex_noprivs_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DOCEX_DATABASE_URL", pg_url.set(username=role, password=None).render_as_string(hide_password=False))
        result = cli("provision", "acme_corp")
        assert result.exit_code == 2, result.output
        assert f"user {role} may not create schemas" in result.stderr and "GRANT CREATE ON DATABASE" in result.stderr
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


@pytest.mark.parametrize(
    "option", [["--jobs", "\u0663"], ["--max-failures", "\uff13"], ["--lock-timeout", "\uff13"], ["--tenant-lock-wait", "\u0663"]]
)
def test_numeric_options_take_ascii_digits_only(env, option):
    """Checked in review for every numeric option: the command-line parser refuses other
    scripts' digits (exit 2, nothing touched), as --shard and --waves now do."""
    cli("provision", "acme_corp")
    before = (env.everything(), tenant_snapshot(env, "acme_corp"))
    result = cli("upgrade", "--all-tenants", *option)
    assert result.exit_code == 2, result.output
    assert (env.everything(), tenant_snapshot(env, "acme_corp")) == before


@pytest.mark.parametrize("variable", ["DOCEX_CONFIG", "DOCEX_DATABASE_URL", "DOCEX_MIGRATE_SCRIPT_LOCATION"])
def test_an_empty_environment_variable_is_refused_not_taken_as_unset(env, monkeypatch, variable):
    """Found in review: DOCEX_CONFIG='' silently fell back to the default configuration (another
    database); the same for every variable docex-migrate reads."""
    cli("provision", "acme_corp")
    before = (env.everything(), tenant_snapshot(env, "acme_corp"))
    was = os.environ.get(variable)
    monkeypatch.setenv(variable, "")
    result = cli("upgrade", "--all-tenants")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"${variable}" in lines[0], result.stderr
    if was is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, was)
    assert (env.everything(), tenant_snapshot(env, "acme_corp")) == before


_VOLATILE = [
    (re.compile(r"\d{8}T\d{6}-[0-9a-f]+"), "RUN"),
    (re.compile(r"\d{4}-\d\d-\d\dT[0-9:.+]+"), "TIME"),
    (re.compile(r"\(\d+ ms\)"), "(N ms)"),
    (re.compile(r'"(pid|duration\w*)": [0-9.]+'), r'"\1": N'),
    (re.compile("globex_corp"), "acme_corp"),  # the after form's tenant, named as the before form's
]


def _outcome(result) -> tuple[int, str, str]:
    """Exit code, stdout and stderr, with what differs between two runs of one command masked."""
    texts = [result.stdout, result.stderr]
    for pattern, mask in _VOLATILE:
        texts = [pattern.sub(mask, text) for text in texts]
    return result.exit_code, texts[0], texts[1]


def test_common_options_before_the_command_act_as_after_it(env, monkeypatch):
    """`docex-migrate --config X --json COMMAND` as `COMMAND --config X --json` (Alembic users put -c first)."""
    monkeypatch.delenv("DOCEX_CONFIG")  # only --config names the fleet
    common = ["--config", str(env.config_file), "--json"]

    def same(before: list[str], after: list[str]) -> dict | list:
        first, second = cli(*common, *before), cli(*after, *common)
        assert _outcome(first) == _outcome(second), (first.output, second.output)
        return json.loads(first.stdout)

    provisioned = same(["provision", "acme_corp"], ["provision", "globex_corp"])["tenants"]
    assert [(r["tenant_id"], r["action"]) for r in provisioned] == [("acme_corp", "provisioned")]
    assert [r["state"] for r in same(["status"], ["status"])] == ["current", "current"]
    assert cli("downgrade", "base", "--all-tenants", "--yes", *common).exit_code == 0
    upgraded = same(["upgrade", "--tenant", "acme_corp"], ["upgrade", "--tenant", "globex_corp"])["tenants"]
    assert [(r["action"], r["to_revision"]) for r in upgraded] == [("upgraded", HEAD)]
    runs = same(["runs"], ["runs"])
    assert [r["command"] for r in runs][:2] == ["upgrade", "upgrade"]
    shown = same(["runs", "show", runs[0]["run_id"]], ["runs", "show", runs[0]["run_id"]])
    assert shown["run_id"] == runs[0]["run_id"]


def test_c_is_config_before_and_after_the_command(sqlite_env, tmp_path):
    """Alembic's `-c FILE`, which the docs compare --config with, works in both places."""
    config = write_config(tmp_path / "docex.yaml", {"database": database_section("sqlite", "fleet/{tenant_id}.db", None)})
    assert cli("-c", str(config), "provision", "acme_corp").exit_code == 0
    assert (sqlite_env.workdir / "fleet" / "acme_corp.db").is_file()
    result = cli("status", "-c", str(config), "--json")
    assert result.exit_code == 0, result.output
    assert [r["tenant_id"] for r in json.loads(result.stdout)] == ["acme_corp"]


def test_verbose_and_a_bad_config_before_the_command_act_as_after_it(sqlite_env, tmp_path):
    missing = ["--config", str(tmp_path / "missing.yaml"), "--verbose"]
    first, second = cli(*missing, "status"), cli("status", *missing)
    assert first.exit_code == second.exit_code == 2
    assert "Traceback" in first.stderr and first.stderr == second.stderr


def test_an_option_after_the_command_wins_over_the_same_before_it(sqlite_env, tmp_path):
    """Given before and after the command, the one after it wins (README, --help)."""
    config = write_config(tmp_path / "docex.yaml", {"database": database_section("sqlite", "fleet/{tenant_id}.db", None)})
    assert cli("provision", "acme_corp", "--config", str(config)).exit_code == 0
    result = cli("--config", str(tmp_path / "missing.yaml"), "status", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "acme_corp" in result.stdout
    result = cli("--config", str(config), "runs", "show", "nosuchrun", "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "missing.yaml" in result.stderr


def test_status_counts_tenants_per_state_and_shows_base(env):
    cli("provision", "acme_corp", "b2", "c3")
    assert cli("downgrade", "base", "--tenant", "c3", "--yes").exit_code == 0
    result = cli("status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "3 tenants: 2 current, 1 behind"
    assert lines[3].split()[:3] == ["c3", env.namespace("c3"), "base"]
    # --json: the JSON on stdout unchanged, the count on stderr
    result = cli("status", "--json")
    assert [r["revision"] for r in json.loads(result.stdout)] == [HEAD, HEAD, None]
    assert result.stderr.splitlines()[-1] == "3 tenants: 2 current, 1 behind"
    assert cli("status", "--tenant", "ghost").stdout.splitlines()[-1] == "1 tenant: 1 missing"


def test_downgrade_prompt_names_the_tenants_and_revisions_it_would_move(env, monkeypatch):
    cli("provision", "acme_corp", "b2", "c3")
    migrate_to(env, "c3", "s6_docex_2_8_8", downgrade=True)
    before = env.everything()
    monkeypatch.setattr("docex_migrate.cli_running.on_a_terminal", lambda: True)
    result = cli("downgrade", "s5", "--all-tenants", input="n\n")
    assert result.exit_code == 1  # aborted
    expected = f"Downgrade 3 tenants (2 at {HEAD}, 1 at s6_docex_2_8_8) to s5_docex_2_8_4? Tables and data may be dropped"
    assert expected in result.output
    assert env.everything() == before
    result = cli("downgrade", "base", "--tenant", "c3", input="n\n")
    assert "Downgrade 1 tenant (1 at s6_docex_2_8_8) to base?" in result.output
    assert env.everything() == before


def test_undo_prompt_names_the_tenants_and_revisions_it_would_move(env, monkeypatch):
    cli("provision", "acme_corp", "b2")
    migrate_to(env, "b2", "s6_docex_2_8_8", downgrade=True)
    result = cli("downgrade", "s5", "--all-tenants", "--yes", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(cli("runs", "--json").stdout)[0]["run_id"]
    before = env.everything()
    monkeypatch.setattr("docex_migrate.cli_running.on_a_terminal", lambda: True)
    result = cli("undo", run_id, input="n\n")
    assert result.exit_code == 1
    assert (
        f"Undo run {run_id}: take 2 tenants (2 at s5_docex_2_8_4) back to their previous revisions "
        f"(1 to {HEAD}, 1 to s6_docex_2_8_8)?"
    ) in result.output
    assert env.everything() == before
