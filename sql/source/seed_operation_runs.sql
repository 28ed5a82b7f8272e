-- Fill ops.operation_runs with :n_runs operation runs over company entities (~55%), person
-- entities (~43%) and out-of-scope job entities (~2%). Run i is created in the i-th slice of
-- [end_ts - days, end_ts - 3 min], so the table is naturally ordered by created_at like an
-- append-only log, and every run (and its events) ends before end_ts. Run the company and person
-- seeds first. Set-based and deterministic: every value derives from hashint8extended(i, seed).
-- Binds: :seed, :n_runs, :n_companies, :n_persons, :end_ts, :days.
-- "OFFSET 0" marks an optimisation fence: it stops the planner from inlining a subquery's
-- expressions into every reference to them (recomputing hashes and md5s many times per row).
WITH params AS (
    SELECT
        CAST(:seed AS bigint) AS seed,
        CAST(:seed AS bigint) * 128 + 32 AS s,
        CAST(:n_runs AS bigint) AS n,
        CAST(:n_companies AS bigint) AS n_companies,
        CAST(:n_persons AS bigint) AS n_persons,
        CAST(:end_ts AS timestamptz) - make_interval(days => CAST(:days AS int)) AS start_ts,
        CAST(:days AS int) * 86400.0::float8 - 180 AS span_s
),
rnd AS (
    SELECT
        g.i,
        p.seed,
        (hashint8extended(g.i, p.s + 1) & 4294967295)::float8 / 4294967296 AS u_type,
        (hashint8extended(g.i, p.s + 3) & 4294967295)::float8 / 4294967296 AS u_op,
        (hashint8extended(g.i, p.s + 4) & 4294967295)::float8 / 4294967296 AS u_provider,
        (hashint8extended(g.i, p.s + 5) & 4294967295)::float8 / 4294967296 AS u_status,
        (hashint8extended(g.i, p.s + 6) & 4294967295)::float8 / 4294967296 AS u_attempt,
        (hashint8extended(g.i, p.s + 7) & 4294967295)::float8 / 4294967296 AS u_queue,
        (hashint8extended(g.i, p.s + 8) & 4294967295)::float8 / 4294967296 AS u_duration,
        (hashint8extended(g.i, p.s + 9) & 4294967295)::float8 / 4294967296 AS u_cost,
        (hashint8extended(g.i, p.s + 10) & 4294967295)::float8 / 4294967296 AS u_error,
        (hashint8extended(g.i, p.s + 11) & 4294967295)::float8 / 4294967296 AS u_user,
        (hashint8extended(g.i, p.s + 12) & 4294967295)::float8 / 4294967296 AS u_org,
        hashint8extended(g.i, p.s + 13) & 2147483647 AS h_entity,
        hashint8extended(g.i, p.s + 14) & 2147483647 AS h_misc,
        (hashint8extended(g.i, p.s + 15) & 4294967295)::float8 / 4294967296 AS u_created,
        p.start_ts,
        p.span_s,
        p.n,
        p.n_companies,
        p.n_persons
    FROM params AS p
    CROSS JOIN generate_series(1, p.n) AS g (i)
),
typed AS (
    SELECT
        r.*,
        md5(r.seed || '/run/' || r.i)::uuid AS run_uuid,
        r.start_ts + make_interval(secs => r.span_s * (r.i - 1 + r.u_created) / r.n) AS created_ts,
        CASE
            WHEN r.u_type < 0.02 THEN 'job'
            WHEN r.u_type < 0.57 THEN 'company'
            ELSE 'person'
        END AS etype
    FROM rnd AS r
),
picked AS (
    SELECT
        r.*,
        CASE r.etype
            WHEN 'company' THEN md5(r.seed || '/company/' || (1 + r.h_entity % r.n_companies))
            WHEN 'person' THEN md5(r.seed || '/person/' || (1 + r.h_entity % r.n_persons))
            ELSE md5(r.seed || '/job/' || r.i)
        END::uuid AS entity_uuid,
        least(23, floor(24 * r.u_org ^ 1.7))::int AS job_org_idx
    FROM typed AS r
    OFFSET 0  -- optimisation fence, see the header
),
scoped AS (
    SELECT
        k.*,
        CASE k.etype
            WHEN 'company' THEN c.org_id
            WHEN 'person' THEN pe.org_id
            ELSE md5(k.seed || '/org/' || k.job_org_idx)::uuid
        END AS org_uuid,
        CASE
            WHEN k.h_misc % 100 < 2 THEN NULL
            WHEN k.etype = 'company' THEN c.company_id
            WHEN k.etype = 'person' THEN pe.company_id
            ELSE md5(k.seed || '/tenant/' || k.job_org_idx || '/'
                || floor(k.u_org * 1000)::int % (2 + k.job_org_idx % 5))::uuid
        END AS tenant_uuid,
        CASE k.etype
            WHEN 'company' THEN (ARRAY[
                'company.enrich.profile', 'company.enrich.profile', 'company.enrich.profile',
                'company.resolve.domain', 'company.resolve.domain',
                'company.enrich.technographics', 'company.enrich.funding',
                'company.search.lookalikes'
            ])[1 + floor(k.u_op * 8)::int]
            WHEN 'person' THEN (ARRAY[
                'person.enrich.contact', 'person.enrich.contact', 'person.enrich.contact',
                'person.enrich.profile', 'person.enrich.profile', 'person.verify.email',
                'person.verify.email', 'person.resolve.linkedin', 'person.find.phone'
            ])[1 + floor(k.u_op * 9)::int]
            ELSE (ARRAY['job.scrape.posting', 'job.enrich.posting'])[1 + floor(k.u_op * 2)::int]
        END AS op,
        CASE
            WHEN k.u_provider < 0.03 THEN NULL
            WHEN k.etype = 'company' THEN (ARRAY[
                'clearbit', 'apollo', 'peopledatalabs', 'builtwith', 'crunchbase', 'zoominfo'
            ])[1 + floor((k.u_provider - 0.03) / 0.97 * 6)::int]
            WHEN k.etype = 'person' THEN (ARRAY[
                'prospeo', 'apollo', 'hunter', 'peopledatalabs', 'lusha', 'zerobounce'
            ])[1 + floor((k.u_provider - 0.03) / 0.97 * 6)::int]
            ELSE (ARRAY['theirstack', 'apify'])[1 + floor((k.u_provider - 0.03) / 0.97 * 2)::int]
        END AS provider,
        CASE
            WHEN k.u_status < 0.85 THEN 'succeeded'
            WHEN k.u_status < 0.93 THEN 'failed'
            WHEN k.u_status < 0.98 THEN 'skipped'
            ELSE 'canceled'
        END AS run_status,
        1 + floor(k.u_error * 7)::int AS error_idx
    FROM picked AS k
    LEFT JOIN entities.company_entities AS c
        ON k.etype = 'company' AND c.entity_id = k.entity_uuid
    LEFT JOIN entities.person_entities AS pe
        ON k.etype = 'person' AND pe.entity_id = k.entity_uuid
    OFFSET 0  -- optimisation fence, see the header
),
timed AS (
    SELECT
        s.*,
        CASE s.run_status
            WHEN 'succeeded' THEN 1 + (s.u_attempt < 0.10)::int + (s.u_attempt < 0.02)::int
            WHEN 'failed' THEN 1 + floor(s.u_attempt * 3)::int
            WHEN 'canceled' THEN 1 + (s.u_attempt < 0.30)::int
            ELSE 1
        END AS attempts,
        s.created_ts + make_interval(secs => 5 * s.u_queue ^ 3) AS started_ts,
        CASE
            WHEN s.run_status = 'skipped' THEN 1 + floor(s.u_duration * 19)::int
            WHEN s.run_status = 'canceled' AND s.u_duration < 0.5 THEN NULL
            ELSE least(60000, floor(80 * exp(s.u_duration * ln(600.0::float8))))::int
        END AS duration,
        CASE WHEN s.u_user < 0.20 THEN NULL
            ELSE md5(s.org_uuid::text || '/user/' || floor(s.u_user * 1000)::int % 12)::uuid
        END AS user_uuid
    FROM scoped AS s
    OFFSET 0  -- optimisation fence, see the header
)
INSERT INTO ops.operation_runs (
    run_id, pipeline_run_id, workflow_id, operation_id, action_id, entity_type, entity_id,
    org_id, company_id, source_provider, status, attempt_count, started_at, ended_at,
    duration_ms, cost_usd, error_code, error_message, created_at, user_id, role, auth_method,
    input_payload, output_payload, updated_at
)
SELECT
    t.run_uuid,
    CASE WHEN t.h_misc / 100 % 10 < 3 THEN NULL
        ELSE md5(t.org_uuid::text || '/pipeline/' || floor(date_part('epoch', t.created_ts) / 900)
            || '/' || t.h_misc / 1000 % 3)::uuid
    END,
    CASE WHEN t.h_misc / 100 % 10 < 3 THEN NULL
        WHEN t.etype = 'job' THEN 'wf_job_signal_monitor'
        ELSE (ARRAY[
            'wf_inbound_lead_enrichment', 'wf_account_research', 'wf_crm_hygiene',
            'wf_outbound_list_build'
        ])[1 + t.h_misc / 1000 % 4]
    END,
    t.op,
    coalesce(t.provider, 'internal') || '.' || split_part(t.op, '.', 2) || '_'
        || split_part(t.op, '.', 3) || '.v' || (1 + t.h_misc / 10000 % 3),
    t.etype,
    t.entity_uuid,
    t.org_uuid,
    t.tenant_uuid,
    t.provider,
    t.run_status,
    t.attempts,
    t.started_ts,
    t.started_ts + t.duration * interval '1 millisecond',
    t.duration,
    CASE
        WHEN t.provider IS NULL THEN NULL
        WHEN t.run_status IN ('skipped', 'canceled') THEN 0
        ELSE round((0.0004 + 0.12 * t.u_cost ^ 3)::numeric, 4 + 2 * (t.h_misc % 2)::int)
    END,
    CASE WHEN t.run_status = 'failed' THEN (ARRAY[
        'provider_timeout', 'provider_rate_limited', 'provider_error', 'not_found',
        'invalid_input', 'quota_exceeded', 'auth_failed'
    ])[t.error_idx] END,
    CASE WHEN t.run_status = 'failed' THEN (ARRAY[
        'Provider did not respond within 30s', 'Provider returned 429 Too Many Requests',
        'Provider returned HTTP 500 Internal Server Error', 'No matching record found at provider',
        'Input failed validation: domain or name is required',
        'Monthly provider credit quota exhausted', 'Provider rejected credentials (HTTP 401)'
    ])[t.error_idx] END,
    t.created_ts,
    t.user_uuid,
    CASE WHEN t.user_uuid IS NULL THEN 'service'
        WHEN t.u_user < 0.35 THEN 'admin' ELSE 'member' END,
    CASE WHEN t.user_uuid IS NULL THEN 'service_token'
        WHEN t.u_user < 0.70 THEN 'api_key' ELSE 'session' END,
    jsonb_build_object(
        'entity_type', t.etype,
        'entity_id', t.entity_uuid,
        'options', jsonb_build_object('force_refresh', t.u_cost < 0.1, 'max_cost_usd', 0.5)
    ),
    CASE t.run_status
        WHEN 'succeeded' THEN jsonb_build_object(
            'fields_updated', 1 + t.h_misc % 12,
            'match_confidence', round(t.u_error::numeric, 3)
        )
        WHEN 'failed' THEN jsonb_build_object('retryable', t.error_idx IN (1, 2, 3))
    END,
    t.started_ts + coalesce(t.duration, 0) * interval '1 millisecond'
FROM timed AS t;
