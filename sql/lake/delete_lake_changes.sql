-- Forget the changes of $dataset the lake now holds (its Delta transaction version is >= $seq).
DELETE FROM _lake_changes WHERE dataset = $dataset AND seq <= $seq
