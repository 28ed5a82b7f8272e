-- Fill entities.company_entities with :n_companies companies spread (skewed) over 24 orgs, each
-- org having 2-6 tenant companies (company_id). Set-based and deterministic: every value derives
-- from hashint8extended(row number, seed), so a given :seed always gives the same rows.
-- Binds: :seed, :n_companies, :n_runs, :end_ts, :days.
-- "OFFSET 0" marks an optimisation fence: it stops the planner from inlining a subquery's
-- expressions into every reference to them (recomputing hashes and md5s many times per row).
-- Cursor updated_at lies in [end_ts - days, end_ts - 1% of the span]; created_at (time of
-- version 1) lies between end_ts - days and updated_at.
WITH params AS (
    SELECT
        CAST(:seed AS bigint) AS seed,
        CAST(:seed AS bigint) * 128 AS s,
        CAST(:n_companies AS bigint) AS n,
        CAST(:n_runs AS bigint) AS n_runs,
        CAST(:end_ts AS timestamptz) - make_interval(days => CAST(:days AS int)) AS start_ts,
        CAST(:days AS int) * 86400.0::float8 AS span_s
),
rnd AS (
    SELECT
        g.i,
        p.seed,
        p.n_runs,
        p.start_ts,
        p.span_s,
        (hashint8extended(g.i, p.s + 1) & 4294967295)::float8 / 4294967296 AS u_org,
        (hashint8extended(g.i, p.s + 2) & 4294967295)::float8 / 4294967296 AS u_tenant,
        (hashint8extended(g.i, p.s + 3) & 4294967295)::float8 / 4294967296 AS u_name,
        (hashint8extended(g.i, p.s + 4) & 4294967295)::float8 / 4294967296 AS u_core,
        (hashint8extended(g.i, p.s + 5) & 4294967295)::float8 / 4294967296 AS u_suffix,
        (hashint8extended(g.i, p.s + 6) & 4294967295)::float8 / 4294967296 AS u_tld,
        (hashint8extended(g.i, p.s + 7) & 4294967295)::float8 / 4294967296 AS u_linkedin,
        (hashint8extended(g.i, p.s + 8) & 4294967295)::float8 / 4294967296 AS u_industry,
        (hashint8extended(g.i, p.s + 9) & 4294967295)::float8 / 4294967296 AS u_employees,
        (hashint8extended(g.i, p.s + 10) & 4294967295)::float8 / 4294967296 AS u_revenue,
        (hashint8extended(g.i, p.s + 11) & 4294967295)::float8 / 4294967296 AS u_country,
        (hashint8extended(g.i, p.s + 12) & 4294967295)::float8 / 4294967296 AS u_conf,
        (hashint8extended(g.i, p.s + 13) & 4294967295)::float8 / 4294967296 AS u_version,
        (hashint8extended(g.i, p.s + 14) & 4294967295)::float8 / 4294967296 AS u_updated,
        (hashint8extended(g.i, p.s + 15) & 4294967295)::float8 / 4294967296 AS u_created,
        (hashint8extended(g.i, p.s + 16) & 4294967295)::float8 / 4294967296 AS u_op,
        (hashint8extended(g.i, p.s + 17) & 4294967295)::float8 / 4294967296 AS u_priority,
        (hashint8extended(g.i, p.s + 18) & 4294967295)::float8 / 4294967296 AS u_null,
        hashint8extended(g.i, p.s + 19) & 2147483647 AS h_run,
        hashint8extended(g.i, p.s + 20) & 2147483647 AS h_misc,
        hashint8extended(g.i, p.s + 21) & 2147483647 AS h_null
    FROM params AS p
    CROSS JOIN generate_series(1, p.n) AS g (i)
    OFFSET 0  -- optimisation fence, see the header
),
base AS (
    SELECT
        r.*,
        least(23, floor(24 * r.u_org ^ 1.7))::int AS org_idx,
        (ARRAY[
            'Blue', 'Bright', 'Cloud', 'Core', 'Crest', 'Delta', 'Echo', 'Summit', 'Harbor',
            'Iron', 'Lumen', 'Maple', 'Nova', 'Orbit', 'Pine', 'Quantum', 'Red', 'Silver',
            'Spark', 'Stone', 'True', 'Vertex', 'Wave', 'Zen', 'Atlas', 'Beacon', 'Cedar',
            'Falcon', 'Granite', 'Helix'
        ])[1 + floor(r.u_name * 30)::int] AS name_prefix,
        (ARRAY[
            'Labs', 'Systems', 'Analytics', 'Health', 'Logistics', 'Robotics', 'Capital',
            'Networks', 'Software', 'Foods', 'Energy', 'Media', 'Bio', 'Security', 'Data',
            'Cloud', 'Works', 'Dynamics', 'Partners', 'Retail'
        ])[1 + floor(r.u_core * 20)::int] AS name_core,
        (ARRAY['', '', '', ' Inc', ' Inc', ' LLC', ' Ltd', ' GmbH', ' Corp', ' Group'])
            [1 + floor(r.u_suffix * 10)::int] AS name_suffix,
        (ARRAY['com', 'com', 'com', 'com', 'com', 'com', 'io', 'ai', 'co', 'net', 'de', 'co.uk'])
            [1 + floor(r.u_tld * 12)::int] AS tld,
        (ARRAY[
            'Computer Software', 'Information Technology & Services', 'Financial Services',
            'Hospital & Health Care', 'Marketing & Advertising', 'Retail',
            'Logistics & Supply Chain', 'Biotechnology', 'Real Estate', 'Education Management',
            'Manufacturing', 'Telecommunications', 'Renewables & Environment', 'Insurance',
            'Staffing & Recruiting', 'Media Production'
        ])[1 + floor(r.u_industry * 16)::int] AS industry_name,
        floor(exp(r.u_employees * ln(50000.0::float8)))::int AS employees,
        (ARRAY[
            'US', 'US', 'US', 'US', 'US', 'US', 'US', 'US', 'GB', 'GB', 'DE', 'FR', 'CA', 'NL',
            'IN', 'AU', 'SE', 'ES', 'BR', 'SG', 'IL', 'JP', 'IE', 'CH'
        ])[1 + floor(r.u_country * 24)::int] AS country,
        1 + floor(5 * r.u_version ^ 2)::int AS version,
        r.start_ts + make_interval(secs => r.span_s * (0.02 + 0.97 * r.u_updated)) AS updated_ts
    FROM rnd AS r
),
company AS (
    SELECT
        b.*,
        md5(b.seed || '/org/' || b.org_idx)::uuid AS org_uuid,
        md5(
            b.seed || '/tenant/' || b.org_idx || '/' || floor(b.u_tenant * (2 + b.org_idx % 5))
        )::uuid AS tenant_uuid,
        md5(b.seed || '/company/' || b.i)::uuid AS entity_uuid,
        b.name_prefix || ' ' || b.name_core || b.name_suffix AS name,
        lower(b.name_prefix || b.name_core)
            || CASE WHEN b.h_misc % 2 = 0 THEN '' ELSE (b.i % 997)::text END
            || '.' || b.tld AS domain,
        'https://www.linkedin.com/company/' || lower(b.name_prefix || '-' || b.name_core)
            || CASE WHEN b.h_misc % 2 = 0 THEN '' ELSE '-' || (b.i % 997) END AS linkedin,
        CASE
            WHEN b.employees <= 10 THEN '1-10'
            WHEN b.employees <= 50 THEN '11-50'
            WHEN b.employees <= 200 THEN '51-200'
            WHEN b.employees <= 500 THEN '201-500'
            WHEN b.employees <= 1000 THEN '501-1000'
            WHEN b.employees <= 5000 THEN '1001-5000'
            WHEN b.employees <= 10000 THEN '5001-10000'
            ELSE '10001+'
        END AS employee_bucket,
        CASE
            WHEN b.employees <= 10 THEN '<$1M'
            WHEN b.employees <= 50 THEN '$1M-$10M'
            WHEN b.employees <= 200 THEN '$10M-$50M'
            WHEN b.employees <= 1000 THEN '$50M-$250M'
            WHEN b.employees <= 5000 THEN '$250M-$1B'
            ELSE '$1B+'
        END AS revenue,
        CASE
            WHEN b.version = 1 THEN b.updated_ts
            ELSE b.start_ts + (b.updated_ts - b.start_ts) * (0.9 * b.u_created)
        END AS created_ts,
        1 + (b.h_misc / 7) % 8 AS provider_offset
    FROM base AS b
    OFFSET 0  -- optimisation fence, see the header
),
final AS (
    SELECT
        c.org_uuid AS org_id,
        c.tenant_uuid AS company_id,
        c.entity_uuid AS entity_id,
        CASE WHEN c.u_null < 0.01 THEN NULL ELSE c.name END AS canonical_name,
        CASE WHEN c.u_null >= 0.97 THEN NULL ELSE c.domain END AS canonical_domain,
        CASE WHEN c.u_linkedin < 0.10 THEN NULL ELSE c.linkedin END AS linkedin_url,
        CASE WHEN c.u_linkedin < 0.15 THEN NULL ELSE (10000 + c.h_misc % 99990000)::text END
            AS linkedin_page_id,
        CASE WHEN c.h_null % 100 < 4 THEN NULL ELSE c.industry_name END AS industry,
        CASE WHEN (c.h_null >> 7) % 100 < 8 THEN NULL ELSE c.employees END AS employee_count,
        CASE WHEN (c.h_null >> 7) % 100 < 8 THEN NULL ELSE c.employee_bucket END
            AS employee_range,
        CASE WHEN c.u_revenue < 0.10 THEN NULL ELSE c.revenue END AS revenue_band,
        CASE WHEN (c.h_null >> 14) % 100 < 2 THEN NULL ELSE c.country END AS hq_country,
        CASE WHEN c.u_conf < 0.03 THEN NULL ELSE round((0.40 + 0.60 * c.u_conf)::numeric, 3) END
            AS enrichment_confidence,
        CASE WHEN (c.h_null >> 21) % 100 < 2 THEN NULL
            ELSE c.updated_ts - make_interval(secs => c.u_priority * 2) END AS last_enriched_at,
        CASE WHEN c.u_op < 0.02 THEN NULL ELSE (ARRAY[
            'company.enrich.profile', 'company.enrich.profile', 'company.resolve.domain',
            'company.enrich.technographics', 'company.enrich.funding'
        ])[1 + floor(c.u_op * 5)::int] END AS last_operation_id,
        CASE WHEN c.h_run % 20 = 0 THEN NULL
            ELSE md5(c.seed || '/run/' || (1 + c.h_run % c.n_runs))::uuid END AS last_run_id,
        CASE WHEN c.u_priority < 0.10 THEN NULL ELSE (ARRAY[
            'clearbit>apollo>prospeo', 'apollo>clearbit', 'manual>clearbit>apollo',
            'peopledatalabs>apollo', 'crunchbase>clearbit', 'latest_wins'
        ])[1 + floor(c.u_priority * 6)::int] END AS source_priority,
        c.version AS record_version,
        c.updated_ts AS updated_at,
        c.name || ' is a ' || c.employee_bucket || ' employee ' || lower(c.industry_name)
            || ' company headquartered in ' || c.country || '.' AS description,
        (ARRAY[
            'clearbit', 'apollo', 'prospeo', 'peopledatalabs', 'crunchbase', 'builtwith',
            'hunter', 'zoominfo', 'clearbit', 'apollo'
        ])[c.provider_offset:c.provider_offset + (c.h_misc / 11) % 3] AS source_providers,
        c.created_ts AS created_at
    FROM company AS c
)
INSERT INTO entities.company_entities (
    org_id, company_id, entity_id, canonical_name, canonical_domain, linkedin_url,
    linkedin_page_id, industry, employee_count, revenue_band, hq_country, enrichment_confidence,
    last_enriched_at, last_operation_id, last_run_id, source_priority, record_version, updated_at,
    employee_range, description, source_providers, canonical_payload, created_at
)
SELECT
    f.org_id, f.company_id, f.entity_id, f.canonical_name, f.canonical_domain, f.linkedin_url,
    f.linkedin_page_id, f.industry, f.employee_count, f.revenue_band, f.hq_country,
    f.enrichment_confidence, f.last_enriched_at, f.last_operation_id, f.last_run_id,
    f.source_priority, f.record_version, f.updated_at, f.employee_range, f.description,
    f.source_providers,
    jsonb_build_object(
        'name', f.canonical_name,
        'domain', f.canonical_domain,
        'linkedin_url', f.linkedin_url,
        'industry', f.industry,
        'employee_count', f.employee_count,
        'employee_range', f.employee_range,
        'revenue_band', f.revenue_band,
        'hq_country', f.hq_country,
        'enrichment_confidence', f.enrichment_confidence,
        'record_version', f.record_version
    ),
    f.created_at
FROM final AS f;
