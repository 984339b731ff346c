-- Commits that change the catalogue's images, counted (as migrations/postgres explains):
-- every row written to images or what is listed with them adds one to a row of
-- `catalogue_commits` in its transaction (MariaDB and MySQL have row triggers only). The row
-- is the connection's (CONNECTION_ID() modulo 16), which runs one transaction at a time: a
-- transaction never holds two rows, so counting cannot deadlock.
CREATE TABLE catalogue_commits (
    shard SMALLINT PRIMARY KEY,
    n     BIGINT NOT NULL
);
INSERT INTO catalogue_commits (shard, n) VALUES
    (0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0),
    (8, 0), (9, 0), (10, 0), (11, 0), (12, 0), (13, 0), (14, 0), (15, 0);
CREATE TRIGGER images_insert_commits AFTER INSERT ON images FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER images_update_commits AFTER UPDATE ON images FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER images_delete_commits AFTER DELETE ON images FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_properties_insert_commits AFTER INSERT ON image_properties FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_properties_update_commits AFTER UPDATE ON image_properties FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_properties_delete_commits AFTER DELETE ON image_properties FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_tags_insert_commits AFTER INSERT ON image_tags FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_tags_update_commits AFTER UPDATE ON image_tags FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_tags_delete_commits AFTER DELETE ON image_tags FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_members_insert_commits AFTER INSERT ON image_members FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_members_update_commits AFTER UPDATE ON image_members FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_members_delete_commits AFTER DELETE ON image_members FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_locations_insert_commits AFTER INSERT ON image_locations FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_locations_update_commits AFTER UPDATE ON image_locations FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
CREATE TRIGGER image_locations_delete_commits AFTER DELETE ON image_locations FOR EACH ROW
    UPDATE catalogue_commits SET n = n + 1 WHERE shard = CONNECTION_ID() % 16;
