-- Per provider and error code: runs, runs that needed retries, retries, and retry events.
CREATE OR REPLACE VIEW provider_retries_and_errors AS
WITH runs AS (
    SELECT
        coalesce(source_provider, '(none)') AS provider,
        coalesce(error_code, '(none)') AS error_code,
        count(*) AS runs,
        count(*) FILTER (WHERE status = 'failed') AS failed_runs,
        count(*) FILTER (WHERE attempt_count > 1) AS retried_runs,
        sum(greatest(attempt_count - 1, 0)) AS retries
    FROM dx_operation_runs_v1
    GROUP BY ALL
),
events AS (
    SELECT
        coalesce(provider, '(none)') AS provider,
        coalesce(error_code, '(none)') AS error_code,
        count(*) FILTER (WHERE event_type = 'retry_scheduled') AS retry_events,
        count(*) FILTER (WHERE event_type = 'error') AS error_events
    FROM dx_operation_events_v1
    GROUP BY ALL
)
SELECT
    provider,
    error_code,
    coalesce(runs.runs, 0) AS runs,
    coalesce(runs.failed_runs, 0) AS failed_runs,
    coalesce(runs.retried_runs, 0) AS retried_runs,
    coalesce(runs.retries, 0) AS retries,
    coalesce(events.retry_events, 0) AS retry_events,
    coalesce(events.error_events, 0) AS error_events
FROM runs
FULL OUTER JOIN events USING (provider, error_code);
