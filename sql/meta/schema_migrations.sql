-- dbmate's record of applied migrations (migrate.MigrationsTable), as dbmate
-- creates it before it applies the first migration. It is not a migration:
-- it is declared here for sqlc alone (sqlc.yaml lists this folder after
-- sql/schema), so that the queries reading it are checked like the others.
-- Neither dbmate nor taskq runs this file.
CREATE TABLE taskq_meta.schema_migrations (
    version varchar(128) PRIMARY KEY
);
