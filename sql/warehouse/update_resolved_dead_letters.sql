-- Dead letters whose key has now loaded (fixed at the source, or the conflicting version was
-- superseded) are resolved: the row is in the warehouse, the alert must clear.
UPDATE dx_dead_letter
SET status = 'resolved',
    resolved_at = now(),
    resolution_note = 'loaded by batch ' || $batch_id
WHERE dataset = $dataset
  AND status <> 'resolved'
  AND record_key::VARCHAR IN (SELECT record_key FROM _loaded_keys)
