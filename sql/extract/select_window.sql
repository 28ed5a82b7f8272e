-- The contract columns of one dataset whose cursor lies in (window_start, window_end], plus rows
-- whose cursor is null or +-infinity: those cannot be windowed and must reach the dead-letter
-- table, not vanish. Two arms, so each can use the cursor index (an OR across them cannot).
-- Placeholders in braces are identifiers and filters built from the contract, never from input.
SELECT {projection}
FROM {source_table}
WHERE {cursor} > current_setting('export_pipeline.window_start')::timestamptz
  AND {cursor} <= current_setting('export_pipeline.window_end')::timestamptz
  {org_filter}
  {scope_filter}
UNION ALL
SELECT {projection}
FROM {source_table}
WHERE ({cursor} IS NULL OR {cursor} = 'infinity'::timestamptz OR {cursor} = '-infinity'::timestamptz)
  {org_filter}
  {scope_filter}
