-- This warehouse's identity: the lake records its commits under it.
SELECT warehouse_id FROM _warehouse_identity LIMIT 1
