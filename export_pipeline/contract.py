"""Export Contract V1, declared once, as data.

Everything else derives from this module: the extract query's projection, the Pandera models, the
DuckDB DDL, the content comparisons of the load stage and the data dictionary. A new dataset or an
additive column is a change here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

LogicalType = Literal["uuid", "text", "int", "bigint", "numeric", "timestamptz", "jsonb"]
WriteMode = Literal["append", "upsert"]

CONTRACT_VERSION = "v1"

#: Numerics are exported as DECIMAL(18, 6): costs in USD to the micro-dollar, confidences in [0, 1].
NUMERIC_PRECISION = 18
NUMERIC_SCALE = 6

#: Tolerated clock skew before a timestamp counts as "in the future".
FUTURE_SKEW_SECONDS = 300

ENTITY_TYPES = ("company", "person")
RUN_STATUSES = ("succeeded", "failed", "skipped", "canceled")
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


@dataclass(frozen=True)
class Column:
    """One contract column and the value checks it carries."""

    name: str
    type: LogicalType
    nullable: bool = True
    description: str = ""
    #: Name of the column in the source table when it differs from the contract name.
    source: str | None = None
    #: Closed vocabulary: the value must be one of these.
    allowed: tuple[str, ...] | None = None
    ge: float | None = None
    le: float | None = None
    pattern: str | None = None
    #: For timestamps: reject values later than now + FUTURE_SKEW_SECONDS.
    not_future: bool = False

    @property
    def source_name(self) -> str:
        return self.source or self.name


@dataclass(frozen=True)
class RowRule:
    """A check across two columns of one row: ``left >= right`` when both are present."""

    name: str
    left: str
    right: str
    description: str


@dataclass(frozen=True)
class CriticalField:
    """A field whose null rate is watched: satisfied when any group of columns is fully present."""

    name: str
    any_of: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Dataset:
    """One contract dataset: its columns, keys, write semantics and where it comes from."""

    name: str
    description: str
    source_table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    write_mode: WriteMode
    cursor: str
    unique_guards: tuple[tuple[str, ...], ...] = ()
    #: Upsert datasets: the monotonic version that decides which row wins.
    version_column: str | None = None
    #: Lake partitioning recommended by the contract (``date(<cursor>)`` is spelled ``_date``).
    partition_by: tuple[str, ...] = ()
    critical_fields: tuple[CriticalField, ...] = ()
    row_rules: tuple[RowRule, ...] = ()
    #: Rows outside the contract's scope: left out by the extract, never errors.
    out_of_scope: tuple[tuple[str, tuple[str, ...]], ...] = ()
    version: str = CONTRACT_VERSION

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def source_columns(self) -> tuple[Column, ...]:
        """Columns read from the source: all but ``export_schema_version``, which we stamp."""
        return tuple(c for c in self.columns if c.name != "export_schema_version")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.nullable)


def _version_col() -> Column:
    return Column(
        "export_schema_version",
        "text",
        nullable=False,
        allowed=(CONTRACT_VERSION,),
        description="Contract version of the row; always `v1`.",
    )


def _org() -> Column:
    return Column("org_id", "uuid", nullable=False, description="Tenant (organisation) id.")


def _entity_type(description: str = "`company` or `person`.") -> Column:
    return Column(
        "entity_type", "text", nullable=False, allowed=ENTITY_TYPES, description=description
    )


def _ts(name: str, nullable: bool = True, description: str = "") -> Column:
    return Column(name, "timestamptz", nullable=nullable, not_future=True, description=description)


def _confidence(name: str) -> Column:
    return Column(name, "numeric", ge=0, le=1, description="Confidence score in [0, 1].")


def _record_version() -> Column:
    return Column(
        "record_version",
        "bigint",
        nullable=False,
        ge=1,
        description="Monotonic per entity; starts at 1.",
    )


OPERATION_RUNS = Dataset(
    name="dx_operation_runs_v1",
    description="One row per operation invocation (append-only).",
    source_table="ops.operation_runs",
    write_mode="append",
    cursor="created_at",
    primary_key=("run_id",),
    partition_by=("_date", "org_id"),
    out_of_scope=(("entity_type", ("job",)),),
    columns=(
        _version_col(),
        Column("run_id", "uuid", nullable=False, description="Unique operation run id."),
        Column("pipeline_run_id", "uuid", description="Parent execution id; null when standalone."),
        Column("workflow_id", "text"),
        Column(
            "operation_id",
            "text",
            nullable=False,
            description="Canonical id, e.g. `company.enrich.profile`.",
        ),
        Column("action_id", "text", nullable=False, description="Concrete implementation id."),
        _entity_type(),
        Column("entity_id", "uuid", nullable=False),
        _org(),
        Column("company_id", "uuid"),
        Column("source_provider", "text", description="Provider, e.g. `prospeo`."),
        Column("status", "text", nullable=False, allowed=RUN_STATUSES),
        Column("attempt_count", "int", nullable=False, ge=0),
        _ts("started_at", nullable=False),
        _ts("ended_at"),
        Column("duration_ms", "int", ge=0),
        Column("cost_usd", "numeric", ge=0, description="Provider cost in USD, DECIMAL(18,6)."),
        Column("error_code", "text"),
        Column("error_message", "text"),
        _ts("created_at", nullable=False, description="Cursor: when the run was recorded."),
    ),
    row_rules=(
        RowRule(
            "ended_at_not_before_started_at",
            "ended_at",
            "started_at",
            "A run cannot end before it starts.",
        ),
    ),
)

OPERATION_EVENTS = Dataset(
    name="dx_operation_events_v1",
    description="Event log of retries, provider interactions and state transitions (append-only).",
    source_table="ops.operation_events",
    write_mode="append",
    cursor="occurred_at",
    primary_key=("event_id",),
    unique_guards=(("run_id", "event_sequence"),),
    partition_by=("_date", "org_id"),
    out_of_scope=(("entity_type", ("job",)),),
    columns=(
        _version_col(),
        Column("event_id", "uuid", nullable=False, description="Unique event id."),
        Column("run_id", "uuid", nullable=False, description="Operation run the event belongs to."),
        Column(
            "event_type",
            "text",
            nullable=False,
            description="`request_sent`, `response_received`, `retry_scheduled`, `state_change`, "
            "`error`, ... (open vocabulary).",
        ),
        Column(
            "event_sequence",
            "int",
            nullable=False,
            ge=0,
            description="Monotonic within `run_id`.",
        ),
        _ts("occurred_at", nullable=False, description="Cursor: when the event happened."),
        _org(),
        Column("company_id", "uuid"),
        Column("entity_type", "text", nullable=False, allowed=ENTITY_TYPES),
        Column("entity_id", "uuid", nullable=False),
        Column("provider", "text"),
        Column("http_status", "int", ge=100, le=599, description="HTTP status in 100-599."),
        Column("raw_request_ref", "text", description="Pointer to the stored raw request."),
        Column("raw_response_ref", "text", description="Pointer to the stored raw response."),
        Column("payload_hash", "text"),
        Column("error_code", "text"),
        Column("error_message", "text"),
        Column(
            "metadata_json",
            "jsonb",
            description="Event metadata; keys that look like secrets are redacted.",
        ),
    ),
)

COMPANY_ENTITIES = Dataset(
    name="dx_company_entities_v1",
    description="Current canonical company state (upsert by `record_version`).",
    source_table="entities.company_entities",
    write_mode="upsert",
    cursor="updated_at",
    version_column="record_version",
    primary_key=("org_id", "entity_id"),
    partition_by=("org_id",),
    critical_fields=(
        CriticalField("canonical_domain", (("canonical_domain",),)),
        CriticalField("canonical_name", (("canonical_name",),)),
    ),
    columns=(
        _version_col(),
        _org(),
        Column("company_id", "uuid", nullable=False),
        Column("entity_id", "uuid", nullable=False, description="Canonical company entity id."),
        Column("canonical_name", "text"),
        Column("canonical_domain", "text"),
        Column("linkedin_url", "text"),
        Column("linkedin_page_id", "text"),
        Column("industry", "text"),
        Column("employee_count", "int", ge=0),
        Column("revenue_band", "text"),
        Column("hq_country", "text"),
        _confidence("enrichment_confidence"),
        _ts("last_enriched_at"),
        Column("last_operation_id", "text"),
        Column("last_run_id", "uuid"),
        Column("source_priority", "text"),
        _record_version(),
        _ts("updated_at", nullable=False, description="Cursor: when this version was written."),
    ),
)

PERSON_ENTITIES = Dataset(
    name="dx_person_entities_v1",
    description="Current canonical person state (upsert by `record_version`).",
    source_table="entities.person_entities",
    write_mode="upsert",
    cursor="updated_at",
    version_column="record_version",
    primary_key=("org_id", "entity_id"),
    partition_by=("org_id",),
    critical_fields=(CriticalField("name", (("full_name",), ("first_name", "last_name"))),),
    columns=(
        _version_col(),
        _org(),
        Column("company_id", "uuid"),
        Column("entity_id", "uuid", nullable=False, description="Canonical person entity id."),
        Column("full_name", "text"),
        Column("first_name", "text"),
        Column("last_name", "text"),
        Column("linkedin_url", "text"),
        Column("title", "text"),
        Column("seniority", "text"),
        Column("department", "text"),
        Column("work_email", "text", pattern=EMAIL_PATTERN, description="Shaped like an email."),
        Column("email_status", "text"),
        Column(
            "phone_e164", "text", pattern=E164_PATTERN, description="E.164, e.g. `+14155550123`."
        ),
        _confidence("contact_confidence"),
        _ts("last_enriched_at"),
        Column("last_operation_id", "text"),
        Column("last_run_id", "uuid"),
        _record_version(),
        _ts("updated_at", nullable=False, description="Cursor: when this version was written."),
    ),
)

ENTITY_SNAPSHOTS = Dataset(
    name="dx_entity_snapshots_v1",
    description="Historical canonical snapshots, one per entity version (append-only SCD).",
    source_table="entities.entity_snapshots",
    write_mode="append",
    cursor="captured_at",
    primary_key=("snapshot_id",),
    unique_guards=(("org_id", "entity_type", "entity_id", "record_version"),),
    partition_by=("_date",),
    out_of_scope=(("entity_type", ("job",)),),
    columns=(
        _version_col(),
        Column("snapshot_id", "uuid", nullable=False, source="id"),
        _org(),
        _entity_type(),
        Column("entity_id", "uuid", nullable=False),
        _record_version(),
        Column(
            "canonical_payload_json",
            "jsonb",
            nullable=False,
            source="canonical_payload",
            description="Canonical entity state at this version; secret-looking keys redacted.",
        ),
        _ts("captured_at", nullable=False, description="Cursor: when the snapshot was taken."),
        Column("source_run_id", "uuid"),
    ),
)

DATASETS: tuple[Dataset, ...] = (
    OPERATION_RUNS,
    OPERATION_EVENTS,
    COMPANY_ENTITIES,
    PERSON_ENTITIES,
    ENTITY_SNAPSHOTS,
)

DATASETS_BY_NAME: dict[str, Dataset] = {d.name: d for d in DATASETS}


def dataset(name: str) -> Dataset:
    """Look a dataset up by its contract name, with a clear error naming the valid ones."""
    try:
        return DATASETS_BY_NAME[name]
    except KeyError:
        valid = ", ".join(DATASETS_BY_NAME)
        raise KeyError(f"unknown dataset {name!r}; expected one of: {valid}") from None


def successor(
    ds: Dataset, version: str, renames: Mapping[str, str], description: str | None = None
) -> Dataset:
    """The next contract version of a dataset: columns renamed, read from the same source
    columns, published as its own table (``dx_<name>_<version>``).

    Renames break consumers, so they happen only in a new version, dual-published with the old
    one (``DUAL_PUBLISH``) until consumers have migrated (contract "Schema Governance").
    """
    unknown = set(renames) - set(ds.column_names)
    if unknown:
        raise KeyError(f"{ds.name} has no column(s) {sorted(unknown)} to rename")

    def new(name: str) -> str:
        return renames.get(name, name)

    columns = tuple(
        replace(
            c,
            name=new(c.name),
            source=None if c.name == "export_schema_version" else c.source_name,
            allowed=(version,) if c.name == "export_schema_version" else c.allowed,
        )
        for c in ds.columns
    )
    base = ds.name.removesuffix(f"_{ds.version}")
    return replace(
        ds,
        name=f"{base}_{version}",
        version=version,
        description=description or ds.description,
        columns=columns,
        primary_key=tuple(new(c) for c in ds.primary_key),
        unique_guards=tuple(tuple(new(c) for c in g) for g in ds.unique_guards),
        cursor=new(ds.cursor),
        version_column=new(ds.version_column) if ds.version_column else None,
        partition_by=tuple(new(c) for c in ds.partition_by),
        critical_fields=tuple(
            CriticalField(f.name, tuple(tuple(new(c) for c in g) for g in f.any_of))
            for f in ds.critical_fields
        ),
        row_rules=tuple(replace(r, left=new(r.left), right=new(r.right)) for r in ds.row_rules),
        out_of_scope=tuple((new(c), v) for c, v in ds.out_of_scope),
    )


#: Dual-publish windows: for a dataset name, the successor versions filled from the same
#: extract while consumers migrate. Empty while v1 is the only published version.
DUAL_PUBLISH: dict[str, tuple[Dataset, ...]] = {}
