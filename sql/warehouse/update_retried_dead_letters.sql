-- Letters retried and still not loaded: one more attempt, the next one after exponential backoff
-- with jitter (base * 2^attempts * 0.8..1.2), or exhausted once attempts reach the maximum.
UPDATE dx_dead_letter
SET attempt_count = attempt_count + 1,
    last_attempt_at = now(),
    status = CASE WHEN attempt_count + 1 >= $max_attempts THEN 'exhausted' ELSE 'open' END,
    next_retry_at = CASE
        WHEN attempt_count + 1 >= $max_attempts THEN NULL
        ELSE now() + to_seconds($base_seconds * pow(2, attempt_count) * (0.8 + 0.4 * random()))
    END
WHERE dataset = $dataset
  AND status = 'open'
  AND record_key::VARCHAR IN (SELECT unnest($keys::VARCHAR[]))
