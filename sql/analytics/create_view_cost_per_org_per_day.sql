-- Provider cost per organisation per UTC day (runs without a cost count as zero).
CREATE OR REPLACE VIEW cost_per_org_per_day AS
SELECT
    org_id,
    CAST(timezone('UTC', created_at) AS DATE) AS day,
    count(*) AS runs,
    count(*) FILTER (WHERE status = 'failed') AS failed_runs,
    coalesce(sum(cost_usd), 0) AS cost_usd
FROM dx_operation_runs_v1
GROUP BY ALL;
