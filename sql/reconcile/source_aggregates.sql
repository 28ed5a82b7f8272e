-- Count and key checksum of a dataset's in-scope source rows in the bound window, per bucket.
-- Computed inside PostgreSQL over the extract's own window query (same scope, same columns).
-- Placeholders in braces are expressions built from contract identifiers, never from input.
SELECT {buckets}, count(*) AS row_count, coalesce(sum({row_hash}), 0)::text AS checksum
FROM ({window_query}) AS q
WHERE q.{cursor} IS NOT NULL AND isfinite(q.{cursor})
GROUP BY {group_by}
