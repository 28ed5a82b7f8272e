-- Read access for the exporter's login role: the contract views only, never the tables.
-- The views read the tables with their owner's rights (they are not security_invoker views),
-- so row-level security on the tables does not hide rows from the role.
--! Template (lines starting --! are not printed): {schema}, {role} are identifiers quoted by the code.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};
