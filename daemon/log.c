/* log.c — leveled logging: one line per write(2) on stderr, "<N>message" for systemd or
 * "local-time level message" at a terminal, or a structured journal entry when stderr is
 * connected to journald ($JOURNAL_STREAM). Also the rate limiter for hot paths. Does not
 * buffer, does not allocate on the stderr path. */
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include "log.h"

#define LOG_LINE_MAX   4096     /* longer messages are truncated, marked with "..." */
#define LOG_FIELDS_MAX 16       /* extra journal fields beyond these are dropped */

static atomic_int log_level = LOG_LEVEL_INFO;

static const char *const log_level_names[] = {
        [LOG_LEVEL_ERR] = "err",
        [LOG_LEVEL_WARNING] = "warning",
        [LOG_LEVEL_NOTICE] = "notice",
        [LOG_LEVEL_INFO] = "info",
        [LOG_LEVEL_DEBUG] = "debug",
};

const char *log_level_to_string(LogLevel l) {
        if (l < LOG_LEVEL_ERR || l > LOG_LEVEL_DEBUG)
                return NULL;
        return log_level_names[l];
}

int log_level_from_string(const char *s, LogLevel *ret) {
        if (!s)
                return -EINVAL;
        for (int l = LOG_LEVEL_ERR; l <= LOG_LEVEL_DEBUG; l++)
                if (streq(s, log_level_names[l])) {
                        *ret = (LogLevel) l;
                        return 0;
                }
        return -EINVAL;
}
static atomic_bool log_to_journal = false;
static atomic_int log_style = LOG_STYLE_PREFIX;         /* PREFIX or TERMINAL */
static atomic_int log_style_forced = LOG_STYLE_AUTO;

/* True if $JOURNAL_STREAM ("device:inode") names the file stderr is open on: systemd
 * sets it for services whose stderr goes to the journal, and a redirected stderr (for
 * instance a pipe set up by the test suite) must not be mistaken for it. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        char *end;
        struct stat st;

        if (!e || !*e || fstat(STDERR_FILENO, &st) < 0)
                return false;
        errno = 0;
        dev = strtoull(e, &end, 10);
        if (errno != 0 || end == e || *end != ':')
                return false;
        e = end + 1;
        ino = strtoull(e, &end, 10);
        if (errno != 0 || end == e || *end != '\0')
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

/* The style log_setup() picks: a person reads a terminal; systemd reads everything else
 * (its stream to journald, or a file or pipe a supervisor collects). */
static LogStyle style_detect(void) {
        return isatty(STDERR_FILENO) && !stderr_is_journal() ? LOG_STYLE_TERMINAL : LOG_STYLE_PREFIX;
}

void log_setup(LogLevel level) {
        LogStyle forced = (LogStyle) atomic_load(&log_style_forced);

        /* sd_journal_sendv() drops entries silently when journald's socket is missing, so
         * without it stderr is the only place a message can reach. */
        atomic_store(&log_to_journal, stderr_is_journal() &&
                     access("/run/systemd/journal/socket", F_OK) == 0);
        /* localtime_r() does not read $TZ by itself. */
        tzset();
        atomic_store(&log_style, (int) (forced != LOG_STYLE_AUTO ? forced : style_detect()));
        log_set_level(level);
}

void log_set_style(LogStyle style) {
        if (style < LOG_STYLE_AUTO || style >= _LOG_STYLE_MAX)
                style = LOG_STYLE_AUTO;
        atomic_store(&log_style_forced, (int) style);
        atomic_store(&log_style, (int) (style != LOG_STYLE_AUTO ? style : style_detect()));
}

LogStyle log_get_style(void) {
        return (LogStyle) atomic_load(&log_style);
}

void log_set_level(LogLevel level) {
        if (level < LOG_LEVEL_ERR)
                level = LOG_LEVEL_ERR;
        if (level > LOG_LEVEL_DEBUG)
                level = LOG_LEVEL_DEBUG;
        atomic_store(&log_level, (int) level);
}

LogLevel log_get_level(void) {
        return (LogLevel) atomic_load(&log_level);
}

static void write_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, buf, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return;         /* nowhere left to report a failure to log */
                buf += n;
                len -= (size_t) n;
        }
}

/* "2026-12-01 07:24:08.123 warning " in local time: at most 64 bytes. */
static int terminal_prefix(LogLevel level, char *buf, size_t len) {
        struct timespec ts;
        struct tm tm;
        time_t secs;

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        secs = ts.tv_sec;
        if (!localtime_r(&secs, &tm))
                return snprintf(buf, len, "%-7s ", log_level_to_string(level) ?: "?");
        return snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d.%03ld %-7s ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        ts.tv_nsec / 1000000, log_level_to_string(level) ?: "?");
}

/* The prefix ("<N>", or the time and the level at a terminal) + message with line breaks
 * flattened (the prefix applies to one line only) + "\n", in one write so that lines from
 * several threads do not interleave. */
static void log_stderr(LogLevel level, const char *msg) {
        char line[LOG_LINE_MAX + 80];        /* the prefix, the message, "\n" */
        int o = atomic_load(&log_style) == LOG_STYLE_TERMINAL ? terminal_prefix(level, line, 80)
                                                              : snprintf(line, sizeof line, "<%d>", (int) level);
        size_t len = o > 0 && o < 80 ? (size_t) o : 0;

        for (const char *p = msg; *p && len < sizeof line - 1; p++)
                line[len++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
        line[len++] = '\n';
        write_all(STDERR_FILENO, line, len);
}

/* Only KEY=value with KEY in [A-Z0-9_] not starting with '_' (trusted fields are
 * journald's) is passed on. */
static bool journal_field_valid(const char *f) {
        const char *eq = strchr(f, '=');

        if (!eq || eq == f || f[0] == '_' || eq - f > 64)
                return false;
        for (const char *p = f; p < eq; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
                        return false;
        return true;
}

static int log_journal(LogLevel level, int error, const char *const *fields, const char *msg) {
        char message[LOG_LINE_MAX + 16], priority[16], errnum[32], ident[64];
        struct iovec iov[4 + LOG_FIELDS_MAX];
        size_t n = 0;

        snprintf(message, sizeof message, "MESSAGE=%s", msg);
        snprintf(priority, sizeof priority, "PRIORITY=%d", (int) level);
        snprintf(ident, sizeof ident, "SYSLOG_IDENTIFIER=%s", program_invocation_short_name);
        iov[n++] = (struct iovec) { message, strlen(message) };
        iov[n++] = (struct iovec) { priority, strlen(priority) };
        iov[n++] = (struct iovec) { ident, strlen(ident) };
        if (error != 0) {
                snprintf(errnum, sizeof errnum, "ERRNO=%d", abs(error));
                iov[n++] = (struct iovec) { errnum, strlen(errnum) };
        }
        for (size_t i = 0; fields && fields[i] && i < LOG_FIELDS_MAX; i++)
                if (journal_field_valid(fields[i]))
                        iov[n++] = (struct iovec) { (void *) fields[i], strlen(fields[i]) };
        return sd_journal_sendv(iov, (int) n);
}

int log_full(LogLevel level, int error, const char *const *fields, const char *fmt, ...) {
        char msg[LOG_LINE_MAX + 1];
        int saved_errno = errno, ret = error != 0 ? -abs(error) : 0;
        va_list ap;
        int w;

        if ((int) level > atomic_load(&log_level))
                return ret;

        /* "%m" in fmt means the error passed in, as in systemd's log_*_errno(). */
        errno = abs(error);
        va_start(ap, fmt);
        w = vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (w < 0)
                snprintf(msg, sizeof msg, "(unformattable log message)");
        else if ((size_t) w >= sizeof msg)
                memcpy(msg + sizeof msg - 4, "...", 4);

        if (!atomic_load(&log_to_journal) || log_journal(level, error, fields, msg) < 0)
                log_stderr(level, msg);
        errno = saved_errno;
        return ret;
}

bool ratelimit_below(RateLimit *rl, usec_t now, unsigned *ret_suppressed) {
        unsigned suppressed;

        if (rl->interval <= 0 || rl->burst == 0)
                return true;            /* a zero limit means no limit, as in systemd */

        /* A new window: first use, interval elapsed, or the clock went backwards. */
        if (rl->num == 0 || now < rl->begin || now - rl->begin >= rl->interval) {
                rl->begin = now;
                rl->num = 0;
        }
        if (rl->num >= rl->burst) {
                if (rl->suppressed < UINT_MAX)
                        rl->suppressed++;
                return false;
        }
        rl->num++;
        suppressed = rl->suppressed;
        rl->suppressed = 0;
        if (ret_suppressed)
                *ret_suppressed = suppressed;
        return true;
}
