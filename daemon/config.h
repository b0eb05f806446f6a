/* config.h — the daemon's configuration: INI file -> struct Config. Every key of SPEC
 * section 5 is typed, bounded, and reported as file:line on error. No other module parses
 * configuration text. */
#pragma once

#include <stdio.h>

#include "common.h"

typedef enum LogLevel {
        LOG_LEVEL_ERR = 3,
        LOG_LEVEL_WARNING = 4,
        LOG_LEVEL_NOTICE = 5,
        LOG_LEVEL_INFO = 6,
        LOG_LEVEL_DEBUG = 7,
} LogLevel;

typedef struct Config {
        /* [mqtt] */
        char *mqtt_uri;
        char *mqtt_client_id;
        char *mqtt_topic;
        char *mqtt_share_group;         /* NULL: no shared subscription */
        int mqtt_qos;                   /* 0..2 */
        usec_t mqtt_session_expiry;
        char *mqtt_username;            /* NULL: none */
        char *mqtt_password_file;       /* NULL: $CREDENTIALS_DIRECTORY/mqtt-password if present */
        char *mqtt_password;            /* loaded secret, NULL if none */
        char *mqtt_ca_file;
        char *mqtt_cert_file;
        char *mqtt_key_file;

        /* [postgres] */
        char *pg_conninfo;
        char *pg_password_file;         /* NULL: $CREDENTIALS_DIRECTORY/pg-password if present */
        char *pg_password;              /* loaded secret, NULL if none */

        /* [aggregation] */
        usec_t gap;
        char **outage_types;            /* NULL: any valid name; else sorted, NULL-terminated */
        size_t n_outage_types;
        usec_t max_future_skew;
        usec_t max_age;                 /* 0: no limit */
        usec_t flush_interval;
        uint64_t batch_max;

        /* [storage] */
        char *journal_dir;              /* resolved: never NULL after config_load() */
        usec_t journal_sync;            /* 0: after every write */

        /* [limits] */
        uint64_t max_payload;           /* bytes */
        uint64_t max_batch_items;
        uint64_t max_events_in_memory;
        usec_t startup_timeout;

        /* [log] */
        LogLevel log_level;
        char *metrics_file;             /* NULL: off */
} Config;

/* Fills *ret with every default of SPEC section 5 (journal_dir resolved from
 * $STATE_DIRECTORY). Caller owns the result (config_free). */
int config_defaults(Config **ret);

/* Parses path on top of the defaults, checks the cross-field rules, then loads secrets
 * (password_file, else $CREDENTIALS_DIRECTORY/mqtt-password resp. pg-password if present).
 * path NULL: defaults only (secrets from $CREDENTIALS_DIRECTORY still apply). On failure
 * returns -EINVAL (bad content, bad or unreadable secret), -ENOENT/-EACCES/-EISDIR...
 * (file unreadable), -EFBIG (file over 1 MiB) or -ENOMEM, writes one human-readable
 * message "file:line: section.key: problem (expected ...)" into err (size errlen; err may
 * be NULL) and leaves *ret untouched. A key set twice is an error. */
int config_load(const char *path, Config **ret, char *err, size_t errlen);

/* As config_load, on the len bytes at buf (no NUL terminator needed); name is used in
 * messages. Borrows buf. */
int config_load_buffer(const char *name, const char *buf, size_t len, Config **ret,
                       char *err, size_t errlen);

Config *config_free(Config *c);

/* Writes the effective settings as INI to f, secrets masked ("********"). */
void config_dump(const Config *c, FILE *f);

/* Durations and sizes are parsed by text_parse_duration() and text_parse_size() (text.h).
 * The log level names: 0 or -EINVAL, *ret untouched on failure. */
int config_parse_log_level(const char *s, LogLevel *ret);
const char *log_level_to_string(LogLevel l);
