-- A least-privilege runtime role for Portcullis on PostgreSQL.
--
-- Migrations run as the owner (`portcullis migrate` with an owner URL); the gateway runs as
-- `portcullis_app`, which can read and write rows but cannot change the schema. The audit log
-- is append-only for it: no UPDATE or DELETE on audit_events.

CREATE ROLE portcullis_owner LOGIN;          -- set a password out of band
CREATE ROLE portcullis_app LOGIN;            -- set a password out of band
CREATE DATABASE portcullis OWNER portcullis_owner;

\connect portcullis
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO portcullis_app;

-- After `portcullis migrate` has run as portcullis_owner:
GRANT SELECT ON portcullis_migrations TO portcullis_app;
GRANT SELECT, INSERT ON audit_events TO portcullis_app;

-- Tables added by later migrations get plain DML rights by default; the audit table above
-- keeps its narrower grant.
ALTER DEFAULT PRIVILEGES FOR ROLE portcullis_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO portcullis_app;
