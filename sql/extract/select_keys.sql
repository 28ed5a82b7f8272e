-- The contract columns of the rows of one dataset whose primary key is in the bound key set,
-- whatever their cursor: used by repair and by dead-letter retries. Placeholders in braces are
-- identifiers and types taken from the contract, never from input.
SELECT {projection}
FROM {source_table} AS t
JOIN jsonb_to_recordset(current_setting('export_pipeline.keys')::jsonb) AS k({key_columns})
    ON {key_join}
WHERE true
    {scope_filter}
