-- The image catalogue. Timestamps are seconds since the Unix epoch (UTC); booleans are 0/1.
-- Rows are soft-deleted so that a deleted image's id can never be reused.
CREATE TABLE images (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT,
    status           TEXT NOT NULL,
    visibility       TEXT NOT NULL,
    protected        INTEGER NOT NULL DEFAULT 0,
    os_hidden        INTEGER NOT NULL DEFAULT 0,
    checksum         TEXT,
    os_hash_algo     TEXT,
    os_hash_value    TEXT,
    owner            TEXT,
    size             INTEGER,
    virtual_size     INTEGER,
    min_ram          INTEGER NOT NULL DEFAULT 0,
    min_disk         INTEGER NOT NULL DEFAULT 0,
    disk_format      TEXT,
    container_format TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    deleted          INTEGER NOT NULL DEFAULT 0,
    deleted_at       INTEGER
);
-- The default listing (created_at desc, id desc) walks this index and stops after a page.
CREATE INDEX images_by_created ON images (deleted, created_at, id);
CREATE INDEX images_by_owner ON images (owner, created_at, id);
CREATE INDEX images_by_name ON images (name);
CREATE INDEX images_by_updated ON images (updated_at, id);

CREATE TABLE image_properties (
    image_id TEXT NOT NULL REFERENCES images (id),
    name     TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (image_id, name)
);
CREATE INDEX image_properties_by_value ON image_properties (name, value);

CREATE TABLE image_tags (
    image_id TEXT NOT NULL REFERENCES images (id),
    value    TEXT NOT NULL,
    PRIMARY KEY (image_id, value)
);
CREATE INDEX image_tags_by_value ON image_tags (value);

CREATE TABLE image_members (
    image_id   TEXT NOT NULL REFERENCES images (id),
    member     TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (image_id, member)
);
CREATE INDEX image_members_by_member ON image_members (member, status);
