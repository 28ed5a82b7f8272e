-- Plant contract violations in entities.company_entities: :per_kind rows per kind, each row
-- carrying exactly one violation (updated_at unchanged, so inside the seeded window).
-- Returns one row per violated company with its kind.
-- Binds: :per_kind.
WITH kinds AS (
    SELECT ARRAY[
        'confidence_out_of_range', 'employee_count_negative', 'record_version_below_one'
    ] AS names
),
candidates AS (
    SELECT c.org_id, c.entity_id
    FROM entities.company_entities AS c
    ORDER BY c.org_id, c.entity_id
    LIMIT 3 * CAST(:per_kind AS int)
),
picked AS (
    SELECT
        c.org_id,
        c.entity_id,
        k.names[
            1 + (row_number() OVER (ORDER BY c.org_id, c.entity_id) - 1) / CAST(:per_kind AS int)
        ] AS kind
    FROM candidates AS c
    CROSS JOIN kinds AS k
)
UPDATE entities.company_entities AS c
SET
    enrichment_confidence = CASE
        WHEN p.kind = 'confidence_out_of_range' THEN 1.7 ELSE c.enrichment_confidence
    END,
    employee_count = CASE
        WHEN p.kind = 'employee_count_negative' THEN -5 ELSE c.employee_count
    END,
    record_version = CASE
        WHEN p.kind = 'record_version_below_one' THEN 0 ELSE c.record_version
    END
FROM picked AS p
WHERE c.org_id = p.org_id AND c.entity_id = p.entity_id
RETURNING p.kind;
