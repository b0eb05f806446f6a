/* bench_ingest.c — end to end ingestion: the real daemon binary, a throwaway mosquitto and
 * a throwaway PostgreSQL (the test harness), QoS 1 reports from MQTT to outage.events.
 * Not a test: prints figures, asserts no timing.
 *
 *   bench_ingest [-n N] [-k K] [-N BIGN] [-K BIGK] [-r ROUNDS] [-R BIGROUNDS]
 *                [-m M1,M2] [-l RATE] [-L SECONDS] [-s SCENARIOS] [-i] [-p PERFDIR]
 *                [-b BASELINE] [BINARY]
 *
 *   -n N, -k K        the backlog of the drain rounds: N reports over K keys (controllers,
 *                     one outage type), round-robin, each key every 10 minutes within the
 *                     last day, in time order per key (default 200000 over 20000)
 *   -N BIGN, -K BIGK  the large backlog (default 1000000 over 100000)
 *   -r ROUNDS         rounds on the backlog (default 3), -R on the large one (default 1)
 *   -m M1,M2          open-event counts of the memory scenario (default 200000,1000000)
 *   -l RATE, -L S     the latency scenario: RATE reports/s for S seconds (10000, 10)
 *   -s LIST           scenarios, a subset of "dbml" (default all):
 *                       d  drain rounds on the backlog: in each round, alternating on
 *                          identical backlogs (each a fresh broker and database),
 *                          mosquitto_sub -c -q 1, a bare paho MQTTAsync consumer, one daemon,
 *                          two daemons sharing the subscription;
 *                       b  the same on the large backlog;
 *                       m  memory: M open events (one report per key at now - 1 min) drained
 *                          from a backlog, the daemon's VmRSS growth over its idle RSS;
 *                       l  latency: the daemon running, RATE reports/s paced for S seconds,
 *                          each of a new controller, then each extending an open event of
 *                          RATE keys; publish-to-visible per report (p50, p99, max)
 *   -i                rotate the keys' order by one at every pass over them: with an even
 *                     K, the broker's alternate dispatch to two instances otherwise sends
 *                     every report of a key to the same instance
 *   -b BASELINE       also every daemon measurement with this binary (an earlier version),
 *                     right after the same one with BINARY: before and after in one run
 *   -p PERFDIR        also one bare paho drain and one daemon drain of the backlog under
 *                     `perf record -a -g` (system wide; not timed), written to
 *                     PERFDIR/paho-drain.perf.data and PERFDIR/daemon-drain.perf.data
 *   BINARY            the daemon (default $OUTAGED_BINARY, else ./outaged)
 *
 * A drain's clock starts when the consumer starts (its persistent session and subscription
 * exist, the backlog is queued) and stops for the daemon when sum(report_count) over
 * outage.events equals the reports published (polled every 100 ms or twice the query's
 * time), for mosquitto_sub when it exits after N messages, for the paho consumer when its
 * callback has counted N. CPU seconds are read from /proc for every PostgreSQL process
 * (the postmaster's children: backends that ended before the sample are missed), the
 * broker and each daemon thread. */

#include <arpa/inet.h>
#include <errno.h>
#include <dirent.h>
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
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <MQTTAsync.h>
#include <libpq-fe.h>

#include "harness.h"

#define MAX_RUNS 9
#define CLIENT_ID "bench-outaged"
#define SHARE_GROUP "bench"
#define TOPIC_FILTER "outages/+"
#define DRAIN_TIMEOUT_S 900.0
#define MAX_INSTANCES 2

static size_t opt_n = 200000, opt_k = 20000, opt_bn = 1000000, opt_bk = 100000;
static size_t opt_mem[2] = { 200000, 1000000 };
static int opt_n_mem = 2;
static double opt_rate = 10000, opt_lat_s = 10;
static int opt_runs = 3, opt_big_runs = 1;
static const char *opt_scenarios = "dbml";
static const char *opt_perf_dir;
static bool opt_rotate;
static const char *opt_base;
static char *main_binary;

/* The daemon that harness_binary() starts from now on: the baseline or the one measured. */
static void use_binary(bool base) {
        setenv("OUTAGED_BINARY", base ? opt_base : main_binary, 1);
}

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
        double s[4 * MAX_RUNS];

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

/* n reports over k keys, round-robin: report j is key j % k's (j / k)-th (with -i, pass
 * i = j / k starts at key i, so that a shared subscription's alternate dispatch gives each
 * key's reports to both instances even when k is even), 10 minutes after
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
                size_t i = j / k, key = opt_rotate ? (j % k + i) % k : j % k;
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


/* ---- CPU time from /proc ---- */

/* utime + stime of /proc/<path>/stat in seconds, its parent in *ppid and its name in comm
 * (may be NULL), or -1. */
static double stat_cpu(const char *path, pid_t *ppid, char *comm, size_t comm_len) {
        char buf[1024], *p, *q;
        unsigned long ut = 0, st = 0;
        int pp = 0;
        FILE *f = fopen(path, "r");
        size_t n;

        if (!f)
                return -1;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        p = strchr(buf, '(');
        q = strrchr(buf, ')');
        if (!p || !q)
                return -1;
        if (comm) {
                size_t l = (size_t) (q - p - 1) < comm_len - 1 ? (size_t) (q - p - 1) : comm_len - 1;

                memcpy(comm, p + 1, l);
                comm[l] = 0;
        }
        /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (sscanf(q + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &pp, &ut, &st) != 3)
                return -1;
        if (ppid)
                *ppid = pp;
        return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

static double pid_cpu(pid_t pid) {
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        return stat_cpu(path, NULL, NULL, 0);
}

/* The postmaster and every process it started (backends, autovacuum, checkpointer...). */
static double pg_cpu(void) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        double sum = pid_cpu(pg.pid);

        if (!d)
                return -1;
        while ((e = readdir(d))) {
                char path[300];
                pid_t pp = 0;
                double c;

                if (e->d_name[0] < '0' || e->d_name[0] > '9')
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
                c = stat_cpu(path, &pp, NULL, 0);
                if (c > 0 && pp == pg.pid)
                        sum += c;
        }
        closedir(d);
        return sum;
}

#define PAHO_RECEIVE_THREAD "MQTTAsync_rcv"        /* paho names its threads */

/* A daemon's CPU: the main thread (parse, aggregate), its busiest other thread (paho's
 * receive thread during a drain) and the rest (the flusher: libpq, COPY; paho's send
 * thread; the journal). The threads have no names of their own. */
typedef struct DaemonCpu {
        double total, main, top, rest;
        double receive;         /* paho's receive thread, by its name (part of top or rest) */
} DaemonCpu;

static void daemon_cpu(pid_t pid, DaemonCpu *c) {
        char dir[64];
        DIR *d;
        struct dirent *e;
        double top = 0;

        snprintf(dir, sizeof(dir), "/proc/%d/task", (int) pid);
        d = opendir(dir);
        if (!d)
                return;
        while ((e = readdir(d))) {
                char path[400], comm[32];
                double t;

                if (e->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s/stat", dir, e->d_name);
                t = stat_cpu(path, NULL, comm, sizeof(comm));
                if (t < 0)
                        continue;
                c->total += t;
                if (strcmp(comm, PAHO_RECEIVE_THREAD) == 0)
                        c->receive += t;
                if (atoi(e->d_name) == (int) pid)
                        c->main += t;
                else if (t > top)
                        top = t;
        }
        closedir(d);
        c->top += top;
        c->rest = c->total - c->main - c->top;
}

/* This process's threads and their CPU seconds, for the in-process paho consumer. */
#define TASKS_MAX 64

typedef struct Tasks {
        int n;
        int tid[TASKS_MAX];
        double cpu[TASKS_MAX];
} Tasks;

static void tasks_snapshot(Tasks *t) {
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;

        t->n = 0;
        if (!d)
                return;
        while ((e = readdir(d)) && t->n < TASKS_MAX) {
                char path[300];
                double c;

                if (e->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
                c = stat_cpu(path, NULL, NULL, 0);
                if (c < 0)
                        continue;
                t->tid[t->n] = atoi(e->d_name);
                t->cpu[t->n++] = c;
        }
        closedir(d);
}

/* CPU seconds of thread tid between two snapshots (a thread absent from the first started
 * after it), or -1 when it is absent from the second. */
static double tasks_delta(const Tasks *before, const Tasks *after, int tid) {
        for (int i = 0; i < after->n; i++)
                if (after->tid[i] == tid) {
                        for (int k = 0; k < before->n; k++)
                                if (before->tid[k] == tid)
                                        return after->cpu[i] - before->cpu[k];
                        return after->cpu[i];
                }
        return -1;
}

/* ---- timing a drain: metrics files and database ---- */

typedef struct Drain {
        double consumed;        /* seconds from t0 until every message was received */
        double in_db;           /* seconds from t0 until sum(report_count) reached the target */
} Drain;

/* The sum of a metric over the daemons, -1 while one has none. */
static double metric_sum(Daemon *const *d, int n, const char *name) {
        double sum = 0;

        for (int i = 0; i < n; i++) {
                double v = metric(d[i], name);

                if (v < 0)
                        return -1;
                sum += v;
        }
        return sum;
}

/* Polls until the daemons have received `messages` (metrics files, every 10 ms) and the
 * database holds `reports` (every 100 ms or twice the query's time). The metrics file is
 * written once a second: the moment the count was reached is interpolated between the
 * last write below it and the first at or above it, at the rate of the writes before. */
static int wait_drain(Daemon *const *d, int nd, const char *conninfo, double t0, size_t messages,
                      size_t reports, Drain *out) {
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
                        double v = metric_sum(d, nd, "outaged_messages_received_total");

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


/* ---- the daemon ---- */

static int daemon_up(Daemon *d, const MqttBroker *broker, const char *conninfo, const char *client_id,
                     const char *share_group) {
        DaemonOptions o = { .mqtt_uri = broker->uri, .conninfo = conninfo, .client_id = client_id,
                            .topic = TOPIC_FILTER, .share_group = share_group, .flush_interval = "1s",
                            .startup_timeout = "30s" };

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
static pid_t perf_start(const char *name) {
        char out[600], log[600];
        char *argv[] = { "/usr/bin/perf", "record", "-a", "-g", "-F", "1999", "-o", out, NULL };
        pid_t pid;

        snprintf(out, sizeof(out), "%s/%s.perf.data", opt_perf_dir, name);
        snprintf(log, sizeof(log), "%s/perf.log", opt_perf_dir);
        pid = proc_spawn(argv, NULL, log);
        harness_sleep_ms(1000);         /* perf is recording */
        return pid;
}

typedef struct DaemonResult {
        double publish_s, consumed_s, in_db_s;
        FlushStats fs;                  /* summed over the instances */
        double pg_cpu, broker_cpu;      /* seconds during the drain */
        DaemonCpu cpu;                  /* summed over the instances */
        long rss_idle_kib, rss_kib, hwm_kib;
        double memory_bytes, events_in_memory, events_open;
} DaemonResult;

/* A backlog of b drained by `instances` daemons (two: sharing the subscription), until
 * `expect` reports are in the database. */
static int daemon_drain(const Backlog *b, size_t expect, int instances, bool perf, DaemonResult *res) {
        MqttBroker broker = { 0 };
        Daemon d[MAX_INSTANCES] = { 0 }, *dp[MAX_INSTANCES];
        NotifyDrain nd[MAX_INSTANCES] = { 0 };
        char *db = new_db(perf ? "perf" : "drain");
        pid_t perf_pid = -1;
        Drain dr;
        int ret = -1;
        double t0, pg0, br0;

        memset(res, 0, sizeof(*res));
        for (int i = 0; i < instances; i++) {
                d[i].pid = -1;
                d[i].notify_fd = -1;
                dp[i] = &d[i];
        }
        if (!db || mqtt_broker_start(&broker) < 0)
                goto out;
        /* The sessions and their subscriptions; the schema. */
        for (int i = 0; i < instances; i++) {
                char id[64];

                snprintf(id, sizeof(id), "%s-%d", CLIENT_ID, i);
                if (daemon_up(&d[i], &broker, db, id, instances > 1 ? SHARE_GROUP : NULL) < 0)
                        goto out;
                notify_drain_start(&nd[i], &d[i]);      /* through the stop and the next start */
        }
        harness_sleep_ms(1200);         /* settle; metrics written */
        for (int i = 0; i < instances; i++) {
                res->rss_idle_kib += proc_kib(d[i].pid, "VmRSS");
                if (daemon_signal_wait(&d[i], SIGTERM, 60000) != 0) {
                        fprintf(stderr, "daemon did not stop cleanly\n");
                        goto out;
                }
        }
        res->publish_s = publish(&broker, b);
        if (res->publish_s < 0)
                goto out;
        harness_sleep_ms(1500);         /* let the broker's autosave pass */

        if (perf)
                perf_pid = perf_start("daemon-drain");
        pg0 = pg_cpu();
        br0 = pid_cpu(broker.pid);
        t0 = now_s();
        for (int i = 0; i < instances; i++)
                if (daemon_start(&d[i]) < 0)
                        goto out;
        if (wait_drain(dp, instances, db, t0, b->n, expect, &dr) < 0) {
                for (int i = 0; i < instances; i++)
                        daemon_dump_log(&d[i]);
                goto out;
        }
        res->pg_cpu = pg_cpu() - pg0;
        res->broker_cpu = pid_cpu(broker.pid) - br0;
        if (perf_pid > 0) {
                kill(perf_pid, SIGINT);
                (void) proc_wait(perf_pid, 60000);
        }
        res->consumed_s = dr.consumed;
        res->in_db_s = dr.in_db;
        for (int i = 0; i < instances; i++) {
                daemon_cpu(d[i].pid, &res->cpu);
                res->rss_kib += proc_kib(d[i].pid, "VmRSS");
                res->hwm_kib += proc_kib(d[i].pid, "VmHWM");
        }
        harness_sleep_ms(1200);         /* one more metrics write after the last flush */
        for (int i = 0; i < instances; i++) {
                FlushStats fs = flush_stats(&d[i]);

                res->memory_bytes += metric(&d[i], "outaged_memory_bytes");
                res->events_in_memory += metric(&d[i], "outaged_events_in_memory");
                res->events_open += metric(&d[i], "outaged_events_open");
                res->fs.flushes += fs.flushes;
                res->fs.fragments += fs.fragments;
                res->fs.seconds += fs.seconds;
                res->fs.max_seconds = fs.max_seconds > res->fs.max_seconds ? fs.max_seconds : res->fs.max_seconds;
                res->fs.max_fragments = fs.max_fragments > res->fs.max_fragments ? fs.max_fragments
                                                                                 : res->fs.max_fragments;
        }
        ret = 0;
out:
        for (int i = 0; i < instances; i++) {
                if (d[i].pid > 0)
                        (void) daemon_signal_wait(&d[i], SIGTERM, 60000);
                notify_drain_stop(&nd[i]);
                daemon_cleanup(&d[i]);
        }
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
        _Atomic int callback_tid;       /* the thread that runs the message callback */
} Consumer;

static int consumer_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m) {
        Consumer *k = ctx;

        if (atomic_fetch_add(&k->received, 1) == 0)
                atomic_store(&k->callback_tid, (int) syscall(SYS_gettid));
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
        atomic_store(&k->callback_tid, 0);
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

/* The bare consumer's threads during its drain: paho's receive thread (which runs the
 * message callback and sends the PUBACKs) and paho's other threads (the send thread). */
typedef struct PahoCpu {
        double receive, rest, broker;
} PahoCpu;

static void paho_cpu(const Tasks *before, const Tasks *after, int callback_tid, PahoCpu *c) {
        memset(c, 0, sizeof(*c));
        for (int i = 0; i < after->n; i++) {
                double t = tasks_delta(before, after, after->tid[i]);

                if (after->tid[i] == (int) getpid() || t < 0)
                        continue;       /* the benchmark's own thread polls the count */
                if (after->tid[i] == callback_tid)     /* paho's receive thread */
                        c->receive += t;
                else
                        c->rest += t;
        }
}

static double paho_drain(const Backlog *b, bool perf, double *publish_s, PahoCpu *cpu) {
        static Consumer k;
        MqttBroker broker = { 0 };
        double t0, dt = -1, br0;
        Tasks before, after;
        pid_t perf_pid = -1;

        memset(cpu, 0, sizeof(*cpu));
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
        if (perf)
                perf_pid = perf_start("paho-drain");
        tasks_snapshot(&before);
        br0 = pid_cpu(broker.pid);
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
        tasks_snapshot(&after);
        paho_cpu(&before, &after, atomic_load(&k.callback_tid), cpu);
        cpu->broker = pid_cpu(broker.pid) - br0;
out:
        if (perf_pid > 0) {
                kill(perf_pid, SIGINT);
                (void) proc_wait(perf_pid, 60000);
        }
        consumer_close(&k);
        mqtt_broker_stop(&broker);
        return dt;
}


/* ---- latency: a paced publisher and a poller ---- */

typedef struct Paced {
        const MqttBroker *broker;
        size_t n, first_key, keys;      /* report j goes to key first_key + j % keys */
        int64_t ts0;                    /* report j's timestamp: ts0 + j / keys seconds */
        double rate;
        double *sent;                   /* when report j left (monotonic seconds) */
        _Atomic bool done;
        int failed;
} Paced;

static int mqtt_connect(const MqttBroker *broker) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) broker->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        char conn[64], id[32], rbuf[4], *p = conn;
        int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0)
                goto fail;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        snprintf(id, sizeof(id), "bench-paced-%d", (int) getpid());
        *p++ = 0x10;
        put_varint(&p, 10 + 2 + strlen(id));
        put_str(&p, "MQTT", 4);
        *p++ = 4;
        *p++ = 0x02;
        *p++ = 0;
        *p++ = 60;
        put_str(&p, id, strlen(id));
        if (write_all(fd, conn, (size_t) (p - conn)) < 0 || read(fd, rbuf, 4) != 4 || rbuf[0] != 0x20 || rbuf[3] != 0)
                goto fail;
        return fd;
fail:
        if (fd >= 0)
                close(fd);
        return -1;
}

/* Sends report j at start + j / rate, QoS 1, and reads the PUBACKs as they come. A key's
 * timestamps grow by a second per report (one at the same second as the last would
 * extend nothing). */
static void *paced_run(void *arg) {
        Paced *pc = arg;
        int fd = mqtt_connect(pc->broker);
        size_t j = 0, acked = 0, rlen = 0;
        char rbuf[4096];
        double t0 = now_s();

        pc->failed = fd < 0;
        while (fd >= 0 && acked < pc->n) {
                double t = now_s();
                char buf[65536], *p = buf;

                while (j < pc->n && t0 + (double) j / pc->rate <= t && j - acked < PUB_WINDOW &&
                       (size_t) (p - buf) < sizeof(buf) - 200) {
                        char topic[64], payload[128], ts[40];
                        size_t tl, pl;
                        unsigned pid = (unsigned) (j % 65535) + 1;

                        format_ts(ts, sizeof(ts), pc->ts0 + (int64_t) (j / pc->keys));
                        tl = (size_t) snprintf(topic, sizeof(topic), "outages/ctrl_%07zu",
                                               pc->first_key + j % pc->keys);
                        pl = (size_t) snprintf(payload, sizeof(payload),
                                               "{\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"}", ts);
                        *p++ = 0x32;
                        put_varint(&p, 2 + tl + 2 + pl);
                        put_str(&p, topic, tl);
                        *p++ = (char) (pid >> 8);
                        *p++ = (char) (pid & 0xff);
                        memcpy(p, payload, pl);
                        p += pl;
                        pc->sent[j++] = t;
                }
                if (p > buf && write_all(fd, buf, (size_t) (p - buf)) < 0) {
                        pc->failed = 1;
                        break;
                }
                for (;;) {
                        ssize_t r = recv(fd, rbuf + rlen, sizeof(rbuf) - rlen, MSG_DONTWAIT);
                        size_t i = 0;

                        if (r <= 0)
                                break;
                        rlen += (size_t) r;
                        for (; rlen - i >= 4; i += 4)
                                acked++;
                        memmove(rbuf, rbuf + i, rlen - i);
                        rlen -= i;
                }
                harness_sleep_ms(1);
        }
        if (fd >= 0) {
                (void) write_all(fd, "\xe0\x00", 2);
                close(fd);
        }
        atomic_store(&pc->done, true);
        return NULL;
}

static long long db_count(PGconn *c, const char *sql) {
        PGresult *r = PQexec(c, sql);
        long long v = -1;

        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
                v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        return v;
}

typedef struct Latency {
        double p50, p99, max;
        double p99_late;        /* p99 of the reports sent after the first fifth of the run */
        size_t n;
} Latency;

/* Publishes pc's reports while polling `sql` (a count that grows by one per visible
 * report, minus base); the latency of report j is the first poll at which the
 * count exceeded j minus when it was sent (polls every 20 ms: about
 * 10 ms of each latency is the poller's). Reports are committed in the order they arrive
 * (a flush takes every dirty key), so the first count reports are the visible ones. */
static int measure_latency(Paced *pc, PGconn *c, const char *sql, long long base, Latency *out) {
        size_t cap = 1 << 16, np = 0;
        double *pt = malloc(cap * sizeof(double)), *lat = calloc(pc->n, sizeof(double));
        long long *pv = malloc(cap * sizeof(long long));
        pthread_t th;
        int ret = -1;

        pc->sent = calloc(pc->n, sizeof(double));
        atomic_store(&pc->done, false);
        if (!pt || !pv || !lat || !pc->sent || pthread_create(&th, NULL, paced_run, pc) != 0)
                goto out;
        for (double t_end = -1;;) {
                double t;
                long long v = db_count(c, sql);

                t = now_s();
                if (v < 0)
                        break;
                if (np == cap) {
                        cap *= 2;
                        pt = realloc(pt, cap * sizeof(double));
                        pv = realloc(pv, cap * sizeof(long long));
                        if (!pt || !pv)
                                break;
                }
                pt[np] = t;
                pv[np++] = v - base;
                if (v - base >= (long long) pc->n)
                        break;
                if (atomic_load(&pc->done) && t_end < 0)
                        t_end = t;
                if (t_end > 0 && t - t_end > 120) {
                        fprintf(stderr, "latency: %lld of %zu visible 120 s after the last report\n", v - base, pc->n);
                        break;
                }
                harness_sleep_ms(20);
        }
        pthread_join(th, NULL);
        if (pc->failed || np == 0 || pv[np - 1] < (long long) pc->n)
                goto out;
        for (size_t j = 0, i = 0; j < pc->n; j++) {
                while (pv[i] < (long long) j + 1)
                        i++;
                lat[j] = pt[i] - pc->sent[j];
        }
        {
                size_t from = pc->n / 5, m = pc->n - from;
                double *late = malloc(m * sizeof(double));

                if (!late)
                        goto out;
                memcpy(late, lat + from, m * sizeof(double));
                qsort(late, m, sizeof(double), cmp_double);
                out->p99_late = late[m * 99 / 100];
                free(late);
        }
        qsort(lat, pc->n, sizeof(double), cmp_double);
        out->n = pc->n;
        out->p50 = lat[pc->n / 2];
        out->p99 = lat[pc->n * 99 / 100];
        out->max = lat[pc->n - 1];
        ret = 0;
out:
        free(pt);
        free(pv);
        free(lat);
        free(pc->sent);
        pc->sent = NULL;
        return ret;
}

#define SQL_EVENTS "SELECT coalesce(max(event_id), 0) FROM outage.stored_events"
#define SQL_REPORTS "SELECT coalesce(sum(report_count), 0) FROM outage.stored_events"

/* The daemon running (a fresh database): rate x seconds reports paced at rate, each of a
 * new controller (new events: the count is max(event_id), identities have no gaps without
 * rollbacks), or with extend each extending the open event of one of `rate` keys (each
 * reports once a second; the keys' first reports are published and committed first).
 * *pg_per_report: PostgreSQL CPU seconds per report during the paced run, the poller's
 * queries included. */
static int daemon_latency(bool extend, Latency *lat, double *pg_per_report) {
        MqttBroker broker = { 0 };
        Daemon d = { 0 };
        NotifyDrain nd = { 0 };
        char *db = new_db("latency");
        PGconn *c = NULL;
        size_t n = (size_t) (opt_rate * opt_lat_s), keys = (size_t) opt_rate;
        Paced pc = { .broker = &broker, .rate = opt_rate, .n = n, .keys = extend ? keys : n };
        long long base = 0;
        double pg0;
        int ret = -1;

        d.pid = -1;
        d.notify_fd = -1;
        if (!db || mqtt_broker_start(&broker) < 0 || daemon_up(&d, &broker, db, CLIENT_ID, NULL) < 0)
                goto out;
        notify_drain_start(&nd, &d);
        c = PQconnectdb(db);
        if (PQstatus(c) != CONNECTION_OK)
                goto out;
        harness_sleep_ms(1200);
        if (extend) {
                Paced warm = { .broker = &broker, .rate = 100000, .n = keys, .keys = keys,
                               .ts0 = (int64_t) time(NULL) - 2 };
                Latency ignored;

                if (measure_latency(&warm, c, SQL_EVENTS, 0, &ignored) < 0)
                        goto out;
                harness_sleep_ms(1500);
                base = db_count(c, SQL_REPORTS);
        }
        pc.ts0 = (int64_t) time(NULL);
        pg0 = pg_cpu();
        if (measure_latency(&pc, c, extend ? SQL_REPORTS : SQL_EVENTS, base, lat) < 0)
                goto out;
        *pg_per_report = (pg_cpu() - pg0) / (double) n;
        ret = 0;
out:
        PQfinish(c);
        if (d.pid > 0)
                (void) daemon_signal_wait(&d, SIGTERM, 60000);
        notify_drain_stop(&nd);
        daemon_cleanup(&d);
        mqtt_broker_stop(&broker);
        drop_db(db);
        return ret;
}

/* ---- main ---- */

static void usage(const char *argv0) {
        fprintf(stderr, "usage: %s [-n N] [-k K] [-N BIGN] [-K BIGK] [-r ROUNDS] [-R BIGROUNDS] [-m M1,M2] "
                        "[-l RATE] [-L SECONDS] [-s dbml] [-i] [-p PERFDIR] [-b BASELINE] [BINARY]\n", argv0);
}

typedef struct Rounds {
        int n;
        double sub[MAX_RUNS], paho[MAX_RUNS], one[MAX_RUNS], two[MAX_RUNS], pub[4 * MAX_RUNS];
        PahoCpu paho_cpu[MAX_RUNS];
        int npub;
        DaemonResult r1[MAX_RUNS], r2[MAX_RUNS];
        /* the baseline binary (-b), when given */
        double base1[MAX_RUNS], base2[MAX_RUNS];
        DaemonResult b1[MAX_RUNS], b2[MAX_RUNS];
} Rounds;

static void print_daemon_run(const char *what, int round, const DaemonResult *r, size_t n) {
        printf("  %s round %d: consumed %.2f s, committed %.2f s (%.0f msg/s); %d flushes, %lld fragments "
               "(%.2f per report), %.2f s flushing (max %.2f s, %lld fragments); CPU s: PostgreSQL %.2f "
               "(%.1f us/report, %.1f us/fragment), broker %.2f, daemon %.2f (main %.2f, busiest other "
               "thread %.2f, rest %.2f); RSS %ld KiB (idle %ld, peak %ld)\n",
               what, round, r->consumed_s, r->in_db_s, (double) n / r->in_db_s, r->fs.flushes, r->fs.fragments,
               (double) r->fs.fragments / (double) n, r->fs.seconds, r->fs.max_seconds, r->fs.max_fragments,
               r->pg_cpu, r->pg_cpu * 1e6 / (double) n,
               r->fs.fragments ? r->pg_cpu * 1e6 / (double) r->fs.fragments : 0, r->broker_cpu, r->cpu.total,
               r->cpu.main, r->cpu.top, r->cpu.rest, r->rss_kib, r->rss_idle_kib, r->hwm_kib);
}

/* CPU per message of the consuming threads: paho's receive thread of the bare consumer
 * against the daemon's (in the daemon the message callback, the journal append and the
 * queue push run on it), and the daemon's main thread. */
static void print_thread_cpu(int round, const PahoCpu *p, const DaemonResult *r, size_t n) {
        double us = 1e6 / (double) n;

        printf("  consumption CPU round %d, us/message: paho receive thread bare %.2f, daemon %.2f; bare "
               "consumer's other paho threads %.2f; daemon main thread %.2f; broker bare %.2f, daemon %.2f\n",
               round, p->receive * us, r->cpu.receive * us, p->rest * us, r->cpu.main * us, p->broker * us,
               r->broker_cpu * us);
}

/* Alternating rounds on identical backlogs: mosquitto_sub, paho, one daemon, two. */
static int run_rounds(const Backlog *b, int rounds, Rounds *R) {
        for (int i = 0; i < rounds; i++) {
                double p = 0;

                R->sub[i] = mosquitto_sub_drain(b, &p);
                if (R->sub[i] < 0)
                        return -1;
                R->pub[R->npub++] = p;
                R->paho[i] = paho_drain(b, false, &p, &R->paho_cpu[i]);
                if (R->paho[i] < 0)
                        return -1;
                R->pub[R->npub++] = p;
                if (daemon_drain(b, b->n, 1, false, &R->r1[i]) < 0)
                        return -1;
                R->one[i] = R->r1[i].in_db_s;
                R->pub[R->npub++] = R->r1[i].publish_s;
                if (daemon_drain(b, b->n, 2, false, &R->r2[i]) < 0)
                        return -1;
                R->two[i] = R->r2[i].in_db_s;
                R->pub[R->npub++] = R->r2[i].publish_s;
                if (opt_base) {
                        use_binary(true);
                        if (daemon_drain(b, b->n, 1, false, &R->b1[i]) < 0 ||
                            daemon_drain(b, b->n, 2, false, &R->b2[i]) < 0) {
                                use_binary(false);
                                return -1;
                        }
                        use_binary(false);
                        R->base1[i] = R->b1[i].in_db_s;
                        R->base2[i] = R->b2[i].in_db_s;
                        printf("round %d, baseline: one daemon %.2f s, two daemons %.2f s; against paho: %.2fx, "
                               "%.2fx; two/one %.2fx\n", i + 1, R->base1[i], R->base2[i], R->paho[i] / R->base1[i],
                               R->paho[i] / R->base2[i], R->base1[i] / R->base2[i]);
                        print_daemon_run("baseline one daemon", i + 1, &R->b1[i], b->n);
                        print_daemon_run("baseline two daemons", i + 1, &R->b2[i], b->n);
                }
                R->n++;
                printf("round %d of %zu reports: mosquitto_sub %.2f s, paho %.2f s, one daemon %.2f s, "
                       "two daemons %.2f s; against paho: %.2fx, 1x, %.2fx, %.2fx; two/one %.2fx\n",
                       i + 1, b->n, R->sub[i], R->paho[i], R->one[i], R->two[i], R->paho[i] / R->sub[i],
                       R->paho[i] / R->one[i], R->paho[i] / R->two[i], R->one[i] / R->two[i]);
                print_daemon_run("one daemon", i + 1, &R->r1[i], b->n);
                print_daemon_run("two daemons", i + 1, &R->r2[i], b->n);
                print_thread_cpu(i + 1, &R->paho_cpu[i], &R->r1[i], b->n);
        }
        return 0;
}

static void row(const char *what, const double *v, int n, size_t msgs, double ref) {
        double m = median(v, n);

        printf("| %s | %.2f | %.2f-%.2f | %.0f | %.2fx |\n", what, m, min_of(v, n), max_of(v, n),
               (double) msgs / m, ref / m);
}

static void print_thread_cpu_median(const Rounds *R, size_t n) {
        double bare[MAX_RUNS], top[MAX_RUNS], mainv[MAX_RUNS], us = 1e6 / (double) n;

        for (int i = 0; i < R->n; i++) {
                bare[i] = R->paho_cpu[i].receive * us;
                top[i] = R->r1[i].cpu.receive * us;
                mainv[i] = R->r1[i].cpu.main * us;
        }
        printf("\nConsumption CPU per message, median us: paho receive thread, bare consumer %.2f, one daemon "
               "%.2f; the daemon's main thread %.2f\n", median(bare, R->n), median(top, R->n), median(mainv, R->n));
}

static void print_rounds(const Rounds *R, size_t n) {
        double ratio1[MAX_RUNS], ratio2[MAX_RUNS], ratio21[MAX_RUNS], frag[MAX_RUNS], pgf[MAX_RUNS], pgr[MAX_RUNS];
        double ref = median(R->paho, R->n);

        printf("\nBacklog of %zu reports, %d rounds: median seconds (min-max), rate, against the paho median\n\n",
               n, R->n);
        printf("| consumer | seconds | range | messages/s | vs paho |\n|---|---|---|---|---|\n");
        row("mosquitto_sub -c -q 1", R->sub, R->n, n, ref);
        row("bare paho MQTTAsync consumer", R->paho, R->n, n, ref);
        row("outaged, one instance (until committed)", R->one, R->n, n, ref);
        row("outaged, two instances sharing the subscription", R->two, R->n, n, ref);
        if (opt_base) {
                row("baseline outaged, one instance", R->base1, R->n, n, ref);
                row("baseline outaged, two instances", R->base2, R->n, n, ref);
        }
        row("publishing the backlog (offline session)", R->pub, R->npub, n, median(R->pub, R->npub));
        for (int i = 0; i < R->n; i++) {
                ratio1[i] = R->paho[i] / R->one[i];
                ratio2[i] = R->paho[i] / R->two[i];
                ratio21[i] = R->one[i] / R->two[i];
                frag[i] = (double) R->r1[i].fs.fragments;
                pgf[i] = R->r1[i].fs.fragments ? R->r1[i].pg_cpu * 1e6 / (double) R->r1[i].fs.fragments : 0;
                pgr[i] = R->r1[i].pg_cpu * 1e6 / (double) n;
        }
        print_thread_cpu_median(R, n);
        printf("\nPer-round ratios, median: one daemon / paho %.2fx, two daemons / paho %.2fx, two / one %.2fx; "
               "one daemon: %.0f fragments, PostgreSQL %.1f us CPU per fragment, %.1f us per report\n",
               median(ratio1, R->n), median(ratio2, R->n), median(ratio21, R->n), median(frag, R->n),
               median(pgf, R->n), median(pgr, R->n));
        if (opt_base) {
                for (int i = 0; i < R->n; i++) {
                        ratio1[i] = R->paho[i] / R->base1[i];
                        ratio2[i] = R->paho[i] / R->base2[i];
                        ratio21[i] = R->base1[i] / R->base2[i];
                        frag[i] = (double) R->b1[i].fs.fragments;
                        pgf[i] = R->b1[i].fs.fragments ? R->b1[i].pg_cpu * 1e6 / (double) R->b1[i].fs.fragments : 0;
                        pgr[i] = R->b1[i].pg_cpu * 1e6 / (double) n;
                }
                printf("Baseline, the same: one daemon / paho %.2fx, two daemons / paho %.2fx, two / one %.2fx; "
                       "one daemon: %.0f fragments, PostgreSQL %.1f us CPU per fragment, %.1f us per report\n",
                       median(ratio1, R->n), median(ratio2, R->n), median(ratio21, R->n), median(frag, R->n),
                       median(pgf, R->n), median(pgr, R->n));
        }
}

static int parse_mem(const char *s) {
        char *end;

        opt_n_mem = 0;
        while (*s && opt_n_mem < 2) {
                opt_mem[opt_n_mem++] = strtoul(s, &end, 10);
                if (*end != ',' && *end)
                        return -1;
                s = *end ? end + 1 : end;
        }
        return opt_n_mem > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
        static Rounds small, big;
        DaemonResult mem[2] = { 0 }, bmem[2] = { 0 };
        Latency lat[2] = { 0 }, blat[2] = { 0 };
        double lat_pg[2] = { 0 }, blat_pg[2] = { 0 };
        bool have_lat = false;
        Backlog day = { 0 }, large = { 0 };
        double t_start = now_s();
        int c, ret = 1;

        while ((c = getopt(argc, argv, "n:k:N:K:r:R:m:l:L:s:p:b:ih")) != -1) {
                switch (c) {
                case 'n': opt_n = strtoul(optarg, NULL, 10); break;
                case 'k': opt_k = strtoul(optarg, NULL, 10); break;
                case 'N': opt_bn = strtoul(optarg, NULL, 10); break;
                case 'K': opt_bk = strtoul(optarg, NULL, 10); break;
                case 'r': opt_runs = atoi(optarg); break;
                case 'R': opt_big_runs = atoi(optarg); break;
                case 'm': if (parse_mem(optarg) < 0) { usage(argv[0]); return 64; } break;
                case 'l': opt_rate = strtod(optarg, NULL); break;
                case 'L': opt_lat_s = strtod(optarg, NULL); break;
                case 's': opt_scenarios = optarg; break;
                case 'p': opt_perf_dir = optarg; break;
                case 'b': opt_base = optarg; break;
                case 'i': opt_rotate = true; break;
                default: usage(argv[0]); return c == 'h' ? 0 : 64;
                }
        }
        if (optind < argc)
                setenv("OUTAGED_BINARY", argv[optind], 1);
        if (opt_n == 0 || opt_k == 0 || opt_k > opt_n || opt_bk == 0 || opt_bk > opt_bn || opt_runs < 1 ||
            opt_runs > MAX_RUNS || opt_big_runs < 1 || opt_big_runs > MAX_RUNS || opt_rate < 1 || opt_lat_s <= 0) {
                usage(argv[0]);
                return 64;
        }
        if (access(harness_binary(), X_OK) != 0) {
                fprintf(stderr, "%s: not executable (give the daemon's path or set OUTAGED_BINARY)\n",
                        harness_binary());
                return 64;
        }
        if (opt_base && access(opt_base, X_OK) != 0) {
                fprintf(stderr, "%s: not executable\n", opt_base);
                return 64;
        }
        main_binary = strdup(harness_binary());
        if (!main_binary)
                return 1;
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (pg_server_start(&pg) < 0)
                return 1;
        printf("backlog N = %zu over K = %zu keys, %d rounds; large %zu over %zu, %d rounds; memory %zu, %zu; "
               "latency %.0f/s for %.0f s; daemon %s\n", opt_n, opt_k, opt_runs, opt_bn, opt_bk, opt_big_runs,
               opt_mem[0], opt_n_mem > 1 ? opt_mem[1] : 0, opt_rate, opt_lat_s, harness_binary());

        if (strchr(opt_scenarios, 'd')) {
                if (backlog_make(&day, opt_n, opt_k, true) < 0 || run_rounds(&day, opt_runs, &small) < 0)
                        goto out;
                if (opt_perf_dir) {
                        DaemonResult r;
                        PahoCpu pc;
                        double p;

                        if (paho_drain(&day, true, &p, &pc) < 0 || daemon_drain(&day, opt_n, 1, true, &r) < 0)
                                goto out;
                        printf("backlog under perf (not timed): committed %.2f s; profiles in %s/daemon-drain.perf.data "
                               "and paho-drain.perf.data (the bare consumer)\n", r.in_db_s, opt_perf_dir);
                }
                backlog_free(&day);
        }
        if (strchr(opt_scenarios, 'b')) {
                if (backlog_make(&large, opt_bn, opt_bk, true) < 0 || run_rounds(&large, opt_big_runs, &big) < 0)
                        goto out;
                backlog_free(&large);
        }
        if (strchr(opt_scenarios, 'm'))
                for (int i = 0; i < opt_n_mem; i++) {
                        Backlog m = { 0 };
                        int r = backlog_make(&m, opt_mem[i], opt_mem[i], false);

                        if (r == 0)
                                r = daemon_drain(&m, opt_mem[i], 1, false, &mem[i]);
                        if (r == 0 && opt_base) {
                                use_binary(true);
                                r = daemon_drain(&m, opt_mem[i], 1, false, &bmem[i]);
                                use_binary(false);
                        }
                        backlog_free(&m);
                        if (r < 0)
                                goto out;
                        print_daemon_run("memory", i + 1, &mem[i], opt_mem[i]);
                        if (opt_base)
                                print_daemon_run("baseline memory", i + 1, &bmem[i], opt_mem[i]);
                }
        if (strchr(opt_scenarios, 'l')) {
                for (int i = 0; i < 2; i++) {
                        if (daemon_latency(i == 1, &lat[i], &lat_pg[i]) < 0)
                                goto out;
                        printf("latency, %s: p50 %.3f s, p99 %.3f s, max %.3f s, p99 after the first fifth %.3f s; "
                               "PostgreSQL %.1f us CPU per report\n", i ? "extensions" : "new controllers", lat[i].p50,
                               lat[i].p99, lat[i].max, lat[i].p99_late, lat_pg[i] * 1e6);
                        if (!opt_base)
                                continue;
                        use_binary(true);
                        c = daemon_latency(i == 1, &blat[i], &blat_pg[i]);
                        use_binary(false);
                        if (c < 0)
                                goto out;
                        printf("baseline latency, %s: p50 %.3f s, p99 %.3f s, max %.3f s, p99 after the first fifth "
                               "%.3f s; PostgreSQL %.1f us CPU per report\n", i ? "extensions" : "new controllers",
                               blat[i].p50, blat[i].p99, blat[i].max, blat[i].p99_late, blat_pg[i] * 1e6);
                }
                have_lat = true;
        }

        printf("\n== Summary ==\n");
        if (small.n)
                print_rounds(&small, opt_n);
        if (big.n)
                print_rounds(&big, opt_bn);
        if (strchr(opt_scenarios, 'm')) {
                printf("\n| open events | RSS idle | RSS after | growth per event | beyond the id text (13 B) "
                       "| outaged_memory_bytes per event | committed in |\n|---|---|---|---|---|---|---|\n");
                for (int i = 0; i < opt_n_mem; i++) {
                        double g = (double) (mem[i].rss_kib - mem[i].rss_idle_kib) * 1024.0 / (double) opt_mem[i];

                        printf("| %zu | %.1f MiB | %.1f MiB | %.0f B | %.0f B | %.0f B | %.1f s |\n", opt_mem[i],
                               mem[i].rss_idle_kib / 1024.0, mem[i].rss_kib / 1024.0, g, g - 13,
                               mem[i].events_in_memory > 0 ? mem[i].memory_bytes / mem[i].events_in_memory : 0,
                               mem[i].in_db_s);
                        if (!opt_base)
                                continue;
                        g = (double) (bmem[i].rss_kib - bmem[i].rss_idle_kib) * 1024.0 / (double) opt_mem[i];
                        printf("| %zu, baseline | %.1f MiB | %.1f MiB | %.0f B | %.0f B | %.0f B | %.1f s |\n", opt_mem[i],
                               bmem[i].rss_idle_kib / 1024.0, bmem[i].rss_kib / 1024.0, g, g - 13,
                               bmem[i].events_in_memory > 0 ? bmem[i].memory_bytes / bmem[i].events_in_memory : 0,
                               bmem[i].in_db_s);
                }
        }
        if (have_lat) {
                printf("\n| %.0f reports/s, flush_interval 1 s | p50 | p99 | max | PostgreSQL CPU per report |\n"
                       "|---|---|---|---|---|\n", opt_rate);
                for (int i = 0; i < 2; i++)
                        printf("| %s | %.3f s | %.3f s | %.3f s | %.1f us |\n", i ? "extending open events" : "new controllers",
                               lat[i].p50, lat[i].p99, lat[i].max, lat_pg[i] * 1e6);
                if (opt_base)
                        for (int i = 0; i < 2; i++)
                                printf("| %s, baseline | %.3f s | %.3f s | %.3f s | %.1f us |\n",
                                       i ? "extending open events" : "new controllers", blat[i].p50, blat[i].p99,
                                       blat[i].max, blat_pg[i] * 1e6);
        }
        printf("\nTotal bench time %.0f s\n", now_s() - t_start);
        ret = 0;
out:
        pg_server_stop(&pg);
        backlog_free(&day);
        backlog_free(&large);
        free(main_binary);
        return ret;
}
