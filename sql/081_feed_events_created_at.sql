-- No query reads feed.events by created_at (the backlog's oldest event is found among the
-- rows after a cursor, by seq): the index only cost ~95 WAL bytes per log event derived,
-- WAL that ingest's commit flushes carried along.
DROP INDEX feed.feed_events_created_at;
