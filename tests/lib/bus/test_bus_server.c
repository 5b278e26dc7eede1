/* lib/bus against private nats-server processes this test starts and stops
 * itself (on free loopback ports, with temporary JetStream stores): the
 * credentials (user/password, NKey seed file, token) and a server restart
 * in the middle of publishing (reconnect with backoff, retries, and
 * de-duplication keeping each message once). Every server is killed at the
 * end of its test. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "bus/bus.h"
#include "log/log.h"

/* The pair from the NATS documentation (nk -gen user -pubout). */
#define SEED "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
#define PUBKEY "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"

typedef struct server {
    char dir[256];
    char conf[300];
    int port;
    pid_t pid;
} server;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        fail_msg("free_port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Writes the config (auth is the body of an authorization block) once. */
static void server_init(server *s, const char *auth)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/mc-bus-test.XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        fail_msg("mkdtemp: %s", strerror(errno));
    s->port = free_port();
    snprintf(s->conf, sizeof s->conf, "%s/nats.conf", s->dir);
    FILE *f = fopen(s->conf, "w");
    assert_non_null(f);
    fprintf(f, "listen: \"127.0.0.1:%d\"\njetstream { store_dir: \"%s/js\" }\n", s->port, s->dir);
    fprintf(f, "authorization { %s }\n", auth);
    fclose(f);
}

static void server_start(server *s)
{
    s->pid = fork();
    if (s->pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("nats-server", "nats-server", "-c", s->conf, (char *)NULL);
        _exit(127);
    }
    assert_true(s->pid > 0);
    uint64_t end = mono_ms() + 10000;
    while (!port_open(s->port)) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            fail_msg("nats-server exited at start (is it installed?)");
        if (mono_ms() > end)
            fail_msg("nats-server did not listen on %d", s->port);
        usleep(20000);
    }
}

static void server_stop(server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        int st;
        uint64_t end = mono_ms() + 5000;
        while (waitpid(s->pid, &st, WNOHANG) != s->pid) {
            if (mono_ms() > end) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, &st, 0);
                break;
            }
            usleep(10000);
        }
        s->pid = 0;
    }
}

static void server_cleanup(server *s)
{
    server_stop(s);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s->dir);
}

static mc_status try_open(const mc_nats_config *nc, mc_bus **bus, mc_error *err)
{
    mc_bus_options o = {0};
    o.name = "test-bus-server";
    o.connect_timeout_ms = 1000;
    o.reconnect_wait_max_ms = 500;
    return mc_bus_open(NULL, nc, &o, bus, err);
}

static void test_credentials(void **state)
{
    server s;
    server_init(&s, "users = [ {user: alice, password: \"s3cret\"}, {nkey: \"" PUBKEY "\"} ]");
    server_start(&s);
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", s.port);
    mc_bus *bus = NULL;
    mc_error err = {0};

    /* No credentials and a wrong password are refused, clearly. */
    mc_nats_config none = {.url = url};
    assert_int_equal(try_open(&none, &bus, &err), MC_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "127.0.0.1"));
    mc_nats_config wrong = {.url = url, .user = "alice", .password = "nope"};
    assert_int_equal(try_open(&wrong, &bus, &err), MC_ERR_UNAVAILABLE);
    assert_null(strstr(err.msg, "nope")); /* the password is never echoed */

    /* User and password. */
    mc_nats_config up = {.url = url, .user = "alice", .password = "s3cret"};
    if (try_open(&up, &bus, &err) != MC_OK)
        fail_msg("user/password: %s", err.msg);
    assert_int_equal(mc_bus_publish(bus, "sim.x", "1", 1, "cred-1", NULL, &err), MC_OK);
    mc_bus_free(bus);

    /* NKey seed file: the public key is derived from the seed. */
    char seedfile[300];
    snprintf(seedfile, sizeof seedfile, "%s/user.nk", s.dir);
    FILE *f = fopen(seedfile, "w");
    assert_non_null(f);
    fprintf(f, "%s\n", SEED);
    fclose(f);
    chmod(seedfile, 0600);
    mc_nats_config nk = {.url = url, .nkey_seed_file = seedfile};
    bus = NULL;
    if (try_open(&nk, &bus, &err) != MC_OK)
        fail_msg("nkey: %s", err.msg);
    mc_bus_pub_ack ack = {0};
    assert_int_equal(mc_bus_publish(bus, "sim.x", "2", 1, "cred-2", &ack, &err), MC_OK);
    assert_int_equal(ack.stream_seq, 2);
    mc_bus_free(bus);

    mc_nats_config badfile = {.url = url, .nkey_seed_file = "/nonexistent/seed"};
    assert_int_equal(try_open(&badfile, &bus, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "NATS_NKEY_SEED_FILE"));
    server_cleanup(&s);

    /* Token. */
    server t;
    server_init(&t, "token: \"t0ken-42\"");
    server_start(&t);
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", t.port);
    mc_nats_config tok = {.url = url, .token = "t0ken-42"};
    bus = NULL;
    if (try_open(&tok, &bus, &err) != MC_OK)
        fail_msg("token: %s", err.msg);
    mc_bus_free(bus);
    mc_nats_config badtok = {.url = url, .token = "other"};
    assert_int_equal(try_open(&badtok, &bus, &err), MC_ERR_UNAVAILABLE);
    server_cleanup(&t);
}

typedef struct counter {
    pthread_mutex_t mu;
    uint64_t n;
    uint8_t seen[1000];
    int dups;
} counter;

static void count_batch(void *ctx, mc_bus_batch *b)
{
    counter *c = ctx;
    for (size_t i = 0; i < mc_bus_batch_count(b); i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        char buf[32] = {0};
        size_t n = mc_bus_msg_len(m) < 31 ? mc_bus_msg_len(m) : 31;
        memcpy(buf, mc_bus_msg_data(m), n);
        int k = atoi(buf + 2);
        pthread_mutex_lock(&c->mu);
        if (k >= 0 && k < 1000) {
            if (c->seen[k])
                c->dups++;
            c->seen[k] = 1;
        }
        c->n++;
        pthread_mutex_unlock(&c->mu);
        mc_bus_msg_ack(m, NULL);
    }
    mc_bus_batch_free(b);
}

static void test_server_restart_while_publishing(void **state)
{
    server s;
    server_init(&s, "users = [ {user: bob, password: \"pw\"} ]");
    server_start(&s);
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", s.port);
    mc_nats_config nc = {.url = url, .user = "bob", .password = "pw"};
    mc_bus_options o = {0};
    o.name = "test-bus-restart";
    o.reconnect_wait_max_ms = 300;
    o.ack_timeout_ms = 1000;
    o.publish_attempts = 10;
    o.retry_backoff_ms = 100;
    mc_bus *bus = NULL;
    mc_error err = {0};
    if (mc_bus_open(NULL, &nc, &o, &bus, &err) != MC_OK)
        fail_msg("open: %s", err.msg);

    char p[16];
    for (int i = 0; i < 300; i++) {
        int n = snprintf(p, sizeof p, "m-%03d", i);
        assert_int_equal(mc_bus_publish_stamped(bus, "sim.metrics", "run-rs", 1, (uint64_t)i + 1,
                                                p, (size_t)n, &err),
                         MC_OK);
        if (i == 100) {
            /* The server goes away with acks in flight and comes back on the
             * same port and store; mc_bus_connected follows. */
            assert_true(mc_bus_connected(bus));
            server_stop(&s);
            uint64_t end = mono_ms() + 5000;
            while (mc_bus_connected(bus) && mono_ms() < end)
                usleep(10000);
            assert_false(mc_bus_connected(bus));
        }
        if (i == 200) {
            server_start(&s);
            uint64_t end = mono_ms() + 10000;
            while (!mc_bus_connected(bus) && mono_ms() < end)
                usleep(10000);
            assert_true(mc_bus_connected(bus));
        }
    }
    if (mc_bus_flush(bus, 60000, &err) != MC_OK)
        fail_msg("flush after the restart: %s", err.msg);
    assert_int_equal(mc_bus_publish_failures(bus), 0);
    fprintf(stderr, "restart: %llu acked (%llu duplicates), %llu retries\n",
            (unsigned long long)mc_bus_published(bus),
            (unsigned long long)mc_bus_publish_duplicates(bus),
            (unsigned long long)mc_bus_publish_retries(bus));

    /* Each message is stored exactly once. */
    counter c = {0};
    pthread_mutex_init(&c.mu, NULL);
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_SIM;
    po.durable = "restart";
    po.fetch_wait_ms = 200;
    po.on_batch = count_batch;
    po.ctx = &c;
    mc_bus_consumer *cons = NULL;
    if (mc_bus_pull_open(bus, &po, &cons, &err) != MC_OK)
        fail_msg("pull: %s", err.msg);
    uint64_t end = mono_ms() + 10000;
    for (;;) {
        pthread_mutex_lock(&c.mu);
        uint64_t n = c.n;
        pthread_mutex_unlock(&c.mu);
        if (n >= 300 || mono_ms() > end)
            break;
        usleep(20000);
    }
    usleep(500000);
    mc_bus_consumer_close(cons);
    assert_int_equal(c.n, 300);
    assert_int_equal(c.dups, 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(c.seen[i], 1);
    mc_bus_free(bus);
    assert_false(mc_bus_connected(NULL));
    pthread_mutex_destroy(&c.mu);
    server_cleanup(&s);
}

/* Loop mode through a server restart: the data connection's socket is
 * re-attached to the loop from nats.c's reconnect thread, publishing from
 * the loop continues, and the pull consumer receives every message once. */
typedef struct loop_restart {
    uv_loop_t *loop;
    mc_bus *bus;
    server *srv;
    counter *c;
    int next;
    int failed;
    uint64_t deadline;
    bool timed_out;
    char err[512];
} loop_restart;

static void loop_restart_tick(uv_timer_t *t)
{
    loop_restart *lr = t->data;
    if (lr->next < 300) {
        char p[16];
        int n = snprintf(p, sizeof p, "m-%03d", lr->next);
        mc_error err = {0};
        if (mc_bus_publish_stamped(lr->bus, "sim.metrics", "run-lr", 1, (uint64_t)lr->next + 1, p,
                                   (size_t)n, &err) != MC_OK) {
            lr->failed++;
            snprintf(lr->err, sizeof lr->err, "%s", err.msg);
        }
        lr->next++;
        if (lr->next == 100)
            server_stop(lr->srv);
        if (lr->next == 200)
            server_start(lr->srv);
    }
    pthread_mutex_lock(&lr->c->mu);
    uint64_t got = lr->c->n;
    pthread_mutex_unlock(&lr->c->mu);
    if (got >= 300 || mono_ms() > lr->deadline) {
        lr->timed_out = got < 300;
        uv_timer_stop(t);
        uv_stop(lr->loop);
    }
}

static void test_loop_server_restart(void **state)
{
    server s;
    server_init(&s, "users = [ {user: bob, password: \"pw\"} ]");
    server_start(&s);
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", s.port);
    mc_nats_config nc = {.url = url, .user = "bob", .password = "pw"};
    mc_bus_options o = {0};
    o.name = "test-bus-loop-restart";
    o.reconnect_wait_max_ms = 300;
    o.ack_timeout_ms = 1000;
    o.publish_attempts = 20;
    o.retry_backoff_ms = 100;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mc_bus *bus = NULL;
    mc_error err = {0};
    if (mc_bus_open(&loop, &nc, &o, &bus, &err) != MC_OK)
        fail_msg("open: %s", err.msg);
    assert_true(mc_bus_connected(bus));
    counter c = {0};
    pthread_mutex_init(&c.mu, NULL);
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_SIM;
    po.durable = "looprestart";
    po.fetch_wait_ms = 200;
    po.ack_wait_ms = 2000;
    po.on_batch = count_batch;
    po.ctx = &c;
    mc_bus_consumer *cons = NULL;
    if (mc_bus_pull_open(bus, &po, &cons, &err) != MC_OK)
        fail_msg("pull: %s", err.msg);
    loop_restart lr = {&loop, bus, &s, &c, 0, 0, mono_ms() + 60000, false, ""};
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &lr;
    uv_timer_start(&t, loop_restart_tick, 5, 5);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (lr.failed)
        fail_msg("%d publishes refused: %s", lr.failed, lr.err);
    assert_false(lr.timed_out);
    assert_int_equal(c.n, 300);
    assert_int_equal(c.dups, 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(c.seen[i], 1);
    assert_int_equal(mc_bus_publish_failures(bus), 0);
    uint64_t t0 = mono_ms();
    mc_bus_consumer_close(cons);
    mc_bus_free(bus);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(mono_ms() - t0 < 3000);
    assert_int_equal(uv_loop_close(&loop), 0);
    pthread_mutex_destroy(&c.mu);
    server_cleanup(&s);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_credentials),
    cmocka_unit_test(test_server_restart_while_publishing),
    cmocka_unit_test(test_loop_server_restart),
};

int main(void)
{
    mc_log_init("test_bus_server", MC_LOG_ERROR, MC_LOG_FORMAT_TEXT, NULL);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mc_bus_library_shutdown(5000);
    return rc;
}
