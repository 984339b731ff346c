-- Metadata definitions (Glance's metadefs): namespaces of property, object and tag definitions
-- an operator offers for images, volumes, flavors…, and the resource types each namespace
-- applies to. A namespace is found by its name (which PUT may change) and keyed by an id, so a
-- rename touches one row. Cascades are the service's deletes, in one transaction.
CREATE TABLE metadef_namespaces (
    id           VARCHAR(36) PRIMARY KEY,
    namespace    VARCHAR(80) NOT NULL UNIQUE,
    display_name VARCHAR(80),
    description  TEXT,
    visibility   VARCHAR(32) NOT NULL,
    protected    BIGINT NOT NULL DEFAULT 0,
    owner        VARCHAR(255) NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX metadef_namespaces_by_created ON metadef_namespaces (created_at, namespace);

-- `definition` is the rest of the JSON body (properties, required, … of an object; type,
-- title, enum, … of a property), kept as the client sent it.
CREATE TABLE metadef_objects (
    namespace_id VARCHAR(36) NOT NULL REFERENCES metadef_namespaces (id),
    name         VARCHAR(80) NOT NULL,
    definition   MEDIUMTEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE metadef_properties (
    namespace_id VARCHAR(36) NOT NULL REFERENCES metadef_namespaces (id),
    name         VARCHAR(80) NOT NULL,
    definition   MEDIUMTEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE metadef_tags (
    namespace_id VARCHAR(36) NOT NULL REFERENCES metadef_namespaces (id),
    name         VARCHAR(80) NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX metadef_tags_by_created ON metadef_tags (namespace_id, created_at, name);

CREATE TABLE metadef_resource_types (
    name       VARCHAR(80) PRIMARY KEY,
    protected  BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE metadef_namespace_resource_types (
    namespace_id      VARCHAR(36) NOT NULL REFERENCES metadef_namespaces (id),
    resource_type     VARCHAR(80) NOT NULL REFERENCES metadef_resource_types (name),
    prefix            VARCHAR(80),
    properties_target VARCHAR(80),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, resource_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX metadef_namespace_resource_types_by_type
    ON metadef_namespace_resource_types (resource_type);
