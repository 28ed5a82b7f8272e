INSERT INTO dx_reconciliation_results VALUES (
    $result_id, $run_id, $dataset, $day, $org_id, $check_name, $observed, $expected, $passed,
    $details, now()
)
