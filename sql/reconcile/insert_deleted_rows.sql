-- Record the warehouse rows a repair batch is about to delete (see create_reconciliation_tables).
-- Placeholders in braces are expressions built from contract identifiers, never from input.
INSERT INTO _deleted_rows
SELECT $batch_id, $run_id, $dataset, {record_key}, t.reason, t.org_id::VARCHAR, t.{cursor},
    to_json(struct_pack({row})), now()
FROM ({doomed}) AS t
