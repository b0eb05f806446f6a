/* config.h — the daemon's configuration: INI file -> struct Config. Every key of SPEC
 * section 5 is typed, bounded, and reported as file:line on error. No other module parses
 * configuration text. */
#pragma once

#include <stdio.h>

#include "common.h"
#include "log.h"

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

        /* [events] */
        char *events_topic_prefix;      /* NULL: no live event messages */
        char *events_notify_channel;    /* NULL: no NOTIFY */

        /* [retention] */
        usec_t retention_events;        /* 0: keep forever */
        usec_t retention_rejects;       /* 0: keep forever */

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

/* Writes the effective settings as INI to f, secrets masked ("********"): the loaded
 * passwords, and the passwords inside postgres.conninfo and mqtt.uri (see below). */
void config_dump(const Config *c, FILE *f);

/* A copy of a libpq conninfo with every password replaced by "********": in the keyword
 * form the values of password and sslpassword (unquoted, or single-quoted with backslash
 * escapes, blanks around '=' allowed) and the secrets of a conninfo given as dbname's
 * value; in the URI form (postgresql://, postgres://) the password of the user
 * information and the password and sslpassword query parameters (names percent-decoded).
 * A conninfo libpq would not parse is masked whole. Caller owns; NULL on ENOMEM. */
char *config_mask_conninfo(const char *conninfo);

/* A copy of an MQTT URI with the password of its user information
 * (scheme://user:password@host:port) replaced by "********". Caller owns; NULL on
 * ENOMEM. */
char *config_mask_uri(const char *uri);

/* Moves the settings a reload applies (SPEC section 7: the keys config_key_info() marks
 * reloadable, today log.level and aggregation.outage_types) from next into running, and
 * running's old values into next, so that config_free(next) releases them. Both come
 * from config_load(); nothing else in running changes. The caller applies the effects:
 * log_set_level(running->log_level), and pointers it keeps into running->outage_types
 * (such as ReportRules) must be renewed before config_free(next).
 * Returns how many reloadable keys changed value. If restart is not NULL, writes into it
 * (restartlen bytes, NUL-terminated, cut at a name) the comma-separated names of the
 * other keys whose values differ ("mqtt.uri, aggregation.gap"), or "" when none do:
 * they take effect only on a restart. Secrets are compared by their password_file
 * names, not their contents. -ENOMEM leaves both configs as they were. */
int config_reload_apply(Config *running, Config *next, char *restart, size_t restartlen);

/* The key table, read-only (for documentation checks). */
typedef struct ConfigKeyInfo {
        const char *section;            /* "aggregation" */
        const char *key;                /* "gap" */
        const char *type;               /* "duration", "size", "integer", "path", ... */
        const char *default_value;      /* as the file spells it; "" when unset or derived */
        char name[64];                  /* "aggregation.gap" */
        char min[32], max[32];          /* bounds in the type's unit, "" when it has none */
        bool reloadable;                /* applied by config_reload_apply() */
} ConfigKeyInfo;

/* The number of keys, in config_dump() order. */
size_t config_key_count(void);

/* Fills *ret for key i (0 <= i < config_key_count()); returns 0, or -ERANGE for other i
 * (*ret untouched). */
int config_key_info(size_t i, ConfigKeyInfo *ret);
