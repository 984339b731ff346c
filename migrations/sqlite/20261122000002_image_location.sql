-- Where an image's data lives (`file:///…`), NULL while it has none.
ALTER TABLE images ADD COLUMN location TEXT;
