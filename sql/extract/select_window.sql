-- The contract columns of one dataset whose cursor lies in (window_start, window_end], plus rows
-- whose cursor is null or +-infinity: those cannot be windowed and must reach the dead-letter
-- table, not vanish.
-- Placeholders in braces are identifiers taken from the contract, never from input.
SELECT {projection}
FROM {source_table}
WHERE (
        ({cursor} > current_setting('export_pipeline.window_start')::timestamptz
         AND {cursor} <= current_setting('export_pipeline.window_end')::timestamptz)
        OR {cursor} IS NULL
        OR NOT isfinite({cursor})
    )
    AND (current_setting('export_pipeline.org_id') = ''
         OR org_id = nullif(current_setting('export_pipeline.org_id'), '')::uuid)
    {scope_filter}
