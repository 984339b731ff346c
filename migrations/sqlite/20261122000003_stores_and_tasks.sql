-- Named stores: an image's data may live in several stores, one location per store.
-- Existing data moves to the store `default`, the name the single unnamed store is served
-- under.
CREATE TABLE image_locations (
    image_id   TEXT NOT NULL REFERENCES images (id),
    store      TEXT NOT NULL,
    url        TEXT NOT NULL,
    -- Order in which the copies were made: the first is read first.
    position   INTEGER NOT NULL,
    PRIMARY KEY (image_id, store)
);
CREATE INDEX image_locations_by_store ON image_locations (store);
INSERT INTO image_locations (image_id, store, url, position)
    SELECT id, 'default', location, 0 FROM images
    WHERE location IS NOT NULL AND deleted = 0;
ALTER TABLE images DROP COLUMN location;

-- Background work (image imports). `input` and `result` are JSON text; a task that is
-- neither `success` nor `failure` is resumed by the next process.
CREATE TABLE tasks (
    id         TEXT PRIMARY KEY NOT NULL,
    type       TEXT NOT NULL,
    status     TEXT NOT NULL,
    owner      TEXT,
    image_id   TEXT,
    request_id TEXT,
    user_id    TEXT,
    input      TEXT NOT NULL,
    result     TEXT,
    message    TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX tasks_by_image ON tasks (image_id, created_at);
CREATE INDEX tasks_by_status ON tasks (status);
