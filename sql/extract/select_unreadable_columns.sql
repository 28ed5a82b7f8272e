-- Of the columns a dataset reads ($2, separated by \x1f), those the session may not SELECT.
SELECT col
FROM unnest(string_to_array($2, E'\x1f')) AS col
WHERE NOT has_column_privilege(to_regclass($1), col, 'SELECT')
