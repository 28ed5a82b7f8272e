-- The source's own clock: windows are computed against it, not the pipeline host's.
SELECT clock_timestamp() AS now
