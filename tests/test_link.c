/* The broker link against a private mosquitto that the test starts and
 * restarts (skipped when mosquitto is not installed):
 *   - timed waits are unaffected by a step of the wall clock;
 *   - across a broker outage: an UNSUBSCRIBE and a SUBSCRIBE made while the
 *     broker is down take effect on reconnection although the persistent
 *     session still holds the old subscriptions, a publish made while down
 *     is delivered, and the outage is counted and logged with its causes;
 *   - on a full queue QoS 1 messages are all kept, in order, and QoS 0
 *     ones are dropped and counted. */
#define _DEFAULT_SOURCE /* syscall(), for the simulated wall clock */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test_skip.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "esgd/log.h"
#include "esgd/mqtt_link.h"
#include "esgd/runtime.h"

/* ---- a step of the wall clock, simulated ----
 * This definition takes the place of the C library's for the whole test
 * program, the link included: while wall_clock_step is set, CLOCK_REALTIME
 * reads that many seconds off, as if the clock had just been stepped. The
 * kernel's clock, against which pthread_cond_timedwait measures a
 * CLOCK_REALTIME deadline, is untouched, so a wait whose deadline was taken
 * from the wall clock ends an hour late or at once, as with a real step. */
static atomic_long wall_clock_step;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    long rc = syscall(SYS_clock_gettime, id, ts);
    if (rc == 0 && id == CLOCK_REALTIME)
        ts->tv_sec += atomic_load(&wall_clock_step);
    return (int)rc;
}

/* ---- a private broker ---- */

static struct {
    const char *exe;  /* NULL: mosquitto not installed, every test skips */
    char dir[64], conf[96], out[96], captured[96];
    int port;
    pid_t pid;
} broker;

static int saved_stderr = -1;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool write_conf(void)
{
    FILE *f = fopen(broker.conf, "w");
    if (!f)
        return false;
    struct passwd *pw = getpwuid(getuid());
    /* Persistence on, so that the session (our subscriptions) survives a
     * restart as on a production broker; "user" keeps a root-started broker
     * from switching to a user who cannot write the directory. */
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n"
               "user %s\nset_tcp_nodelay true\nlog_dest stdout\n",
            broker.port, broker.dir, pw ? pw->pw_name : "root");
    return fclose(f) == 0;
}

/* Starts mosquitto on broker.port; true once it accepts connections. */
static bool broker_launch(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(broker.out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(broker.exe, "mosquitto", "-c", broker.conf, (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return false;
    broker.pid = pid;
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            broker.pid = 0;
            return false;
        }
        if (port_open(broker.port))
            return true;
        sleep_ms(50);
    }
    return false;
}

/* SIGTERM: mosquitto saves the sessions before it exits. */
static void broker_stop(void)
{
    if (broker.pid > 0) {
        kill(broker.pid, SIGTERM);
        waitpid(broker.pid, NULL, 0);
        broker.pid = 0;
    }
}

static bool broker_restart(void)
{
    broker_stop();
    for (int i = 0; i < 30; i++) {
        if (broker_launch())
            return true;
        sleep_ms(200);
    }
    return false;
}

static int group_setup(void **state)
{
    (void)state;
    static const char *const candidates[] = {"/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"};
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates && !broker.exe; i++)
        if (access(candidates[i], X_OK) == 0)
            broker.exe = candidates[i];
    if (!broker.exe)
        return 0;
    snprintf(broker.dir, sizeof broker.dir, "/tmp/esgd-test-link.XXXXXX");
    if (!mkdtemp(broker.dir))
        return -1;
    snprintf(broker.conf, sizeof broker.conf, "%s/mosquitto.conf", broker.dir);
    snprintf(broker.out, sizeof broker.out, "%s/mosquitto.out", broker.dir);
    snprintf(broker.captured, sizeof broker.captured, "%s/stderr.txt", broker.dir);
    for (int attempt = 0; attempt < 10; attempt++) { /* the port may be taken between the check and the bind */
        broker.port = free_port();
        if (broker.port > 0 && write_conf() && broker_launch())
            return 0;
        broker_stop();
    }
    fprintf(stderr, "could not start mosquitto; see %s\n", broker.out);
    return -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (saved_stderr >= 0) {
        dup2(saved_stderr, 2);
        close(saved_stderr);
    }
    broker_stop();
    if (broker.exe && broker.dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/mosquitto.db", broker.dir);
        unlink(path);
        unlink(broker.conf);
        unlink(broker.out);
        unlink(broker.captured);
        rmdir(broker.dir);
    }
    return 0;
}

/* ---- helpers ---- */

/* Sends the link's log lines (stderr) to a file until capture_end. */
static void capture_begin(void)
{
    int fd = open(broker.captured, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr, shows what was captured and returns it (free it). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(broker.captured, "r");
    assert_non_null(f);
    char *text = calloc(1, 1 << 16);
    assert_non_null(text);
    text[fread(text, 1, (1 << 16) - 1, f)] = '\0';
    fclose(f);
    fprintf(stderr, "%s", text);
    return text;
}

/* Teardown of the outage test: a failed check leaves stderr in the file,
 * with cmocka's message, and maybe the broker stopped. */
static int outage_teardown(void **state)
{
    (void)state;
    if (saved_stderr >= 0)
        free(capture_end());
    return broker.pid > 0 || broker_restart() ? 0 : -1;
}

static char url[64];

static mqtt_link *open_link(const char *name, size_t max_queued_bytes)
{
    char id[96];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", broker.port);
    snprintf(id, sizeof id, "test-link-%ld-%s", (long)getpid(), name);
    mqtt_link_options o = {.broker_url = url, .client_id = id, .connect_timeout_seconds = 10,
                           .max_queued_bytes = max_queued_bytes};
    esgd_error err = {0};
    mqtt_link *l = mqtt_link_open(&o, &err);
    if (!l)
        fail_msg("%s", err.message);
    return l;
}

static void publish(mqtt_link *l, const char *topic, const char *text, int qos)
{
    esgd_error err = {0};
    if (mqtt_link_publish(l, topic, text, strlen(text), qos, false, &err) != ESGD_OK)
        fail_msg("%s", err.message);
}

/* Takes messages for up to ms until topic/text arrives, appending each as
 * "topic=text;" to seen. */
static bool receive_until(mqtt_link *l, const char *topic, const char *text, int ms, char *seen, size_t cap)
{
    double until = monotonic_seconds() + ms / 1000.0;
    mqtt_message m;
    while (monotonic_seconds() < until) {
        if (!mqtt_link_next(l, 100, &m))
            continue;
        size_t used = strlen(seen);
        snprintf(seen + used, cap - used, "%s=%.*s;", m.topic, (int)m.size, (const char *)m.data);
        if (strcmp(m.topic, topic) == 0 && m.size == strlen(text) && memcmp(m.data, text, m.size) == 0)
            return true;
    }
    return false;
}

/* ---- tests ---- */

static void test_waits_ignore_wall_clock_steps(void **state)
{
    (void)state;
    if (!broker.exe)
        test_skip();
    mqtt_link *l = open_link("clock", 0);
    /* A wait on the wall clock would last an hour after the forward step:
     * SIGALRM then ends the test as failed. */
    alarm(60);
    for (long step = -3600; step <= 3600; step += 7200) {
        atomic_store(&wall_clock_step, step);
        mqtt_message m;
        double start = monotonic_seconds();
        bool got = mqtt_link_next(l, 300, &m);
        double took = monotonic_seconds() - start;
        atomic_store(&wall_clock_step, 0);
        assert_false(got);
        if (took < 0.25 || took > 5)
            fail_msg("a 300 ms wait took %.3f s with the wall clock stepped by %ld s", took, step);
    }
    alarm(0);
    mqtt_link_close(l);
}

static void test_outage(void **state)
{
    (void)state;
    if (!broker.exe)
        test_skip();
    char keep[64], drop[64], added[64], seen[2048] = "";
    snprintf(keep, sizeof keep, "test-link/%ld/keep", (long)getpid());
    snprintf(drop, sizeof drop, "test-link/%ld/drop", (long)getpid());
    snprintf(added, sizeof added, "test-link/%ld/added", (long)getpid());
    esgd_error err = {0};
    capture_begin();
    mqtt_link *l = open_link("outage", 0);
    assert_int_equal(mqtt_link_subscribe(l, keep, &err), ESGD_OK);
    assert_int_equal(mqtt_link_subscribe(l, drop, &err), ESGD_OK);
    publish(l, drop, "1", 1);
    publish(l, keep, "1", 1);
    assert_true(receive_until(l, keep, "1", 10000, seen, sizeof seen));
    assert_non_null(strstr(seen, "/drop=1;"));

    broker_stop();
    for (int i = 0; i < 100 && mqtt_link_connected(l); i++)
        sleep_ms(100);
    assert_false(mqtt_link_connected(l));
    /* While the broker is down; its saved session still holds drop. */
    assert_int_equal(mqtt_link_unsubscribe(l, drop, &err), ESGD_OK);
    assert_int_equal(mqtt_link_subscribe(l, added, &err), ESGD_OK);
    sleep_ms(1500); /* the first reconnection attempt, after 1 s, fails */
    publish(l, keep, "offline", 1);
    double down_so_far = mqtt_link_get_counters(l).disconnected_seconds;

    assert_true(broker_restart());
    mqtt_link_counters c = mqtt_link_get_counters(l);
    for (int i = 0; i < 300 && c.reconnects == 0; i++) {
        sleep_ms(100);
        c = mqtt_link_get_counters(l);
    }
    assert_int_equal(c.reconnects, 1);
    assert_true(mqtt_link_connected(l));
    publish(l, drop, "2", 1);
    publish(l, added, "2", 1);
    publish(l, keep, "end", 1);
    seen[0] = '\0';
    assert_true(receive_until(l, keep, "end", 10000, seen, sizeof seen));
    char *log = capture_end();
    printf("received after the outage: %s\n", seen);
    assert_non_null(strstr(seen, "/keep=offline;"));
    assert_non_null(strstr(seen, "/added=2;"));
    /* drop=1 may come again: the broker saved the session with it still in
     * flight when the acknowledgement had not reached it yet (QoS 1 is at
     * least once). What the unsubscription made offline must stop is 2. */
    assert_null(strstr(seen, "/drop=2;"));

    c = mqtt_link_get_counters(l);
    if (down_so_far < 1.5)
        fail_msg("1.5 s into the outage, disconnected for %.3f s", down_so_far);
    assert_int_equal(c.disconnects, 1);
    assert_int_equal(c.reconnects, 1);
    assert_int_equal(c.connects, 2);
    if (c.disconnected_seconds < 1.5 || c.disconnected_seconds > 60)
        fail_msg("disconnected for %.3f s", c.disconnected_seconds);
    char expect[160];
    snprintf(expect, sizeof expect, "warning: mqtt: connection to %s lost after ", url);
    assert_non_null(strstr(log, expect));
    snprintf(expect, sizeof expect, "warning: mqtt: reconnecting to %s failed: TCP/TLS connect failure (code -1)", url);
    assert_non_null(strstr(log, expect));
    snprintf(expect, sizeof expect, "mqtt: reconnected to %s after ", url);
    assert_non_null(strstr(log, expect));
    free(log);
    mqtt_link_close(l);
}

static void test_full_queue(void **state)
{
    (void)state;
    if (!broker.exe)
        test_skip();
    char q1[64], q0[64], text[96];
    snprintf(q1, sizeof q1, "test-link/%ld/q1", (long)getpid());
    snprintf(q0, sizeof q0, "test-link/%ld/q0", (long)getpid());
    esgd_error err = {0};
    mqtt_link *l = open_link("queue", 100); /* room for two 50-byte payloads */
    assert_int_equal(mqtt_link_subscribe(l, q1, &err), ESGD_OK);
    assert_int_equal(mqtt_link_subscribe(l, q0, &err), ESGD_OK);

    /* Ten QoS 1 messages arrive before the program takes any: all kept. */
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof text, "%02d%048d", i, 0);
        publish(l, q1, text, 1);
    }
    mqtt_link_counters c = mqtt_link_get_counters(l);
    for (int i = 0; i < 100 && c.received < 10; i++) {
        sleep_ms(100);
        c = mqtt_link_get_counters(l);
    }
    assert_int_equal(c.received, 10);
    assert_int_equal(c.dropped, 0);
    assert_int_equal(c.over_limit, 8);
    mqtt_message m;
    for (int i = 0; i < 10; i++) {
        assert_true(mqtt_link_next(l, 1000, &m));
        assert_string_equal(m.topic, q1);
        assert_int_equal(m.size, 50);
        snprintf(text, sizeof text, "%02d", i);
        assert_memory_equal(m.data, text, 2);
    }

    /* Three 60-byte QoS 0 ones: the first fits, the other two are dropped. */
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "%02d%058d", i, 0);
        publish(l, q0, text, 0);
    }
    for (int i = 0; i < 100 && c.received < 13; i++) {
        sleep_ms(100);
        c = mqtt_link_get_counters(l);
    }
    assert_int_equal(c.received, 13);
    assert_int_equal(c.dropped, 2);
    assert_true(mqtt_link_next(l, 1000, &m));
    assert_string_equal(m.topic, q0);
    assert_memory_equal(m.data, "00", 2);
    assert_false(mqtt_link_next(l, 200, &m));
    mqtt_link_close(l);
}

static void test_filter_limits(void **state)
{
    (void)state;
    if (!broker.exe)
        test_skip();
    mqtt_link *l = open_link("filters", 0);
    esgd_error err = {0};
    char name[300];
    memset(name, 'a', 256);
    name[256] = '\0';
    assert_int_equal(mqtt_link_subscribe(l, name, &err), ESGD_ERR_ARG);
    for (int i = 0; i < 32; i++) {
        snprintf(name, sizeof name, "test-link/%ld/f%d", (long)getpid(), i);
        assert_int_equal(i % 2 ? mqtt_link_unsubscribe(l, name, &err) : mqtt_link_subscribe(l, name, &err), ESGD_OK);
    }
    assert_int_equal(mqtt_link_subscribe(l, name, &err), ESGD_OK); /* known: no new entry */
    assert_int_equal(mqtt_link_subscribe(l, "test-link/one-too-many", &err), ESGD_ERR_TOO_LARGE);
    assert_non_null(strstr(err.message, "at most 32 topic filters"));
    mqtt_link_close(l);
}

int main(void)
{
    log_set_subject("test_link");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_ignore_wall_clock_steps),
        cmocka_unit_test_teardown(test_outage, outage_teardown),
        cmocka_unit_test(test_full_queue),
        cmocka_unit_test(test_filter_limits),
    };
    return test_exit_status(cmocka_run_group_tests(tests, group_setup, group_teardown));
}
