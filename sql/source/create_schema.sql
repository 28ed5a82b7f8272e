-- Reference source schema: the data-engine-x operational tables that the export pipeline reads.
-- Each table holds the Export Contract V1 columns (minus export_schema_version, which the
-- pipeline adds) plus operational extras that must never be exported. Deliberately permissive:
-- primary keys only, no NOT NULL, no CHECK, no uniqueness guards. The pipeline, not the source,
-- enforces the contract.
-- Idempotent: safe to run on an existing database. Each table's primary key and cursor index are
-- added only if missing, so that running this file again after a bulk load (the seeder drops
-- them first, see seed_reset_tables.sql) restores them.

CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS entities;

-- dx_operation_runs_v1: one row per operation invocation (append-only, cursor created_at).
-- entity_type also holds 'job' (out of contract scope).
CREATE TABLE IF NOT EXISTS ops.operation_runs (
    run_id          uuid,
    pipeline_run_id uuid,
    workflow_id     text,
    operation_id    text,
    action_id       text,
    entity_type     text,
    entity_id       uuid,
    org_id          uuid,
    company_id      uuid,
    source_provider text,
    status          text,
    attempt_count   int,
    started_at      timestamptz,
    ended_at        timestamptz,
    duration_ms     int,
    cost_usd        numeric,
    error_code      text,
    error_message   text,
    created_at      timestamptz,
    -- operational extras (not in the contract)
    user_id         uuid,
    role            text,
    auth_method     text,
    input_payload   jsonb,
    output_payload  jsonb,
    updated_at      timestamptz
);
DO $$ BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'ops.operation_runs'::regclass AND contype = 'p'
    ) THEN
        ALTER TABLE ops.operation_runs
            ADD CONSTRAINT operation_runs_pkey PRIMARY KEY (run_id);
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS operation_runs_created_at_idx
    ON ops.operation_runs (created_at);

-- dx_operation_events_v1: event log of runs (append-only, cursor occurred_at).
-- No unique constraint on (run_id, event_sequence): duplicates can and do happen here.
CREATE TABLE IF NOT EXISTS ops.operation_events (
    event_id         uuid,
    run_id           uuid,
    event_type       text,
    event_sequence   int,
    occurred_at      timestamptz,
    org_id           uuid,
    company_id       uuid,
    entity_type      text,
    entity_id        uuid,
    provider         text,
    http_status      int,
    raw_request_ref  text,
    raw_response_ref text,
    payload_hash     text,
    error_code       text,
    error_message    text,
    metadata_json    jsonb,
    -- operational extras (not in the contract): full provider payloads, ingestion time
    raw_request      jsonb,
    raw_response     jsonb,
    created_at       timestamptz DEFAULT now()
);
DO $$ BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'ops.operation_events'::regclass AND contype = 'p'
    ) THEN
        ALTER TABLE ops.operation_events
            ADD CONSTRAINT operation_events_pkey PRIMARY KEY (event_id);
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS operation_events_occurred_at_idx
    ON ops.operation_events (occurred_at);

-- dx_company_entities_v1: current canonical company state (upsert, cursor updated_at).
CREATE TABLE IF NOT EXISTS entities.company_entities (
    org_id                uuid,
    company_id            uuid,
    entity_id             uuid,
    canonical_name        text,
    canonical_domain      text,
    linkedin_url          text,
    linkedin_page_id      text,
    industry              text,
    employee_count        int,
    revenue_band          text,
    hq_country            text,
    enrichment_confidence numeric,
    last_enriched_at      timestamptz,
    last_operation_id     text,
    last_run_id           uuid,
    source_priority       text,
    record_version        bigint,
    updated_at            timestamptz,
    -- operational extras (not in the contract)
    employee_range        text,
    description           text,
    source_providers      text[],
    canonical_payload     jsonb,
    created_at            timestamptz
);
DO $$ BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'entities.company_entities'::regclass AND contype = 'p'
    ) THEN
        ALTER TABLE entities.company_entities
            ADD CONSTRAINT company_entities_pkey PRIMARY KEY (org_id, entity_id);
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS company_entities_updated_at_idx
    ON entities.company_entities (updated_at);

-- dx_person_entities_v1: current canonical person state (upsert, cursor updated_at).
CREATE TABLE IF NOT EXISTS entities.person_entities (
    org_id             uuid,
    company_id         uuid,
    entity_id          uuid,
    full_name          text,
    first_name         text,
    last_name          text,
    linkedin_url       text,
    title              text,
    seniority          text,
    department         text,
    work_email         text,
    email_status       text,
    phone_e164         text,
    contact_confidence numeric,
    last_enriched_at   timestamptz,
    last_operation_id  text,
    last_run_id        uuid,
    record_version     bigint,
    updated_at         timestamptz,
    -- operational extras (not in the contract)
    canonical_payload  jsonb,
    created_at         timestamptz
);
DO $$ BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'entities.person_entities'::regclass AND contype = 'p'
    ) THEN
        ALTER TABLE entities.person_entities
            ADD CONSTRAINT person_entities_pkey PRIMARY KEY (org_id, entity_id);
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS person_entities_updated_at_idx
    ON entities.person_entities (updated_at);

-- dx_entity_snapshots_v1: one row per (entity, record_version) (append-only, cursor captured_at).
-- Contract names: snapshot_id <- id, canonical_payload_json <- canonical_payload.
-- entity_type also holds 'job' (out of contract scope). No unique constraint on
-- (org_id, entity_type, entity_id, record_version).
CREATE TABLE IF NOT EXISTS entities.entity_snapshots (
    id                uuid,
    org_id            uuid,
    entity_type       text,
    entity_id         uuid,
    record_version    bigint,
    canonical_payload jsonb,
    captured_at       timestamptz,
    source_run_id     uuid
);
DO $$ BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'entities.entity_snapshots'::regclass AND contype = 'p'
    ) THEN
        ALTER TABLE entities.entity_snapshots
            ADD CONSTRAINT entity_snapshots_pkey PRIMARY KEY (id);
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS entity_snapshots_captured_at_idx
    ON entities.entity_snapshots (captured_at);
