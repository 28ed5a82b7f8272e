-- Reconciliation's tables; every statement is idempotent.

-- One row per check per dataset per day (per org where relevant) of each reconciliation.
CREATE TABLE IF NOT EXISTS dx_reconciliation_results (
    result_id  VARCHAR PRIMARY KEY,
    run_id     VARCHAR,                -- Dagster run id, when run through Dagster
    dataset    VARCHAR NOT NULL,
    day        DATE,                   -- UTC day on the dataset's cursor (null: dataset-wide)
    org_id     VARCHAR,                -- set for per-org checks (status mix, null rate)
    check_name VARCHAR NOT NULL,       -- row_count_parity | content_parity | source_regressions
                                       -- | max_lag_sla | null_rate | status_distribution
    observed   DOUBLE,                 -- counts are whole numbers; see details for the why
    expected   DOUBLE,
    passed     BOOLEAN NOT NULL,
    details    JSON,                   -- kinds, counts, example keys, what repair did
    checked_at TIMESTAMPTZ NOT NULL
);

-- States the warehouse keeps on purpose (a source version lowered below the warehouse's, rows
-- deleted at the source under the `report` policy): reported the first time, then remembered.
CREATE TABLE IF NOT EXISTS dx_reconciliation_acknowledged (
    dataset           VARCHAR NOT NULL,
    record_key        VARCHAR NOT NULL,  -- the key as a JSON object
    kind              VARCHAR NOT NULL,  -- source_version_regressed | deleted_at_source
    source_version    BIGINT,
    warehouse_version BIGINT,
    first_seen_at     TIMESTAMPTZ NOT NULL,
    last_seen_at      TIMESTAMPTZ NOT NULL,
    first_run_id      VARCHAR,
    PRIMARY KEY (dataset, record_key, kind)
);

-- Warehouse rows deleted by a repair batch, in that batch's transaction: the lake applies a
-- batch's deletions (every reason) before its inserted and updated rows. The audit trail of
-- `EXPORT_RECONCILE_DELETES=propagate` too.
CREATE TABLE IF NOT EXISTS _deleted_rows (
    batch_id   VARCHAR NOT NULL,       -- the repair batch (_export_batches) that deleted it
    run_id     VARCHAR,
    dataset    VARCHAR NOT NULL,
    record_key JSON NOT NULL,          -- the row's primary key
    reason     VARCHAR NOT NULL,       -- deleted_at_source | extra_in_warehouse | replaced
    org_id     VARCHAR,
    cursor_at  TIMESTAMPTZ,
    row_json   JSON NOT NULL,          -- the row as the warehouse held it (already redacted)
    deleted_at TIMESTAMPTZ NOT NULL
);
