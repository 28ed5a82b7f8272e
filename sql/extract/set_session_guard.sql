-- Every use of a source connection: this transaction is read-only and fails rather than read
-- through row-level security, wherever it runs (a transaction-pooling proxy may have dropped
-- the startup options that set the same for the session). Returns the settings in force.
SELECT
    set_config('transaction_read_only', 'on', true) AS transaction_read_only,
    set_config('row_security', 'off', true) AS row_security
