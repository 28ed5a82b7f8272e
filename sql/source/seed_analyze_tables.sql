-- Refresh planner statistics after a reseed, so export queries get sensible plans at once.
-- Limited to keys, cursors and entity_type: statistics on the large jsonb columns are slow to
-- gather and useless to the export queries.
ANALYZE
    ops.operation_runs (run_id, created_at, entity_type, org_id),
    ops.operation_events (event_id, run_id, occurred_at, entity_type, org_id),
    entities.company_entities (org_id, entity_id, updated_at),
    entities.person_entities (org_id, entity_id, updated_at),
    entities.entity_snapshots (id, captured_at, entity_type, org_id);
