-- Run once by the postgres image when it makes its database (docker-entrypoint-initdb.d).
--
-- Bindu's Postgres storage keeps an agent's tables in a schema named after its DID, and sets
-- search_path in a transaction that a rolled-back first read undoes: the tables then vanish
-- from that pooled connection (relation "tasks" does not exist) and tasks fail. Making the
-- schema the database's default search_path avoids it. The schema is the DID of the agent of
-- compose.scale-out.yaml (author dev@example.com, name echo-agent), sanitized as Bindu does
-- (Tests/e2e/backing.py, schema_name). The search_path names one agent's schema, so give each
-- agent a database of its own.
CREATE SCHEMA IF NOT EXISTS "did_bindu_dev_at_example_com_echo_agent_abe83f8a_b434__1b283328" AUTHORIZATION bindu;
ALTER DATABASE bindu SET search_path TO "did_bindu_dev_at_example_com_echo_agent_abe83f8a_b434__1b283328", public;
