-- Plant contract violations in entities.person_entities: :per_kind rows per kind, each row
-- carrying exactly one violation (updated_at unchanged, so inside the seeded window).
-- Returns one row per violated person with its kind.
-- Binds: :per_kind.
WITH kinds AS (
    SELECT ARRAY['phone_not_e164', 'email_malformed', 'confidence_out_of_range'] AS names
),
candidates AS (
    SELECT pe.org_id, pe.entity_id
    FROM entities.person_entities AS pe
    ORDER BY pe.org_id, pe.entity_id
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
UPDATE entities.person_entities AS pe
SET
    phone_e164 = CASE WHEN p.kind = 'phone_not_e164' THEN 'call me' ELSE pe.phone_e164 END,
    work_email = CASE WHEN p.kind = 'email_malformed' THEN 'not-an-email' ELSE pe.work_email END,
    contact_confidence = CASE
        WHEN p.kind = 'confidence_out_of_range' THEN -0.2 ELSE pe.contact_confidence
    END
FROM picked AS p
WHERE pe.org_id = p.org_id AND pe.entity_id = p.entity_id
RETURNING p.kind;
