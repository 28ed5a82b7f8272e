-- Per UTC day: the warehouse's rows (count, hash sum as source_aggregates.sql) plus the open dead
-- letters of keys it does not hold (counted), and how many open letters the day has at all
-- (such a day is compared row by row: a letter's content is not in the warehouse's hash).
-- Placeholders in braces are expressions built from contract identifiers, never from input.
WITH r AS (
    SELECT timezone('UTC', {row_cursor})::DATE AS day, count(*) AS n,
        coalesce(sum({row_hash}), 0) AS h
    FROM {table} AS t
    WHERE ($start IS NULL OR {row_cursor} > $start) AND {row_cursor} <= $end
    GROUP BY ALL
),
l AS (
    SELECT timezone('UTC', d.cursor_at)::DATE AS day,
        count(DISTINCT d.record_key) FILTER (
            WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {letter_key_in_table})
        ) AS n,
        count(*) AS letters
    FROM dx_dead_letter AS d
    WHERE d.dataset = $dataset AND d.status <> 'resolved'
      AND ($start IS NULL OR d.cursor_at > $start) AND d.cursor_at <= $end
    GROUP BY ALL
)
SELECT coalesce(r.day, l.day) AS day, coalesce(r.n, 0) + coalesce(l.n, 0) AS row_count,
    coalesce(r.h, 0)::VARCHAR AS checksum, coalesce(l.letters, 0) AS letters
FROM r FULL OUTER JOIN l ON r.day = l.day
