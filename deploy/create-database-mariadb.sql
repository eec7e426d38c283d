-- syncd's MariaDB/MySQL database and the account that owns it (and runs the migrations).
-- Edit the password, then run as an administrator: sudo mariadb < create-database-mariadb.sql
-- syncd connects over TCP: SYNCD_DATABASE_URL=mysql://syncd:<password>@127.0.0.1:3306/syncd
CREATE DATABASE `syncd` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'syncd'@'127.0.0.1' IDENTIFIED BY 'CHANGE-ME-syncd';
GRANT ALL PRIVILEGES ON `syncd`.* TO 'syncd'@'127.0.0.1';
