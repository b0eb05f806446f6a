/* harness.h — test helpers: a throwaway PostgreSQL and mosquitto in temporary directories
 * on loopback, and child processes (the real daemon binary). Tests only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- harness_proc.c ---- */

/* Runs argv (argv[0] a path) with optional extra environment entries ("K=V", NULL-
 * terminated, may be NULL), stdin from /dev/null; captures stdout and stderr (each
 * truncated to cap bytes, NUL-terminated, caller frees). Returns the exit code, 128+signal
 * if killed, or -1 on failure to run. timeout_ms: kill with SIGKILL after this long. */
int proc_run(char *const argv[], char *const env[], char **ret_out, char **ret_err,
             size_t cap, int timeout_ms);

/* Starts argv in the background with extra environment; stdout and stderr go to log_path
 * (appended). Returns the pid or -1. */
pid_t proc_spawn(char *const argv[], char *const env[], const char *log_path);

/* Waits for pid up to timeout_ms. Returns the exit code, 128+signal, or -1 on timeout
 * (the process is left running). */
int proc_wait(pid_t pid, int timeout_ms);

/* Path of the built daemon ($OUTAGED_BINARY) and the source root. */
const char *harness_binary(void);
const char *harness_source_root(void);

/* Creates a temporary directory (mode 0755) under $TMPDIR or /tmp, returns it (static
 * storage is not used: caller frees). */
char *harness_mkdtemp(const char *prefix);

/* Removes a directory tree. */
void harness_rm_rf(const char *path);

/* Sleeps ms milliseconds. */
void harness_sleep_ms(int ms);

/* ---- harness_pg.c ---- */

typedef struct PgServer {
        char *dir;              /* data directory parent and socket directory */
        char *conninfo;         /* "host=<dir> port=<port> dbname=outages user=postgres" */
        int port;
        pid_t pid;
} PgServer;

/* initdb into a fresh temporary directory (as the postgres system user when running as
 * root), starts postgres listening only on a unix socket in that directory (fsync off), and
 * creates database "outages". Returns 0 or -1 (message on stderr). */
int pg_server_start(PgServer *s);

/* Stops the server (fast shutdown) but keeps its data; pg_server_resume starts it again. */
int pg_server_pause(PgServer *s);
int pg_server_resume(PgServer *s);

/* Stops the server and removes its directory. */
void pg_server_stop(PgServer *s);

/* Runs one SQL statement, returns the first column of the first row as a string (caller
 * frees; NULL when no row or on error, with the error on stderr). */
char *pg_query_value(const char *conninfo, const char *sql);

/* Runs SQL (several statements allowed), returns 0 on success, -1 on error. */
int pg_exec(const char *conninfo, const char *sql);

/* ---- harness_mqtt.c ---- */

typedef struct MqttBroker {
        char *dir;
        char *uri;              /* "tcp://127.0.0.1:<port>" */
        int port;
        pid_t pid;
} MqttBroker;

/* Starts mosquitto on a free loopback port with its own config in a temporary directory:
 * anonymous access, raised queue limits, persistence in that directory. Returns 0 or -1. */
int mqtt_broker_start(MqttBroker *b);
int mqtt_broker_pause(MqttBroker *b);   /* SIGTERM, keeps persistence */
int mqtt_broker_resume(MqttBroker *b);  /* same port, same persistence */
void mqtt_broker_stop(MqttBroker *b);

/* Publishes one message (QoS 1) and waits for its acknowledgement. Returns 0 or -1. */
int mqtt_publish(const MqttBroker *b, const char *topic, const void *payload, size_t len);

/* Publishes n messages (QoS 1) on one connection, waiting for all acknowledgements. */
int mqtt_publish_many(const MqttBroker *b, const char *const *topics,
                      const char *const *payloads, size_t n);

/* ---- harness_daemon.c ---- */

typedef struct Daemon {
        char *dir;              /* config, journal, log, notify socket */
        char *config_path;
        char *log_path;
        char *notify_path;
        int notify_fd;          /* our NOTIFY_SOCKET listener */
        pid_t pid;
        char last_status[512];
        const char *extra_env;  /* one more "K=V" for the next daemon_start, or NULL */
} Daemon;

/* Writes a config for the daemon into a fresh temporary directory: broker b, database
 * conninfo, client id, topic filter, plus extra INI text appended (may be NULL; sections
 * given there must not repeat those written here: [mqtt] [postgres] [aggregation]
 * [storage] [limits] [log] are written with the keys below, so pass extra keys through
 * the *_extra arguments of each section). */
typedef struct DaemonOptions {
        const char *client_id;
        const char *topic;
        const char *share_group;
        const char *conninfo;
        const char *mqtt_uri;
        const char *gap;                /* default 12min */
        const char *outage_types;
        const char *max_age;
        const char *max_payload;
        const char *max_batch_items;
        const char *max_events;
        const char *flush_interval;     /* default 100ms */
        const char *startup_timeout;    /* default 20s */
        const char *journal_dir;        /* default <dir>/journal */
        const char *ca_file;            /* TLS: default none */
        const char *batch_max;          /* default 10000 */
        const char *extra_sections;     /* INI text appended: sections not written above
                                         * ([events], [retention]); NULL: none */
} DaemonOptions;

int daemon_prepare(Daemon *d, const DaemonOptions *o);

/* Starts the binary with -c <config> and NOTIFY_SOCKET. Returns 0 or -1. */
int daemon_start(Daemon *d);

/* Waits for READY=1 on the notify socket (or the process exiting). Returns 0 when ready,
 * the exit code if it exited, -1 on timeout. */
int daemon_wait_ready(Daemon *d, int timeout_ms);

/* Reads notify messages until one contains needle, or timeout. Returns 0 or -1. */
int daemon_wait_notify(Daemon *d, const char *needle, int timeout_ms);

/* Waits for the daemon to exit by itself. Returns its exit code (128+signal if killed),
 * -1 on timeout (then it is left running). */
int daemon_wait_exit(Daemon *d, int timeout_ms);

/* Sends sig and waits for exit. Returns the exit code (128+signal if killed), -1 on timeout. */
int daemon_signal_wait(Daemon *d, int sig, int timeout_ms);

/* Kills if running and removes the directory (kept when OUTAGED_KEEP_TEST_DIRS is set). */
void daemon_cleanup(Daemon *d);

/* Prints the daemon's log to stderr (for failing tests). */
void daemon_dump_log(const Daemon *d);
