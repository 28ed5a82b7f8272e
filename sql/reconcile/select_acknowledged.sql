-- A kept state already reported for this key: the versions it was reported with.
SELECT source_version, warehouse_version
FROM dx_reconciliation_acknowledged
WHERE dataset = $dataset AND record_key = $record_key AND kind = $kind
