/* store.c — PostgreSQL: migrations, the batched set-based merge of fragments and its
 * live-event output, rejects, the journal checkpoint and its resolution, warm start,
 * retention, the database identity. The only module that uses libpq. Does not log, does not
 * retry connections (the caller reconnects); retries only transactions that lost a race.
 *
 * A flush is one transaction: COPY the fragments into a per-connection temp table
 * (sql/flush_tables.sql), then sql/flush_merge.sql as one multi-statement query (one round
 * trip) that takes the striped advisory locks of the batch's keys in sorted order, adds
 * missing lookup names, computes the merge plan (islands of fragments and stored events
 * within gap, per key) into a second temp table, and applies it: deletes merged-away
 * events, updates the kept ones, inserts the new ones; when asked for, read back the events
 * it created or changed and NOTIFY the new and merged ones (sql/flush_changes.sql); then
 * COPY the rejects (sql/flush_rejects.sql) and record the checkpoint. A flush of an
 * instance starts by taking that instance's advisory lock, which the resolution of a lost
 * COMMIT waits for. The SQL lives in sql/ so that it can be read, run and explained in
 * psql as the daemon runs it. Timestamps cross the wire as ISO 8601 text with six fraction
 * digits and come back as integer microseconds: never through floating point. */
#include <libpq-fe.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "migrations.h"
#include "queries.h"
#include "store.h"
#include "text.h"

/* pg_advisory_xact_lock(bigint) key serialising migrations: "outage" + 1. */
#define MIGRATE_LOCK_KEY "7959953402720174081"
/* pg_advisory_xact_lock(int, int) class of the key stripes, "outa": taken by
 * sql/flush_merge.sql on (class, 0..1023). */
#define STRIPE_LOCK_CLASS 1869968481
/* The class of the per-instance lock, "outi": (class, hashtext(instance)). Another class,
 * so it never collides with a stripe; two-int keys never collide with the bigint
 * migration key either (PostgreSQL tags the two forms apart). Two instance names with the
 * same hash only serialise each other's flushes. */
#define INSTANCE_LOCK_CLASS "1869968489"
/* How long store_resolve_checkpoint waits for an earlier transaction of the instance. */
#define RESOLVE_LOCK_TIMEOUT "10s"
/* Attempts of a flush that lost a race (deadlock, serialization, exclusion). */
#define FLUSH_ATTEMPTS 8
/* Room for any "YYYY-MM-DDTHH:MM:SS.ffffff+00" snprintf can produce from a struct tm. */
#define TS_MAX 96

struct Store {
        PGconn *conn;
        char *error;
        bool broken;
        bool temp_ready;
        char sqlstate[6];               /* of the last failed statement, "" if none known */
        char *buf;                      /* COPY data being built */
        size_t len, cap;
        unsigned rand_state;
};

/* ---- errors ---- */

static void store_set_error(Store *s, const char *fmt, ...) _printf_(2, 3);
static void store_set_error(Store *s, const char *fmt, ...) {
        va_list ap;
        char *m = NULL;
        size_t l;

        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        if (!m)
                return;                 /* keep the previous message rather than none */
        l = strlen(m);
        while (l > 0 && (m[l - 1] == '\n' || m[l - 1] == ' '))
                m[--l] = '\0';
        free(s->error);
        s->error = m;
}

static bool sqlstate_is(const char *state, const char *want) {
        return state && streq(state, want);
}

/* Records the failure of a statement and classifies it: -ECONNRESET (connection gone),
 * -EAGAIN (a race a retry of the whole transaction resolves), or -EIO. The connection is
 * gone when libpq says so or the server ended the session (FATAL, PANIC: a terminated
 * backend, a shutdown); not because of the SQLSTATE alone, which a trigger can raise at
 * will: a refusal must stay -EIO on a usable connection. Takes r. */
static int store_fail(Store *s, PGresult *r, const char *what) {
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        const char *severity = r ? PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
        const char *msg = r ? PQresultErrorMessage(r) : NULL;
        int ret = -EIO;

        if (!msg || !*msg)
                msg = PQerrorMessage(s->conn);
        (void) snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", state ? state : "");
        if (PQstatus(s->conn) == CONNECTION_BAD ||
            (severity && (streq(severity, "FATAL") || streq(severity, "PANIC")))) {
                s->broken = true;
                ret = -ECONNRESET;
        } else if (sqlstate_is(state, "40001") || sqlstate_is(state, "40P01") ||
                   sqlstate_is(state, "23P01"))
                ret = -EAGAIN;
        store_set_error(s, "%s: %s", what, msg && *msg ? msg : "unknown error");
        PQclear(r);
        return ret;
}

/* Runs sql (several statements when nparams is 0) and expects success. On success returns
 * 0 and the result in *ret (caller clears) or clears it when ret is NULL. */
static int store_exec(Store *s, const char *what, const char *sql, int nparams,
                      const char *const *params, PGresult **ret) {
        PGresult *r;
        ExecStatusType st;

        if (s->broken)
                return -ECONNRESET;
        r = nparams > 0 ? PQexecParams(s->conn, sql, nparams, NULL, params, NULL, NULL, 0)
                        : PQexec(s->conn, sql);
        st = PQresultStatus(r);
        if (!r || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK))
                return store_fail(s, r, what);
        if (ret)
                *ret = r;
        else
                PQclear(r);
        return 0;
}

static void store_rollback(Store *s) {
        PGresult *r;

        if (s->broken || PQtransactionStatus(s->conn) == PQTRANS_IDLE)
                return;
        r = PQexec(s->conn, "ROLLBACK");
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQstatus(s->conn) == CONNECTION_BAD)
                s->broken = true;
        PQclear(r);
}

/* ---- text formats ---- */

/* Formats t (microseconds since the epoch) as "YYYY-MM-DDTHH:MM:SS.ffffff+00". */
static int format_ts(char out[TS_MAX], usec_t t) {
        int64_t sec = t / USEC_PER_SEC, us = t % USEC_PER_SEC;
        time_t tt;
        struct tm tm;

        if (us < 0) {
                us += USEC_PER_SEC;
                sec--;
        }
        tt = (time_t) sec;
        if (!gmtime_r(&tt, &tm))
                return -EINVAL;
        (void) snprintf(out, TS_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                        tm.tm_hour, tm.tm_min, tm.tm_sec, (int) us);
        return 0;
}

/* Formats a positive duration as an interval literal "H:MM:SS.ffffff" (exact). */
static void format_interval(char out[64], usec_t d) {
        (void) snprintf(out, 64, "%" PRId64 ":%02d:%02d.%06d",
                        d / USEC_PER_HOUR, (int) (d / USEC_PER_MINUTE % 60),
                        (int) (d / USEC_PER_SEC % 60), (int) (d % USEC_PER_SEC));
}

static int parse_i64(const char *p, int64_t *ret) {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(p, &end, 10);
        if (errno != 0 || end == p || *end)
                return -EIO;
        *ret = v;
        return 0;
}

/* ---- the COPY buffer ---- */

static int buf_reserve(Store *s, size_t more) {
        size_t want;
        char *p;

        if (s->len + more <= s->cap)
                return 0;
        if (more > SIZE_MAX / 4 - s->len)
                return -ENOMEM;
        want = (s->len + more) * 2;
        if (want < 64 * 1024)
                want = 64 * 1024;
        p = realloc(s->buf, want);
        if (!p)
                return -ENOMEM;
        s->buf = p;
        s->cap = want;
        return 0;
}

static int buf_put(Store *s, const char *p, size_t l) {
        if (buf_reserve(s, l) < 0)
                return -ENOMEM;
        memcpy(s->buf + s->len, p, l);
        s->len += l;
        return 0;
}

static int buf_puts(Store *s, const char *p) {
        return buf_put(s, p, strlen(p));
}

/* Appends a text field in COPY text format; bytes that are not valid UTF-8 become the four
 * characters \xNN, so a stray byte cannot fail the whole transaction. NULL is \N. */
static int buf_put_field(Store *s, const char *text) {
        const unsigned char *p = (const unsigned char *) text;
        size_t l, i, n;

        if (!text)
                return buf_put(s, "\\N", 2);
        l = strlen(text);
        if (buf_reserve(s, l * 5) < 0)
                return -ENOMEM;
        for (i = 0; i < l; i += n) {
                char *o = s->buf + s->len;

                n = text_utf8_seq_len(p + i, l - i);
                if (n == 0) {
                        /* the same \xNN, lowercase, as text_escape() writes */
                        s->len += (size_t) sprintf(o, "\\\\x%02x", p[i]);
                        n = 1;
                } else if (n > 1) {
                        memcpy(o, p + i, n);
                        s->len += n;
                } else if (p[i] == '\\' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t') {
                        o[0] = '\\';
                        o[1] = p[i] == '\\' ? '\\' : p[i] == '\n' ? 'n' : p[i] == '\r' ? 'r' : 't';
                        s->len += 2;
                } else
                        s->buf[s->len++] = (char) p[i];
        }
        return 0;
}

static int buf_put_ts(Store *s, usec_t t) {
        char b[TS_MAX];

        if (format_ts(b, t) < 0)
                return -EINVAL;
        return buf_puts(s, b);
}

/* Sends the buffer as the data of a COPY ... FROM STDIN. */
static int store_copy(Store *s, const char *what, const char *sql) {
        PGresult *r;
        size_t off;
        int ret = 0;

        r = PQexec(s->conn, sql);
        if (PQresultStatus(r) != PGRES_COPY_IN)
                return store_fail(s, r, what);
        PQclear(r);
        for (off = 0; off < s->len;) {
                size_t chunk = s->len - off > (1u << 20) ? (1u << 20) : s->len - off;

                if (PQputCopyData(s->conn, s->buf + off, (int) chunk) != 1)
                        break;
                off += chunk;
        }
        if (PQputCopyEnd(s->conn, off < s->len ? "client failed to send data" : NULL) != 1) {
                s->broken = PQstatus(s->conn) == CONNECTION_BAD;
                store_set_error(s, "%s: %s", what, PQerrorMessage(s->conn));
                return s->broken ? -ECONNRESET : -EIO;
        }
        while ((r = PQgetResult(s->conn))) {
                if (ret == 0 && PQresultStatus(r) != PGRES_COMMAND_OK)
                        ret = store_fail(s, r, what);
                else
                        PQclear(r);
        }
        return ret;
}

/* ---- connection ---- */

static void store_notice_ignore(void *arg, const char *message) {
        (void) arg;
        (void) message;
}

static bool message_is_auth(const char *m) {
        static const char *const needles[] = {
                "authentication failed", "no password supplied", "pg_hba.conf",
                "password authentication", "is not permitted to log in", "permission denied",
                "SCRAM", "certificate",
        };

        for (size_t i = 0; i < ELEMENTSOF(needles); i++)
                if (strstr(m, needles[i]))
                        return true;
        /* FATAL: role "x" does not exist (28000) is an identity failure too. */
        return strstr(m, "role \"") && strstr(m, "does not exist");
}

static void copy_err(char *err, size_t errlen, const char *prefix, const char *m) {
        size_t l;

        if (!err || errlen == 0)
                return;
        (void) snprintf(err, errlen, "%s%s", prefix, m);
        l = strlen(err);
        while (l > 0 && (err[l - 1] == '\n' || err[l - 1] == ' '))
                err[--l] = '\0';
}

int store_connect(const char *conninfo, const char *password, Store **ret, char *err, size_t errlen) {
        const char *keys[12], *vals[12];
        PQconninfoOption *opts;
        char *perr = NULL;
        Store *s;
        size_t k = 0;
        int r;

        if (!ret)
                return -EINVAL;
        if (!conninfo)
                conninfo = "";
        opts = PQconninfoParse(conninfo, &perr);
        if (!opts) {
                copy_err(err, errlen, "bad conninfo: ", perr ? perr : "out of memory");
                r = perr ? -EINVAL : -ENOMEM;
                PQfreemem(perr);
                return r;
        }
        PQconninfoFree(opts);

        /* Entries before dbname are defaults the conninfo overrides; entries after it win. */
        keys[k] = "fallback_application_name", vals[k++] = "outaged";
        if (!getenv("PGCONNECT_TIMEOUT"))
                keys[k] = "connect_timeout", vals[k++] = "10";
        /* A database host that vanishes without a RST must not hold a flush (or the drain
         * at SIGTERM) for the kernel's default TCP timeouts of many minutes. */
        keys[k] = "keepalives_idle", vals[k++] = "30";
        keys[k] = "keepalives_interval", vals[k++] = "10";
        keys[k] = "keepalives_count", vals[k++] = "3";
        keys[k] = "tcp_user_timeout", vals[k++] = "60000";
        if (password)
                keys[k] = "password", vals[k++] = password;
        keys[k] = "dbname", vals[k++] = conninfo;
        keys[k] = "client_encoding", vals[k++] = "UTF8";
        keys[k] = NULL, vals[k] = NULL;

        s = calloc(1, sizeof(*s));
        if (!s) {
                copy_err(err, errlen, "", "out of memory");
                return -ENOMEM;
        }
        s->rand_state = (unsigned) getpid() ^ (unsigned) time(NULL);
        s->conn = PQconnectdbParams(keys, vals, 1);
        if (!s->conn) {
                free(s);
                copy_err(err, errlen, "", "out of memory");
                return -ENOMEM;
        }
        if (PQstatus(s->conn) != CONNECTION_OK) {
                const char *m = PQerrorMessage(s->conn);

                r = PQconnectionNeedsPassword(s->conn) || message_is_auth(m) ? -EACCES : -ECONNREFUSED;
                copy_err(err, errlen, "", m);
                store_free(s);
                return r;
        }
        PQsetNoticeProcessor(s->conn, store_notice_ignore, NULL);
        *ret = s;
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        if (s->conn)
                PQfinish(s->conn);
        free(s->error);
        free(s->buf);
        free(s);
        return NULL;
}

const char *store_error(const Store *s) {
        return s && s->error ? s->error : "";
}

bool store_connected(const Store *s) {
        return s && s->conn && !s->broken && PQstatus(s->conn) == CONNECTION_OK;
}

/* ---- migrations ---- */

static int known_version(void) {
        int v = 0;

        for (size_t i = 0; i < n_migrations; i++)
                if (migrations[i].version > v)
                        v = migrations[i].version;
        return v;
}

/* The version recorded in the database (0 when schema outage or its table is absent). */
static int stored_version(Store *s, int *ret) {
        PGresult *r = NULL;
        int64_t v;
        int k;

        k = store_exec(s, "reading the schema version",
                       "SELECT CASE WHEN to_regclass('outage.schema_migrations') IS NULL THEN -1 END", 0, NULL, &r);
        if (k < 0)
                return k;
        k = PQgetisnull(r, 0, 0);
        PQclear(r);
        if (!k) {
                *ret = 0;
                return 0;
        }
        k = store_exec(s, "reading the schema version",
                       "SELECT COALESCE(max(version), 0) FROM outage.schema_migrations", 0, NULL, &r);
        if (k < 0)
                return k;
        k = parse_i64(PQgetvalue(r, 0, 0), &v);
        PQclear(r);
        if (k < 0 || v < 0 || v > INT32_MAX) {
                store_set_error(s, "bad schema version in outage.schema_migrations");
                return -EIO;
        }
        *ret = (int) v;
        return 0;
}

int store_schema_version(Store *s, int *ret_stored, int *ret_known) {
        int stored, r;

        r = stored_version(s, &stored);
        if (r < 0)
                return r == -EAGAIN ? -EIO : r;
        if (ret_stored)
                *ret_stored = stored;
        if (ret_known)
                *ret_known = known_version();
        return 0;
}

static int migrate_apply(Store *s, int stored) {
        char what[128];
        int r;

        for (int v = stored + 1; v <= known_version(); v++) {
                const Migration *m = NULL;
                char ver[16];
                const char *params[2];

                for (size_t i = 0; i < n_migrations; i++)
                        if (migrations[i].version == v)
                                m = &migrations[i];
                if (!m) {
                        store_set_error(s, "migration %d is missing from this binary", v);
                        return -EIO;
                }
                (void) snprintf(what, sizeof(what), "applying migration %s", m->name);
                r = store_exec(s, what, m->sql, 0, NULL, NULL);
                if (r < 0)
                        return r;
                (void) snprintf(ver, sizeof(ver), "%d", v);
                params[0] = ver;
                params[1] = m->name;
                r = store_exec(s, what,
                               "INSERT INTO outage.schema_migrations (version, name, applied_at) "
                               "VALUES ($1::int, $2, now())", 2, params, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Records the gap if none is, else compares: -ESTALE when it differs. */
static int migrate_gap(Store *s, usec_t gap) {
        char want[64];
        const char *params[1] = { want };
        PGresult *r = NULL;
        int k;

        format_interval(want, gap);
        k = store_exec(s, "reading outage.settings",
                       "SELECT gap = $1::interval, gap::text, $1::interval::text FROM outage.settings",
                       1, params, &r);
        if (k < 0)
                return k;
        if (PQntuples(r) == 0) {
                PQclear(r);
                return store_exec(s, "installing the gap", "SELECT outage.install_gap($1::interval)",
                                  1, params, NULL);
        }
        if (streq(PQgetvalue(r, 0, 0), "t")) {
                PQclear(r);
                return 0;
        }
        store_set_error(s, "this database was set up with aggregation.gap = %s but the configured gap "
                        "is %s; the gap is a property of the stored events: configure %s, or change it "
                        "as described in docs/OPERATIONS.md (Changing the gap)",
                        PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 1));
        PQclear(r);
        return -ESTALE;
}

static int migrate_once(Store *s, usec_t gap) {
        PGresult *r = NULL;
        int stored, k;

        k = store_exec(s, "starting the migration", "BEGIN", 0, NULL, NULL);
        if (k < 0)
                return k;
        k = store_exec(s, "taking the migration lock",
                       "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL);
        if (k < 0)
                return k;
        /* CREATE SCHEMA IF NOT EXISTS checks the CREATE privilege before existence: a
         * writer without it must still get through when the schema exists. */
        k = store_exec(s, "looking up schema outage",
                       "SELECT to_regnamespace('outage') IS NULL", 0, NULL, &r);
        if (k < 0)
                return k;
        k = streq(PQgetvalue(r, 0, 0), "t");
        PQclear(r);
        if (k) {
                k = store_exec(s, "creating schema outage", "CREATE SCHEMA outage", 0, NULL, NULL);
                if (k < 0)
                        return k;
        }
        k = stored_version(s, &stored);
        if (k < 0)
                return k;
        if (stored > known_version()) {
                store_set_error(s, "the database schema is at version %d, newer than this binary "
                                "knows (%d): upgrade outaged", stored, known_version());
                return -EPROTO;
        }
        k = migrate_apply(s, stored);
        if (k < 0)
                return k;
        k = migrate_gap(s, gap);
        if (k < 0)
                return k;
        return store_exec(s, "committing the migration", "COMMIT", 0, NULL, NULL);
}

int store_migrate(Store *s, usec_t gap) {
        int r;

        if (!s || gap <= 0)
                return -EINVAL;
        for (int attempt = 0;; attempt++) {
                r = migrate_once(s, gap);
                if (r >= 0)
                        return 0;
                store_rollback(s);
                if (r != -EAGAIN || attempt >= 2)
                        break;
        }
        return r == -EAGAIN ? -EIO : r;
}

int store_database_id(Store *s, char ret[static 37]) {
        PGresult *r = NULL;
        int k;

        if (!s)
                return -EINVAL;
        k = store_exec(s, "reading the database identity",
                       "SELECT to_regclass('outage.database_identity') IS NOT NULL", 0, NULL, &r);
        if (k < 0)
                return k == -EAGAIN ? -EIO : k;
        k = streq(PQgetvalue(r, 0, 0), "t");
        PQclear(r);
        if (!k) {
                store_set_error(s, "the database has no identity: the schema is not migrated");
                return -ENOENT;
        }
        k = store_exec(s, "reading the database identity",
                       "SELECT database_id::text FROM outage.database_identity", 0, NULL, &r);
        if (k < 0)
                return k == -EAGAIN ? -EIO : k;
        if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0) || strlen(PQgetvalue(r, 0, 0)) != 36) {
                PQclear(r);
                store_set_error(s, "the database has no identity: outage.database_identity is empty");
                return -ENOENT;
        }
        memcpy(ret, PQgetvalue(r, 0, 0), 37);
        PQclear(r);
        return 0;
}

/* ---- warm start and checkpoint ---- */

int store_load_events(Store *s, usec_t since, store_event_cb cb, void *userdata) {
        char ts[TS_MAX];
        const char *params[1] = { ts };
        PGresult *r;
        int ret = 0;

        if (!s || !cb || format_ts(ts, since) < 0)
                return -EINVAL;
        if (s->broken)
                return -ECONNRESET;
        /* The overlap form of end_time >= since reaches the GiST index. */
        if (!PQsendQueryParams(s->conn,
                               "SELECT c.name, t.name,"
                               " (extract(epoch FROM e.start_time) * 1000000)::bigint,"
                               " (extract(epoch FROM e.end_time) * 1000000)::bigint"
                               " FROM outage.stored_events e"
                               " JOIN outage.controllers c ON c.id = e.controller"
                               " JOIN outage.outage_types t ON t.id = e.otype"
                               " WHERE tstzrange(e.start_time, e.end_time, '[]')"
                               "       && tstzrange($1::timestamptz, NULL, '[]')",
                               1, NULL, params, NULL, NULL, 0))
                return store_fail(s, NULL, "loading events");
        (void) PQsetSingleRowMode(s->conn);
        while ((r = PQgetResult(s->conn))) {
                ExecStatusType st = PQresultStatus(r);
                int64_t a, b;

                if (st == PGRES_SINGLE_TUPLE && ret == 0) {
                        if (parse_i64(PQgetvalue(r, 0, 2), &a) < 0 || parse_i64(PQgetvalue(r, 0, 3), &b) < 0) {
                                store_set_error(s, "loading events: bad timestamp");
                                ret = -EIO;
                        } else
                                ret = cb(PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), a, b, userdata);
                        if (ret > 0)
                                ret = 0;
                } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && ret == 0) {
                        ret = store_fail(s, r, "loading events");
                        if (ret == -EAGAIN)
                                ret = -EIO;
                        continue;
                }
                PQclear(r);
        }
        return ret;
}

static int read_checkpoint(Store *s, const char *instance, uint64_t *ret_seq, uint64_t *ret_flush_id) {
        const char *params[1] = { instance };
        PGresult *r = NULL;
        int64_t v = 0, id = 0;
        int k;

        k = store_exec(s, "reading the checkpoint",
                       "SELECT seq, flush_id FROM outage.checkpoints WHERE instance = $1", 1, params, &r);
        if (k < 0)
                return k == -EAGAIN ? -EIO : k;
        if (PQntuples(r) > 0 && (parse_i64(PQgetvalue(r, 0, 0), &v) < 0 || parse_i64(PQgetvalue(r, 0, 1), &id) < 0))
                v = -1;
        PQclear(r);
        if (v < 0 || id < 0) {
                store_set_error(s, "reading the checkpoint: bad value");
                return -EIO;
        }
        *ret_seq = (uint64_t) v;
        if (ret_flush_id)
                *ret_flush_id = (uint64_t) id;
        return 0;
}

int store_get_checkpoint(Store *s, const char *instance, uint64_t *ret_seq, uint64_t *ret_flush_id) {
        if (!s || !instance || !ret_seq)
                return -EINVAL;
        return read_checkpoint(s, instance, ret_seq, ret_flush_id);
}

static int resolve_once(Store *s, const char *instance, uint64_t *ret_seq, uint64_t *ret_flush_id) {
        const char *params[1] = { instance };
        int k;

        k = store_exec(s, "resolving the checkpoint",
                       "BEGIN; SET LOCAL lock_timeout = '" RESOLVE_LOCK_TIMEOUT "'", 0, NULL, NULL);
        if (k < 0)
                return k;
        k = store_exec(s, "resolving the checkpoint: waiting for the instance lock",
                       "SELECT pg_advisory_xact_lock(" INSTANCE_LOCK_CLASS ", hashtext($1))", 1, params, NULL);
        if (k < 0)
                return streq(s->sqlstate, "55P03") ? -EAGAIN : k == -EAGAIN ? -EIO : k;
        /* A statement of its own: its snapshot is taken after the lock was granted, so it
         * sees what the transaction that held the lock committed. */
        k = read_checkpoint(s, instance, ret_seq, ret_flush_id);
        if (k < 0)
                return k;
        return store_exec(s, "resolving the checkpoint: COMMIT", "COMMIT", 0, NULL, NULL);
}

int store_resolve_checkpoint(Store *s, const char *instance, uint64_t *ret_seq, uint64_t *ret_flush_id) {
        uint64_t seq = 0, id = 0;
        int k;

        if (!s || !instance || !ret_seq)
                return -EINVAL;
        k = resolve_once(s, instance, &seq, &id);
        if (k < 0) {
                store_rollback(s);
                return k;
        }
        *ret_seq = seq;
        if (ret_flush_id)
                *ret_flush_id = id;
        return 0;
}

/* ---- retention ---- */

int store_prune(Store *s, usec_t events_before, usec_t rejects_before, uint64_t *ret_events,
                uint64_t *ret_rejects) {
        char ev[TS_MAX], rj[TS_MAX];
        const char *params[2] = { events_before ? ev : NULL, rejects_before ? rj : NULL };
        PGresult *r = NULL;
        int64_t ne = -1, nr = -1;
        int k;

        if (!s || (events_before && format_ts(ev, events_before) < 0) ||
            (rejects_before && format_ts(rj, rejects_before) < 0))
                return -EINVAL;
        /* Not in a transaction block: the procedure commits between batches. */
        k = store_exec(s, "pruning", "CALL outage.prune($1::timestamptz, $2::timestamptz)", 2, params, &r);
        if (k < 0)
                return k == -EAGAIN ? -EIO : k;
        if (PQntuples(r) != 1 || PQnfields(r) != 2 || parse_i64(PQgetvalue(r, 0, 0), &ne) < 0 ||
            parse_i64(PQgetvalue(r, 0, 1), &nr) < 0 || ne < 0 || nr < 0) {
                PQclear(r);
                store_set_error(s, "pruning: unexpected result");
                return -EIO;
        }
        PQclear(r);
        if (ret_events)
                *ret_events = (uint64_t) ne;
        if (ret_rejects)
                *ret_rejects = (uint64_t) nr;
        return 0;
}

/* ---- flush ---- */

/* Starts the flush transaction (sql/flush_merge.sql sets what its plans need) and, with
 * an instance, takes the instance's lock first: every transaction that may commit a
 * checkpoint of the instance holds it until it ends, which store_resolve_checkpoint
 * relies on. One round trip: the name travels as an escaped literal. */
static int flush_begin(Store *s, const char *instance) {
        _cleanup_free_ char *sql = NULL;
        char *lit;
        int r;

        if (!instance)
                return store_exec(s, "flush: BEGIN", "BEGIN", 0, NULL, NULL);
        lit = PQescapeLiteral(s->conn, instance, strlen(instance));
        if (!lit) {
                store_set_error(s, "flush: BEGIN: %s", PQerrorMessage(s->conn));
                return -ENOMEM;
        }
        r = asprintf(&sql, "BEGIN; SELECT pg_advisory_xact_lock(" INSTANCE_LOCK_CLASS ", hashtext(%s))", lit);
        PQfreemem(lit);
        if (r < 0) {
                sql = NULL;
                return -ENOMEM;
        }
        return store_exec(s, "flush: taking the instance lock", sql, 0, NULL, NULL);
}

static int flush_build_fragments(Store *s, const Fragment *f, size_t n) {
        char num[32];
        int r = 0;

        s->len = 0;
        for (size_t i = 0; i < n && r == 0; i++) {
                const Fragment *x = &f[i];

                (void) snprintf(num, sizeof(num), "%zu\t", i);
                r = buf_puts(s, num);
                r = r ?: buf_put_field(s, x->controller_id);
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_field(s, x->outage_type);
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_ts(s, x->start);
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_ts(s, x->end);
                (void) snprintf(num, sizeof(num), "\t%" PRIu32 "\t", x->count);
                r = r ?: buf_puts(s, num);
                if (x->n_uncertain == 0)
                        r = r ?: buf_put(s, "\\N", 2);
                else {
                        r = r ?: buf_put(s, "{", 1);
                        for (uint32_t j = 0; j < x->n_uncertain && r == 0; j++) {
                                if (j > 0)
                                        r = buf_put(s, ",", 1);
                                r = r ?: buf_put_ts(s, x->uncertain[j]);
                        }
                        r = r ?: buf_put(s, "}", 1);
                }
                r = r ?: buf_put(s, "\n", 1);
        }
        return r;
}

/* The source columns (instance, journal record, item) are the rejects' idempotency key;
 * without an instance or a journal record a reject has none (always inserted). */
static int flush_build_rejects(Store *s, const RejectRow *rj, size_t nr, const char *instance) {
        char num[64];
        int r = 0;

        s->len = 0;
        for (size_t i = 0; i < nr && r == 0; i++) {
                bool keyed = instance && rj[i].seq > 0;

                (void) snprintf(num, sizeof(num), "%zu\t", i);
                r = buf_puts(s, num);
                r = r ?: buf_put_ts(s, rj[i].received_at);
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_field(s, rj[i].topic ? rj[i].topic : "");
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_field(s, rj[i].controller_id);
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_field(s, rj[i].reason ? rj[i].reason : "");
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_field(s, rj[i].detail);
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_field(s, rj[i].payload ? rj[i].payload : "");
                r = r ?: buf_put(s, "\t", 1);
                r = r ?: buf_put_field(s, keyed ? instance : NULL);
                if (keyed)
                        (void) snprintf(num, sizeof(num), "\t%" PRIu64 "\t%" PRIu32 "\n", rj[i].seq, rj[i].item);
                else
                        (void) snprintf(num, sizeof(num), "\t\\N\t\\N\n");
                r = r ?: buf_puts(s, num);
        }
        return r;
}

/* The arguments of one store_flush, as every attempt uses them. */
typedef struct FlushArgs {
        const Fragment *f;
        size_t n;
        const RejectRow *rj;
        size_t nr;
        const char *instance;
        uint64_t seq, flush_id;
        const char *channel;            /* NOTIFY channel or NULL */
        bool want_changes;
} FlushArgs;

static int flush_check(Store *s, const FlushArgs *a) {
        if ((a->n > 0 && !a->f) || (a->nr > 0 && !a->rj) || a->n > INT32_MAX || a->nr > INT32_MAX ||
            a->seq > INT64_MAX || a->flush_id > INT64_MAX) {
                store_set_error(s, "flush: bad arguments");
                return -EINVAL;
        }
        /* NAMEDATALEN - 1: pg_notify refuses longer channel names. */
        if (a->channel && (!*a->channel || strlen(a->channel) > 63)) {
                store_set_error(s, "flush: the notify channel must have 1 to 63 bytes");
                return -EINVAL;
        }
        for (size_t i = 0; i < a->n; i++) {
                const Fragment *x = &a->f[i];

                if (!x->controller_id || !x->outage_type || x->start > x->end || x->count > INT32_MAX ||
                    (x->n_uncertain > 0 && !x->uncertain)) {
                        store_set_error(s, "flush: fragment %zu is invalid", i);
                        return -EINVAL;
                }
        }
        for (size_t i = 0; i < a->nr; i++)
                if (a->rj[i].seq > INT64_MAX || a->rj[i].item > INT32_MAX) {
                        store_set_error(s, "flush: reject %zu is invalid", i);
                        return -EINVAL;
                }
        return 0;
}

/* Runs sql/flush_merge.sql. -EAGAIN when an event it keeps was deleted under it (by
 * outage.prune or an operator): the whole flush must run again with a fresh plan. */
static int flush_merge(Store *s) {
        PGresult *r = NULL;
        bool complete;
        int k;

        k = store_exec(s, "flush: merging", sql_flush_merge, 0, NULL, &r);
        if (k < 0)
                return k;
        complete = PQntuples(r) == 1 && streq(PQgetvalue(r, 0, 0), "t");
        PQclear(r);
        if (!complete) {
                store_set_error(s, "flush: merging: an event of the batch was deleted by another transaction");
                return -EAGAIN;
        }
        return 0;
}

StoreFlushResult *store_flush_result_free(StoreFlushResult *r) {
        free(r);
        return NULL;
}

static void store_flush_result_freep(StoreFlushResult **r) {
        store_flush_result_free(*r);
}

static StoreChange change_from_string(const char *k) {
        return streq(k, "created") ? STORE_CHANGE_CREATED :
               streq(k, "merged") ? STORE_CHANGE_MERGED :
               streq(k, "extended") ? STORE_CHANGE_EXTENDED : _STORE_CHANGE_INVALID;
}

/* Converts the rows of sql/flush_changes.sql into one allocation: the result, its events,
 * then their names. Sets *ret_notified when a row was notified. */
static int changes_from_rows(Store *s, PGresult *r, StoreFlushResult **ret, bool *ret_notified) {
        size_t n = (size_t) PQntuples(r), bytes = sizeof(StoreFlushResult) + n * sizeof(StoreEvent);
        StoreFlushResult *res;
        char *names;

        for (size_t i = 0; i < n; i++)
                bytes += strlen(PQgetvalue(r, (int) i, 1)) + strlen(PQgetvalue(r, (int) i, 2)) + 2;
        res = calloc(1, bytes);
        if (!res)
                return -ENOMEM;
        res->n = n;
        res->events = (StoreEvent *) (res + 1);
        names = (char *) (res->events + n);
        for (size_t i = 0; i < n; i++) {
                StoreEvent *e = &res->events[i];
                int row = (int) i;
                int64_t count = -1;

                if (parse_i64(PQgetvalue(r, row, 0), &e->event_id) < 0 ||
                    parse_i64(PQgetvalue(r, row, 3), &e->start) < 0 ||
                    parse_i64(PQgetvalue(r, row, 4), &e->end) < 0 ||
                    parse_i64(PQgetvalue(r, row, 5), &count) < 0 || count < 0 ||
                    (e->change = change_from_string(PQgetvalue(r, row, 7))) < 0) {
                        free(res);
                        store_set_error(s, "flush: reading the changed events: bad value");
                        return -EIO;
                }
                e->report_count = (uint64_t) count;
                e->latest = streq(PQgetvalue(r, row, 6), "t");
                if (streq(PQgetvalue(r, row, 8), "t"))
                        *ret_notified = true;
                e->controller_id = names;
                names = stpcpy(names, PQgetvalue(r, row, 1)) + 1;
                e->outage_type = names;
                names = stpcpy(names, PQgetvalue(r, row, 2)) + 1;
        }
        *ret = res;
        return 0;
}

/* Runs sql/flush_changes.sql: the NOTIFY, and the changed events when asked for. */
static int flush_changes(Store *s, const FlushArgs *a, StoreFlushResult **ret, bool *ret_notified) {
        const char *params[1] = { a->channel };
        PGresult *r = NULL;
        int k;

        k = store_exec(s, "flush: reading the changed events", sql_flush_changes, 1, params, &r);
        if (k < 0)
                return k;
        k = changes_from_rows(s, r, ret, ret_notified);
        PQclear(r);
        if (k < 0)
                return k;
        if (!a->want_changes)
                *ret = store_flush_result_free(*ret);
        return 0;
}

static int flush_rejects(Store *s, const FlushArgs *a) {
        int r;

        r = flush_build_rejects(s, a->rj, a->nr, a->instance);
        r = r ?: store_copy(s, "flush: sending rejects",
                            "COPY pg_temp.outaged_reject (n, received_at, topic, controller_id, reason,"
                            " detail, payload, src_instance, src_seq, src_item) FROM STDIN");
        return r ?: store_exec(s, "flush: storing rejects", sql_flush_rejects, 0, NULL, NULL);
}

static int flush_checkpoint(Store *s, const FlushArgs *a) {
        char num[32], id[32];
        const char *params[3] = { a->instance, num, id };

        (void) snprintf(num, sizeof(num), "%" PRIu64, a->seq);
        (void) snprintf(id, sizeof(id), "%" PRIu64, a->flush_id);
        return store_exec(s, "flush: recording the checkpoint",
                          "INSERT INTO outage.checkpoints (instance, seq, flush_id, updated_at)"
                          " VALUES ($1, $2::bigint, $3::bigint, now())"
                          " ON CONFLICT (instance) DO UPDATE SET seq = EXCLUDED.seq,"
                          " flush_id = EXCLUDED.flush_id, updated_at = now()",
                          3, params, NULL);
}

/* One attempt. On success *ret_changes is set when asked for (an empty result when there
 * were no fragments). */
static int flush_once(Store *s, const FlushArgs *a, StoreFlushResult **ret_changes) {
        _cleanup_(store_flush_result_freep) StoreFlushResult *changes = NULL;
        bool notified = false;
        int r;

        r = flush_begin(s, a->instance);
        if (r < 0)
                return r;
        if (a->n > 0) {
                r = flush_build_fragments(s, a->f, a->n);
                r = r ?: store_copy(s, "flush: sending fragments",
                                    "COPY pg_temp.outaged_frag (fid, ctrl, otype, s, e, cnt, unc) FROM STDIN");
                r = r ?: flush_merge(s);
                if (r == 0 && (a->channel || a->want_changes))
                        r = flush_changes(s, a, &changes, &notified);
                if (r < 0)
                        return r;
        }
        if (a->nr > 0) {
                r = flush_rejects(s, a);
                if (r < 0)
                        return r;
        }
        if (a->instance) {
                r = flush_checkpoint(s, a);
                if (r < 0)
                        return r;
        }
        if (a->want_changes && !changes) {
                /* Before the COMMIT: once committed, the flush must not report a failure. */
                changes = calloc(1, sizeof(*changes));
                if (!changes)
                        return -ENOMEM;
        }
        r = store_exec(s, "flush: COMMIT", "COMMIT", 0, NULL, NULL);
        /* The queue is checked when the notifications are queued, at commit (54000). */
        if (r == -EIO && notified && streq(s->sqlstate, "54000"))
                return -ENOBUFS;
        if (r < 0)
                return r;
        if (a->want_changes)
                *ret_changes = TAKE_PTR(changes);
        return 0;
}

static void backoff_sleep(Store *s, int attempt) {
        /* 2, 4, 8 ... ms plus jitter, so two writers that collided do not collide again. */
        unsigned ms = (2u << attempt) + (unsigned) rand_r(&s->rand_state) % (2u << attempt);
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };

        (void) nanosleep(&ts, NULL);
}

int store_flush(Store *s, const Fragment *f, size_t n, const RejectRow *r, size_t nr,
                const char *instance, uint64_t seq, uint64_t flush_id,
                const char *notify_channel, StoreFlushResult **ret_changes) {
        const FlushArgs a = {
                .f = f, .n = n, .rj = r, .nr = nr,
                .instance = instance, .seq = seq, .flush_id = flush_id,
                .channel = notify_channel, .want_changes = ret_changes != NULL,
        };
        int k;

        if (!s)
                return -EINVAL;
        k = flush_check(s, &a);
        if (k < 0)
                return k;
        if (s->broken)
                return -ECONNRESET;
        if (!s->temp_ready) {
                k = store_exec(s, "flush: creating temp tables", sql_flush_tables, 0, NULL, NULL);
                if (k < 0)
                        return k == -EAGAIN ? -EIO : k;
                s->temp_ready = true;
        }
        for (int attempt = 0;; attempt++) {
                k = flush_once(s, &a, ret_changes);
                if (k >= 0)
                        break;
                store_rollback(s);
                if (k != -EAGAIN)
                        break;
                if (attempt + 1 >= FLUSH_ATTEMPTS) {
                        k = -EIO;
                        break;
                }
                backoff_sleep(s, attempt);
        }
        if (s->cap > 16u << 20) {
                /* Do not keep the buffer of one huge batch for the life of the process. */
                free(s->buf);
                s->buf = NULL;
                s->len = s->cap = 0;
        }
        return k < 0 ? k : 0;
}

/* ---- rejects read back (--republish-rejects) ---- */

int store_read_rejects(Store *s, const char *condition, store_reject_cb cb, void *userdata) {
        _cleanup_free_ char *sql = NULL;
        PGresult *r = NULL;
        int k, n;

        if (!s || !condition || !*condition || !cb)
                return -EINVAL;
        /* The condition is the operator's SQL: a read-only transaction keeps it from
         * changing anything, whatever it says. */
        if (asprintf(&sql, "SELECT reject_id, topic, payload FROM outage.rejects WHERE (%s) ORDER BY reject_id",
                     condition) < 0)
                return -ENOMEM;
        k = store_exec(s, "reading rejects", "BEGIN READ ONLY", 0, NULL, NULL);
        if (k == 0) {
                /* The extended protocol runs one statement only: a condition cannot end the
                 * read-only transaction and go on with another. */
                r = PQexecParams(s->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
                if (PQresultStatus(r) != PGRES_TUPLES_OK) {
                        k = store_fail(s, r, "reading rejects");
                        r = NULL;
                }
        }
        if (k < 0) {
                store_rollback(s);
                return k == -EAGAIN ? -EIO : k;
        }
        n = PQntuples(r);
        for (int i = 0; i < n && k >= 0; i++) {
                int64_t id;

                if (parse_i64(PQgetvalue(r, i, 0), &id) < 0) {
                        store_set_error(s, "reading rejects: bad reject_id");
                        k = -EIO;
                        break;
                }
                k = cb(id, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), userdata);
        }
        PQclear(r);
        store_rollback(s);
        return k < 0 ? k : n;
}

/* ---- the latest event of each key still open (live events at start-up) ---- */

int store_load_latest(Store *s, usec_t since, store_latest_cb cb, void *userdata) {
        char ts[TS_MAX];
        const char *params[1] = { ts };
        PGresult *r = NULL;
        int k, n;

        if (!s || !cb || format_ts(ts, since) < 0)
                return -EINVAL;
        /* A key's latest event ends at or after since exactly when it has one there: the
         * overlap with [since, inf) reaches the GiST index, DISTINCT ON keeps the latest. */
        k = store_exec(s, "loading the latest events",
                       "SELECT DISTINCT ON (e.controller, e.otype) e.event_id, c.name, t.name,"
                       " (extract(epoch FROM e.start_time) * 1000000)::bigint,"
                       " (extract(epoch FROM e.end_time) * 1000000)::bigint, e.report_count"
                       " FROM outage.stored_events e"
                       " JOIN outage.controllers c ON c.id = e.controller"
                       " JOIN outage.outage_types t ON t.id = e.otype"
                       " WHERE tstzrange(e.start_time, e.end_time, '[]') && tstzrange($1::timestamptz, NULL, '[]')"
                       " ORDER BY e.controller, e.otype, e.end_time DESC",
                       1, params, &r);
        if (k < 0)
                return k == -EAGAIN ? -EIO : k;
        n = PQntuples(r);
        for (int i = 0; i < n && k >= 0; i++) {
                int64_t id, a, b, cnt;
                StoreEvent ev;

                if (parse_i64(PQgetvalue(r, i, 0), &id) < 0 || parse_i64(PQgetvalue(r, i, 3), &a) < 0 ||
                    parse_i64(PQgetvalue(r, i, 4), &b) < 0 || parse_i64(PQgetvalue(r, i, 5), &cnt) < 0) {
                        store_set_error(s, "loading the latest events: bad value");
                        k = -EIO;
                        break;
                }
                ev = (StoreEvent) {
                        .event_id = id,
                        .controller_id = PQgetvalue(r, i, 1),
                        .outage_type = PQgetvalue(r, i, 2),
                        .start = a,
                        .end = b,
                        .report_count = (uint64_t) cnt,
                        .latest = true,
                        .change = STORE_CHANGE_EXTENDED,
                };
                k = cb(&ev, userdata);
        }
        PQclear(r);
        return k < 0 ? k : n;
}
