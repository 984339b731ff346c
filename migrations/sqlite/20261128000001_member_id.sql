-- `member` is a reserved word in MySQL 8; every engine names the column `member_id`, so that
-- one set of statements serves all three.
ALTER TABLE image_members RENAME COLUMN member TO member_id;
