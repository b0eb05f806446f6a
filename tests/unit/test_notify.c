/* test_notify.c — the service manager protocol (notify.c) against a NOTIFY_SOCKET listener
 * of our own: a unix datagram socket in a temporary directory, as systemd would bind it.
 * Message contents, the abstract namespace, bad addresses, a listener that does not read
 * (sends must not block), and $WATCHDOG_USEC / $WATCHDOG_PID. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "harness.h"
#include "notify.h"

static char *dir;
static char sock_path[256];
static int listener = -1;

/* Binds a listener at addr (a path, or "@name": abstract) and points NOTIFY_SOCKET at it. */
static int listen_at(const char *addr) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(addr);
        socklen_t salen;
        int fd;

        cr_assert_lt(len, sizeof(sa.sun_path));
        memcpy(sa.sun_path, addr, len);
        if (addr[0] == '@')
                sa.sun_path[0] = '\0';
        salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + (addr[0] == '/'));
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(fd, 0);
        cr_assert_eq(bind(fd, (struct sockaddr *) &sa, salen), 0, "bind %s: %m", addr);
        cr_assert_eq(setenv("NOTIFY_SOCKET", addr, 1), 0);
        return fd;
}

static void setup(void) {
        dir = harness_mkdtemp("outaged-notify-");
        cr_assert_not_null(dir);
        snprintf(sock_path, sizeof(sock_path), "%s/notify", dir);
        listener = listen_at(sock_path);
}

static void teardown(void) {
        if (listener >= 0)
                close(listener);
        listener = -1;
        harness_rm_rf(dir);
        free(dir);
        dir = NULL;
}

TestSuite(notify, .init = setup, .fini = teardown, .timeout = 30);

/* Receives one datagram (NUL-terminated) within timeout_ms. Returns its length or -1. */
static ssize_t recv_msg(int fd, char *buf, size_t size, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;

        if (poll(&p, 1, timeout_ms) != 1)
                return -1;
        n = recv(fd, buf, size - 1, MSG_DONTWAIT);
        if (n < 0)
                return -1;
        buf[n] = '\0';
        return n;
}

static void expect_msg(const char *want) {
        char buf[1024];

        cr_assert_geq(recv_msg(listener, buf, sizeof(buf), 2000), 0, "no message, expected %s", want);
        cr_assert_str_eq(buf, want);
}

static void expect_nothing(void) {
        char buf[1024];

        cr_assert_lt(recv_msg(listener, buf, sizeof(buf), 50), 0, "unexpected message %s", buf);
}

static usec_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

Test(notify, each_message) {
        cr_assert_eq(notify_ready(), 0);
        expect_msg("READY=1");
        cr_assert_eq(notify_status("mqtt %s; %d open events", "connected", 42), 0);
        expect_msg("STATUS=mqtt connected; 42 open events");
        cr_assert_eq(notify_watchdog(), 0);
        expect_msg("WATCHDOG=1");
        cr_assert_eq(notify_stopping(), 0);
        expect_msg("STOPPING=1");
        expect_nothing();
}

Test(notify, reloading_carries_the_monotonic_clock) {
        char buf[256];
        long long mono;
        usec_t before = mono_usec(), after;

        cr_assert_eq(notify_reloading(), 0);
        after = mono_usec();
        cr_assert_geq(recv_msg(listener, buf, sizeof(buf), 2000), 0);
        cr_assert_eq(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%lld", &mono), 1, "got %s", buf);
        cr_assert(mono >= before && mono <= after, "MONOTONIC_USEC=%lld outside [%" PRId64 ", %" PRId64 "]",
                  mono, before, after);
        cr_assert_eq(strchr(buf, '\n'), strrchr(buf, '\n'), "two lines only: %s", buf);
}

Test(notify, long_status_is_cut_not_overflowed) {
        char text[2048], buf[4096];
        ssize_t n;

        memset(text, 'x', sizeof(text) - 1);
        text[sizeof(text) - 1] = '\0';
        cr_assert_eq(notify_status("%s", text), 0);
        n = recv_msg(listener, buf, sizeof(buf), 2000);
        cr_assert_gt(n, 400);
        cr_assert_lt(n, 512);
        cr_assert_eq(strncmp(buf, "STATUS=xxxx", 11), 0);
        cr_assert_eq(strspn(buf + 7, "x"), (size_t) n - 7);
}

Test(notify, abstract_namespace) {
        char name[64];
        int fd;

        snprintf(name, sizeof(name), "@outaged-test-notify-%d-%ld", (int) getpid(), (long) time(NULL));
        fd = listen_at(name);
        cr_assert_eq(notify_ready(), 0);
        close(listener);
        listener = fd;
        expect_msg("READY=1");
}

Test(notify, no_socket_is_a_no_op) {
        cr_assert_eq(unsetenv("NOTIFY_SOCKET"), 0);
        cr_assert_eq(notify_ready(), 0);
        cr_assert_eq(notify_status("x"), 0);
        cr_assert_eq(notify_watchdog(), 0);
        cr_assert_eq(setenv("NOTIFY_SOCKET", "", 1), 0);
        cr_assert_eq(notify_stopping(), 0);
        expect_nothing();
}

Test(notify, bad_addresses) {
        char longpath[200];

        cr_assert_eq(setenv("NOTIFY_SOCKET", "relative/notify", 1), 0);
        cr_assert_eq(notify_ready(), -EINVAL);
        memset(longpath, 'a', sizeof(longpath) - 1);
        longpath[0] = '/';
        longpath[sizeof(longpath) - 1] = '\0';
        cr_assert_eq(setenv("NOTIFY_SOCKET", longpath, 1), 0);
        cr_assert_eq(notify_ready(), -EINVAL);
}

Test(notify, missing_listener_fails_at_once) {
        char path[300];
        usec_t t0;
        int r;

        snprintf(path, sizeof(path), "%s/nobody", dir);
        cr_assert_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
        t0 = mono_usec();
        r = notify_ready();
        cr_assert(r == -ENOENT || r == -ECONNREFUSED, "got %d", r);
        cr_assert_lt(mono_usec() - t0, 100 * USEC_PER_MSEC);
}

/* Sends STATUS= until the listener's queue is full; returns how many were sent. */
static int fill_queue(void) {
        int sent = 0, r;

        while ((r = notify_status("filling %d", sent)) == 0)
                cr_assert_lt(++sent, 100000, "the queue never filled");
        cr_assert_eq(r, -EAGAIN);
        return sent;
}

Test(notify, unread_listener_never_blocks_status_or_watchdog) {
        usec_t t0 = mono_usec();
        int sent = fill_queue();

        cr_assert_gt(sent, 0);
        for (int i = 0; i < 1000; i++) {
                cr_assert_eq(notify_status("dropped %d", i), -EAGAIN);
                cr_assert_eq(notify_watchdog(), -EAGAIN);
        }
        cr_assert_lt(mono_usec() - t0, USEC_PER_SEC, "took %" PRId64 " us", mono_usec() - t0);

        /* What was queued is intact, in order; then the next one goes through again. */
        for (int i = 0; i < sent; i++) {
                char want[32];

                snprintf(want, sizeof(want), "STATUS=filling %d", i);
                expect_msg(want);
        }
        cr_assert_eq(notify_watchdog(), 0);
        expect_msg("WATCHDOG=1");
}

Test(notify, unread_listener_bounds_ready_and_stopping) {
        usec_t t0;

        (void) fill_queue();
        t0 = mono_usec();
        cr_assert_eq(notify_ready(), -EAGAIN);
        cr_assert_eq(notify_stopping(), -EAGAIN);
        cr_assert_lt(mono_usec() - t0, 3 * USEC_PER_SEC, "took %" PRId64 " us", mono_usec() - t0);
}

static void *drain_later(void *arg) {
        char buf[1024];

        harness_sleep_ms(100);
        (void) recv_msg(listener, buf, sizeof(buf), 0);         /* frees one place */
        return arg;
}

Test(notify, ready_is_retried_until_the_listener_reads) {
        pthread_t th;
        char buf[1024];
        int sent = fill_queue(), r;

        cr_assert_eq(pthread_create(&th, NULL, drain_later, NULL), 0);
        r = notify_ready();
        pthread_join(th, NULL);
        cr_assert_eq(r, 0);
        for (int i = 1; i < sent; i++)
                cr_assert_geq(recv_msg(listener, buf, sizeof(buf), 1000), 0);
        expect_msg("READY=1");
}

/* ---- $WATCHDOG_USEC ---- */

static void watchdog_env(const char *usec, const char *pid) {
        if (usec)
                cr_assert_eq(setenv("WATCHDOG_USEC", usec, 1), 0);
        else
                cr_assert_eq(unsetenv("WATCHDOG_USEC"), 0);
        if (pid)
                cr_assert_eq(setenv("WATCHDOG_PID", pid, 1), 0);
        else
                cr_assert_eq(unsetenv("WATCHDOG_PID"), 0);
}

Test(notify, watchdog_usec_for_this_process) {
        char pid[32];

        watchdog_env(NULL, NULL);
        cr_assert_eq(notify_watchdog_usec(), 0);
        watchdog_env("5000000", NULL);
        cr_assert_eq(notify_watchdog_usec(), 5 * USEC_PER_SEC);
        cr_assert_eq(notify_watchdog_usec(), 5 * USEC_PER_SEC, "the environment is kept");
        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        watchdog_env("30000000", pid);
        cr_assert_eq(notify_watchdog_usec(), 30 * USEC_PER_SEC);
}

Test(notify, watchdog_usec_for_another_process_or_unparsable) {
        char pid[32];

        snprintf(pid, sizeof(pid), "%d", (int) getpid() + 1);
        watchdog_env("5000000", pid);
        cr_assert_eq(notify_watchdog_usec(), 0, "WATCHDOG_PID names another process");
        watchdog_env("5000000", "not-a-pid");
        cr_assert_eq(notify_watchdog_usec(), 0);
        watchdog_env("five", NULL);
        cr_assert_eq(notify_watchdog_usec(), 0);
        watchdog_env("5s", NULL);
        cr_assert_eq(notify_watchdog_usec(), 0);
        watchdog_env("0", NULL);
        cr_assert_eq(notify_watchdog_usec(), 0);
        watchdog_env("-5", NULL);
        cr_assert_eq(notify_watchdog_usec(), 0);
        watchdog_env("", NULL);
        cr_assert_eq(notify_watchdog_usec(), 0);
}

/* ---- EXTEND_TIMEOUT_USEC ---- */

Test(notify, extend_timeout) {
        cr_assert_eq(notify_extend_timeout(90 * USEC_PER_SEC), 0);
        expect_msg("EXTEND_TIMEOUT_USEC=90000000");
        cr_assert_eq(notify_extend_timeout(1), 0);
        expect_msg("EXTEND_TIMEOUT_USEC=1");
        cr_assert_eq(notify_extend_timeout(INT64_MAX), 0);
        expect_msg("EXTEND_TIMEOUT_USEC=9223372036854775807");
        cr_assert_eq(notify_extend_timeout(0), -EINVAL);
        cr_assert_eq(notify_extend_timeout(-5), -EINVAL);
        expect_nothing();
}

Test(notify, extend_timeout_is_retried_until_the_listener_reads) {
        pthread_t th;
        char buf[1024];
        int sent = fill_queue(), r;

        cr_assert_eq(pthread_create(&th, NULL, drain_later, NULL), 0);
        r = notify_extend_timeout(30 * USEC_PER_SEC);
        pthread_join(th, NULL);
        cr_assert_eq(r, 0);
        for (int i = 1; i < sent; i++)
                cr_assert_geq(recv_msg(listener, buf, sizeof(buf), 1000), 0);
        expect_msg("EXTEND_TIMEOUT_USEC=30000000");
}
