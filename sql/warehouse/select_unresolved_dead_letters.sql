-- A dataset's dead letters not yet resolved (open or exhausted), counted by reason and status:
-- what no_rows_dead_lettered judges, so it stays failing until an operator or a retry closes them.
SELECT reason, status, count(*) AS n
FROM dx_dead_letter
WHERE dataset = $dataset AND status <> 'resolved'
GROUP BY ALL
ORDER BY reason, status
