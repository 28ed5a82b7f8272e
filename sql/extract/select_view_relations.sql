-- The tables and views a view's rewrite rule reads (through pg_depend), as oids (text): the
-- reading role may have no USAGE on their schemas, so they are never looked up by name.
SELECT DISTINCT c.oid::text AS relation
FROM pg_rewrite AS rw
JOIN pg_depend AS d
    ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rw.ev_class
JOIN pg_class AS c ON c.oid = d.refobjid
WHERE rw.ev_class = (SELECT CASE WHEN $1 ~ '^[0-9]+$' THEN $1::oid ELSE to_regclass($1)::oid END)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY 1
