-- An operator resolves a letter with a note. Resolving it again keeps every note: each later
-- note is appended on its own line, and every note is stamped with its UTC time.
UPDATE dx_dead_letter
SET status = 'resolved',
    resolved_at = CASE WHEN status = 'resolved' THEN coalesce(resolved_at, now()) ELSE now() END,
    resolution_note = CASE
        WHEN resolution_note IS NULL OR resolution_note = '' THEN 'operator: ' || $note
        ELSE (
            CASE
                WHEN starts_with(resolution_note, '[') THEN resolution_note
                ELSE '[' || strftime(timezone('UTC', coalesce(resolved_at, now())),
                                     '%Y-%m-%dT%H:%M:%SZ') || '] ' || resolution_note
            END
        ) || chr(10) || '[' || strftime(timezone('UTC', now()), '%Y-%m-%dT%H:%M:%SZ')
          || '] operator: ' || $note
    END
WHERE dead_letter_id = $id
RETURNING status, resolution_note
