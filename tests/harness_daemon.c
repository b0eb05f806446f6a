/* harness_daemon.c — runs the real outaged binary for integration tests: writes its
 * config, listens on its NOTIFY_SOCKET like systemd would, signals it. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "harness.h"

static const char *or(const char *v, const char *def) {
        return v ? v : def;
}

int daemon_prepare(Daemon *d, const DaemonOptions *o) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char journal[600];
        FILE *f;

        memset(d, 0, sizeof(*d));
        d->pid = -1;
        d->notify_fd = -1;
        d->dir = harness_mkdtemp("outaged-daemon");
        if (!d->dir)
                return -1;
        if (asprintf(&d->config_path, "%s/outaged.conf", d->dir) < 0 ||
            asprintf(&d->log_path, "%s/outaged.log", d->dir) < 0 ||
            asprintf(&d->notify_path, "%s/notify", d->dir) < 0)
                return -1;
        snprintf(journal, sizeof(journal), "%s/journal", d->dir);

        f = fopen(d->config_path, "w");
        if (!f)
                return -1;
        fprintf(f,
                "[mqtt]\nuri = %s\nclient_id = %s\ntopic = %s\nshare_group = %s\nsession_expiry = 1h\nca_file = %s\n\n"
                "[postgres]\nconninfo = %s\n\n"
                "[aggregation]\ngap = %s\noutage_types = %s\nmax_age = %s\nflush_interval = %s\nbatch_max = %s\n\n"
                "[storage]\njournal_dir = %s\njournal_sync = 100ms\n\n"
                "[limits]\nmax_payload = %s\nmax_batch_items = %s\nmax_events_in_memory = %s\nstartup_timeout = %s\n\n"
                "[log]\nlevel = debug\nmetrics_file = %s/metrics.prom\n",
                o->mqtt_uri, or(o->client_id, "outaged-test"), or(o->topic, "outages/+"),
                or(o->share_group, ""), or(o->ca_file, ""), o->conninfo, or(o->gap, "12min"), or(o->outage_types, ""),
                or(o->max_age, "365d"), or(o->flush_interval, "100ms"), or(o->batch_max, "10000"), or(o->journal_dir, journal),
                or(o->max_payload, "64KiB"), or(o->max_batch_items, "1000"), or(o->max_events, "5000000"),
                or(o->startup_timeout, "20s"), d->dir);
        if (o->extra_sections)
                fprintf(f, "\n%s\n", o->extra_sections);
        if (fclose(f) != 0)
                return -1;

        d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (d->notify_fd < 0)
                return -1;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->notify_path);
        if (bind(d->notify_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -1;
        return 0;
}

/* $OUTAGED_TEST_WRAPPER, if set, is a command line (words split at spaces, the first an
 * absolute path) the daemon runs under, e.g. valgrind with --error-exitcode: a memory
 * error then fails the tests that check the daemon's exit code. */
int daemon_start(Daemon *d) {
        char env_notify[700], *argv[40], *words = NULL;
        char *env[] = { env_notify, (char *) d->extra_env, NULL };
        const char *wrapper = getenv("OUTAGED_TEST_WRAPPER");
        size_t n = 0;

        if (wrapper && *wrapper) {
                words = strdup(wrapper);
                for (char *w = strtok(words, " "); w && n < ELEMENTSOF(argv) - 4; w = strtok(NULL, " "))
                        argv[n++] = w;
        }
        argv[n++] = (char *) harness_binary();
        argv[n++] = "-c";
        argv[n++] = d->config_path;
        argv[n] = NULL;
        snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", d->notify_path);
        d->pid = proc_spawn(argv, env, d->log_path);
        free(words);
        return d->pid > 0 ? 0 : -1;
}

static int64_t mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int daemon_wait_notify(Daemon *d, const char *needle, int timeout_ms) {
        int64_t deadline = mono_ms() + timeout_ms;

        for (;;) {
                struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };
                char buf[1024];
                ssize_t n;
                int left = (int) (deadline - mono_ms());

                if (left <= 0)
                        return -1;
                if (poll(&p, 1, left > 100 ? 100 : left) < 0 && errno != EINTR)
                        return -1;
                while ((n = recv(d->notify_fd, buf, sizeof(buf) - 1, 0)) > 0) {
                        buf[n] = '\0';
                        if (strncmp(buf, "STATUS=", 7) == 0) {
                                size_t k = strnlen(buf + 7, sizeof(d->last_status) - 1);
                                memcpy(d->last_status, buf + 7, k);
                                d->last_status[k] = '\0';
                        }
                        if (strstr(buf, needle))
                                return 0;
                }
                if (d->pid > 0 && waitpid(d->pid, NULL, WNOHANG) == d->pid) {
                        d->pid = -1;
                        return -1;
                }
        }
}

int daemon_wait_ready(Daemon *d, int timeout_ms) {
        int64_t deadline = mono_ms() + timeout_ms;

        for (;;) {
                struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };
                char buf[1024];
                ssize_t n;
                int status;

                if (mono_ms() > deadline)
                        return -1;
                (void) poll(&p, 1, 100);
                while ((n = recv(d->notify_fd, buf, sizeof(buf) - 1, 0)) > 0) {
                        buf[n] = '\0';
                        if (strstr(buf, "READY=1"))
                                return 0;
                }
                if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
                        d->pid = -1;
                        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                }
        }
}

int daemon_wait_exit(Daemon *d, int timeout_ms) {
        int r;

        if (d->pid <= 0)
                return -1;
        r = proc_wait(d->pid, timeout_ms);
        if (r >= 0)
                d->pid = -1;
        return r;
}

int daemon_signal_wait(Daemon *d, int sig, int timeout_ms) {
        int r;

        if (d->pid <= 0)
                return -1;
        kill(d->pid, sig);
        r = proc_wait(d->pid, timeout_ms);
        if (r >= 0)
                d->pid = -1;
        return r;
}

void daemon_dump_log(const Daemon *d) {
        char line[2048];
        FILE *f;

        if (!d->log_path || !(f = fopen(d->log_path, "r")))
                return;
        fprintf(stderr, "---- %s ----\n", d->log_path);
        while (fgets(line, sizeof(line), f))
                fputs(line, stderr);
        fclose(f);
}

void daemon_cleanup(Daemon *d) {
        if (d->pid > 0) {
                kill(d->pid, SIGKILL);
                (void) proc_wait(d->pid, 5000);
                d->pid = -1;
        }
        if (d->notify_fd >= 0)
                close(d->notify_fd);
        if (d->dir && !getenv("OUTAGED_KEEP_TEST_DIRS"))
                harness_rm_rf(d->dir);
        free(d->dir);
        free(d->config_path);
        free(d->log_path);
        free(d->notify_path);
        memset(d, 0, sizeof(*d));
        d->pid = -1;
        d->notify_fd = -1;
}
