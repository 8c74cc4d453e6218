"""Tenant id rules and namespace derivation (pure, no I/O)."""

from __future__ import annotations

import pytest

from docex_migrate import tenants
from docex_migrate.errors import ConfigError, InvalidTenantError

VALID = ["acme-corp", "customer-123", "acme_corp", "a", "0day", "x" * 63]
INVALID = [
    "",
    "Acme",
    "ACME-CORP",
    "-acme",
    "_docex_system_",
    "acme corp",
    " acme",
    "acme\n",
    "acme;drop",
    "acme'",
    'acme"',
    "acme/../x",
    "..",
    "a/b",
    "acme\x00",
    "acme.corp",
    "ａcme",
    "acmе",
    "x" * 64,
    "tenant%",
    "acme\\",
    "acme$",
]


@pytest.mark.parametrize("tenant_id", VALID)
def test_valid_ids(tenant_id):
    assert tenants.validate_tenant_id(tenant_id) == tenant_id


@pytest.mark.parametrize("tenant_id", INVALID)
def test_invalid_ids_are_refused_with_the_rule(tenant_id):
    with pytest.raises(InvalidTenantError, match="invalid tenant id .*lower-case letters"):
        tenants.validate_tenant_id(tenant_id)


def test_schema_name_is_docex_format():
    assert tenants.schema_name("tenant_{tenant_id}", "acme_corp") == "tenant_acme_corp"
    assert tenants.schema_name("tenant_{tenant_id}", "acme-corp") == "tenant_acme-corp"


@pytest.mark.parametrize(
    "template, tenant_id",
    [
        ("{tenant_id}", "public"),
        ("pg_{tenant_id}", "x"),
        ("{tenant_id}", "information_schema"),
        ("_docex_{tenant_id}_", "system"),
        ("{tenant_id}", "docex_system"),
    ],
)
def test_reserved_schemas_are_refused(template, tenant_id):
    with pytest.raises(InvalidTenantError, match="reserved"):
        tenants.schema_name(template, tenant_id)


def test_schema_over_63_bytes_is_refused():
    assert tenants.schema_name("t_{tenant_id}", "x" * 61) == "t_" + "x" * 61
    with pytest.raises(InvalidTenantError, match="63 bytes"):
        tenants.schema_name("tenant_{tenant_id}", "x" * 60)


@pytest.mark.parametrize(
    "template",
    [
        "tenant",
        "tenant_{id}",
        "tenant_{tenant_id}_{0}",
        "tenant_{tenant_id!r}",
        "tenant_{tenant_id:>9}",
        'x";drop schema public;--{tenant_id}',
        "tenant {tenant_id}",
        "t.{tenant_id}",
        "tenant_{tenant_id",
    ],
)
def test_bad_schema_templates_are_refused(template):
    with pytest.raises(ConfigError):
        tenants.validate_schema_template(template)


def test_a_template_may_live_anywhere_if_tenants_stay_inside_it():
    # The fixed directory is the operator's choice; only the tenant part may not leave it.
    assert tenants.sqlite_path("../data/{tenant_id}.db", "acme") == "../data/acme.db"
    assert tenants.sqlite_path("/var/lib/docex/tenant_{tenant_id}/docex.db", "acme") == "/var/lib/docex/tenant_acme/docex.db"


def test_sqlite_path_is_docex_format():
    assert tenants.sqlite_path("storage/tenant_{tenant_id}/docex.db", "acme-corp") == "storage/tenant_acme-corp/docex.db"
    assert tenants.fixed_directory("storage/tenant_{tenant_id}/docex.db") == "storage/"
    assert tenants.fixed_directory("{tenant_id}.db") == ""


@pytest.mark.parametrize(
    "template",
    [
        "storage/{tenant_id}/../../x.db",
        "storage/{tenant_id}/../../../etc/x.db",
        "storage/{tenant_id}/..",
        "{tenant_id}/../../x.db",
    ],
)
def test_path_templates_that_escape_are_refused(template):
    with pytest.raises((InvalidTenantError, ConfigError)):
        tenants.validate_path_template(template)


@pytest.mark.parametrize(
    "template",
    [
        "storage/docex.db",
        "storage/{tenant_id}?mode=memory.db",
        "storage/{tenant_id}';.db",
        "storage/{tenant_id} x.db",
        "storage/{other}/{tenant_id}.db",
    ],
)
def test_bad_path_templates_are_refused(template):
    with pytest.raises(ConfigError):
        tenants.validate_path_template(template)


def test_matcher_recognises_only_its_own_namespaces():
    matcher = tenants.TemplateMatcher("tenant_{tenant_id}")
    assert matcher.tenant_id("tenant_acme_corp") == "acme_corp"
    assert matcher.tenant_id("tenant_acme-corp") == "acme-corp"
    assert matcher.tenant_id("tenantXacme") is None
    assert matcher.tenant_id("tenant_") is None
    assert matcher.tenant_id("tenant_Acme") is None
    assert matcher.like_pattern() == "tenant\\_%"
    paths = tenants.TemplateMatcher("storage/tenant_{tenant_id}/docex.db")
    assert paths.tenant_id("storage/tenant_acme/docex.db") == "acme"
    assert paths.tenant_id("storage/tenant_acme/other.db") is None
    assert paths.glob_pattern() == "storage/tenant_*/docex.db"


def test_postgres_runtime_rule():
    assert tenants.docex_postgres_runtime_accepts("tenant_acme_corp")
    assert not tenants.docex_postgres_runtime_accepts("tenant_acme-corp")


# DocEX formats templates with str.format: '{{tenant_id}}' is the literal text '{tenant_id}', so
# every tenant would share one namespace (deprovisioning one deleted another's data).
NOT_PLAIN = ["{{tenant_id}}", "{tenant_id!r}", "{tenant_id!s}", "{tenant_id:>5}", "{tenant_id[0]}", "{tenant_id.upper}"]


@pytest.mark.parametrize("field", NOT_PLAIN)
def test_templates_without_a_plain_tenant_id_field_are_refused_on_both_backends(field):
    for validate, template in (
        (tenants.validate_path_template, f"storage/{field}/docex.db"),
        (tenants.validate_schema_template, f"tenant_{field}"),
    ):
        with pytest.raises(ConfigError, match="plain {tenant_id} field"):
            validate(template)
        with pytest.raises(ConfigError, match="plain {tenant_id} field"):  # even beside a real field
            validate(template.replace(field, field + "{tenant_id}"))


@pytest.mark.parametrize(
    "template",
    [
        "storage/{tenant_id}/../x.db",
        "{tenant_id}/../x.db",
        "./{tenant_id}/../docex.db",
        "storage/{tenant_id}/./..",
    ],
)
def test_path_templates_giving_every_tenant_one_file_are_refused(template):
    with pytest.raises((ConfigError, InvalidTenantError), match="same|leaves"):
        tenants.validate_path_template(template)


@pytest.mark.parametrize(
    "template, tenant_id, path",
    [
        ("./{tenant_id}.db", "acme", "./acme.db"),
        ("./storage/{tenant_id}/docex.db", "acme", "./storage/acme/docex.db"),
        ("/srv/docex/{tenant_id}.db", "acme", "/srv/docex/acme.db"),
        ("storage/{tenant_id}/../{tenant_id}.db", "acme", "storage/acme/../acme.db"),
        ("../{tenant_id}.db", "acme", "../acme.db"),  # like '../data/{tenant_id}.db': the operator's choice
    ],
)
def test_path_templates_whose_tenants_stay_inside_are_accepted(template, tenant_id, path):
    tenants.validate_path_template(template)
    assert tenants.sqlite_path(template, tenant_id) == path


@pytest.mark.parametrize(
    "template",
    [
        "./{tenant_id}/../../x.db",
        "/srv/{tenant_id}/../../x.db",
        "../data/{tenant_id}/../../../x.db",
        "./../{tenant_id}/../../x.db",
    ],
)
def test_dot_slash_parent_and_absolute_templates_still_may_not_escape(template):
    with pytest.raises((ConfigError, InvalidTenantError)):
        tenants.validate_path_template(template)


@pytest.mark.parametrize("template", [None, 5, ["tenant_{tenant_id}"]])
def test_non_string_templates_are_refused(template):
    with pytest.raises(ConfigError, match="must be a string"):
        tenants.validate_schema_template(template)
    with pytest.raises(ConfigError, match="must be a string"):
        tenants.validate_path_template(template)
