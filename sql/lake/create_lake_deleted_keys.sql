-- The primary keys the pending batches of $dataset deleted from the warehouse (repairs), typed as
-- the lake's key columns (uuids and text as VARCHAR). Placeholders in braces are expressions
-- built from contract identifiers, never from input.
CREATE OR REPLACE TEMP TABLE _lake_deleted AS
SELECT DISTINCT {key_columns}
FROM _deleted_rows
WHERE dataset = $dataset AND list_contains($batches, batch_id)
