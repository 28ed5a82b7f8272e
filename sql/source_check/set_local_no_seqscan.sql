-- For the rest of this transaction only: the planner uses an index wherever one can serve, so
-- the EXPLAIN that follows shows whether any can (a small table is otherwise scanned whole).
SELECT set_config('enable_seqscan', 'off', true)
