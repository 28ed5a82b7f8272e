-- Plant contract violations in ops.operation_events: :per_kind rows per kind, each row carrying
-- exactly one violation, in distinct in-scope runs (company/person) with the largest run_id (so
-- they do not overlap the runs picked by seed_violations_operation_runs.sql):
--   duplicate_run_sequence: an extra event with a new event_id, a copy of the run's last event
--     (same run_id and event_sequence) 1 ms later; the original stays valid.
--   http_status_out_of_range: the response_received event at sequence 2 gets HTTP 999.
--   event_sequence_negative: the state_change at sequence 0 gets sequence -1.
-- Returns one row per row to dead-letter, with its kind.
-- Binds: :per_kind.
WITH kinds AS (
    SELECT ARRAY[
        'duplicate_run_sequence', 'http_status_out_of_range', 'event_sequence_negative'
    ] AS names
),
candidates AS (
    SELECT e.run_id
    FROM ops.operation_events AS e
    WHERE e.event_type = 'response_received'
        AND e.event_sequence = 2
        AND e.http_status = 200
        AND e.entity_type IN ('company', 'person')
    ORDER BY e.run_id DESC
    LIMIT 3 * CAST(:per_kind AS int)
),
picked AS (
    SELECT
        c.run_id,
        k.names[1 + (row_number() OVER (ORDER BY c.run_id DESC) - 1) / CAST(:per_kind AS int)]
            AS kind
    FROM candidates AS c
    CROSS JOIN kinds AS k
),
targets AS (
    SELECT x.event_id, x.kind
    FROM (
        SELECT
            e.event_id,
            e.event_sequence,
            p.kind,
            max(e.event_sequence) OVER (PARTITION BY e.run_id) AS last_sequence
        FROM ops.operation_events AS e
        JOIN picked AS p ON p.run_id = e.run_id
    ) AS x
    WHERE (x.kind = 'http_status_out_of_range' AND x.event_sequence = 2)
        OR (x.kind = 'event_sequence_negative' AND x.event_sequence = 0)
        OR (x.kind = 'duplicate_run_sequence' AND x.event_sequence = x.last_sequence)
),
duplicated AS (
    INSERT INTO ops.operation_events (
        event_id, run_id, event_type, event_sequence, occurred_at, org_id, company_id,
        entity_type, entity_id, provider, http_status, raw_request_ref, raw_response_ref,
        payload_hash, error_code, error_message, metadata_json, raw_request, raw_response,
        created_at
    )
    SELECT
        md5(e.event_id::text || '/duplicate')::uuid, e.run_id, e.event_type, e.event_sequence,
        e.occurred_at + interval '1 millisecond', e.org_id, e.company_id, e.entity_type,
        e.entity_id, e.provider, e.http_status, e.raw_request_ref, e.raw_response_ref,
        e.payload_hash, e.error_code, e.error_message, e.metadata_json, e.raw_request,
        e.raw_response, e.created_at + interval '1 millisecond'
    FROM ops.operation_events AS e
    JOIN targets AS t ON t.event_id = e.event_id
    WHERE t.kind = 'duplicate_run_sequence'
    RETURNING 'duplicate_run_sequence' AS kind
),
updated AS (
    UPDATE ops.operation_events AS e
    SET
        http_status = CASE
            WHEN t.kind = 'http_status_out_of_range' THEN 999 ELSE e.http_status
        END,
        event_sequence = CASE
            WHEN t.kind = 'event_sequence_negative' THEN -1 ELSE e.event_sequence
        END
    FROM targets AS t
    WHERE e.event_id = t.event_id AND t.kind <> 'duplicate_run_sequence'
    RETURNING t.kind
)
SELECT kind FROM duplicated
UNION ALL
SELECT kind FROM updated;
