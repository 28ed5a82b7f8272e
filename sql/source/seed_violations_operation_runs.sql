-- Plant contract violations in ops.operation_runs: :per_kind rows per kind, each row carrying
-- exactly one violation. Rows are picked among valid in-scope runs (company/person, succeeded,
-- ended) with the smallest run_id, so their created_at stays inside the seeded window.
-- Returns one row per violated run with its kind (the pipeline must dead-letter each).
-- Binds: :per_kind.
WITH kinds AS (
    SELECT ARRAY[
        'org_id_null', 'status_invalid', 'attempt_count_negative', 'ended_before_started',
        'cost_negative', 'started_in_future'
    ] AS names
),
candidates AS (
    SELECT r.run_id
    FROM ops.operation_runs AS r
    WHERE r.entity_type IN ('company', 'person')
        AND r.status = 'succeeded'
        AND r.ended_at IS NOT NULL
        AND r.cost_usd IS NOT NULL
    ORDER BY r.run_id
    LIMIT 6 * CAST(:per_kind AS int)
),
picked AS (
    SELECT
        c.run_id,
        k.names[1 + (row_number() OVER (ORDER BY c.run_id) - 1) / CAST(:per_kind AS int)] AS kind
    FROM candidates AS c
    CROSS JOIN kinds AS k
)
UPDATE ops.operation_runs AS r
SET
    org_id = CASE WHEN p.kind = 'org_id_null' THEN NULL ELSE r.org_id END,
    status = CASE WHEN p.kind = 'status_invalid' THEN 'exploded' ELSE r.status END,
    attempt_count = CASE WHEN p.kind = 'attempt_count_negative' THEN -1 ELSE r.attempt_count END,
    cost_usd = CASE WHEN p.kind = 'cost_negative' THEN -0.0125 ELSE r.cost_usd END,
    -- started in the future: created_at stays in the window; ended_at/duration become unknown
    -- so that the row does not also end before it starts.
    started_at = CASE
        WHEN p.kind = 'started_in_future' THEN now() + interval '2 days'
        ELSE r.started_at
    END,
    ended_at = CASE
        WHEN p.kind = 'ended_before_started' THEN r.started_at - interval '1 second'
        WHEN p.kind = 'started_in_future' THEN NULL
        ELSE r.ended_at
    END,
    duration_ms = CASE
        WHEN p.kind IN ('ended_before_started', 'started_in_future') THEN NULL
        ELSE r.duration_ms
    END
FROM picked AS p
WHERE r.run_id = p.run_id
RETURNING p.kind;
