-- Plant contract violations in entities.entity_snapshots: :per_kind rows per kind, each row
-- carrying exactly one violation, all captured inside the seeded window:
--   duplicate_entity_version: an extra snapshot with a new id, a copy of an existing company or
--     person snapshot (same org_id, entity_type, entity_id, record_version) 1 ms later; the
--     original stays valid.
--   entity_type_invalid: an existing company or person snapshot gets entity_type 'robot'.
-- Returns one row per row to dead-letter, with its kind.
-- Binds: :per_kind.
WITH kinds AS (
    SELECT ARRAY['duplicate_entity_version', 'entity_type_invalid'] AS names
),
candidates AS (
    SELECT s.id
    FROM entities.entity_snapshots AS s
    WHERE s.entity_type IN ('company', 'person')
    ORDER BY s.id
    LIMIT 2 * CAST(:per_kind AS int)
),
picked AS (
    SELECT
        c.id,
        k.names[1 + (row_number() OVER (ORDER BY c.id) - 1) / CAST(:per_kind AS int)] AS kind
    FROM candidates AS c
    CROSS JOIN kinds AS k
),
duplicated AS (
    INSERT INTO entities.entity_snapshots (
        id, org_id, entity_type, entity_id, record_version, canonical_payload, captured_at,
        source_run_id
    )
    SELECT
        md5(s.id::text || '/duplicate')::uuid, s.org_id, s.entity_type, s.entity_id,
        s.record_version, s.canonical_payload, s.captured_at + interval '1 millisecond',
        s.source_run_id
    FROM entities.entity_snapshots AS s
    JOIN picked AS p ON p.id = s.id
    WHERE p.kind = 'duplicate_entity_version'
    RETURNING 'duplicate_entity_version' AS kind
),
updated AS (
    UPDATE entities.entity_snapshots AS s
    SET entity_type = 'robot'
    FROM picked AS p
    WHERE s.id = p.id AND p.kind = 'entity_type_invalid'
    RETURNING p.kind
)
SELECT kind FROM duplicated
UNION ALL
SELECT kind FROM updated;
