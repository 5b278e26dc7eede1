-- Metrics storage. With TimescaleDB available, metrics becomes a hypertable
-- on time with compression enabled (the compression and retention policies
-- themselves are set by the store at every start from METRICS_COMPRESS_AFTER
-- and METRICS_RETENTION, since they are configuration, not schema). Without
-- it, metrics stays a plain table with BRIN indexes: rows arrive in time and
-- tick order, so BRIN ranges stay tight and cost almost nothing at ingest.
-- If the extension is listed but cannot be created (e.g. it is not in
-- shared_preload_libraries), the plain layout is used and a warning says why.
DO $$
DECLARE
    use_timescale boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            PERFORM create_hypertable('metrics', 'time', if_not_exists => true,
                                      migrate_data => true);
            ALTER TABLE metrics SET (timescaledb.compress,
                                     timescaledb.compress_segmentby = 'service_id, node_id, metric_name',
                                     timescaledb.compress_orderby = 'time DESC');
            CREATE INDEX IF NOT EXISTS metrics_tick_idx ON metrics (tick_id);
            use_timescale := true;
        EXCEPTION WHEN others THEN
            RAISE WARNING 'timescaledb is available but could not be used (%); metrics stays a plain table',
                SQLERRM;
        END;
    END IF;
    IF NOT use_timescale THEN
        CREATE INDEX IF NOT EXISTS metrics_time_brin ON metrics USING brin (time);
        CREATE INDEX IF NOT EXISTS metrics_tick_brin ON metrics USING brin (tick_id);
    END IF;
END
$$;
