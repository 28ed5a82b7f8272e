-- A test fixture of data-engine-x's real PostgreSQL, for tests only (never run on a producer):
-- the tables that feed the five datasets, with the columns, types, constraints, indexes and
-- row-level security of ../shared/data-engine-x/REAL_SOURCE.md (migrations 001-042, after 021
-- moved them into the schemas ops and entities). ops.orgs, ops.companies, ops.pipeline_runs and
-- ops.step_results carry only the columns the mapping reads or that shape the producer's writes
-- (their foreign keys to submissions, blueprints and steps are left out with those tables).
-- RLS is ENABLED on every table with no policy: a role that is neither the owner nor BYPASSRLS
-- sees zero rows, without an error.
CREATE SCHEMA ops;
CREATE SCHEMA entities;

CREATE FUNCTION ops.update_updated_at_column() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

CREATE TABLE ops.orgs (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    slug text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ops.companies (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES ops.orgs (id) ON DELETE CASCADE,
    name text NOT NULL,
    external_ref text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_companies_org_name UNIQUE (org_id, name)
);
CREATE INDEX idx_companies_org_id ON ops.companies (org_id);

CREATE TABLE ops.pipeline_runs (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES ops.orgs (id) ON DELETE CASCADE,
    company_id uuid NOT NULL REFERENCES ops.companies (id) ON DELETE RESTRICT,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    started_at timestamptz,
    finished_at timestamptz,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_pipeline_runs_org_created_at ON ops.pipeline_runs (org_id, created_at DESC);

CREATE TABLE ops.step_results (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES ops.orgs (id) ON DELETE CASCADE,
    company_id uuid NOT NULL REFERENCES ops.companies (id) ON DELETE RESTRICT,
    pipeline_run_id uuid NOT NULL REFERENCES ops.pipeline_runs (id) ON DELETE CASCADE,
    step_position int NOT NULL CHECK (step_position > 0),
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped', 'retrying')),
    input_payload jsonb,
    output_payload jsonb,
    error_message text,
    attempt int NOT NULL DEFAULT 1 CHECK (attempt > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_step_results_run_position_attempt UNIQUE (pipeline_run_id, step_position, attempt)
);
CREATE INDEX idx_step_results_pipeline_position ON ops.step_results (pipeline_run_id, step_position);

-- One row per operation call, written once, after the operation finished.
CREATE TABLE ops.operation_runs (
    run_id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES ops.orgs (id) ON DELETE CASCADE,
    company_id uuid REFERENCES ops.companies (id) ON DELETE RESTRICT,
    user_id uuid,
    role text NOT NULL,
    auth_method text NOT NULL,
    operation_id text NOT NULL,
    entity_type text NOT NULL CHECK (entity_type IN ('company', 'person', 'job')),
    status text NOT NULL CHECK (status IN ('found', 'not_found', 'failed', 'verified')),
    missing_inputs jsonb NOT NULL DEFAULT '[]'::jsonb,
    input_payload jsonb NOT NULL,
    output_payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_operation_runs_org_created_at ON ops.operation_runs (org_id, created_at DESC);
CREATE INDEX idx_operation_runs_operation_created_at
    ON ops.operation_runs (operation_id, created_at DESC);
CREATE INDEX idx_operation_runs_status_created_at ON ops.operation_runs (status, created_at DESC);
CREATE TRIGGER update_operation_runs_updated_at BEFORE UPDATE ON ops.operation_runs
    FOR EACH ROW EXECUTE FUNCTION ops.update_updated_at_column();

-- One row per provider call of a run; all of a run's attempts are inserted in one statement
-- right after the run, so they share one created_at. No sequence column.
CREATE TABLE ops.operation_attempts (
    id uuid PRIMARY KEY,
    run_id uuid NOT NULL REFERENCES ops.operation_runs (run_id) ON DELETE CASCADE,
    provider text NOT NULL,
    action text NOT NULL,
    status text NOT NULL CHECK (status IN ('found', 'not_found', 'failed', 'verified', 'skipped')),
    skip_reason text,
    http_status int,
    provider_status text,
    duration_ms int CHECK (duration_ms >= 0),
    raw_response jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_operation_attempts_run_id ON ops.operation_attempts (run_id);
CREATE INDEX idx_operation_attempts_provider_created_at
    ON ops.operation_attempts (provider, created_at DESC);

CREATE TABLE entities.company_entities (
    org_id uuid NOT NULL REFERENCES ops.orgs (id) ON DELETE CASCADE,
    company_id uuid REFERENCES ops.companies (id) ON DELETE SET NULL,
    entity_id uuid NOT NULL,
    canonical_domain text,
    canonical_name text,
    linkedin_url text,
    industry text,
    employee_count int,
    employee_range text,
    revenue_band text,
    hq_country text,
    description text,
    enrichment_confidence numeric,
    last_enriched_at timestamptz,
    last_operation_id text,
    last_run_id uuid REFERENCES ops.pipeline_runs (id) ON DELETE SET NULL,
    source_providers text[],
    record_version bigint NOT NULL DEFAULT 1 CHECK (record_version > 0),
    canonical_payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    company_linkedin_id text,
    icp_criterion text,
    salesnav_url text,
    icp_fit_verdict text,
    icp_fit_reasoning text,
    PRIMARY KEY (org_id, entity_id)
);
-- Migration 007: a trigger sets updated_at on every UPDATE of an entity.
CREATE TRIGGER update_company_entities_updated_at BEFORE UPDATE ON entities.company_entities
    FOR EACH ROW EXECUTE FUNCTION ops.update_updated_at_column();
CREATE INDEX idx_company_entities_org_domain ON entities.company_entities (org_id, canonical_domain);
CREATE INDEX idx_company_entities_org_company ON entities.company_entities (org_id, company_id);

CREATE TABLE entities.person_entities (
    org_id uuid NOT NULL REFERENCES ops.orgs (id) ON DELETE CASCADE,
    company_id uuid REFERENCES ops.companies (id) ON DELETE SET NULL,
    entity_id uuid NOT NULL,
    full_name text,
    first_name text,
    last_name text,
    linkedin_url text,
    title text,
    seniority text,
    department text,
    work_email text,
    email_status text,
    phone_e164 text,
    contact_confidence numeric,
    last_enriched_at timestamptz,
    last_operation_id text,
    last_run_id uuid REFERENCES ops.pipeline_runs (id) ON DELETE SET NULL,
    record_version bigint NOT NULL DEFAULT 1 CHECK (record_version > 0),
    canonical_payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, entity_id)
);
CREATE TRIGGER update_person_entities_updated_at BEFORE UPDATE ON entities.person_entities
    FOR EACH ROW EXECUTE FUNCTION ops.update_updated_at_column();
CREATE INDEX idx_person_entities_org_email ON entities.person_entities (org_id, work_email);

-- Written when an existing entity changes: a snapshot of the PREVIOUS version first, then the
-- entity row moves to record_version = old + 1.
CREATE TABLE entities.entity_snapshots (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES ops.orgs (id) ON DELETE CASCADE,
    entity_type text NOT NULL CHECK (entity_type IN ('company', 'person', 'job')),
    entity_id uuid NOT NULL,
    record_version bigint NOT NULL,
    canonical_payload jsonb NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT now(),
    source_run_id uuid REFERENCES ops.pipeline_runs (id) ON DELETE SET NULL,
    CONSTRAINT uq_entity_snapshots_version UNIQUE (org_id, entity_type, entity_id, record_version)
);
CREATE INDEX idx_entity_snapshots_lookup
    ON entities.entity_snapshots (org_id, entity_type, entity_id, captured_at DESC);
CREATE INDEX idx_entity_snapshots_source_run ON entities.entity_snapshots (source_run_id);

ALTER TABLE ops.orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ops.companies ENABLE ROW LEVEL SECURITY;
ALTER TABLE ops.pipeline_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ops.step_results ENABLE ROW LEVEL SECURITY;
ALTER TABLE ops.operation_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE ops.operation_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE entities.company_entities ENABLE ROW LEVEL SECURITY;
ALTER TABLE entities.person_entities ENABLE ROW LEVEL SECURITY;
ALTER TABLE entities.entity_snapshots ENABLE ROW LEVEL SECURITY;
