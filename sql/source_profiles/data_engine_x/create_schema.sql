-- The schema that holds the contract views, one per dataset, named exactly as the dataset.
--! Template (lines starting --! are not printed): {schema} is an identifier quoted by the code.
CREATE SCHEMA IF NOT EXISTS {schema};
