-- Remember this reconciliation's kept states (temp table _recon_kept): first seen once; last
-- seen and versions follow.
INSERT INTO dx_reconciliation_acknowledged
SELECT $dataset, record_key, kind, source_version, warehouse_version, now(), now(), $run_id
FROM _recon_kept
ON CONFLICT (dataset, record_key, kind) DO UPDATE SET
    source_version = excluded.source_version,
    warehouse_version = excluded.warehouse_version,
    last_seen_at = excluded.last_seen_at
