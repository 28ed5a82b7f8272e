-- How many dead letters the listing's filters match (for "showing 50 of N").
SELECT count(*)
FROM dx_dead_letter
WHERE ($dataset IS NULL OR dataset = $dataset)
  AND ($status IS NULL OR status = $status)
  AND ($reason IS NULL OR reason = $reason)
  AND ($since IS NULL OR first_seen_at >= $since)
