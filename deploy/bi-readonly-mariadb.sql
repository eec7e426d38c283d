-- A read-only account for BI tools on syncd's MariaDB/MySQL database.
-- Edit the password (and narrow '%' to the BI server's address), then run as
-- an administrator: sudo mariadb < bi-readonly-mariadb.sql
CREATE USER 'syncd_bi'@'%' IDENTIFIED BY 'CHANGE-ME-bi';
GRANT SELECT, SHOW VIEW ON `syncd`.* TO 'syncd_bi'@'%';
