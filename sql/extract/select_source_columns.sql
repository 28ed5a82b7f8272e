-- Columns and types of one source table, to compare with the contract before extracting.
SELECT column_name, data_type
FROM information_schema.columns
WHERE table_schema = $1 AND table_name = $2
