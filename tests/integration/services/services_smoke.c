/* Connects to NATS_URL and DATABASE_URL: JetStream must accept a stream and
 * store a message; PostgreSQL must answer a query and accept a write.
 * Exit 0 when both work, 1 with one line saying what failed otherwise. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "services_smoke: %s: %s\n", what, detail ? detail : "");
    return 1;
}

static int check_nats(const char *url)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    int rc = 1;
    char stream[64];
    snprintf(stream, sizeof stream, "SMOKE_%ld", (long)getpid());
    char subject[80];
    snprintf(subject, sizeof subject, "smoke.%ld", (long)getpid());

    natsStatus s = natsConnection_ConnectTo(&nc, url);
    if (s != NATS_OK) {
        rc = fail("connect to NATS", natsStatus_GetText(s));
        goto out;
    }
    s = natsConnection_JetStream(&js, nc, NULL);
    if (s != NATS_OK) {
        rc = fail("JetStream context", natsStatus_GetText(s));
        goto out;
    }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream;
    const char *subjects[] = {subject};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    s = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (s != NATS_OK) {
        rc = fail("add stream (is JetStream enabled?)", natsStatus_GetText(s));
        goto out;
    }
    s = js_Publish(&pa, js, subject, "hello", 5, NULL, &jerr);
    if (s != NATS_OK || pa == NULL || pa->Sequence != 1) {
        rc = fail("publish to JetStream", natsStatus_GetText(s));
        goto out;
    }
    js_DeleteStream(js, stream, NULL, &jerr);
    printf("NATS ok: %s, stream %s stored message seq %" PRIu64 "\n", url, stream, pa->Sequence);
    rc = 0;
out:
    jsPubAck_Destroy(pa);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc;
}

static int check_pg(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        int rc = fail("connect to PostgreSQL", PQerrorMessage(c));
        PQfinish(c);
        return rc;
    }
    PGresult *r = PQexec(c, "create temporary table smoke(x int); insert into smoke values (41); "
                            "select x + 1 from smoke");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
             strcmp(PQgetvalue(r, 0, 0), "42") == 0;
    if (!ok) {
        int rc = fail("query PostgreSQL", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return rc;
    }
    printf("PostgreSQL ok: server version %d\n", PQserverVersion(c));
    PQclear(r);
    PQfinish(c);
    return 0;
}

int main(void)
{
    const char *nats_url = getenv("NATS_URL");
    const char *db_url = getenv("DATABASE_URL");
    if (nats_url == NULL || db_url == NULL)
        return fail("environment", "NATS_URL and DATABASE_URL must be set (run under scripts/with-services)");
    int rc = check_nats(nats_url);
    rc |= check_pg(db_url);
    nats_Close();
    return rc;
}
