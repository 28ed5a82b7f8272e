-- Fill entities.person_entities with :n_persons people. Each person works at one of the
-- :n_companies seeded companies (run seed_company_entities.sql first) and inherits its org,
-- tenant company_id (mostly) and email domain. Set-based and deterministic: every value derives
-- from hashint8extended(row number, seed).
-- Binds: :seed, :n_persons, :n_companies, :n_runs, :end_ts, :days.
-- "OFFSET 0" marks an optimisation fence: it stops the planner from inlining a subquery's
-- expressions into every reference to them (recomputing hashes and md5s many times per row).
WITH params AS (
    SELECT
        CAST(:seed AS bigint) AS seed,
        CAST(:seed AS bigint) * 128 + 64 AS s,
        CAST(:n_persons AS bigint) AS n,
        CAST(:n_companies AS bigint) AS n_companies,
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
        1 + (hashint8extended(g.i, p.s + 1) & 2147483647) % p.n_companies AS company_idx,
        (hashint8extended(g.i, p.s + 2) & 4294967295)::float8 / 4294967296 AS u_first,
        (hashint8extended(g.i, p.s + 3) & 4294967295)::float8 / 4294967296 AS u_last,
        (hashint8extended(g.i, p.s + 4) & 4294967295)::float8 / 4294967296 AS u_seniority,
        (hashint8extended(g.i, p.s + 5) & 4294967295)::float8 / 4294967296 AS u_dept,
        (hashint8extended(g.i, p.s + 6) & 4294967295)::float8 / 4294967296 AS u_email,
        (hashint8extended(g.i, p.s + 7) & 4294967295)::float8 / 4294967296 AS u_phone,
        (hashint8extended(g.i, p.s + 8) & 4294967295)::float8 / 4294967296 AS u_conf,
        (hashint8extended(g.i, p.s + 9) & 4294967295)::float8 / 4294967296 AS u_version,
        (hashint8extended(g.i, p.s + 10) & 4294967295)::float8 / 4294967296 AS u_updated,
        (hashint8extended(g.i, p.s + 11) & 4294967295)::float8 / 4294967296 AS u_created,
        (hashint8extended(g.i, p.s + 12) & 4294967295)::float8 / 4294967296 AS u_op,
        hashint8extended(g.i, p.s + 13) & 2147483647 AS h_run,
        hashint8extended(g.i, p.s + 14) & 2147483647 AS h_misc,
        hashint8extended(g.i, p.s + 15) & 2147483647 AS h_null,
        hashint8extended(g.i, p.s + 16) & 2147483647 AS h_null2
    FROM params AS p
    CROSS JOIN generate_series(1, p.n) AS g (i)
),
base AS (
    SELECT
        r.*,
        c.org_id AS org_uuid,
        c.company_id AS tenant_uuid,
        c.canonical_domain AS company_domain,
        md5(r.seed || '/person/' || r.i)::uuid AS entity_uuid,
        (ARRAY[
            'James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda', 'David',
            'Elizabeth', 'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica', 'Thomas',
            'Sarah', 'Carlos', 'Karen', 'Daniel', 'Lisa', 'Matthew', 'Nancy', 'Anthony', 'Sandra',
            'Mark', 'Ashley', 'Priya', 'Emily', 'Wei', 'Aisha', 'Lukas', 'Sofia', 'Mateo', 'Chloe',
            'Noah', 'Emma', 'Liam', 'Olivia', 'Arjun', 'Yuki', 'Omar', 'Fatima', 'Hugo', 'Ines',
            'Jonas', 'Lea', 'Marco', 'Giulia', 'Pierre', 'Camille', 'Sven', 'Freya', 'Diego',
            'Lucia', 'Kenji', 'Hana', 'Ravi', 'Ananya'
        ])[1 + floor(r.u_first * 60)::int] AS first,
        (ARRAY[
            'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis',
            'Rodriguez', 'Martinez', 'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson',
            'Thomas', 'Taylor', 'Moore', 'Jackson', 'Martin', 'Lee', 'Perez', 'Thompson', 'White',
            'Harris', 'Sanchez', 'Clark', 'Ramirez', 'Lewis', 'Robinson', 'Walker', 'Young',
            'Allen', 'King', 'Wright', 'Scott', 'Torres', 'Nguyen', 'Hill', 'Flores', 'Green',
            'Adams', 'Nelson', 'Baker', 'Hall', 'Rivera', 'Campbell', 'Mitchell', 'Carter',
            'Roberts', 'Patel', 'Kim', 'Chen', 'Muller', 'Schmidt', 'Rossi', 'Dubois', 'Tanaka',
            'Singh', 'Larsen'
        ])[1 + floor(r.u_last * 60)::int] AS last,
        (ARRAY[
            'entry', 'entry', 'entry', 'senior', 'senior', 'senior', 'manager', 'manager',
            'director', 'vp', 'c_suite', 'owner'
        ])[1 + floor(r.u_seniority * 12)::int] AS seniority_level,
        1 + floor(r.u_dept * 10)::int AS dept_idx,
        1 + floor(5 * r.u_version ^ 2)::int AS version,
        r.start_ts + make_interval(secs => r.span_s * (0.02 + 0.97 * r.u_updated)) AS updated_ts
    FROM rnd AS r
    JOIN entities.company_entities AS c
        ON c.entity_id = md5(r.seed || '/company/' || r.company_idx)::uuid
    OFFSET 0  -- optimisation fence, see the header
),
person AS (
    SELECT
        b.*,
        (ARRAY[
            'engineering', 'sales', 'marketing', 'finance', 'operations', 'product',
            'human_resources', 'legal', 'customer_success', 'information_technology'
        ])[b.dept_idx] AS dept,
        (ARRAY[
            'Engineering', 'Sales', 'Marketing', 'Finance', 'Operations', 'Product', 'People',
            'Legal', 'Customer Success', 'IT'
        ])[b.dept_idx] AS dept_title,
        CASE b.h_misc % 3
            WHEN 0 THEN lower(b.first) || '.' || lower(b.last)
            WHEN 1 THEN lower(left(b.first, 1)) || lower(b.last)
            ELSE lower(b.first)
        END AS email_local,
        CASE
            WHEN b.u_phone < 0.70 THEN '+1' || (201 + (b.h_misc >> 3) % 780) || '555'
                || lpad(((b.h_misc >> 13) % 10000)::text, 4, '0')
            WHEN b.u_phone < 0.82 THEN '+4420794' || lpad(((b.h_misc >> 13) % 100000)::text, 5, '0')
            WHEN b.u_phone < 0.92 THEN '+4930' || lpad(((b.h_misc >> 5) % 100000000)::text, 8, '0')
            ELSE '+331' || lpad(((b.h_misc >> 5) % 100000000)::text, 8, '0')
        END AS phone,
        CASE
            WHEN b.version = 1 THEN b.updated_ts
            ELSE b.start_ts + (b.updated_ts - b.start_ts) * (0.9 * b.u_created)
        END AS created_ts
    FROM base AS b
),
titled AS (
    SELECT
        p.*,
        CASE p.seniority_level
            WHEN 'entry' THEN p.dept_title || ' Associate'
            WHEN 'senior' THEN 'Senior ' || p.dept_title || ' Specialist'
            WHEN 'manager' THEN p.dept_title || ' Manager'
            WHEN 'director' THEN 'Director of ' || p.dept_title
            WHEN 'vp' THEN 'VP of ' || p.dept_title
            WHEN 'c_suite' THEN CASE p.dept
                WHEN 'engineering' THEN 'CTO'
                WHEN 'sales' THEN 'Chief Revenue Officer'
                WHEN 'marketing' THEN 'CMO'
                WHEN 'finance' THEN 'CFO'
                WHEN 'operations' THEN 'COO'
                ELSE 'Chief ' || p.dept_title || ' Officer'
            END
            ELSE 'Founder & CEO'
        END AS title_text
    FROM person AS p
    OFFSET 0  -- optimisation fence, see the header
),
final AS (
    SELECT
        t.org_uuid AS org_id,
        CASE WHEN t.h_null % 100 < 6 THEN NULL ELSE t.tenant_uuid END AS company_id,
        t.entity_uuid AS entity_id,
        CASE WHEN (t.h_null >> 7) % 100 < 5 THEN NULL ELSE t.first || ' ' || t.last END
            AS full_name,
        CASE WHEN (t.h_null >> 14) % 100 < 2 THEN NULL ELSE t.first END AS first_name,
        CASE WHEN (t.h_null >> 14) % 100 < 2 THEN NULL ELSE t.last END AS last_name,
        CASE WHEN (t.h_null >> 21) % 100 < 12 THEN NULL
            ELSE 'https://www.linkedin.com/in/' || lower(t.first) || '-' || lower(t.last) || '-'
                || left(md5(t.entity_uuid::text), 8) END AS linkedin_url,
        CASE WHEN t.h_misc % 100 < 4 THEN NULL ELSE t.title_text END AS title,
        CASE WHEN (t.h_misc >> 7) % 100 < 8 THEN NULL ELSE t.seniority_level END AS seniority,
        CASE WHEN (t.h_misc >> 14) % 100 < 8 THEN NULL ELSE t.dept END AS department,
        CASE WHEN t.u_email < 0.10 OR t.company_domain IS NULL THEN NULL
            ELSE t.email_local || '@' || t.company_domain END AS work_email,
        CASE
            WHEN t.u_email < 0.10 OR t.company_domain IS NULL THEN NULL
            WHEN t.u_email < 0.78 THEN 'valid'
            WHEN t.u_email < 0.88 THEN 'catch_all'
            WHEN t.u_email < 0.96 THEN 'unknown'
            ELSE 'invalid'
        END AS email_status,
        CASE WHEN t.h_null2 % 100 < 30 THEN NULL ELSE t.phone END AS phone_e164,
        CASE WHEN t.u_conf < 0.05 THEN NULL
            ELSE round(((t.u_conf - 0.05) / 0.95)::numeric, 3) END AS contact_confidence,
        t.updated_ts - make_interval(secs => t.u_created * 2) AS last_enriched_at,
        CASE WHEN t.u_op < 0.02 THEN NULL ELSE (ARRAY[
            'person.enrich.contact', 'person.enrich.contact', 'person.enrich.profile',
            'person.verify.email', 'person.resolve.linkedin', 'person.find.phone'
        ])[1 + floor(t.u_op * 6)::int] END AS last_operation_id,
        CASE WHEN t.h_run % 20 = 0 THEN NULL
            ELSE md5(t.seed || '/run/' || (1 + t.h_run % t.n_runs))::uuid END AS last_run_id,
        t.version AS record_version,
        t.updated_ts AS updated_at,
        t.created_ts AS created_at
    FROM titled AS t
)
INSERT INTO entities.person_entities (
    org_id, company_id, entity_id, full_name, first_name, last_name, linkedin_url, title,
    seniority, department, work_email, email_status, phone_e164, contact_confidence,
    last_enriched_at, last_operation_id, last_run_id, record_version, updated_at,
    canonical_payload, created_at
)
SELECT
    f.org_id, f.company_id, f.entity_id, f.full_name, f.first_name, f.last_name, f.linkedin_url,
    f.title, f.seniority, f.department, f.work_email, f.email_status, f.phone_e164,
    f.contact_confidence, f.last_enriched_at, f.last_operation_id, f.last_run_id,
    f.record_version, f.updated_at,
    jsonb_build_object(
        'full_name', f.full_name,
        'first_name', f.first_name,
        'last_name', f.last_name,
        'linkedin_url', f.linkedin_url,
        'title', f.title,
        'seniority', f.seniority,
        'department', f.department,
        'work_email', f.work_email,
        'email_status', f.email_status,
        'phone_e164', f.phone_e164,
        'contact_confidence', f.contact_confidence,
        'record_version', f.record_version
    ),
    f.created_at
FROM final AS f;
