-- dx_operation_runs_v1 from ops.operation_runs, one row per run, none filtered out: `job` runs
-- keep entity_type = 'job' (the pipeline leaves them out of scope), and a run that cannot meet
-- the contract (no entity_id) reaches the pipeline and is dead-lettered with the reason.
-- Column by column: docs/source_mapping_data_engine_x.md.
--! Template (lines starting --! are not printed): {schema} is an identifier quoted by the code;
--! doubled braces are single braces in the printed SQL.
CREATE OR REPLACE VIEW {schema}.dx_operation_runs_v1 AS
SELECT
    r.run_id,
    CASE WHEN link.pipeline_runs = 1 THEN link.pipeline_run_id::uuid END AS pipeline_run_id,
    NULL::text AS workflow_id,
    r.operation_id,
    r.operation_id AS action_id,
    r.entity_type,
    {run_entity_id} AS entity_id,
    r.org_id,
    r.company_id,
    coalesce(att.found_provider, att.only_provider) AS source_provider,
    CASE r.status
        WHEN 'found' THEN 'succeeded'
        WHEN 'verified' THEN 'succeeded'
        WHEN 'not_found' THEN 'succeeded'
        WHEN 'failed' THEN 'failed'
        ELSE r.status
    END AS status,
    att.attempt_count,
    r.created_at AS started_at,
    att.ended_at,
    att.duration_ms,
    NULL::numeric AS cost_usd,
    CASE
        WHEN r.status <> 'failed' THEN NULL
        WHEN att.error_code IS NOT NULL THEN att.error_code
        WHEN jsonb_typeof(r.missing_inputs) = 'array' AND r.missing_inputs <> '[]'::jsonb
            THEN 'missing_inputs'
    END AS error_code,
    CASE
        WHEN r.status = 'failed' AND jsonb_typeof(r.missing_inputs) = 'array'
            AND r.missing_inputs <> '[]'::jsonb
            THEN 'missing inputs: ' || r.missing_inputs::text
    END AS error_message,
    r.created_at
FROM ops.operation_runs AS r
CROSS JOIN LATERAL (
    SELECT
        count(*)::int AS attempt_count,
        max(a.created_at) AS ended_at,
        CASE WHEN sum(a.duration_ms) <= 2147483647 THEN sum(a.duration_ms)::int END
            AS duration_ms,
        (array_agg(a.provider ORDER BY a.created_at, a.id)
            FILTER (WHERE a.status IN ('found', 'verified')))[1] AS found_provider,
        CASE WHEN count(DISTINCT a.provider) = 1 THEN min(a.provider) END AS only_provider,
        (array_agg(coalesce(a.provider_status, 'http_' || a.http_status::text)
            ORDER BY a.created_at DESC, a.id DESC) FILTER (WHERE a.status = 'failed'))[1]
            AS error_code
    FROM ops.operation_attempts AS a
    WHERE a.run_id = r.run_id
) AS att
LEFT JOIN (
    SELECT
        lower(sr.output_payload -> 'operation_result' ->> 'run_id') AS run_id_text,
        min(sr.pipeline_run_id::text) AS pipeline_run_id,
        count(DISTINCT sr.pipeline_run_id) AS pipeline_runs
    FROM ops.step_results AS sr
    WHERE sr.output_payload -> 'operation_result' ->> 'run_id' IS NOT NULL
    GROUP BY 1
) AS link ON link.run_id_text = r.run_id::text;
