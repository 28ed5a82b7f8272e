-- The kept states of this reconciliation (temp table _recon_kept) already reported with the
-- same kind and versions.
SELECT k.record_key, k.kind
FROM _recon_kept AS k
JOIN dx_reconciliation_acknowledged AS a
  ON a.dataset = $dataset AND a.record_key = k.record_key AND a.kind = k.kind
 AND a.source_version IS NOT DISTINCT FROM k.source_version
 AND a.warehouse_version IS NOT DISTINCT FROM k.warehouse_version
