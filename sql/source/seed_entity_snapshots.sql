-- Fill entities.entity_snapshots: one row per (entity, version) for versions 1..record_version of
-- every seeded company and person (captured_at increasing with the version, from the entity's
-- created_at to its updated_at), plus 1-2 snapshots per out-of-scope job run (about 2% of rows).
-- Run after the company, person and run seeds. Deterministic: ids derive from the entity ids,
-- other values from uuid_hash_extended(entity_id, seed + version).
-- Binds: :seed, :n_runs.
-- "OFFSET 0" marks an optimisation fence: it stops the planner from inlining a subquery's
-- expressions into every reference to them (recomputing hashes and md5s many times per row).
WITH params AS (
    SELECT
        CAST(:seed AS bigint) AS seed,
        CAST(:seed AS bigint) * 128 + 96 AS s,
        CAST(:n_runs AS bigint) AS n_runs
),
entity_versions AS (
    SELECT
        'company' AS entity_type,
        c.org_id,
        c.entity_id,
        c.record_version,
        c.created_at,
        c.updated_at,
        c.last_run_id,
        c.canonical_payload,
        'enrichment_confidence' AS confidence_key
    FROM entities.company_entities AS c
    UNION ALL
    SELECT
        'person',
        pe.org_id,
        pe.entity_id,
        pe.record_version,
        pe.created_at,
        pe.updated_at,
        pe.last_run_id,
        pe.canonical_payload,
        'contact_confidence'
    FROM entities.person_entities AS pe
),
versions AS (
    SELECT
        e.*,
        v.v,
        uuid_hash_extended(e.entity_id, p.s + v.v) & 2147483647 AS h,
        p.seed,
        p.n_runs
    FROM entity_versions AS e
    CROSS JOIN params AS p
    CROSS JOIN generate_series(1, e.record_version) AS v (v)
    OFFSET 0  -- optimisation fence: compute the hash once per row
)
INSERT INTO entities.entity_snapshots (
    id, org_id, entity_type, entity_id, record_version, canonical_payload, captured_at,
    source_run_id
)
SELECT
    md5(x.entity_id::text || '/snapshot/' || x.v)::uuid,
    x.org_id,
    x.entity_type,
    x.entity_id,
    x.v,
    CASE WHEN x.v = x.record_version THEN x.canonical_payload
        ELSE x.canonical_payload || jsonb_build_object(
            'record_version', x.v,
            x.confidence_key, round((x.h % 1000) / 1000.0, 3)
        )
    END,
    CASE WHEN x.record_version = 1 THEN x.updated_at
        ELSE x.created_at
            + (x.updated_at - x.created_at) * ((x.v - 1)::float8 / (x.record_version - 1))
    END,
    CASE
        WHEN x.v = x.record_version THEN x.last_run_id
        WHEN x.h % 10 = 0 THEN NULL
        ELSE md5(x.seed || '/run/' || (1 + (x.h / 10) % x.n_runs))::uuid
    END
FROM versions AS x
UNION ALL
SELECT
    md5(r.entity_id::text || '/snapshot/' || v.v)::uuid,
    r.org_id,
    r.entity_type,
    r.entity_id,
    v.v,
    jsonb_build_object(
        'job_title', (ARRAY[
            'Account Executive', 'Data Engineer', 'Head of Growth', 'SDR', 'Product Designer',
            'Site Reliability Engineer', 'Customer Success Manager', 'Financial Analyst'
        ])[1 + get_byte(uuid_send(r.run_id), 1) % 8],
        'location', (ARRAY['Remote', 'New York, NY', 'London, UK', 'Berlin, DE', 'Austin, TX'])
            [1 + get_byte(uuid_send(r.run_id), 2) % 5],
        'posting_url', 'https://jobs.example.com/postings/' || left(r.entity_id::text, 8),
        'record_version', v.v
    ),
    r.started_at
        + (coalesce(r.ended_at, r.started_at + interval '2 seconds') - r.started_at)
        * (v.v * 0.5::float8),
    r.run_id
FROM ops.operation_runs AS r
CROSS JOIN generate_series(1, 1 + get_byte(uuid_send(r.run_id), 3) % 2) AS v (v)
WHERE r.entity_type = 'job';
