-- The image catalogue on MariaDB (>= 10.6) and MySQL (>= 8.0): the same tables, columns and
-- meanings as on SQLite (migrations/sqlite), in one step. Timestamps are microseconds since
-- the Unix epoch (UTC); booleans are 0/1 so that every engine binds and compares them alike.
-- Text is compared and sorted byte by byte (utf8mb4_bin), as SQLite and PostgreSQL (COLLATE
-- "C") do: filters are exact, not case-insensitive, and a sort by name gives one order.
-- MEDIUMTEXT where SQLite's TEXT may hold more than 64 KiB (property values, task input).
CREATE TABLE images (
    id               VARCHAR(36) PRIMARY KEY,
    name             VARCHAR(255),
    status           VARCHAR(30) NOT NULL,
    visibility       VARCHAR(20) NOT NULL,
    protected        BIGINT NOT NULL DEFAULT 0,
    os_hidden        BIGINT NOT NULL DEFAULT 0,
    checksum         VARCHAR(32),
    os_hash_algo     VARCHAR(64),
    os_hash_value    VARCHAR(128),
    owner            VARCHAR(255),
    size             BIGINT,
    virtual_size     BIGINT,
    min_ram          BIGINT NOT NULL DEFAULT 0,
    min_disk         BIGINT NOT NULL DEFAULT 0,
    disk_format      VARCHAR(20),
    container_format VARCHAR(20),
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    deleted          BIGINT NOT NULL DEFAULT 0,
    deleted_at       BIGINT,
    -- The node whose upload or stage holds the image in `saving` or `uploading` (staged
    -- data is on that node's disk), and until when; renewed while the node lives.
    claimed_by       VARCHAR(64),
    claim_expires_at BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX images_by_created ON images (deleted, created_at, id);
CREATE INDEX images_by_owner ON images (owner, created_at, id);
CREATE INDEX images_by_name ON images (name);
CREATE INDEX images_by_updated ON images (updated_at, id);
CREATE INDEX images_by_status ON images (status);

CREATE TABLE image_properties (
    image_id VARCHAR(36) NOT NULL REFERENCES images (id),
    name     VARCHAR(255) NOT NULL,
    value    MEDIUMTEXT NOT NULL,
    PRIMARY KEY (image_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX image_properties_by_value ON image_properties (name, value(191));

CREATE TABLE image_tags (
    image_id VARCHAR(36) NOT NULL REFERENCES images (id),
    value    VARCHAR(255) NOT NULL,
    PRIMARY KEY (image_id, value)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX image_tags_by_value ON image_tags (value);

CREATE TABLE image_members (
    image_id   VARCHAR(36) NOT NULL REFERENCES images (id),
    member_id  VARCHAR(255) NOT NULL,
    status     VARCHAR(20) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (image_id, member_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX image_members_by_member ON image_members (member_id, status);

CREATE TABLE image_locations (
    image_id VARCHAR(36) NOT NULL REFERENCES images (id),
    store    VARCHAR(255) NOT NULL,
    url      TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (image_id, store)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX image_locations_by_store ON image_locations (store);

CREATE TABLE tasks (
    id         VARCHAR(36) PRIMARY KEY,
    type       VARCHAR(30) NOT NULL,
    status     VARCHAR(30) NOT NULL,
    owner      VARCHAR(255),
    image_id   VARCHAR(36),
    request_id TEXT,
    user_id    TEXT,
    input      MEDIUMTEXT NOT NULL,
    result     MEDIUMTEXT,
    message    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT,
    -- The node that runs the task, and until when: one node runs a task; a task whose
    -- node died is taken over once its lease has expired.
    lease_owner      VARCHAR(64),
    lease_expires_at BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX tasks_by_image ON tasks (image_id, created_at);
CREATE INDEX tasks_by_status ON tasks (status);
CREATE INDEX tasks_by_created ON tasks (created_at, id);
