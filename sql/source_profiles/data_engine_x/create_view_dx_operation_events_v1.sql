-- dx_operation_events_v1 from ops.operation_attempts (there is no ops.operation_events): one
-- event per provider call, its organisation and entity through its run. event_sequence numbers
-- a run's attempts 1, 2, ... by (created_at, id): stable (a run's attempts are written once, in
-- one statement), but not the order of the calls, which the producer does not record.
-- Column by column: docs/source_mapping_data_engine_x.md.
--! Template (lines starting --! are not printed): {schema} is an identifier quoted by the code;
--! doubled braces are single braces in the printed SQL.
CREATE OR REPLACE VIEW {schema}.dx_operation_events_v1 AS
SELECT
    a.id AS event_id,
    a.run_id,
    CASE a.status
        WHEN 'failed' THEN 'error'
        WHEN 'skipped' THEN 'request_skipped'
        ELSE 'response_received'
    END AS event_type,
    (
        SELECT count(*)::int
        FROM ops.operation_attempts AS b
        WHERE b.run_id = a.run_id AND (b.created_at, b.id) <= (a.created_at, a.id)
    ) AS event_sequence,
    a.created_at AS occurred_at,
    r.org_id,
    r.company_id,
    r.entity_type,
    {run_entity_id} AS entity_id,
    a.provider,
    a.http_status,
    NULL::text AS raw_request_ref,
    CASE
        WHEN a.raw_response IS NOT NULL
            THEN 'ops.operation_attempts/' || a.id::text || '/raw_response'
    END AS raw_response_ref,
    md5(a.raw_response::text) AS payload_hash,
    CASE
        WHEN a.status = 'failed' THEN coalesce(a.provider_status, 'http_' || a.http_status::text)
    END AS error_code,
    NULL::text AS error_message,
    jsonb_strip_nulls(jsonb_build_object(
        'attempt_status', a.status,
        'action', a.action,
        'skip_reason', a.skip_reason,
        'provider_status', a.provider_status,
        'duration_ms', a.duration_ms
    )) AS metadata_json
FROM ops.operation_attempts AS a
JOIN ops.operation_runs AS r ON r.run_id = a.run_id;
