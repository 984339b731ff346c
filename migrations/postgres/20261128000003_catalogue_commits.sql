-- Commits that change the catalogue's images, counted, so that a node can tell cheaply and
-- exactly whether anything changed since it last looked (the list pages it keeps in
-- memory): every statement that writes images or what is listed with them adds one to a
-- row of `catalogue_commits`, in its transaction, and their sum, read by anyone, moves once
-- that transaction commits. Triggers, not the application, so that every writer counts
-- (another version of glint during a rolling upgrade, `glint db`, an operator's SQL). The
-- row is the transaction's (txid modulo 16): transactions running at once seldom wait for
-- one another, and one transaction never holds two rows, so counting cannot deadlock.
CREATE TABLE catalogue_commits (
    shard SMALLINT PRIMARY KEY,
    n     BIGINT NOT NULL
);
INSERT INTO catalogue_commits (shard, n) SELECT s, 0 FROM generate_series(0, 15) AS s;

CREATE FUNCTION count_catalogue_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = (txid_current() % 16)::SMALLINT;
    RETURN NULL;
END
$$;

CREATE TRIGGER images_commits AFTER INSERT OR UPDATE OR DELETE ON images
    FOR EACH STATEMENT EXECUTE FUNCTION count_catalogue_commit();
CREATE TRIGGER image_properties_commits AFTER INSERT OR UPDATE OR DELETE ON image_properties
    FOR EACH STATEMENT EXECUTE FUNCTION count_catalogue_commit();
CREATE TRIGGER image_tags_commits AFTER INSERT OR UPDATE OR DELETE ON image_tags
    FOR EACH STATEMENT EXECUTE FUNCTION count_catalogue_commit();
CREATE TRIGGER image_members_commits AFTER INSERT OR UPDATE OR DELETE ON image_members
    FOR EACH STATEMENT EXECUTE FUNCTION count_catalogue_commit();
CREATE TRIGGER image_locations_commits AFTER INSERT OR UPDATE OR DELETE ON image_locations
    FOR EACH STATEMENT EXECUTE FUNCTION count_catalogue_commit();
