-- Per UTC day: count and 60-bit hash sum of a dataset's in-scope source rows in the bound window
-- (keys, cursor, version and the columns redaction never touches; see reconcile._row_hash).
-- Computed inside PostgreSQL over the extract's own window query (same scope, same columns).
-- Placeholders in braces are expressions built from contract identifiers, never from input.
SELECT (q.{cursor} AT TIME ZONE 'UTC')::date AS day, count(*) AS row_count,
    coalesce(sum({row_hash}), 0)::text AS checksum
FROM ({window_query}) AS q
WHERE q.{cursor} IS NOT NULL AND isfinite(q.{cursor})
GROUP BY 1
