-- A tenant's password policy: the length and alphabet of the passwords the console generates
-- for it (provisioning, rotation, emergency reset). NULL: the default, 32 letters and digits.
ALTER TABLE tenants ADD COLUMN password_length BIGINT;
ALTER TABLE tenants ADD COLUMN password_alphabet TEXT;
