-- The latest finite cursor of a dataset's in-scope rows (a backward scan of the cursor index).
-- Placeholders in braces are identifiers and filters built from the contract, never from input.
SELECT max({cursor}) AS max_cursor
FROM {source_table}
WHERE {cursor} < 'infinity'::timestamptz AND {cursor} > '-infinity'::timestamptz
  {scope_filter}
