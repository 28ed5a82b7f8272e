-- Remember a kept state (first seen once; last seen and versions follow).
INSERT INTO dx_reconciliation_acknowledged VALUES (
    $dataset, $record_key, $kind, $source_version, $warehouse_version, now(), now(), $run_id
)
ON CONFLICT (dataset, record_key, kind) DO UPDATE SET
    source_version = excluded.source_version,
    warehouse_version = excluded.warehouse_version,
    last_seen_at = excluded.last_seen_at
