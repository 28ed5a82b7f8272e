-- One relation ($1) as seen by a role ($2; null = the session's user): its kind, row-level security,
-- owner, whether the role bypasses RLS or owns it (by membership), whether a view runs with its
-- invoker's rights, and whether the role may SELECT it. No row when the relation is missing.
SELECT
    format('%I.%I', n.nspname, c.relname) AS name,
    c.relkind::text AS kind,
    c.relrowsecurity AS rls,
    c.relforcerowsecurity AS force_rls,
    pg_get_userbyid(c.relowner) AS owner,
    r.rolname::text AS checker,
    r.rolsuper OR r.rolbypassrls AS checker_bypasses_rls,
    pg_has_role(r.oid, c.relowner, 'USAGE') AS checker_owns,
    coalesce(
        (SELECT option_value FROM pg_options_to_table(c.reloptions)
         WHERE option_name = 'security_invoker'),
        'false'
    ) AS security_invoker,
    has_table_privilege(r.oid, c.oid, 'SELECT') AS checker_can_select
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_roles AS r ON r.rolname = coalesce($2, current_user)
-- $1 is a name, or an oid (digits) from select_view_relations.sql: a base table behind a view
-- may sit in a schema the role has no USAGE on, where a lookup by name is refused.
WHERE c.oid = (SELECT CASE WHEN $1 ~ '^[0-9]+$' THEN $1::oid ELSE to_regclass($1)::oid END)
