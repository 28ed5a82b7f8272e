-- Empty the five reference source tables before a reseed, and drop their primary keys and
-- cursor indexes: a bulk load into unindexed tables followed by one index build is several
-- times faster than maintaining random-uuid btrees row by row. Run create_schema.sql after the
-- load to restore them (it adds whatever key or index is missing). The seeder does all of this
-- in one transaction, so nobody ever sees the tables without their keys.

-- Memory for the load's hash joins and the index builds (this transaction only).
SET LOCAL work_mem = '256MB';
SET LOCAL maintenance_work_mem = '512MB';

TRUNCATE
    ops.operation_events,
    ops.operation_runs,
    entities.entity_snapshots,
    entities.person_entities,
    entities.company_entities;

ALTER TABLE ops.operation_runs DROP CONSTRAINT IF EXISTS operation_runs_pkey;
ALTER TABLE ops.operation_events DROP CONSTRAINT IF EXISTS operation_events_pkey;
ALTER TABLE entities.company_entities DROP CONSTRAINT IF EXISTS company_entities_pkey;
ALTER TABLE entities.person_entities DROP CONSTRAINT IF EXISTS person_entities_pkey;
ALTER TABLE entities.entity_snapshots DROP CONSTRAINT IF EXISTS entity_snapshots_pkey;

DROP INDEX IF EXISTS ops.operation_runs_created_at_idx;
DROP INDEX IF EXISTS ops.operation_events_occurred_at_idx;
DROP INDEX IF EXISTS entities.company_entities_updated_at_idx;
DROP INDEX IF EXISTS entities.person_entities_updated_at_idx;
DROP INDEX IF EXISTS entities.entity_snapshots_captured_at_idx;
