-- Columns of one relation (table, view, materialized view, foreign table) and their types from
-- the system catalogs, which any role can read (information_schema hides the columns of a
-- relation the role holds no privilege on). Type modifiers are dropped by the caller.
SELECT a.attname::text AS column_name, format_type(a.atttypid, NULL) AS data_type
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
