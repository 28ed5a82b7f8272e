-- How many warehouse rows of $dataset batch $batch_id deleted (a reconciliation repair records
-- them in _deleted_rows): the lake must delete them too, so the batch is a lake change.
SELECT count(*) FROM _deleted_rows WHERE dataset = $dataset AND batch_id = $batch_id
