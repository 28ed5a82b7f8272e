-- The tables and views a view's rewrite rule reads (through pg_depend), qualified and quoted.
SELECT DISTINCT format('%I.%I', n.nspname, c.relname) AS relation
FROM pg_rewrite AS rw
JOIN pg_depend AS d
    ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rw.ev_class
JOIN pg_class AS c ON c.oid = d.refobjid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE rw.ev_class = to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY 1
