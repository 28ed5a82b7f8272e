-- dx_entity_snapshots_v1 from entities.entity_snapshots, every row (`job` snapshots keep their
-- entity_type; the pipeline leaves them out of scope). Column by column:
-- docs/source_mapping_data_engine_x.md.
--! Template (lines starting --! are not printed): {schema} is an identifier quoted by the code.
CREATE OR REPLACE VIEW {schema}.dx_entity_snapshots_v1 AS
SELECT
    s.id AS snapshot_id,
    s.org_id,
    s.entity_type,
    s.entity_id,
    s.record_version,
    s.canonical_payload AS canonical_payload_json,
    s.captured_at,
    s.source_run_id
FROM entities.entity_snapshots AS s;
