-- syncd's PostgreSQL database and the role that owns it (and runs the migrations).
-- Run as a superuser, giving the names and the password on the command line:
--   sudo -u postgres psql -v ON_ERROR_STOP=1 -v db=syncd -v owner=syncd \
--        -v owner_password="$(cat /etc/syncd/db_password)" -f create-database-postgresql.sql
CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
CREATE DATABASE :"db" OWNER :"owner" ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
\connect :"db"
-- Only the owner creates tables; everyone else gets what is granted below.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO :"owner";
