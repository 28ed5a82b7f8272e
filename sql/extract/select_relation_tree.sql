-- A relation and, through views, every relation it reads, each with the role that reads it:
-- the current user for the relation itself; for a view's base relations, the view's owner
-- (a plain view runs with its owner's rights) or, for a security_invoker view, whoever reads
-- the view. Per relation: its kind, SELECT and schema USAGE for that role, and whether
-- row-level security is enabled, forced, has policies, and applies to that role (RLS binds
-- everyone but superusers, BYPASSRLS roles and, unless FORCEd, the owner and its members).
-- Only the system catalogs are read: this works for a role that cannot read the relation.
WITH RECURSIVE tree (oid, depth, reader) AS (
    SELECT c.oid, 0, r.oid
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    JOIN pg_roles AS r ON r.rolname = current_user
    WHERE n.nspname = $1 AND c.relname = $2
    UNION
    SELECT
        d.refobjid,
        t.depth + 1,
        CASE
            WHEN coalesce(v.reloptions && ARRAY[
                'security_invoker=true', 'security_invoker=on', 'security_invoker=1',
                'security_invoker=yes'
            ], false) THEN t.reader
            ELSE v.relowner
        END
    FROM tree AS t
    JOIN pg_class AS v ON v.oid = t.oid AND v.relkind = 'v'
    JOIN pg_rewrite AS rw ON rw.ev_class = v.oid
    JOIN pg_depend AS d
        ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
        AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> v.oid
    WHERE t.depth < 16
)
SELECT DISTINCT
    t.depth,
    n.nspname || '.' || c.relname AS relation,
    c.relkind::text AS relkind,
    ro.rolname::text AS reader,
    ow.rolname::text AS owner,
    has_schema_privilege(t.reader, c.relnamespace, 'USAGE') AS schema_usage,
    has_table_privilege(t.reader, c.oid, 'SELECT') AS can_select,
    c.relrowsecurity AS rls_enabled,
    c.relforcerowsecurity AS rls_forced,
    (SELECT count(*) FROM pg_policy AS p WHERE p.polrelid = c.oid)::int AS policies,
    (
        c.relrowsecurity AND NOT ro.rolsuper AND NOT ro.rolbypassrls
        AND (c.relforcerowsecurity OR NOT pg_has_role(t.reader, c.relowner, 'USAGE'))
    ) AS rls_applies,
    greatest(c.reltuples, 0)::bigint AS estimated_rows
FROM tree AS t
JOIN pg_class AS c ON c.oid = t.oid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_roles AS ro ON ro.oid = t.reader
JOIN pg_roles AS ow ON ow.oid = c.relowner
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY t.depth, relation
