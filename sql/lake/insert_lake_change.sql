-- A warehouse batch wrote rows of $dataset that the lake has not received yet (batch_id '*':
-- rewrite the whole table). Runs inside the batch's transaction; now() is its _loaded_at.
INSERT INTO _lake_changes (seq, dataset, batch_id, loaded_at, inserted, updated)
VALUES (nextval('_lake_change_seq'), $dataset, $batch_id, now(), $inserted, $updated)
