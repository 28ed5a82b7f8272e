-- Every captured version of every entity, with when the previous version was captured.
CREATE OR REPLACE VIEW entity_version_history AS
SELECT
    org_id,
    entity_type,
    entity_id,
    record_version,
    captured_at,
    lag(captured_at) OVER w AS previous_captured_at,
    record_version = max(record_version) OVER (PARTITION BY org_id, entity_type, entity_id)
        AS is_latest,
    source_run_id,
    canonical_payload_json
FROM dx_entity_snapshots_v1
WINDOW w AS (PARTITION BY org_id, entity_type, entity_id ORDER BY record_version);
