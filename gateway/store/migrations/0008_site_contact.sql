-- Who to call at a site (issue 13 point 1): shown on the fire brigade's alert cards.
ALTER TABLE sites ADD COLUMN contact_name text NOT NULL DEFAULT '';
ALTER TABLE sites ADD COLUMN contact_phone text NOT NULL DEFAULT '';
