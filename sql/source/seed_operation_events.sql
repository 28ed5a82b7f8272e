-- Fill ops.operation_events from ops.operation_runs (run seed_operation_runs.sql first): 3 to 7
-- events per run with event_sequence 0, 1, 2, ... and occurred_at strictly increasing between
-- the run's started_at and ended_at. Shape of a run's log: state_change (queued -> running), then
-- request_sent / response_received / retry_scheduled cycles, then a final state_change (or error
-- for failed runs). About 1% of events carry secret-looking keys nested in metadata_json.
-- Request and response events keep the full provider payloads in the raw_request / raw_response
-- extras, credentials included, as a real system would: extras must never be exported.
-- Deterministic: per-run randomness comes from the bytes of run_id, per-event randomness from
-- uuid_hash_extended(run_id, event_sequence); event_id = md5(run_id, event_sequence).
-- Binds: none.
WITH seq AS (
    SELECT
        r.run_id,
        r.org_id,
        r.company_id,
        r.entity_type,
        r.entity_id,
        r.operation_id,
        r.source_provider,
        r.status,
        r.error_code,
        r.error_message,
        r.started_at,
        coalesce(r.ended_at, r.started_at + interval '2 seconds') - r.started_at AS run_span,
        n.n_events,
        s.seq,
        md5(r.run_id::text || '/' || s.seq) AS hex,
        uuid_hash_extended(r.run_id, s.seq) & 2147483647 AS h,
        CASE
            WHEN s.seq = 0 THEN 'state_change'
            WHEN s.seq = n.n_events - 1 AND r.status = 'failed' THEN 'error'
            WHEN s.seq = n.n_events - 1 THEN 'state_change'
            WHEN (s.seq - 1) % 3 = 0 THEN 'request_sent'
            WHEN (s.seq - 1) % 3 = 1 THEN 'response_received'
            ELSE 'retry_scheduled'
        END AS etype
    FROM ops.operation_runs AS r
    CROSS JOIN LATERAL (SELECT 3 + get_byte(uuid_send(r.run_id), 0) % 5 AS n_events) AS n
    CROSS JOIN generate_series(0, n.n_events - 1) AS s (seq)
    OFFSET 0  -- optimisation fence: compute md5(...) once per row, not once per reference
),
ev AS (
    SELECT
        q.*,
        q.started_at
            + q.run_span * ((q.seq + (q.h % 256) / 512.0::float8) / q.n_events) AS occurred,
        CASE WHEN q.etype = 'response_received' THEN
            CASE
                WHEN q.h / 256 % 100 < 70 THEN 200
                WHEN q.h / 256 % 100 < 80 THEN 201
                WHEN q.h / 256 % 100 < 88 THEN 404
                WHEN q.h / 256 % 100 < 95 THEN 429
                ELSE 500
            END
        END AS http,
        q.h / 25600 % 10000 < 100 AS has_secret,
        q.h / 256000000 % 4 AS variant,
        left(q.hex, 24) AS token
    FROM seq AS q
),
shaped AS (
    SELECT
        e.*,
        CASE e.etype
            WHEN 'state_change' THEN jsonb_build_object(
                'from', CASE WHEN e.seq = 0 THEN 'queued' ELSE 'running' END,
                'to', CASE WHEN e.seq = 0 THEN 'running' ELSE e.status END
            )
            WHEN 'request_sent' THEN jsonb_build_object(
                'attempt', 1 + (e.seq - 1) / 3,
                'method', 'POST',
                'endpoint', '/v1/' || replace(e.operation_id, '.', '/')
            )
            WHEN 'response_received' THEN jsonb_build_object(
                'latency_ms', (date_part('epoch', e.run_span) * 1000 / e.n_events)::int,
                'bytes', 200 + e.h % 9000
            )
            WHEN 'retry_scheduled' THEN jsonb_build_object(
                'backoff_ms', 500 * (1 + (e.seq - 1) / 3),
                'reason', CASE WHEN e.h % 2 = 0 THEN 'rate_limited' ELSE 'timeout' END
            )
            ELSE jsonb_build_object('retryable', e.h % 3 = 0, 'error_code', e.error_code)
        END AS metadata
    FROM ev AS e
)
INSERT INTO ops.operation_events (
    event_id, run_id, event_type, event_sequence, occurred_at, org_id, company_id, entity_type,
    entity_id, provider, http_status, raw_request_ref, raw_response_ref, payload_hash, error_code,
    error_message, metadata_json, raw_request, raw_response, created_at
)
SELECT
    x.hex::uuid,
    x.run_id,
    x.etype,
    x.seq,
    x.occurred,
    x.org_id,
    x.company_id,
    x.entity_type,
    x.entity_id,
    CASE WHEN x.etype <> 'state_change' THEN x.source_provider END,
    x.http,
    CASE WHEN x.etype = 'request_sent' THEN
        's3://dx-raw-payloads/' || x.org_id || '/runs/' || x.run_id || '/' || x.seq
            || '/request.json'
    END,
    CASE WHEN x.etype = 'response_received' THEN
        's3://dx-raw-payloads/' || x.org_id || '/runs/' || x.run_id || '/' || x.seq
            || '/response.json'
    END,
    CASE WHEN x.etype IN ('request_sent', 'response_received') THEN md5(x.hex) END,
    CASE WHEN x.etype = 'error' THEN x.error_code END,
    CASE WHEN x.etype = 'error' THEN x.error_message END,
    CASE
        WHEN NOT x.has_secret THEN x.metadata
        WHEN x.variant = 0 THEN x.metadata || jsonb_build_object(
            'provider', jsonb_build_object(
                'name', x.source_provider, 'api_key', 'sk_live_' || x.token
            ),
            'headers', jsonb_build_object('Authorization', 'Bearer ' || x.token)
        )
        WHEN x.variant = 1 THEN x.metadata || jsonb_build_object(
            'request', jsonb_build_object(
                'headers', jsonb_build_object('X-Api-Key', x.token, 'Accept', 'application/json')
            )
        )
        WHEN x.variant = 2 THEN x.metadata || jsonb_build_object(
            'oauth', jsonb_build_object(
                'client_id', 'cli_' || left(x.token, 8),
                'client_secret', x.token,
                'access_token', 'ya29.' || x.token
            )
        )
        ELSE x.metadata || jsonb_build_object(
            'debug', jsonb_build_object(
                'connection', jsonb_build_object('password', x.token, 'token', 'tok_' || x.token)
            )
        )
    END,
    CASE WHEN x.etype = 'request_sent' THEN jsonb_build_object(
        'method', 'POST',
        'url', 'https://api.' || coalesce(x.source_provider, 'internal') || '.example/v1/'
            || replace(x.operation_id, '.', '/'),
        'headers', jsonb_build_object('Authorization', 'Bearer ' || x.token),
        'body', jsonb_build_object('entity_type', x.entity_type, 'entity_id', x.entity_id)
    ) END,
    CASE WHEN x.etype = 'response_received' THEN jsonb_build_object(
        'status', x.http,
        'body', jsonb_build_object('match', x.http < 300, 'request_id', right(x.hex, 16))
    ) END,
    x.occurred + (x.h % 50) * interval '1 millisecond'
FROM shaped AS x;
