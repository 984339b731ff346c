-- Metadata definitions (Glance's metadefs): namespaces of property, object and tag definitions
-- an operator offers for images, volumes, flavors…, and the resource types each namespace
-- applies to. A namespace is found by its name (which PUT may change) and keyed by an id, so a
-- rename touches one row. Cascades are the service's deletes, in one transaction.
CREATE TABLE metadef_namespaces (
    id           TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL UNIQUE,
    display_name TEXT,
    description  TEXT,
    visibility   TEXT NOT NULL,
    protected    INTEGER NOT NULL DEFAULT 0,
    owner        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX metadef_namespaces_by_created ON metadef_namespaces (created_at, namespace);

-- `definition` is the rest of the JSON body (properties, required, … of an object; type,
-- title, enum, … of a property), kept as the client sent it.
CREATE TABLE metadef_objects (
    namespace_id TEXT NOT NULL REFERENCES metadef_namespaces (id),
    name         TEXT NOT NULL,
    definition   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, name)
);

CREATE TABLE metadef_properties (
    namespace_id TEXT NOT NULL REFERENCES metadef_namespaces (id),
    name         TEXT NOT NULL,
    definition   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, name)
);

CREATE TABLE metadef_tags (
    namespace_id TEXT NOT NULL REFERENCES metadef_namespaces (id),
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, name)
);
CREATE INDEX metadef_tags_by_created ON metadef_tags (namespace_id, created_at, name);

CREATE TABLE metadef_resource_types (
    name       TEXT PRIMARY KEY,
    protected  INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE metadef_namespace_resource_types (
    namespace_id      TEXT NOT NULL REFERENCES metadef_namespaces (id),
    resource_type     TEXT NOT NULL REFERENCES metadef_resource_types (name),
    prefix            TEXT,
    properties_target TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, resource_type)
);
CREATE INDEX metadef_namespace_resource_types_by_type
    ON metadef_namespace_resource_types (resource_type);
