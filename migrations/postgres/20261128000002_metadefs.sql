-- Metadata definitions (Glance's metadefs): namespaces of property, object and tag definitions
-- an operator offers for images, volumes, flavors…, and the resource types each namespace
-- applies to. A namespace is found by its name (which PUT may change) and keyed by an id, so a
-- rename touches one row. Cascades are the service's deletes, in one transaction.
CREATE TABLE metadef_namespaces (
    id           VARCHAR(36) COLLATE "C" PRIMARY KEY,
    namespace    VARCHAR(80) COLLATE "C" NOT NULL UNIQUE,
    display_name VARCHAR(80) COLLATE "C",
    description  TEXT COLLATE "C",
    visibility   VARCHAR(32) COLLATE "C" NOT NULL,
    protected    BIGINT NOT NULL DEFAULT 0,
    owner        VARCHAR(255) COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX metadef_namespaces_by_created ON metadef_namespaces (created_at, namespace);

-- `definition` is the rest of the JSON body (properties, required, … of an object; type,
-- title, enum, … of a property), kept as the client sent it.
CREATE TABLE metadef_objects (
    namespace_id VARCHAR(36) COLLATE "C" NOT NULL REFERENCES metadef_namespaces (id),
    name         VARCHAR(80) COLLATE "C" NOT NULL,
    definition   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, name)
);

CREATE TABLE metadef_properties (
    namespace_id VARCHAR(36) COLLATE "C" NOT NULL REFERENCES metadef_namespaces (id),
    name         VARCHAR(80) COLLATE "C" NOT NULL,
    definition   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, name)
);

CREATE TABLE metadef_tags (
    namespace_id VARCHAR(36) COLLATE "C" NOT NULL REFERENCES metadef_namespaces (id),
    name         VARCHAR(80) COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, name)
);
CREATE INDEX metadef_tags_by_created ON metadef_tags (namespace_id, created_at, name);

CREATE TABLE metadef_resource_types (
    name       VARCHAR(80) COLLATE "C" PRIMARY KEY,
    protected  BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE metadef_namespace_resource_types (
    namespace_id      VARCHAR(36) COLLATE "C" NOT NULL REFERENCES metadef_namespaces (id),
    resource_type     VARCHAR(80) COLLATE "C" NOT NULL REFERENCES metadef_resource_types (name),
    prefix            VARCHAR(80) COLLATE "C",
    properties_target VARCHAR(80) COLLATE "C",
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, resource_type)
);
CREATE INDEX metadef_namespace_resource_types_by_type
    ON metadef_namespace_resource_types (resource_type);
