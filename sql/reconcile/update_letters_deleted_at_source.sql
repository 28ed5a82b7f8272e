-- An open dead letter whose key the source no longer holds (EXPORT_RECONCILE_DELETES=propagate).
UPDATE dx_dead_letter
SET status = 'resolved', resolved_at = now(), batch_id = $batch_id,
    resolution_note = 'deleted at the source (reconciliation, propagate policy)'
WHERE dataset = $dataset AND record_key::VARCHAR = $record_key AND status <> 'resolved'
