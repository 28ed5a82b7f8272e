-- The changes of $dataset the lake may not hold yet, oldest first.
SELECT seq, batch_id, loaded_at, inserted, updated
FROM _lake_changes
WHERE dataset = $dataset
ORDER BY seq
