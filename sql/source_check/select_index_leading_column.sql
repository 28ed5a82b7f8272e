-- The leading column of an index (NULL for an expression): a condition on it lets the index
-- narrow a scan; a condition on a later column only filters a scan of the whole index.
SELECT a.attname::text AS leading_column
FROM pg_class AS c
JOIN pg_index AS i ON i.indexrelid = c.oid
LEFT JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE c.relname = $1
