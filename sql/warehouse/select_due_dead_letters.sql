-- Open dead letters of a dataset whose next retry time has come (one per key).
SELECT DISTINCT record_key::VARCHAR AS record_key
FROM dx_dead_letter
WHERE dataset = $dataset AND status = 'open' AND next_retry_at <= $now
