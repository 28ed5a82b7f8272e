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

-- (_deleted_rows, the repairs' deletions, is a warehouse meta table: create_meta_tables.sql.)
