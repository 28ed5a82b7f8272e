--! The entity id of a run (alias r of ops.operation_runs), one rule for the runs view and the
--! events view (an event's entity is its run's): output_payload's entity_id, else
--! input_payload's, when a well-formed uuid; else NULL (dead-lettered, entity_id:not_null).
--! Substituted into both as {run_entity_id}.
CASE
        WHEN r.output_payload ->> 'entity_id'
            ~* '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$'
            THEN (r.output_payload ->> 'entity_id')::uuid
        WHEN r.input_payload ->> 'entity_id'
            ~* '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$'
            THEN (r.input_payload ->> 'entity_id')::uuid
    END
