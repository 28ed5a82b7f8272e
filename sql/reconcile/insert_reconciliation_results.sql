-- A reconciliation's results, all at once, from the frame `_incoming` (see record_results).
INSERT INTO dx_reconciliation_results
SELECT result_id, run_id, dataset, day, org_id, check_name, observed, expected, passed,
    details::JSON, now()
FROM _incoming
