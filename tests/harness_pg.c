/* harness_pg.c — a throwaway PostgreSQL for tests: initdb into a temporary directory, a
 * server listening only on a unix socket there (fsync off), database "outages". Runs the
 * server as the postgres system user when the tests run as root (PostgreSQL refuses root).
 * Self-contained: does not depend on harness_proc.c. Tests only. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PG_FALLBACK_BINDIR "/usr/lib/postgresql/15/bin"

static void pgh_sleep_ms(int ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static bool is_executable(const char *dir, const char *name) {
        char p[4096];

        if (strlen(dir) + strlen(name) + 2 > sizeof(p))
                return false;
        (void) snprintf(p, sizeof(p), "%.2000s/%.2000s", dir, name);
        return access(p, X_OK) == 0;
}

/* The directory holding initdb and postgres: pg_config --bindir, else the Debian path. */
static const char *pg_bindir(void) {
        static char dir[1024];
        FILE *f;

        if (dir[0])
                return dir;
        f = popen("pg_config --bindir 2>/dev/null", "r");
        if (f) {
                if (fgets(dir, sizeof(dir), f))
                        dir[strcspn(dir, "\n")] = '\0';
                (void) pclose(f);
        }
        if (!dir[0] || !is_executable(dir, "initdb") || !is_executable(dir, "postgres"))
                (void) snprintf(dir, sizeof(dir), "%s", PG_FALLBACK_BINDIR);
        return dir;
}

/* The uid/gid to run the server as: the postgres user when we are root, else ourselves. */
static int pg_identity(uid_t *uid, gid_t *gid) {
        struct passwd *pw;

        *uid = geteuid();
        *gid = getegid();
        if (*uid != 0)
                return 0;
        pw = getpwnam("postgres");
        if (!pw) {
                fprintf(stderr, "harness_pg: running as root and there is no postgres user\n");
                return -1;
        }
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
        return 0;
}

/* Starts argv with stdout/stderr appended to log, as the server's identity. */
static pid_t pg_spawn(char *const argv[], const char *log) {
        uid_t uid;
        gid_t gid;
        pid_t pid;

        if (pg_identity(&uid, &gid) < 0)
                return -1;
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

                if (fd < 0 || null < 0)
                        _exit(127);
                (void) dup2(null, 0);
                (void) dup2(fd, 1);
                (void) dup2(fd, 2);
                (void) setpgid(0, 0);   /* a ^C in the test terminal must not hit it first */
                if (geteuid() == 0 && (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0))
                        _exit(126);
                (void) unsetenv("PGDATA");
                execv(argv[0], argv);
                _exit(127);
        }
        return pid;
}

static int pg_wait_exit(pid_t pid, int timeout_ms) {
        int st;

        for (int waited = 0;; waited += 10) {
                pid_t r = waitpid(pid, &st, WNOHANG);

                if (r == pid)
                        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                if (r < 0)
                        return -1;
                if (waited >= timeout_ms)
                        return -2;
                pgh_sleep_ms(10);
        }
}

static void dump_log(const char *path) {
        char line[1024];
        FILE *f = fopen(path, "re");

        if (!f)
                return;
        while (fgets(line, sizeof(line), f))
                fprintf(stderr, "  | %s", line);
        fclose(f);
}

static char *conninfo_for(const PgServer *s, const char *db) {
        char *c = NULL;

        if (asprintf(&c, "host=%s port=%d dbname=%s user=postgres", s->dir, s->port, db) < 0)
                return NULL;
        return c;
}

static int pg_launch(PgServer *s) {
        char bin[1100], data[4200], log[4200], port[16], sock[4200];
        char *argv[] = { bin, "-D", data, "-k", s->dir, "-p", port,
                         "-c", "listen_addresses=", "-c", "fsync=off",
                         "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                         "-c", "max_connections=60", "-c", "shared_buffers=128MB",
                         "-c", "maintenance_work_mem=256MB", "-c", "max_wal_size=2GB",
                         "-c", "log_min_messages=warning", NULL };
        char *ci;

        (void) snprintf(bin, sizeof(bin), "%s/postgres", pg_bindir());
        (void) snprintf(data, sizeof(data), "%s/data", s->dir);
        (void) snprintf(log, sizeof(log), "%s/postgres.log", s->dir);
        (void) snprintf(port, sizeof(port), "%d", s->port);
        (void) snprintf(sock, sizeof(sock), "%s/.s.PGSQL.%d", s->dir, s->port);
        if (strlen(sock) >= 108) {
                fprintf(stderr, "harness_pg: socket path too long: %s\n", sock);
                return -1;
        }
        s->pid = pg_spawn(argv, log);
        if (s->pid < 0)
                return -1;
        ci = conninfo_for(s, "postgres");
        if (!ci)
                return -1;
        for (int waited = 0; waited < 60000; waited += 50) {
                if (PQping(ci) == PQPING_OK) {
                        free(ci);
                        return 0;
                }
                if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
                        s->pid = 0;
                        break;
                }
                pgh_sleep_ms(50);
        }
        free(ci);
        fprintf(stderr, "harness_pg: postgres did not start; its log:\n");
        dump_log(log);
        return -1;
}

static void pg_rm_rf(const char *path) {
        DIR *d = opendir(path);
        struct dirent *e;

        if (!d) {
                (void) unlink(path);
                return;
        }
        while ((e = readdir(d))) {
                char p[4400];
                struct stat st;

                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                        continue;
                (void) snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
                if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                        pg_rm_rf(p);
                else
                        (void) unlink(p);
        }
        closedir(d);
        (void) rmdir(path);
}

int pg_server_start(PgServer *s) {
        const char *tmp = getenv("TMPDIR");
        char tmpl[4096], bin[1100], data[4200], log[4200];
        char *argv[] = { bin, "-D", data, "--auth=trust", "-N", "-U", "postgres",
                         "-E", "UTF8", "--locale=C.UTF-8", NULL };
        uid_t uid;
        gid_t gid;
        pid_t pid;
        int r;

        memset(s, 0, sizeof(*s));
        /* Keep the path short: the socket lives in it (108 bytes at most). */
        if (!tmp || !*tmp || strlen(tmp) > 60)
                tmp = "/tmp";
        (void) snprintf(tmpl, sizeof(tmpl), "%s/outaged-pg-XXXXXX", tmp);
        if (!mkdtemp(tmpl)) {
                perror("harness_pg: mkdtemp");
                return -1;
        }
        s->dir = strdup(tmpl);
        if (!s->dir || pg_identity(&uid, &gid) < 0 || chmod(s->dir, 0755) < 0 ||
            chown(s->dir, uid, gid) < 0) {
                fprintf(stderr, "harness_pg: cannot prepare %s\n", tmpl);
                pg_server_stop(s);
                return -1;
        }
        (void) snprintf(bin, sizeof(bin), "%s/initdb", pg_bindir());
        (void) snprintf(data, sizeof(data), "%s/data", s->dir);
        (void) snprintf(log, sizeof(log), "%s/initdb.log", s->dir);
        pid = pg_spawn(argv, log);
        r = pid < 0 ? -1 : pg_wait_exit(pid, 120000);
        if (r != 0) {
                fprintf(stderr, "harness_pg: initdb failed (%d); its log:\n", r);
                dump_log(log);
                pg_server_stop(s);
                return -1;
        }
        /* Only the socket names the port: any value works, make it vary for readability. */
        s->port = 20000 + (int) (getpid() % 30000);
        if (pg_launch(s) < 0) {
                pg_server_stop(s);
                return -1;
        }
        s->conninfo = conninfo_for(s, "outages");
        {
                char *ci = conninfo_for(s, "postgres");

                r = !ci || !s->conninfo ? -1 : pg_exec(ci, "CREATE DATABASE outages");
                free(ci);
        }
        if (r < 0) {
                pg_server_stop(s);
                return -1;
        }
        return 0;
}

static int pg_shutdown(PgServer *s) {
        int r;

        if (s->pid <= 0)
                return 0;
        (void) kill(s->pid, SIGINT);            /* fast shutdown */
        r = pg_wait_exit(s->pid, 60000);
        if (r == -2) {
                (void) kill(s->pid, SIGQUIT);
                r = pg_wait_exit(s->pid, 10000);
        }
        s->pid = 0;
        return r < 0 ? -1 : 0;
}

int pg_server_pause(PgServer *s) {
        return pg_shutdown(s);
}

int pg_server_resume(PgServer *s) {
        if (s->pid > 0)
                return 0;
        return pg_launch(s);
}

void pg_server_stop(PgServer *s) {
        if (!s)
                return;
        (void) pg_shutdown(s);
        if (s->dir)
                pg_rm_rf(s->dir);
        free(s->dir);
        free(s->conninfo);
        s->dir = s->conninfo = NULL;
}

char *pg_query_value(const char *conninfo, const char *sql) {
        PGconn *c = PQconnectdb(conninfo);
        PGresult *r;
        char *v = NULL;

        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "harness_pg: connect: %s", PQerrorMessage(c));
                PQfinish(c);
                return NULL;
        }
        r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
                fprintf(stderr, "harness_pg: %s: %s", sql, PQresultErrorMessage(r));
        else if (PQntuples(r) > 0 && PQnfields(r) > 0 && !PQgetisnull(r, 0, 0))
                v = strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        PQfinish(c);
        return v;
}

int pg_exec(const char *conninfo, const char *sql) {
        PGconn *c = PQconnectdb(conninfo);
        PGresult *r;
        int ret = 0;

        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "harness_pg: connect: %s", PQerrorMessage(c));
                PQfinish(c);
                return -1;
        }
        r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
                fprintf(stderr, "harness_pg: %.200s: %s", sql, PQresultErrorMessage(r));
                ret = -1;
        }
        PQclear(r);
        PQfinish(c);
        return ret;
}
