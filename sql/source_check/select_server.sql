-- Who and where the pipeline is connected: server version, primary or standby, identity.
SELECT
    current_setting('server_version') AS server_version,
    current_setting('server_version_num')::int AS server_version_num,
    pg_is_in_recovery() AS in_recovery,
    current_user::text AS current_user_name,
    current_database()::text AS database,
    inet_server_addr()::text AS server_addr,
    inet_server_port() AS server_port,
    current_setting('transaction_read_only') AS transaction_read_only,
    current_setting('application_name') AS application_name
