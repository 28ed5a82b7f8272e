-- Count and key checksum per bucket of what the warehouse accounts for in a window: the rows it
-- holds plus the open dead letters whose key it does not hold (each key's latest letter once).
-- Placeholders in braces are expressions built from contract identifiers, never from input.
WITH accounted AS (
    SELECT {row_cursor} AS cursor_at, org_id::VARCHAR AS org_id, {row_hash} AS row_hash
    FROM {table} AS t
    WHERE {row_cursor} > $start AND {row_cursor} <= $end
    UNION ALL
    SELECT cursor_at, org_id, row_hash
    FROM (
        SELECT d.cursor_at, d.org_id, {letter_hash} AS row_hash
        FROM dx_dead_letter AS d
        WHERE d.dataset = $dataset AND d.status <> 'resolved'
          AND d.cursor_at > $start AND d.cursor_at <= $end
          AND NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {letter_key_in_table})
        QUALIFY row_number() OVER (PARTITION BY d.record_key ORDER BY d.last_seen_at DESC) = 1
    ) AS letters
)
SELECT {buckets}, count(*) AS row_count, coalesce(sum(row_hash), 0)::VARCHAR AS checksum
FROM accounted
WHERE $org_id IS NULL OR org_id = $org_id
GROUP BY ALL
