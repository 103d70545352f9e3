-- The schema the store uses by default. docker-compose.yml runs the files of this folder in
-- order with search_path set to it; PgEventStore::migrate() creates the (configurable) schema
-- itself and then runs 02_events.sql with search_path set to that schema.
CREATE SCHEMA IF NOT EXISTS dcbstore;
