-- Current companies and persons per organisation (the upsert snapshot tables).
CREATE OR REPLACE VIEW current_entities_per_org AS
SELECT
    org_id,
    'company' AS entity_type,
    count(*) AS entities,
    count(*) FILTER (WHERE canonical_domain IS NULL) AS missing_domain,
    count(*) FILTER (WHERE canonical_name IS NULL) AS missing_name,
    max(updated_at) AS last_updated_at
FROM dx_company_entities_v1
GROUP BY ALL
UNION ALL
SELECT
    org_id,
    'person' AS entity_type,
    count(*) AS entities,
    NULL AS missing_domain,
    count(*) FILTER (WHERE full_name IS NULL AND (first_name IS NULL OR last_name IS NULL))
        AS missing_name,
    max(updated_at) AS last_updated_at
FROM dx_person_entities_v1
GROUP BY ALL;
