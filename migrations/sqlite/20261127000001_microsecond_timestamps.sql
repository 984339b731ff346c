-- Timestamps become microseconds since the Unix epoch (they were whole seconds), so that
-- images created within one second list in the order they were created. The API still
-- shows whole seconds.
UPDATE images SET
    created_at = created_at * 1000000,
    updated_at = updated_at * 1000000,
    deleted_at = deleted_at * 1000000;
UPDATE image_members SET
    created_at = created_at * 1000000,
    updated_at = updated_at * 1000000;
UPDATE tasks SET
    created_at = created_at * 1000000,
    updated_at = updated_at * 1000000,
    expires_at = expires_at * 1000000;
