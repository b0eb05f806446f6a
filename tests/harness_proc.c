/* harness_proc.c — child processes for the tests: run a program and capture its output
 * with a timeout, or start one in the background in its own process group. Also small
 * file-system helpers. Tests only: failures are reported on stderr. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(int ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* environ with the "K=V" entries of extra added, replacing any entry with the same K.
 * The strings are borrowed; only the array is allocated. */
static char **env_merge(char *const extra[]) {
        size_t n = 0, m = 0, o = 0;
        char **env;

        while (environ[n])
                n++;
        while (extra && extra[m])
                m++;
        env = calloc(n + m + 1, sizeof(char *));
        if (!env)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                const char *eq = strchr(environ[i], '=');
                size_t klen = eq ? (size_t) (eq - environ[i]) : strlen(environ[i]);
                bool replaced = false;

                for (size_t j = 0; j < m && !replaced; j++)
                        replaced = strncmp(extra[j], environ[i], klen) == 0 && extra[j][klen] == '=';
                if (!replaced)
                        env[o++] = environ[i];
        }
        for (size_t j = 0; j < m; j++)
                env[o++] = extra[j];
        return env;
}

/* In the child: stdin from /dev/null, stdout and stderr as given, then execve. On
 * failure writes errno to errfd (close-on-exec, so the parent reads EOF on success). */
static _Noreturn void child_exec(char *const argv[], char **env, int out, int err, int errfd) {
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 ||
            dup2(err, STDERR_FILENO) < 0)
                goto fail;
        /* The test runner may have blocked or ignored signals; the daemon expects defaults. */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        execve(argv[0], argv, env);
fail:;
        int e = errno;
        if (errfd >= 0)
                (void) !write(errfd, &e, sizeof e);
        _exit(127);
}

/* Reads what is available on fd into *buf (at most cap bytes kept, the rest discarded).
 * Returns false at EOF or error. */
static bool drain(int fd, char *buf, size_t cap, size_t *len) {
        char tmp[4096];
        ssize_t n = read(fd, tmp, sizeof tmp);

        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return true;
        if (n <= 0)
                return false;
        if (*len < cap) {
                size_t take = (size_t) n < cap - *len ? (size_t) n : cap - *len;
                memcpy(buf + *len, tmp, take);
                *len += take;
        }
        return true;
}

static int exit_code(int status) {
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return -1;
}

/* Waits for the exec to succeed (EOF on errfd) or fail (errno on errfd). */
static int exec_result(int errfd) {
        int e = 0;
        ssize_t n;

        do
                n = read(errfd, &e, sizeof e);
        while (n < 0 && errno == EINTR);
        return n == sizeof e ? e : 0;
}

int proc_run(char *const argv[], char *const env[], char **ret_out, char **ret_err,
             size_t cap, int timeout_ms) {
        int po[2] = { -1, -1 }, pe[2] = { -1, -1 }, px[2] = { -1, -1 };
        char *out = NULL, *err = NULL, **fullenv = NULL;
        size_t lo = 0, le = 0;
        int status, ret = -1, e;
        int64_t deadline;
        pid_t pid;

        out = malloc(cap + 1);
        err = malloc(cap + 1);
        fullenv = env_merge(env);
        if (!out || !err || !fullenv || pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 ||
            pipe2(px, O_CLOEXEC) < 0) {
                fprintf(stderr, "proc_run: setup failed: %m\n");
                goto finish;
        }
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "proc_run: fork: %m\n");
                goto finish;
        }
        if (pid == 0) {
                setsid();
                child_exec(argv, fullenv, po[1], pe[1], px[1]);
        }
        close(po[1]);
        close(pe[1]);
        close(px[1]);
        po[1] = pe[1] = px[1] = -1;
        e = exec_result(px[0]);
        if (e != 0) {
                waitpid(pid, NULL, 0);
                fprintf(stderr, "proc_run: cannot execute %s: %s\n", argv[0], strerror(e));
                goto finish;
        }

        deadline = now_ms() + timeout_ms;
        bool open_out = true, open_err = true, killed = false;
        while (open_out || open_err) {
                struct pollfd p[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
                int64_t left = deadline - now_ms();

                if (left <= 0) {
                        /* The whole group: a daemon may have started children of its own. */
                        kill(-pid, SIGKILL);
                        killed = true;
                        break;
                }
                if (!open_out)
                        p[0].fd = -1;
                if (!open_err)
                        p[1].fd = -1;
                if (poll(p, 2, (int) (left > 100 ? 100 : left)) < 0 && errno != EINTR)
                        break;
                if (open_out && (p[0].revents & (POLLIN | POLLHUP | POLLERR)))
                        open_out = drain(po[0], out, cap, &lo);
                if (open_err && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
                        open_err = drain(pe[0], err, cap, &le);
        }
        /* Both pipes at EOF but the child may still be running (it closed them). */
        while (!killed) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        goto reaped;
                if (now_ms() >= deadline) {
                        kill(-pid, SIGKILL);
                        break;
                }
                harness_sleep_ms(5);
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
reaped:
        ret = exit_code(status);
        out[lo] = '\0';
        err[le] = '\0';
        if (ret_out) {
                *ret_out = out;
                out = NULL;
        }
        if (ret_err) {
                *ret_err = err;
                err = NULL;
        }
finish:
        for (int i = 0; i < 2; i++) {
                if (po[i] >= 0)
                        close(po[i]);
                if (pe[i] >= 0)
                        close(pe[i]);
                if (px[i] >= 0)
                        close(px[i]);
        }
        free(out);
        free(err);
        free(fullenv);
        return ret;
}

pid_t proc_spawn(char *const argv[], char *const env[], const char *log_path) {
        char **fullenv = env_merge(env);
        int px[2] = { -1, -1 }, logfd, e;
        pid_t pid = -1;

        logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (!fullenv || logfd < 0 || pipe2(px, O_CLOEXEC) < 0) {
                fprintf(stderr, "proc_spawn: setup for %s failed: %m\n", log_path);
                goto finish;
        }
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "proc_spawn: fork: %m\n");
                goto finish;
        }
        if (pid == 0) {
                setsid();       /* a test can kill(-pid, ...) the whole group */
                child_exec(argv, fullenv, logfd, logfd, px[1]);
        }
        close(px[1]);
        px[1] = -1;
        e = exec_result(px[0]);
        if (e != 0) {
                waitpid(pid, NULL, 0);
                fprintf(stderr, "proc_spawn: cannot execute %s: %s\n", argv[0], strerror(e));
                pid = -1;
        }
finish:
        if (logfd >= 0)
                close(logfd);
        if (px[0] >= 0)
                close(px[0]);
        if (px[1] >= 0)
                close(px[1]);
        free(fullenv);
        return pid;
}

int proc_wait(pid_t pid, int timeout_ms) {
        int64_t deadline = now_ms() + timeout_ms;
        int status;

        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        return exit_code(status);
                if (w < 0 && errno != EINTR)
                        return -1;
                if (now_ms() >= deadline)
                        return -1;
                harness_sleep_ms(5);
        }
}

const char *harness_binary(void) {
        const char *p = getenv("OUTAGED_BINARY");

        return p && *p ? p : "./outaged";
}

const char *harness_source_root(void) {
        const char *p = getenv("OUTAGED_SOURCE_ROOT");

        return p && *p ? p : ".";
}

char *harness_mkdtemp(const char *prefix) {
        const char *tmp = getenv("TMPDIR");
        char *path;

        if (!tmp || !*tmp)
                tmp = "/tmp";
        if (asprintf(&path, "%s/%sXXXXXX", tmp, prefix ? prefix : "outaged-test-") < 0)
                return NULL;
        if (!mkdtemp(path) || chmod(path, 0755) < 0) {
                fprintf(stderr, "harness_mkdtemp: %s: %m\n", path);
                free(path);
                return NULL;
        }
        return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        if (remove(path) < 0 && errno != ENOENT)
                fprintf(stderr, "harness_rm_rf: %s: %m\n", path);
        return 0;
}

void harness_rm_rf(const char *path) {
        /* Refuse the obviously catastrophic. */
        if (!path || !*path || strcmp(path, "/") == 0)
                return;
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}
