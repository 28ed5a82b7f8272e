-- Pipeline metadata tables. Created once; every statement is idempotent.

-- Rows that broke the contract, one per distinct (dataset, key, reason, content).
CREATE TABLE IF NOT EXISTS dx_dead_letter (
    dead_letter_id   VARCHAR PRIMARY KEY,     -- md5(dataset, key, reason, row): stable across re-reads
    dataset          VARCHAR NOT NULL,
    contract_version VARCHAR NOT NULL,
    record_key       JSON NOT NULL,           -- the row's primary key, as a JSON object
    org_id           VARCHAR,
    cursor_at        TIMESTAMPTZ,             -- the row's cursor value (null when it had none)
    reason           VARCHAR NOT NULL,        -- null_required_field | invalid_value | type_cast_failed
                                              -- | uniqueness_violation | version_conflict
    failed_checks    VARCHAR[] NOT NULL,
    row_json         JSON NOT NULL,           -- the row as extracted, secrets redacted
    batch_id         VARCHAR NOT NULL,        -- batch that last saw it
    first_seen_at    TIMESTAMPTZ NOT NULL,
    last_seen_at     TIMESTAMPTZ NOT NULL,
    last_attempt_at  TIMESTAMPTZ NOT NULL,
    attempt_count    INTEGER NOT NULL,
    next_retry_at    TIMESTAMPTZ,
    status           VARCHAR NOT NULL,        -- open | resolved | exhausted
    resolved_at      TIMESTAMPTZ,
    resolution_note  VARCHAR
);

-- One row per dataset per run: what was extracted and what became of it.
CREATE TABLE IF NOT EXISTS _export_batches (
    batch_id      VARCHAR PRIMARY KEY,
    dataset       VARCHAR NOT NULL,
    run_id        VARCHAR,                   -- Dagster run id, when run through Dagster
    mode          VARCHAR NOT NULL,          -- microbatch | backfill
    window_start  TIMESTAMPTZ,               -- exclusive; null = from the beginning
    window_end    TIMESTAMPTZ NOT NULL,      -- inclusive
    extracted     BIGINT NOT NULL,
    inserted      BIGINT NOT NULL,
    updated       BIGINT NOT NULL,
    unchanged     BIGINT NOT NULL,
    stale         BIGINT NOT NULL,
    dead_lettered BIGINT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    duration_ms   BIGINT NOT NULL,
    status        VARCHAR NOT NULL,          -- succeeded | failed
    error         VARCHAR
);

-- Why a micro-batch window ended before now - safety lag (an open source transaction, a standby
-- behind), or what could not be checked; added in place to ledgers of earlier releases.
ALTER TABLE _export_batches ADD COLUMN IF NOT EXISTS window_note VARCHAR;

-- Per dataset: its last good state and current failure, kept by every ledger write
-- (merge_export_freshness.sql) so that the analysts' freshness file costs a 5-row copy; filled
-- from the ledger when a warehouse of an earlier release first gets it.
CREATE TABLE IF NOT EXISTS _export_freshness (
    dataset          VARCHAR PRIMARY KEY,
    last_success_at  TIMESTAMPTZ,              -- finish of the last successful batch
    last_batch_at    TIMESTAMPTZ NOT NULL,
    last_batch_status VARCHAR NOT NULL,        -- succeeded | failed
    last_error       VARCHAR,                  -- the last batch's error (null when it succeeded)
    failing_since    TIMESTAMPTZ,              -- start of the first failed batch since a success
    window_held_back VARCHAR                   -- the last batch's window_note
);
INSERT INTO _export_freshness
SELECT
    p.dataset, p.last_success_at, p.last_batch_at, p.last_batch_status, p.last_error,
    (SELECT min(b.started_at) FROM _export_batches AS b
     WHERE b.dataset = p.dataset AND b.status = 'failed'
       AND b.started_at > coalesce(p.last_success_at, '-infinity'::TIMESTAMPTZ)),
    p.window_note
FROM (
    SELECT
        dataset,
        max(finished_at) FILTER (WHERE status = 'succeeded') AS last_success_at,
        max(finished_at) AS last_batch_at,
        arg_max(status, finished_at) AS last_batch_status,
        arg_max(CASE WHEN status = 'failed' THEN error END, finished_at) AS last_error,
        arg_max(window_note, finished_at) AS window_note
    FROM _export_batches
    GROUP BY dataset
) AS p
WHERE NOT EXISTS (SELECT 1 FROM _export_freshness);

-- Per dataset: the cursor up to which the micro-batch has read (minus the lookback on re-read).
CREATE TABLE IF NOT EXISTS _export_watermarks (
    dataset    VARCHAR PRIMARY KEY,
    watermark  TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Warehouse batches whose rows the lake has not received yet (lake.sync drains them after each
-- commit, one Delta commit per dataset). batch_id '*' asks for a whole-table rewrite.
CREATE SEQUENCE IF NOT EXISTS _lake_change_seq;
CREATE TABLE IF NOT EXISTS _lake_changes (
    seq       BIGINT PRIMARY KEY,            -- increasing: the lake's Delta app transaction version
    dataset   VARCHAR NOT NULL,
    batch_id  VARCHAR NOT NULL,              -- the rows of the table with this _batch_id
    loaded_at TIMESTAMPTZ NOT NULL,          -- their _loaded_at (lets zone maps skip older rows)
    inserted  BIGINT NOT NULL,
    updated   BIGINT NOT NULL
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

-- This warehouse's identity, created once: the lake's Delta commits are recorded under it.
CREATE TABLE IF NOT EXISTS _warehouse_identity (warehouse_id VARCHAR NOT NULL);
INSERT INTO _warehouse_identity SELECT uuid()::VARCHAR
WHERE NOT EXISTS (SELECT 1 FROM _warehouse_identity);
