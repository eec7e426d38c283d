-- A read-only login for BI tools on syncd's PostgreSQL database.
-- Run as a superuser, connected to syncd's database; `owner` is the role that
-- runs `syncd db upgrade` (future tables it creates become readable too):
--   sudo -u postgres psql -v ON_ERROR_STOP=1 -d syncd -v owner=syncd -v bi_user=syncd_bi \
--        -v bi_password="$(cat /etc/syncd/bi_password)" -f bi-readonly-postgresql.sql
CREATE ROLE :"bi_user" LOGIN PASSWORD :'bi_password';
-- Sessions start read-only: a grant added by mistake later still cannot write.
ALTER ROLE :"bi_user" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"DBNAME" TO :"bi_user";
GRANT USAGE ON SCHEMA public TO :"bi_user";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"bi_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"bi_user";
