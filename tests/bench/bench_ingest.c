/* bench_ingest.c — end to end ingestion: the real daemon binary, a throwaway mosquitto and
 * a throwaway PostgreSQL (the test harness), QoS 1 reports from MQTT to outage.events.
 * Not a test: prints figures, asserts no timing.
 *
 *   bench_ingest [-n N] [-k K] [-m M] [-r RUNS] [-s SCENARIOS] [-p PERFDIR] [BINARY]
 *
 *   -n N        reports per backlog and for the live run (default 200000)
 *   -k K        keys (controllers, one outage type) for those reports (default 10000);
 *               each key reports every 10 minutes within the last day, in time order
 *   -m M        keys of the memory scenario, one report each at now - 1 min (default 100000)
 *   -r RUNS     runs per timed scenario, the median is printed (default 3)
 *   -s LIST     scenarios to run, a subset of "1234" (default all)
 *   -p PERFDIR  also run scenario 1 once more under `perf record -a -g` (system wide: the
 *               daemon, the broker and PostgreSQL; not timed), writing
 *               PERFDIR/daemon-drain.perf.data
 *   BINARY      the daemon (default $OUTAGED_BINARY, else ./outaged)
 *
 * Scenarios, each with a fresh database and a fresh broker:
 *   1  backlog drain: the daemon creates its persistent session and stops (SIGTERM); N
 *      reports are published; the daemon is started again and timed until its metrics
 *      file counts N messages received (consumed) and until sum(report_count) in
 *      outage.events is N (in the database);
 *   2  the same backlog drained by `mosquitto_sub -q 1 -c -C N` and by a bare paho
 *      MQTTAsync consumer (persistent session, QoS 1, counts messages, returns 1);
 *   3  live: the daemon running, N reports published as fast as the broker takes them
 *      (and the same with the bare paho consumer in place of the daemon);
 *   4  memory: M keys with one open event each, drained from a backlog; VmRSS of the
 *      daemon against its RSS when idle, and the metrics file's memory figures.
 *
 * The metrics file is rewritten once a second, so the "consumed" time is interpolated
 * between its last two writes (at the rate of the interval before); "in the database" is
 * polled with a query every 100 ms or more. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>
#include <libpq-fe.h>

#include "harness.h"

#define MAX_RUNS 9
#define CLIENT_ID "bench-outaged"
#define TOPIC_FILTER "outages/+"
#define DRAIN_TIMEOUT_S 600.0

static size_t opt_n = 200000, opt_k = 10000, opt_m = 100000;
static int opt_runs = 3;
static const char *opt_scenarios = "1234";
static const char *opt_perf_dir;

static PgServer pg;
static int db_counter;

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
        double s[MAX_RUNS];

        if (n <= 0)
                return 0;
        memcpy(s, v, (size_t) n * sizeof(*s));
        qsort(s, (size_t) n, sizeof(*s), cmp_double);
        return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double min_of(const double *v, int n) {
        double m = v[0];

        for (int i = 1; i < n; i++)
                m = v[i] < m ? v[i] : m;
        return m;
}

static double max_of(const double *v, int n) {
        double m = v[0];

        for (int i = 1; i < n; i++)
                m = v[i] > m ? v[i] : m;
        return m;
}

/* ---- reports ---- */

typedef struct Backlog {
        size_t n;
        char **topics, **payloads;
} Backlog;

static void format_ts(char *buf, size_t len, int64_t t) {
        time_t secs = (time_t) t;
        struct tm tm;

        gmtime_r(&secs, &tm);
        (void) strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* n reports over k keys, round-robin: report j is key j % k's (j / k)-th, 10 minutes after
 * its previous one, so every key reports in time order. Each key's timestamps start just
 * inside the last day, offset by up to 5 minutes per key. With day = false, one report per
 * key at now - 1 min (n must equal k): events that stay open. */
static int backlog_make(Backlog *b, size_t n, size_t k, bool day) {
        int64_t now = (int64_t) time(NULL);
        int64_t base = now - 86400 + 60;
        size_t per_key = (n + k - 1) / k;

        if (day && (per_key - 1) * 600 + 300 + 120 > 86400) {
                fprintf(stderr, "N/K = %zu reports per key do not fit in a day at one every 10 minutes "
                                "(at most 143)\n", per_key);
                return -1;
        }
        b->n = n;
        b->topics = calloc(n, sizeof(char *));
        b->payloads = calloc(n, sizeof(char *));
        if (!b->topics || !b->payloads)
                return -1;
        for (size_t j = 0; j < n; j++) {
                size_t key = j % k, i = j / k;
                int64_t t = day ? base + (int64_t) i * 600 + (int64_t) (key % 300) : now - 60;
                char ts[40];

                format_ts(ts, sizeof(ts), t);
                if (asprintf(&b->topics[j], "outages/ctrl_%07zu", key) < 0 ||
                    asprintf(&b->payloads[j], "{\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"}", ts) < 0)
                        return -1;
        }
        return 0;
}

static void backlog_free(Backlog *b) {
        for (size_t j = 0; j < b->n; j++) {
                free(b->topics[j]);
                free(b->payloads[j]);
        }
        free(b->topics);
        free(b->payloads);
        memset(b, 0, sizeof(*b));
}

/* The publisher: MQTT 3.1.1 over a plain socket, QoS 1, up to PUB_WINDOW messages
 * unacknowledged, so the broker, not a client library, sets the pace (paho's MQTTAsync,
 * as used by the test harness, publishes about 1k msg/s here while a subscriber is
 * online, against 25k msg/s for mosquitto_pub -l). */
#define PUB_WINDOW 1000

static void put_varint(char **p, size_t v) {
        do {
                unsigned char c = v % 128;

                v /= 128;
                *(*p)++ = (char) (v ? c | 0x80 : c);
        } while (v);
}

static void put_str(char **p, const char *str, size_t len) {
        *(*p)++ = (char) (len >> 8);
        *(*p)++ = (char) (len & 0xff);
        memcpy(*p, str, len);
        *p += len;
}

static int write_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t w = write(fd, buf, len);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return -1;
                buf += w;
                len -= (size_t) w;
        }
        return 0;
}

/* Publishes the backlog and waits for every PUBACK; returns seconds or a negative value. */
static double publish(const MqttBroker *broker, const Backlog *b) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) broker->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        size_t cap = 64, *ends = calloc(b->n, sizeof(size_t)), off = 0, acked = 0, rlen = 0;
        char *buf, *p, conn[64], rbuf[4096], id[32];
        double t0 = now_s(), dt = -1;
        int one = 1, fd = -1;

        for (size_t j = 0; j < b->n; j++)
                cap += 16 + strlen(b->topics[j]) + strlen(b->payloads[j]);
        buf = malloc(cap);
        if (!buf || !ends)
                goto out;
        p = buf;
        for (size_t j = 0; j < b->n; j++) {
                size_t tl = strlen(b->topics[j]), pl = strlen(b->payloads[j]);
                unsigned pid = (unsigned) (j % 65535) + 1;

                *p++ = 0x32;    /* PUBLISH, QoS 1 */
                put_varint(&p, 2 + tl + 2 + pl);
                put_str(&p, b->topics[j], tl);
                *p++ = (char) (pid >> 8);
                *p++ = (char) (pid & 0xff);
                memcpy(p, b->payloads[j], pl);
                p += pl;
                ends[j] = (size_t) (p - buf);
        }

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0)
                goto out;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        snprintf(id, sizeof(id), "bench-pub-%d", (int) getpid());
        p = conn;
        *p++ = 0x10;    /* CONNECT, MQTT 3.1.1, clean session, keepalive 60 s */
        put_varint(&p, 10 + 2 + strlen(id));
        put_str(&p, "MQTT", 4);
        *p++ = 4;
        *p++ = 0x02;
        *p++ = 0;
        *p++ = 60;
        put_str(&p, id, strlen(id));
        if (write_all(fd, conn, (size_t) (p - conn)) < 0 || read(fd, rbuf, 4) != 4 || rbuf[0] != 0x20 || rbuf[3] != 0)
                goto out;

        t0 = now_s();
        while (acked < b->n) {
                size_t win_end = ends[(acked + PUB_WINDOW < b->n ? acked + PUB_WINDOW : b->n) - 1];
                struct pollfd pf = { .fd = fd, .events = POLLIN | (off < win_end ? POLLOUT : 0) };

                if (poll(&pf, 1, 30000) <= 0)
                        goto out;
                if (pf.revents & POLLOUT) {
                        ssize_t w = send(fd, buf + off, win_end - off, MSG_DONTWAIT);

                        if (w < 0 && errno != EAGAIN && errno != EINTR)
                                goto out;
                        if (w > 0)
                                off += (size_t) w;
                }
                if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t r = recv(fd, rbuf + rlen, sizeof(rbuf) - rlen, MSG_DONTWAIT);
                        size_t i = 0;

                        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                                goto out;
                        if (r > 0)
                                rlen += (size_t) r;
                        /* PUBACKs only: 0x40 0x02 id id */
                        for (; rlen - i >= 4; i += 4) {
                                if ((unsigned char) rbuf[i] != 0x40 || rbuf[i + 1] != 2)
                                        goto out;
                                acked++;
                        }
                        memmove(rbuf, rbuf + i, rlen - i);
                        rlen -= i;
                }
        }
        dt = now_s() - t0;
        (void) write_all(fd, "\xe0\x00", 2);     /* DISCONNECT */
out:
        if (dt < 0)
                fprintf(stderr, "publishing failed after %zu acknowledgements\n", acked);
        if (fd >= 0)
                close(fd);
        free(buf);
        free(ends);
        return dt;
}

/* ---- a fresh database, and a connection that polls it ---- */

static char *new_db(const char *prefix) {
        char name[64], sql[160], *conninfo;

        snprintf(name, sizeof(name), "bench_%s_%d", prefix, db_counter++);
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
        if (pg_exec(pg.conninfo, sql) < 0)
                return NULL;
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        if (pg_exec(pg.conninfo, sql) < 0)
                return NULL;
        if (asprintf(&conninfo, "host=%s port=%d dbname=%s user=postgres", pg.dir, pg.port, name) < 0)
                return NULL;
        return conninfo;
}

static void drop_db(char *conninfo) {
        const char *p = conninfo ? strstr(conninfo, "dbname=") : NULL;
        char name[64], sql[160];

        if (p && sscanf(p + 7, "%63s", name) == 1) {
                snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
                (void) pg_exec(pg.conninfo, sql);
        }
        free(conninfo);
}

/* sum(report_count) over outage.events, or -1. */
static long long db_reports(PGconn *c) {
        PGresult *r = PQexec(c, "SELECT coalesce(sum(report_count), 0) FROM outage.events");
        long long v = -1;

        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
                v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        else
                fprintf(stderr, "poll query: %s", PQerrorMessage(c));
        PQclear(r);
        return v;
}

/* ---- the daemon's metrics file, log and /proc ---- */

static char *metrics_path(const Daemon *d) {
        char *p;

        return asprintf(&p, "%s/metrics.prom", d->dir) < 0 ? NULL : p;
}

/* The value of a metric in the daemon's metrics file, or -1. */
static double metric(const Daemon *d, const char *name) {
        char *path = metrics_path(d), line[512];
        size_t len = strlen(name);
        double v = -1;
        FILE *f;

        if (!path)
                return -1;
        f = fopen(path, "r");
        free(path);
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, name, len) == 0 && line[len] == ' ') {
                        v = strtod(line + len + 1, NULL);
                        break;
                }
        fclose(f);
        return v;
}

/* VmRSS or VmHWM of pid, in KiB, or -1. */
static long proc_kib(pid_t pid, const char *field) {
        char path[64], line[256];
        size_t len = strlen(field);
        long v = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "r");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, len) == 0 && line[len] == ':') {
                        v = strtol(line + len + 1, NULL, 10);
                        break;
                }
        fclose(f);
        return v;
}

/* Flush lines of the daemon's debug log: "Flushed N fragments in S s". */
typedef struct FlushStats {
        int flushes;
        long long fragments;
        double seconds, max_seconds;
        long long max_fragments;
} FlushStats;

static FlushStats flush_stats(const Daemon *d) {
        FlushStats st = { 0 };
        char line[1024];
        FILE *f = fopen(d->log_path, "r");

        if (!f)
                return st;
        while (fgets(line, sizeof(line), f)) {
                const char *p = strstr(line, "Flushed ");
                long long n;
                double s;

                if (p && sscanf(p, "Flushed %lld fragments in %lf s", &n, &s) == 2) {
                        st.flushes++;
                        st.fragments += n;
                        st.seconds += s;
                        if (s > st.max_seconds)
                                st.max_seconds = s;
                        if (n > st.max_fragments)
                                st.max_fragments = n;
                }
        }
        fclose(f);
        return st;
}

/* ---- timing a drain: metrics file and database ---- */

typedef struct Drain {
        double consumed;        /* seconds from t0 until every message was received */
        double in_db;           /* seconds from t0 until sum(report_count) reached the target */
} Drain;

/* Polls until the daemon has received `messages` (metrics file, every 10 ms) and the
 * database holds `reports` (every 100 ms or twice the query's time). The metrics file is
 * written once a second: the moment the count was reached is interpolated between the
 * last write below it and the first at or above it, at the rate of the writes before. */
static int wait_drain(const Daemon *d, const char *conninfo, double t0, size_t messages, size_t reports,
                      Drain *out) {
        PGconn *c = PQconnectdb(conninfo);
        double prev_t = -1, prev_v = -1, last_t = -1, last_v = -1, next_db = 0, db_interval = 0.1;
        bool consumed = false, in_db = false;

        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "poll connection: %s", PQerrorMessage(c));
                PQfinish(c);
                return -1;
        }
        out->consumed = out->in_db = -1;
        while (!consumed || !in_db) {
                double t = now_s();

                if (t - t0 > DRAIN_TIMEOUT_S) {
                        fprintf(stderr, "drain timed out (received %.0f of %zu)\n", last_v, messages);
                        PQfinish(c);
                        return -1;
                }
                if (!consumed) {
                        double v = metric(d, "outaged_messages_received_total");

                        if (v >= 0 && v != last_v) {
                                if (v >= (double) messages) {
                                        double est = t - t0;

                                        if (last_v >= 0 && prev_v >= 0 && last_v > prev_v && last_t > prev_t) {
                                                double rate = (last_v - prev_v) / (last_t - prev_t);
                                                double e = last_t - t0 + ((double) messages - last_v) / rate;
                                                est = e < est ? e : est;
                                        }
                                        out->consumed = est;
                                        consumed = true;
                                } else {
                                        prev_t = last_t;
                                        prev_v = last_v;
                                        last_t = t;
                                        last_v = v;
                                }
                        }
                }
                if (!in_db && t >= next_db) {
                        double q0 = now_s();
                        long long v = db_reports(c);
                        double q = now_s() - q0;

                        if (v >= (long long) reports) {
                                out->in_db = q0 - t0;
                                in_db = true;
                                if (v > (long long) reports)
                                        fprintf(stderr, "note: %lld reports counted in the database, %zu expected\n",
                                                v, reports);
                        }
                        db_interval = 2 * q > 0.1 ? 2 * q : 0.1;
                        next_db = now_s() + db_interval;
                }
                harness_sleep_ms(10);
        }
        PQfinish(c);
        return 0;
}

/* ---- the daemon ---- */

/* The daemon sends STATUS= every second to its NOTIFY_SOCKET, a datagram socket that the
 * harness reads only while it waits for a notification. A unix datagram socket holds few
 * unread datagrams (net.unix.max_dgram_qlen, 10 by default), and sd_notify then blocks the
 * daemon's main loop: while the daemon runs, a thread keeps reading them. */
typedef struct NotifyDrain {
        pthread_t thread;
        int fd;
        _Atomic bool stop;
        bool running;
} NotifyDrain;

static void *notify_drain_run(void *p) {
        NotifyDrain *n = p;
        char buf[1024];

        while (!atomic_load(&n->stop)) {
                while (recv(n->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                        ;
                harness_sleep_ms(20);
        }
        return NULL;
}

static void notify_drain_start(NotifyDrain *n, const Daemon *d) {
        n->fd = d->notify_fd;
        atomic_store(&n->stop, false);
        n->running = pthread_create(&n->thread, NULL, notify_drain_run, n) == 0;
}

static void notify_drain_stop(NotifyDrain *n) {
        if (!n->running)
                return;
        atomic_store(&n->stop, true);
        pthread_join(n->thread, NULL);
        n->running = false;
}

static int daemon_up(Daemon *d, const MqttBroker *broker, const char *conninfo) {
        DaemonOptions o = { .mqtt_uri = broker->uri, .conninfo = conninfo, .client_id = CLIENT_ID,
                            .topic = TOPIC_FILTER, .flush_interval = "1s", .startup_timeout = "30s" };

        if (daemon_prepare(d, &o) < 0 || daemon_start(d) < 0)
                return -1;
        if (daemon_wait_ready(d, 60000) != 0) {
                daemon_dump_log(d);
                return -1;
        }
        return 0;
}

/* System-wide: the daemon's threads (created after it starts), the broker and PostgreSQL
 * share the two CPUs, so the whole machine is the picture. */
static pid_t perf_start(void) {
        char out[600], log[600];
        char *argv[] = { "/usr/bin/perf", "record", "-a", "-g", "-F", "499", "-o", out, NULL };
        pid_t pid;

        snprintf(out, sizeof(out), "%s/daemon-drain.perf.data", opt_perf_dir);
        snprintf(log, sizeof(log), "%s/perf.log", opt_perf_dir);
        pid = proc_spawn(argv, NULL, log);
        harness_sleep_ms(1000);         /* perf is recording */
        return pid;
}

typedef struct DaemonResult {
        double publish_s, consumed_s, in_db_s;
        FlushStats fs;
        long rss_idle_kib, rss_kib, hwm_kib;
        double memory_bytes, events_in_memory, events_open, last_flush_s;
} DaemonResult;

/* Scenario 1 (day = true) and 4 (day = false): a backlog drained by the daemon. */
static int daemon_backlog(const Backlog *b, size_t expect, bool perf, DaemonResult *res) {
        MqttBroker broker = { 0 };
        Daemon d = { 0 };
        NotifyDrain nd = { 0 };
        char *db = new_db(perf ? "perf" : "drain");
        pid_t perf_pid = -1;
        Drain dr;
        int ret = -1;
        double t0;

        d.pid = -1;
        d.notify_fd = -1;
        memset(res, 0, sizeof(*res));
        if (!db || mqtt_broker_start(&broker) < 0)
                goto out;
        /* The session and its subscription; the schema. */
        if (daemon_up(&d, &broker, db) < 0)
                goto out;
        notify_drain_start(&nd, &d);    /* through the stop and the next start */
        harness_sleep_ms(1200);         /* settle; metrics written */
        res->rss_idle_kib = proc_kib(d.pid, "VmRSS");
        if (daemon_signal_wait(&d, SIGTERM, 60000) != 0) {
                fprintf(stderr, "daemon did not stop cleanly\n");
                goto out;
        }
        res->publish_s = publish(&broker, b);
        if (res->publish_s < 0)
                goto out;
        harness_sleep_ms(1500);         /* let the broker's autosave pass */

        if (perf)
                perf_pid = perf_start();
        t0 = now_s();
        if (daemon_start(&d) < 0)
                goto out;
        if (wait_drain(&d, db, t0, b->n, expect, &dr) < 0) {
                daemon_dump_log(&d);
                goto out;
        }
        if (perf_pid > 0) {
                kill(perf_pid, SIGINT);
                (void) proc_wait(perf_pid, 60000);
        }
        res->consumed_s = dr.consumed;
        res->in_db_s = dr.in_db;
        res->rss_kib = proc_kib(d.pid, "VmRSS");
        res->hwm_kib = proc_kib(d.pid, "VmHWM");
        harness_sleep_ms(1200);         /* one more metrics write after the last flush */
        res->memory_bytes = metric(&d, "outaged_memory_bytes");
        res->events_in_memory = metric(&d, "outaged_events_in_memory");
        res->events_open = metric(&d, "outaged_events_open");
        res->last_flush_s = metric(&d, "outaged_last_flush_seconds");
        res->fs = flush_stats(&d);
        ret = 0;
out:
        if (d.pid > 0)
                (void) daemon_signal_wait(&d, SIGTERM, 60000);
        notify_drain_stop(&nd);
        daemon_cleanup(&d);
        mqtt_broker_stop(&broker);
        drop_db(db);
        return ret;
}

/* Scenario 3: the daemon running; the publisher as fast as the broker takes it. */
static int daemon_live(const Backlog *b, DaemonResult *res) {
        MqttBroker broker = { 0 };
        Daemon d = { 0 };
        NotifyDrain nd = { 0 };
        char *db = new_db("live");
        Drain dr;
        int ret = -1;
        double t0;

        d.pid = -1;
        d.notify_fd = -1;
        memset(res, 0, sizeof(*res));
        if (!db || mqtt_broker_start(&broker) < 0)
                goto out;
        if (daemon_up(&d, &broker, db) < 0)
                goto out;
        notify_drain_start(&nd, &d);
        harness_sleep_ms(1200);
        t0 = now_s();
        res->publish_s = publish(&broker, b);
        if (res->publish_s < 0)
                goto out;
        if (wait_drain(&d, db, t0, b->n, b->n, &dr) < 0) {
                daemon_dump_log(&d);
                goto out;
        }
        res->consumed_s = dr.consumed;
        res->in_db_s = dr.in_db;
        res->fs = flush_stats(&d);
        ret = 0;
out:
        if (d.pid > 0)
                (void) daemon_signal_wait(&d, SIGTERM, 60000);
        notify_drain_stop(&nd);
        daemon_cleanup(&d);
        mqtt_broker_stop(&broker);
        drop_db(db);
        return ret;
}

/* ---- scenario 2: mosquitto_sub and a bare paho consumer ---- */

static double mosquitto_sub_drain(const Backlog *b, double *publish_s) {
        MqttBroker broker = { 0 };
        char port[16], count[32], *out = NULL, *err = NULL;
        char *argv[] = { "/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-c",
                         "-i", "bench-sub", "-t", TOPIC_FILTER, "-E", NULL, NULL, NULL };
        double t0, dt = -1;
        pid_t pid;
        int r;

        if (mqtt_broker_start(&broker) < 0)
                goto out;
        snprintf(port, sizeof(port), "%d", broker.port);
        /* the persistent session and its subscription */
        r = proc_run(argv, NULL, &out, &err, 4096, 30000);
        if (r != 0) {
                fprintf(stderr, "mosquitto_sub -E: %d %s\n", r, err ? err : "");
                goto out;
        }
        *publish_s = publish(&broker, b);
        if (*publish_s < 0)
                goto out;
        harness_sleep_ms(1500);
        snprintf(count, sizeof(count), "%zu", b->n);
        argv[12] = "-C";
        argv[13] = count;
        t0 = now_s();
        pid = proc_spawn(argv, NULL, "/dev/null");
        if (pid < 0)
                goto out;
        r = proc_wait(pid, (int) (DRAIN_TIMEOUT_S * 1000));
        if (r != 0) {
                fprintf(stderr, "mosquitto_sub -C: exit %d\n", r);
                if (r < 0) {
                        kill(pid, SIGKILL);
                        (void) proc_wait(pid, 5000);
                }
                goto out;
        }
        dt = now_s() - t0;
out:
        free(out);
        free(err);
        mqtt_broker_stop(&broker);
        return dt;
}

typedef struct Consumer {
        MQTTAsync c;
        _Atomic size_t received;
        _Atomic int subscribed;         /* 0 pending, 1 ok, -1 failed */
} Consumer;

static int consumer_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m) {
        Consumer *k = ctx;

        atomic_fetch_add(&k->received, 1);
        MQTTAsync_freeMessage(&m);
        MQTTAsync_free(topic);
        return 1;
}

static void consumer_subscribed(void *ctx, MQTTAsync_successData5 *r) {
        Consumer *k = ctx;

        atomic_store(&k->subscribed, r && r->reasonCode >= 0x80 ? -1 : 1);
}

static void consumer_subscribe_failed(void *ctx, MQTTAsync_failureData5 *r) {
        Consumer *k = ctx;

        atomic_store(&k->subscribed, -1);
}

static void consumer_connected(void *ctx, char *cause) {
        Consumer *k = ctx;
        MQTTAsync_callOptions o = MQTTAsync_callOptions_initializer;

        o.onSuccess5 = consumer_subscribed;
        o.onFailure5 = consumer_subscribe_failed;
        o.context = k;
        if (MQTTAsync_subscribe(k->c, TOPIC_FILTER, 1, &o) != MQTTASYNC_SUCCESS)
                atomic_store(&k->subscribed, -1);
}

/* Connects with a persistent session (MQTT 5, clean start off, session expiry 1 h). */
static int consumer_open(Consumer *k, const MqttBroker *broker) {
        MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
        MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer5;
        MQTTProperties props = MQTTProperties_initializer;
        MQTTProperty p = { .identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL };
        int r;

        atomic_store(&k->received, 0);
        atomic_store(&k->subscribed, 0);
        if (MQTTAsync_createWithOptions(&k->c, broker->uri, "bench-paho", MQTTCLIENT_PERSISTENCE_NONE, NULL,
                                        &co) != MQTTASYNC_SUCCESS)
                return -1;
        if (MQTTAsync_setCallbacks(k->c, k, NULL, consumer_message, NULL) != MQTTASYNC_SUCCESS ||
            MQTTAsync_setConnected(k->c, k, consumer_connected) != MQTTASYNC_SUCCESS)
                return -1;
        p.value.integer4 = 3600;
        if (MQTTProperties_add(&props, &p) != 0)
                return -1;
        o.connectProperties = &props;
        o.cleanstart = 0;
        o.MQTTVersion = MQTTVERSION_5;
        o.keepAliveInterval = 30;
        r = MQTTAsync_connect(k->c, &o);
        MQTTProperties_free(&props);
        return r == MQTTASYNC_SUCCESS ? 0 : -1;
}

static void consumer_close(Consumer *k) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;

        if (!k->c)
                return;
        d.timeout = 1000;
        (void) MQTTAsync_disconnect(k->c, &d);
        for (int i = 0; i < 200 && MQTTAsync_isConnected(k->c); i++)
                harness_sleep_ms(5);
        MQTTAsync_destroy(&k->c);
        k->c = NULL;
}

static double paho_drain(const Backlog *b, double *publish_s) {
        static Consumer k;
        MqttBroker broker = { 0 };
        double t0, dt = -1;

        if (mqtt_broker_start(&broker) < 0)
                goto out;
        if (consumer_open(&k, &broker) < 0)
                goto out;
        for (int i = 0; i < 3000 && atomic_load(&k.subscribed) == 0; i++)
                harness_sleep_ms(10);
        if (atomic_load(&k.subscribed) != 1) {
                fprintf(stderr, "paho consumer: no subscription\n");
                goto out;
        }
        consumer_close(&k);
        *publish_s = publish(&broker, b);
        if (*publish_s < 0)
                goto out;
        harness_sleep_ms(1500);
        t0 = now_s();
        if (consumer_open(&k, &broker) < 0)
                goto out;
        while (atomic_load(&k.received) < b->n) {
                if (now_s() - t0 > DRAIN_TIMEOUT_S) {
                        fprintf(stderr, "paho consumer: %zu of %zu received\n", atomic_load(&k.received), b->n);
                        goto out;
                }
                harness_sleep_ms(1);
        }
        dt = now_s() - t0;
out:
        consumer_close(&k);
        mqtt_broker_stop(&broker);
        return dt;
}

/* Scenario 3's reference: the bare consumer online while the publisher runs. */
static double paho_live(const Backlog *b, double *publish_s) {
        static Consumer k;
        MqttBroker broker = { 0 };
        double t0, dt = -1;

        if (mqtt_broker_start(&broker) < 0)
                goto out;
        if (consumer_open(&k, &broker) < 0)
                goto out;
        for (int i = 0; i < 3000 && atomic_load(&k.subscribed) == 0; i++)
                harness_sleep_ms(10);
        if (atomic_load(&k.subscribed) != 1) {
                fprintf(stderr, "paho consumer: no subscription\n");
                goto out;
        }
        t0 = now_s();
        *publish_s = publish(&broker, b);
        if (*publish_s < 0)
                goto out;
        while (atomic_load(&k.received) < b->n) {
                if (now_s() - t0 > DRAIN_TIMEOUT_S) {
                        fprintf(stderr, "paho consumer: %zu of %zu received\n", atomic_load(&k.received), b->n);
                        goto out;
                }
                harness_sleep_ms(1);
        }
        dt = now_s() - t0;
out:
        consumer_close(&k);
        mqtt_broker_stop(&broker);
        return dt;
}

/* ---- main ---- */

static void usage(const char *argv0) {
        fprintf(stderr, "usage: %s [-n N] [-k K] [-m M] [-r RUNS] [-s 1234] [-p PERFDIR] [BINARY]\n", argv0);
}

static void row(const char *what, const double *v, int n, size_t msgs) {
        double m = median(v, n);

        if (n > 1)
                printf("| %s | %.2f | %.2f-%.2f | %.0f |\n", what, m, min_of(v, n), max_of(v, n), (double) msgs / m);
        else
                printf("| %s | %.2f | | %.0f |\n", what, m, (double) msgs / m);
}

int main(int argc, char **argv) {
        double s1_pub[MAX_RUNS], s1_cons[MAX_RUNS], s1_db[MAX_RUNS];
        double s2_sub[MAX_RUNS], s2_paho[MAX_RUNS], s2_pub[2 * MAX_RUNS];
        double s3_pub[MAX_RUNS], s3_cons[MAX_RUNS], s3_db[MAX_RUNS], s3_ref[MAX_RUNS], s3_ref_pub[MAX_RUNS];
        int n1 = 0, n2s = 0, n2p = 0, n2pub = 0, n3 = 0, n3r = 0;
        DaemonResult r1[MAX_RUNS], r4 = { 0 };
        bool have4 = false;
        Backlog day = { 0 }, mem = { 0 };
        double t_start = now_s();
        int c, ret = 1;

        while ((c = getopt(argc, argv, "n:k:m:r:s:p:h")) != -1) {
                switch (c) {
                case 'n': opt_n = strtoul(optarg, NULL, 10); break;
                case 'k': opt_k = strtoul(optarg, NULL, 10); break;
                case 'm': opt_m = strtoul(optarg, NULL, 10); break;
                case 'r': opt_runs = atoi(optarg); break;
                case 's': opt_scenarios = optarg; break;
                case 'p': opt_perf_dir = optarg; break;
                default: usage(argv[0]); return c == 'h' ? 0 : 64;
                }
        }
        if (optind < argc)
                setenv("OUTAGED_BINARY", argv[optind], 1);
        if (opt_n == 0 || opt_k == 0 || opt_k > opt_n || opt_m == 0 || opt_runs < 1 || opt_runs > MAX_RUNS) {
                usage(argv[0]);
                return 64;
        }
        if (access(harness_binary(), X_OK) != 0) {
                fprintf(stderr, "%s: not executable (give the daemon's path or set OUTAGED_BINARY)\n",
                        harness_binary());
                return 64;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (backlog_make(&day, opt_n, opt_k, true) < 0 ||
            (strchr(opt_scenarios, '4') && backlog_make(&mem, opt_m, opt_m, false) < 0))
                return 1;
        if (pg_server_start(&pg) < 0)
                return 1;

        printf("N = %zu reports over K = %zu keys; memory scenario M = %zu keys; %d runs; daemon %s\n",
               opt_n, opt_k, opt_m, opt_runs, harness_binary());

        if (strchr(opt_scenarios, '1')) {
                for (int i = 0; i < opt_runs; i++) {
                        DaemonResult *r = &r1[n1];

                        if (daemon_backlog(&day, opt_n, false, r) < 0)
                                goto out;
                        s1_pub[n1] = r->publish_s;
                        s1_cons[n1] = r->consumed_s;
                        s1_db[n1] = r->in_db_s;
                        n1++;
                        printf("1 backlog run %d: published in %.2f s; consumed %.2f s; in database %.2f s; "
                               "%d flushes, %lld fragments, %.2f s flushing (max %.2f s, %lld fragments); "
                               "RSS %ld KiB (peak %ld)\n",
                               i + 1, r->publish_s, r->consumed_s, r->in_db_s, r->fs.flushes, r->fs.fragments,
                               r->fs.seconds, r->fs.max_seconds, r->fs.max_fragments, r->rss_kib, r->hwm_kib);
                }
                if (opt_perf_dir) {
                        DaemonResult r;

                        if (daemon_backlog(&day, opt_n, true, &r) < 0)
                                goto out;
                        printf("1 backlog under perf (not timed): consumed %.2f s; in database %.2f s; "
                               "profile in %s/daemon-drain.perf.data\n", r.consumed_s, r.in_db_s, opt_perf_dir);
                }
        }
        if (strchr(opt_scenarios, '2')) {
                for (int i = 0; i < opt_runs; i++) {
                        double p = 0, t = mosquitto_sub_drain(&day, &p);

                        if (t < 0)
                                goto out;
                        s2_sub[n2s++] = t;
                        s2_pub[n2pub++] = p;
                        printf("2 mosquitto_sub run %d: published in %.2f s; drained in %.2f s\n", i + 1, p, t);
                        t = paho_drain(&day, &p);
                        if (t < 0)
                                goto out;
                        s2_paho[n2p++] = t;
                        s2_pub[n2pub++] = p;
                        printf("2 bare paho run %d: published in %.2f s; drained in %.2f s\n", i + 1, p, t);
                }
        }
        if (strchr(opt_scenarios, '3')) {
                for (int i = 0; i < opt_runs; i++) {
                        DaemonResult r;

                        if (daemon_live(&day, &r) < 0)
                                goto out;
                        s3_pub[n3] = r.publish_s;
                        s3_cons[n3] = r.consumed_s;
                        s3_db[n3] = r.in_db_s;
                        n3++;
                        printf("3 live run %d: published in %.2f s; consumed %.2f s; in database %.2f s; "
                               "%d flushes, %lld fragments, %.2f s flushing (max %.2f s)\n",
                               i + 1, r.publish_s, r.consumed_s, r.in_db_s, r.fs.flushes, r.fs.fragments,
                               r.fs.seconds, r.fs.max_seconds);
                        s3_ref[n3r] = paho_live(&day, &s3_ref_pub[n3r]);
                        if (s3_ref[n3r] < 0)
                                goto out;
                        printf("3 live run %d, bare paho consumer instead of the daemon: published in %.2f s; "
                               "received %.2f s\n", i + 1, s3_ref_pub[n3r], s3_ref[n3r]);
                        n3r++;
                }
        }
        if (strchr(opt_scenarios, '4')) {
                if (daemon_backlog(&mem, opt_m, false, &r4) < 0)
                        goto out;
                have4 = true;
                printf("4 memory: %zu keys published in %.2f s; consumed %.2f s; in database %.2f s; "
                       "%d flushes, %lld fragments, %.2f s flushing (max %.2f s, %lld fragments)\n",
                       opt_m, r4.publish_s, r4.consumed_s, r4.in_db_s, r4.fs.flushes, r4.fs.fragments,
                       r4.fs.seconds, r4.fs.max_seconds, r4.fs.max_fragments);
        }

        printf("\nMedian of %d runs where several (min-max); 2 vCPUs shared with other work: figures are noisy.\n\n",
               opt_runs);
        printf("| measure | seconds | range | messages/s |\n|---|---|---|---|\n");
        if (n1) {
                char what[160];

                snprintf(what, sizeof(what), "1 backlog of %zu, daemon: consumed (MQTT)", opt_n);
                row(what, s1_cons, n1, opt_n);
                snprintf(what, sizeof(what), "1 backlog of %zu, daemon: in the database", opt_n);
                row(what, s1_db, n1, opt_n);
        }
        if (n2s) {
                row("2 same backlog, `mosquitto_sub -q 1 -c -C N`", s2_sub, n2s, opt_n);
                row("2 same backlog, bare paho MQTTAsync consumer", s2_paho, n2p, opt_n);
        }
        if (n3) {
                row("3 live, publisher (every PUBACK received)", s3_pub, n3, opt_n);
                row("3 live, daemon: consumed (MQTT)", s3_cons, n3, opt_n);
                row("3 live, daemon: in the database", s3_db, n3, opt_n);
                row("3 live, bare paho consumer instead: publisher", s3_ref_pub, n3r, opt_n);
                row("3 live, bare paho consumer instead: all received", s3_ref, n3r, opt_n);
        }
        if (n1 || n2pub) {
                double all[3 * MAX_RUNS];
                int na = 0;

                for (int i = 0; i < n1; i++)
                        all[na++] = s1_pub[i];
                for (int i = 0; i < n2pub; i++)
                        all[na++] = s2_pub[i];
                row("publishing a backlog (offline subscriber)", all, na, opt_n);
        }
        if (have4) {
                char what[160];

                snprintf(what, sizeof(what), "4 backlog of %zu keys x 1 report, daemon: consumed (MQTT)", opt_m);
                row(what, &r4.consumed_s, 1, opt_m);
                snprintf(what, sizeof(what), "4 backlog of %zu keys x 1 report, daemon: in the database", opt_m);
                row(what, &r4.in_db_s, 1, opt_m);
                printf("\n| memory, %zu open events | value |\n|---|---|\n", opt_m);
                printf("| daemon VmRSS idle (schema current, subscribed) | %.1f MiB |\n", r4.rss_idle_kib / 1024.0);
                printf("| daemon VmRSS with the events held | %.1f MiB |\n", r4.rss_kib / 1024.0);
                printf("| daemon VmHWM (peak) | %.1f MiB |\n", r4.hwm_kib / 1024.0);
                printf("| VmRSS growth per open event | %.0f bytes |\n",
                       (double) (r4.rss_kib - r4.rss_idle_kib) * 1024.0 / (double) opt_m);
                printf("| outaged_events_in_memory / outaged_events_open | %.0f / %.0f |\n", r4.events_in_memory,
                       r4.events_open);
                printf("| outaged_memory_bytes | %.1f MiB (%.0f bytes per event) |\n", r4.memory_bytes / 1048576.0,
                       r4.events_in_memory > 0 ? r4.memory_bytes / r4.events_in_memory : 0);
        }
        if (n1) {
                printf("\nScenario 1 flushes (daemon debug log), per run: ");
                for (int i = 0; i < n1; i++)
                        printf("%s%d flushes / %lld fragments / %.2f s (max %.2f s)", i ? "; " : "",
                               r1[i].fs.flushes, r1[i].fs.fragments, r1[i].fs.seconds, r1[i].fs.max_seconds);
                printf("\n");
        }
        printf("\nTotal bench time %.0f s\n", now_s() - t_start);
        ret = 0;
out:
        pg_server_stop(&pg);
        backlog_free(&day);
        backlog_free(&mem);
        return ret;
}
