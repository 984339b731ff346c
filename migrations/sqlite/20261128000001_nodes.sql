-- Several glint nodes on one database. `member` is a reserved word in MySQL 8: every engine
-- names the column `member_id`, so that one set of statements serves all three.
ALTER TABLE image_members RENAME COLUMN member TO member_id;
-- The node whose upload or stage holds an image in `saving` or `uploading` (its staged data
-- is on that node's disk), and until when: the node renews it while it lives; once it has
-- expired, another node may return the image to `queued`.
ALTER TABLE images ADD COLUMN claimed_by TEXT;
ALTER TABLE images ADD COLUMN claim_expires_at INTEGER;
-- The node that runs a task, and until when: a task is run by exactly one node, and one
-- whose node died is taken over once its lease has expired.
ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_expires_at INTEGER;
-- Each node's upkeep looks for images in `saving` and `uploading` every few seconds.
CREATE INDEX images_by_status ON images (status);
