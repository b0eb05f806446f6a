/* test_log.c — log line format on stderr (prefixes, and the terminal style with its choice
 * by isatty), level filtering, the journal detection, and the rate limiter. Each test runs in its own process (Criterion), so redirecting stderr is
 * local to it. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

static int capture_fd = -1;

/* Sends stderr to an anonymous temporary file; read back with captured(). */
static void capture_stderr(void) {
        char path[] = "/tmp/outaged-test-log-XXXXXX";

        capture_fd = mkstemp(path);
        cr_assert_geq(capture_fd, 0);
        unlink(path);
        cr_assert_geq(dup2(capture_fd, STDERR_FILENO), 0);
        unsetenv("JOURNAL_STREAM");
}

static char *captured(void) {
        off_t len = lseek(capture_fd, 0, SEEK_END);
        char *buf = calloc(1, (size_t) len + 1);

        cr_assert_eq(pread(capture_fd, buf, (size_t) len, 0), len);
        return buf;
}

TestSuite(log, .init = capture_stderr);

Test(log, prefixes_are_syslog_priorities) {
        char *out;

        log_setup(LOG_LEVEL_DEBUG);
        log_error("e %d", 1);
        log_warning("w");
        log_notice("n");
        log_info("i");
        log_debug("d");
        out = captured();
        cr_assert_str_eq(out, "<3>e 1\n<4>w\n<5>n\n<6>i\n<7>d\n");
        free(out);
}

Test(log, level_filtering) {
        char *out;

        log_setup(LOG_LEVEL_NOTICE);
        cr_assert_eq(log_get_level(), LOG_LEVEL_NOTICE);
        log_info("hidden");
        log_debug("hidden");
        log_notice("shown");
        log_set_level(LOG_LEVEL_ERR);
        log_warning("hidden");
        log_error("error");
        log_set_level(LOG_LEVEL_DEBUG);
        log_debug("debug");
        out = captured();
        cr_assert_str_eq(out, "<5>shown\n<3>error\n<7>debug\n");
        free(out);
}

Test(log, errno_return_and_percent_m) {
        char *out;

        log_setup(LOG_LEVEL_INFO);
        errno = 7;
        cr_assert_eq(log_error_errno(ENOENT, "open x: %m"), -ENOENT);
        cr_assert_eq(errno, 7, "errno preserved");
        cr_assert_eq(log_warning_errno(-EIO, "w: %m"), -EIO);
        cr_assert_eq(log_full(LOG_LEVEL_DEBUG, EPIPE, NULL, "filtered"), -EPIPE);
        cr_assert_eq(log_info("plain"), 0);
        out = captured();
        cr_assert_str_eq(out, "<3>open x: No such file or directory\n<4>w: Input/output error\n<6>plain\n");
        free(out);
}

Test(log, fields_ignored_on_stderr_and_newlines_flattened) {
        const char *const fields[] = { "CONTROLLER_ID=ctrl_1", "REASON=bad_timestamp", NULL };
        char *out;

        log_setup(LOG_LEVEL_INFO);
        log_full(LOG_LEVEL_WARNING, 0, fields, "rejected\nreport\r!");
        out = captured();
        cr_assert_str_eq(out, "<4>rejected report !\n");
        free(out);
}

Test(log, long_message_truncated_to_one_line) {
        char *big = malloc(10000), *out;

        memset(big, 'x', 9999);
        big[9999] = '\0';
        log_setup(LOG_LEVEL_INFO);
        log_info("%s", big);
        out = captured();
        cr_assert_lt(strlen(out), 4200);
        cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1);
        cr_assert(strstr(out, "...\n"));
        free(out);
        free(big);
}

/* With $JOURNAL_STREAM naming another file, stderr is still the sink. */
Test(log, journal_stream_mismatch_uses_stderr) {
        char *out;

        setenv("JOURNAL_STREAM", "1:1", 1);
        log_setup(LOG_LEVEL_INFO);
        log_info("to stderr");
        out = captured();
        cr_assert_str_eq(out, "<6>to stderr\n");
        free(out);
}

/* When $JOURNAL_STREAM matches stderr, entries go to the journal; without a running
 * journald the send fails and the line still reaches stderr. */
Test(log, journal_stream_match_falls_back_without_journald) {
        struct stat st;
        char env[64], *out;

        cr_assert_eq(fstat(STDERR_FILENO, &st), 0);
        snprintf(env, sizeof env, "%llu:%llu", (unsigned long long) st.st_dev,
                 (unsigned long long) st.st_ino);
        setenv("JOURNAL_STREAM", env, 1);
        log_setup(LOG_LEVEL_INFO);
        log_info("hello");
        out = captured();
        if (access("/run/systemd/journal/socket", F_OK) < 0)
                cr_assert_str_eq(out, "<6>hello\n");
        else
                cr_assert_str_eq(out, "", "sent to the journal, not stderr");
        free(out);
}

static void *log_many(void *arg) {
        for (int i = 0; i < 500; i++)
                log_info("thread %ld line %d %s", (long) (intptr_t) arg, i,
                         "padding padding padding padding padding padding padding padding");
        return NULL;
}

Test(log, threads_do_not_interleave) {
        pthread_t t[4];
        char *out, *line, *save = NULL;
        int n = 0;

        log_setup(LOG_LEVEL_INFO);
        for (long i = 0; i < 4; i++)
                pthread_create(&t[i], NULL, log_many, (void *) (intptr_t) i);
        for (int i = 0; i < 4; i++)
                pthread_join(t[i], NULL);
        out = captured();
        for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                cr_assert(strncmp(line, "<6>thread ", 10) == 0, "%s", line);
                cr_assert_str_eq(line + strlen(line) - 15, "padding padding", "%s", line);
                n++;
        }
        cr_assert_eq(n, 2000);
        free(out);
}

Test(log, level_names) {
        static const struct { const char *s; LogLevel l; } levels[] = {
                { "debug", LOG_LEVEL_DEBUG }, { "info", LOG_LEVEL_INFO }, { "notice", LOG_LEVEL_NOTICE },
                { "warning", LOG_LEVEL_WARNING }, { "err", LOG_LEVEL_ERR },
        };
        LogLevel l = LOG_LEVEL_INFO;

        for (size_t i = 0; i < ELEMENTSOF(levels); i++) {
                cr_assert_eq(log_level_from_string(levels[i].s, &l), 0);
                cr_assert_eq(l, levels[i].l);
                cr_assert_str_eq(log_level_to_string(levels[i].l), levels[i].s);
        }
        l = LOG_LEVEL_NOTICE;
        cr_assert_eq(log_level_from_string("warn", &l), -EINVAL);
        cr_assert_eq(log_level_from_string("", &l), -EINVAL);
        cr_assert_eq(l, LOG_LEVEL_NOTICE);
        cr_assert_null(log_level_to_string((LogLevel) 9));
}

/* ---- the terminal style ---- */

/* "YYYY-MM-DD HH:MM:SS" of t + offset seconds in UTC. */
static void utc_stamp(time_t t, long offset, char buf[32]) {
        struct tm tm;
        time_t x = t + offset;

        gmtime_r(&x, &tm);
        strftime(buf, 32, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Checks one terminal line: a timestamp between lo and hi (as utc_stamp writes them), three
 * digits of milliseconds, then rest. Returns the line after it. */
static char *check_terminal_line(char *line, const char *lo, const char *hi, const char *rest) {
        char *nl = strchr(line, '\n');

        cr_assert_not_null(nl, "%s", line);
        *nl = '\0';
        cr_assert_gt(strlen(line), 24, "%s", line);
        cr_assert(strncmp(line, lo, 19) >= 0 && strncmp(line, hi, 19) <= 0, "%s not in %s..%s", line, lo, hi);
        cr_assert_eq(line[19], '.', "%s", line);
        for (int i = 20; i < 23; i++)
                cr_assert(line[i] >= '0' && line[i] <= '9', "%s", line);
        cr_assert_eq(line[23], ' ', "%s", line);
        cr_assert_str_eq(line + 24, rest);
        return nl + 1;
}

static void terminal_lines_in_zone(const char *tz, long offset) {
        char lo[32], hi[32], *out, *p;
        time_t before, after;

        setenv("TZ", tz, 1);
        log_set_style(LOG_STYLE_TERMINAL);
        log_setup(LOG_LEVEL_DEBUG);
        cr_assert_eq(log_get_style(), LOG_STYLE_TERMINAL);
        before = time(NULL);
        log_error("e %d", 1);
        log_warning("w");
        log_notice("n");
        log_info("two\nlines");
        log_debug("d");
        after = time(NULL);
        utc_stamp(before, offset, lo);
        utc_stamp(after, offset, hi);
        out = captured();
        p = check_terminal_line(out, lo, hi, "err     e 1");
        p = check_terminal_line(p, lo, hi, "warning w");
        p = check_terminal_line(p, lo, hi, "notice  n");
        p = check_terminal_line(p, lo, hi, "info    two lines");
        p = check_terminal_line(p, lo, hi, "debug   d");
        cr_assert_str_eq(p, "");
        free(out);
}

Test(log, terminal_style_has_time_and_level) {
        terminal_lines_in_zone("UTC0", 0);
}

Test(log, terminal_style_is_local_time) {
        /* POSIX TZ strings need no tzdata: "XYZ-3" is three hours east of UTC */
        terminal_lines_in_zone("XYZ-3", 3 * 3600);
}

Test(log, terminal_style_forced_over_log_setup_and_back) {
        char *out;

        log_set_style(LOG_STYLE_PREFIX);
        log_setup(LOG_LEVEL_INFO);
        cr_assert_eq(log_get_style(), LOG_STYLE_PREFIX);
        log_info("a");
        log_set_style(LOG_STYLE_AUTO);
        cr_assert_eq(log_get_style(), LOG_STYLE_PREFIX, "stderr is a file here, not a terminal");
        log_info("b");
        out = captured();
        cr_assert_str_eq(out, "<6>a\n<6>b\n");
        free(out);
}

Test(log, not_a_terminal_keeps_prefixes) {
        log_setup(LOG_LEVEL_INFO);
        cr_assert_eq(log_get_style(), LOG_STYLE_PREFIX);
}

/* Opens a pseudo-terminal and makes its other end stderr; returns the master. */
static int stderr_to_pty(void) {
        int master = posix_openpt(O_RDWR | O_NOCTTY), slave;

        cr_assert_geq(master, 0, "posix_openpt: %m");
        cr_assert_eq(grantpt(master), 0);
        cr_assert_eq(unlockpt(master), 0);
        slave = open(ptsname(master), O_RDWR | O_NOCTTY);
        cr_assert_geq(slave, 0, "%m");
        cr_assert_geq(dup2(slave, STDERR_FILENO), 0);
        close(slave);
        return master;
}

Test(log, a_terminal_gets_the_terminal_style) {
        int master = stderr_to_pty();
        struct pollfd pfd = { .fd = master, .events = POLLIN };
        char buf[512] = "";
        size_t len = 0;

        setenv("TZ", "UTC0", 1);
        log_setup(LOG_LEVEL_INFO);
        cr_assert_eq(log_get_style(), LOG_STYLE_TERMINAL);
        log_info("on a tty");
        while (!strstr(buf, "\n") && poll(&pfd, 1, 5000) > 0) {
                ssize_t n = read(master, buf + len, sizeof buf - 1 - len);
                if (n <= 0)
                        break;
                len += (size_t) n;
                buf[len] = '\0';
        }
        cr_assert(strstr(buf, " info    on a tty\r\n"), "%s", buf);
        cr_assert_neq(buf[0], '<', "%s", buf);
        close(master);
}

/* A terminal that is the journal's stream (as $JOURNAL_STREAM says) is systemd's. */
Test(log, a_terminal_that_is_the_journal_keeps_prefixes) {
        int master = stderr_to_pty();
        struct stat st;
        char env[64];

        cr_assert_eq(fstat(STDERR_FILENO, &st), 0);
        snprintf(env, sizeof env, "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        setenv("JOURNAL_STREAM", env, 1);
        log_setup(LOG_LEVEL_INFO);
        cr_assert_eq(log_get_style(), LOG_STYLE_PREFIX);
        close(master);
}

/* ---- rate limiter ---- */

Test(log, ratelimit_burst_then_suppressed_count) {
        RateLimit rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 3);
        unsigned s = 99;
        usec_t t = 1000 * USEC_PER_SEC;

        for (int i = 0; i < 3; i++) {
                cr_assert(ratelimit_below(&rl, t + i, &s));
                cr_assert_eq(s, 0);
        }
        for (int i = 0; i < 5; i++)
                cr_assert_not(ratelimit_below(&rl, t + 5 * USEC_PER_SEC, &s));
        cr_assert_not(ratelimit_below(&rl, t + 10 * USEC_PER_SEC - 1, NULL));
        /* a new interval: allowed, and reports what was suppressed */
        cr_assert(ratelimit_below(&rl, t + 10 * USEC_PER_SEC, &s));
        cr_assert_eq(s, 6);
        cr_assert(ratelimit_below(&rl, t + 10 * USEC_PER_SEC + 1, &s));
        cr_assert_eq(s, 0, "the count is reported once");
}

Test(log, ratelimit_starts_at_time_zero) {
        RateLimit rl = RATELIMIT_INIT(USEC_PER_SEC, 1);
        unsigned s = 0;

        cr_assert(ratelimit_below(&rl, 0, &s));
        cr_assert_not(ratelimit_below(&rl, 0, &s));
        cr_assert_not(ratelimit_below(&rl, USEC_PER_SEC - 1, &s));
        cr_assert(ratelimit_below(&rl, USEC_PER_SEC, &s));
        cr_assert_eq(s, 2);
}

Test(log, ratelimit_clock_going_backwards_opens_a_window) {
        RateLimit rl = RATELIMIT_INIT(USEC_PER_SEC, 1);
        unsigned s = 0;

        cr_assert(ratelimit_below(&rl, 5 * USEC_PER_SEC, &s));
        cr_assert_not(ratelimit_below(&rl, 5 * USEC_PER_SEC, &s));
        cr_assert(ratelimit_below(&rl, 1 * USEC_PER_SEC, &s));
        cr_assert_eq(s, 1);
}

Test(log, ratelimit_zero_means_unlimited) {
        RateLimit a = RATELIMIT_INIT(0, 5), b = RATELIMIT_INIT(USEC_PER_SEC, 0);

        for (int i = 0; i < 100; i++) {
                cr_assert(ratelimit_below(&a, 0, NULL));
                cr_assert(ratelimit_below(&b, 0, NULL));
        }
}
