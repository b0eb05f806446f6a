/* log.h — leveled logging to stderr with sd-daemon <N> prefixes (or, at a terminal, a
 * local timestamp and the level's name), or to the journal with structured fields when
 * stderr is connected to it. Thread-safe. Plus a rate limiter for hot paths. */
#pragma once

#include <stdarg.h>

#include "common.h"

/* The sd-daemon / syslog priorities the daemon uses; the names are log.level's values. */
typedef enum LogLevel {
        LOG_LEVEL_ERR = 3,
        LOG_LEVEL_WARNING = 4,
        LOG_LEVEL_NOTICE = 5,
        LOG_LEVEL_INFO = 6,
        LOG_LEVEL_DEBUG = 7,
} LogLevel;

/* "err", "warning", "notice", "info", "debug"; NULL for any other value. */
const char *log_level_to_string(LogLevel l);
/* The inverse, exact and case-sensitive: 0, or -EINVAL with *ret untouched. */
int log_level_from_string(const char *s, LogLevel *ret);

/* How a line on stderr looks. */
typedef enum LogStyle {
        LOG_STYLE_AUTO,         /* log_setup() decides: TERMINAL if stderr is a terminal and
                                 * not the journal's stream, else PREFIX */
        LOG_STYLE_PREFIX,       /* "<6>message": for systemd, which turns it into a priority */
        LOG_STYLE_TERMINAL,     /* "2026-12-01 07:24:08.123 info    message", in local time */
        _LOG_STYLE_MAX,
} LogStyle;

/* Chooses the sink (journal when $JOURNAL_STREAM matches stderr), the stderr style (see
 * LogStyle; log_set_style() overrides it) and the level. */
void log_setup(LogLevel level);

/* Forces the stderr style from now on, also over later log_setup() calls (for tests and
 * for callers that know better); LOG_STYLE_AUTO decides again as log_setup() does. */
void log_set_style(LogStyle style);
/* The style in effect: LOG_STYLE_PREFIX or LOG_STYLE_TERMINAL. */
LogStyle log_get_style(void);
void log_set_level(LogLevel level);
LogLevel log_get_level(void);

/* Logs one message at level. fields: NULL, or NULL-terminated "KEY=value" strings added
 * as journal fields (ignored on stderr). Returns -abs(error) when error != 0, else 0, so
 * a caller can write "return log_error_errno(r, ...)". */
int log_full(LogLevel level, int error, const char *const *fields, const char *fmt, ...) _printf_(4, 5);

#define log_debug(...)   log_full(LOG_LEVEL_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...)    log_full(LOG_LEVEL_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_LEVEL_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_LEVEL_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...)   log_full(LOG_LEVEL_ERR, 0, NULL, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full(LOG_LEVEL_ERR, (e), NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full(LOG_LEVEL_WARNING, (e), NULL, __VA_ARGS__)

/* A rate limiter: at most burst messages per interval; ratelimit_below() returns true
 * when a message may be logged, and *ret_suppressed (if not NULL) is set to how many were
 * suppressed since the last allowed one. Not thread-safe: one per thread or per caller. */
typedef struct RateLimit {
        usec_t interval;
        unsigned burst;
        unsigned num;
        usec_t begin;
        unsigned suppressed;
} RateLimit;

#define RATELIMIT_INIT(i, b) { .interval = (i), .burst = (b) }
bool ratelimit_below(RateLimit *rl, usec_t now, unsigned *ret_suppressed);
