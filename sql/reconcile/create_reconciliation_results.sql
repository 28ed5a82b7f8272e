-- One row per check per dataset per day (per org where relevant) of each reconciliation.
CREATE TABLE IF NOT EXISTS dx_reconciliation_results (
    result_id  VARCHAR PRIMARY KEY,
    run_id     VARCHAR,                -- Dagster run id, when run through Dagster
    dataset    VARCHAR NOT NULL,
    day        DATE,                   -- UTC day on the dataset's cursor (null: dataset-wide)
    org_id     VARCHAR,                -- set for per-org checks (status mix)
    check_name VARCHAR NOT NULL,       -- row_count_parity | checksum_parity | max_lag_sla
                                       -- | null_rate | status_distribution
    observed   DOUBLE,
    expected   DOUBLE,
    passed     BOOLEAN NOT NULL,
    details    JSON,                   -- what was compared and what was repaired
    checked_at TIMESTAMPTZ NOT NULL
);
