-- Broker identity (issue 15): a site's broker secret, as its Mosquitto password hash ($7$...,
-- PBKDF2-SHA512). The secret itself is shown once when issued and never stored;
-- `safeguard broker-config` writes these into the broker's password file.
CREATE TABLE broker_credentials (
    site          text PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    password_hash text NOT NULL CHECK (password_hash LIKE '$7$%'),
    issued_at     timestamptz NOT NULL DEFAULT now()
);
