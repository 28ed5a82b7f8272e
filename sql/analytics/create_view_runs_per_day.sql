-- Runs per UTC day by status and provider, with their cost.
CREATE OR REPLACE VIEW runs_per_day AS
SELECT
    CAST(timezone('UTC', created_at) AS DATE) AS day,
    status,
    coalesce(source_provider, '(none)') AS provider,
    count(*) AS runs,
    sum(cost_usd) AS cost_usd,
    CAST(avg(duration_ms) AS BIGINT) AS avg_duration_ms
FROM dx_operation_runs_v1
GROUP BY ALL;
