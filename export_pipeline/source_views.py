"""Contract views for a producer's database, shipped per source profile.

A profile is a folder ``sql/source_profiles/<profile>/`` holding ``create_schema.sql``, one
``create_view_<dataset>.sql`` per contract dataset (``run_entity_id.sql``: a rule two of them share,
substituted as ``{run_entity_id}``) and ``grant_select.sql``. A producer's DBA
prints them (``export-pipeline source views --profile data-engine-x``), reads them, and runs
them as the owner of the producer's tables; the pipeline then reads the views
(``EXPORT_SOURCE_SCHEMA``). The pipeline itself never runs them: the source is someone else's.
"""

from __future__ import annotations

from export_pipeline.contract import DATASETS
from export_pipeline.extract import quote_ident
from export_pipeline.sqlfiles import read_sql, sql_path

#: Profile name (CLI) -> folder under sql/source_profiles/.
PROFILES: dict[str, str] = {"data-engine-x": "data_engine_x"}

#: The data dictionary of each profile's mapping.
MAPPING_DOCS: dict[str, str] = {"data-engine-x": "docs/source_mapping_data_engine_x.md"}

DEFAULT_SCHEMA = "export"
DEFAULT_ROLE = "export_reader"


class UnknownProfileError(KeyError):
    """No views are shipped for this profile name."""


def _folder(profile: str) -> str:
    try:
        return PROFILES[profile]
    except KeyError:
        raise UnknownProfileError(
            f"no source profile {profile!r}; shipped: {', '.join(PROFILES)}"
        ) from None


def _template(profile: str, name: str) -> str:
    """A profile's SQL template without its template notes (lines starting ``--!``)."""
    text = read_sql("source_profiles", _folder(profile), name)
    return "\n".join(line for line in text.splitlines() if not line.startswith("--!")).strip()


def view_statements(profile: str, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """``CREATE SCHEMA`` and one ``CREATE OR REPLACE VIEW`` per dataset, in contract order."""
    names = ["create_schema.sql", *(f"create_view_{ds.name}.sql" for ds in DATASETS)]
    fragments = {"run_entity_id": _template(profile, "run_entity_id.sql").format()}
    return [
        _template(profile, name).format(schema=quote_ident(schema), **fragments) for name in names
    ]


def grant_statements(profile: str, schema: str = DEFAULT_SCHEMA, role: str = DEFAULT_ROLE) -> str:
    """``GRANT`` USAGE on the schema and SELECT on its views to the exporter's role."""
    text = _template(profile, "grant_select.sql")
    return text.format(schema=quote_ident(schema), role=quote_ident(role))


def view_script(profile: str, schema: str = DEFAULT_SCHEMA, role: str = DEFAULT_ROLE) -> str:
    """The whole script a DBA runs, in one transaction, with how to run it as comments."""
    header = f"""\
-- Export Contract V1 views for the {profile} source profile, printed by
-- `export-pipeline source views --profile {profile} --schema {schema} --role {role}`.
-- Column-by-column mapping: {MAPPING_DOCS[profile]}.
--
-- Run it as the OWNER of the ops.* and entities.* tables (on Supabase: the `postgres` role),
-- e.g.  psql "$OWNER_DSN" -v ON_ERROR_STOP=1 -f export_views.sql
-- The views read the tables with the rights of their owner, so row-level security (enabled on every
-- table, with no policy) does not hide rows from the exporter. If the tables use FORCE ROW LEVEL
-- SECURITY, the owner needs a policy (or BYPASSRLS) too. The script changes no table.
--
-- The login role of the exporter, if it does not exist yet (choose the password; keep it out of
-- shell history):
--   CREATE ROLE {quote_ident(role)} LOGIN PASSWORD '...';
--   ALTER ROLE {quote_ident(role)} SET default_transaction_read_only = on;
-- It gets SELECT on these views only, never on the tables."""
    body = "\n\n".join(view_statements(profile, schema))
    grants = grant_statements(profile, schema, role)
    return f"{header}\n\nBEGIN;\n\n{body}\n\n{grants}\n\nCOMMIT;\n"


def fixture_schema(profile: str) -> str:
    """The test fixture of the profile's real schema (tests and demos only)."""
    return sql_path("source_profiles", _folder(profile), "fixture_schema.sql").read_text(
        encoding="utf-8"
    )
