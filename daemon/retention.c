/* retention.c — outage.prune on a thread of its own (retention.h). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>

#include "retention.h"
#include "store.h"

struct Retention {
        char *conninfo, *password;
        int efd;
        pthread_t thread;
        bool running;                   /* a thread was started and not joined */
        usec_t events_before, rejects_before;
        RetentionResult result;         /* written by the thread before it signals efd */
};

int retention_new(const char *conninfo, const char *password, Retention **ret) {
        Retention *r = calloc(1, sizeof(*r));

        if (!r)
                return -ENOMEM;
        r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        r->conninfo = strdup(conninfo);
        r->password = password ? strdup(password) : NULL;
        if (r->efd < 0 || !r->conninfo || (password && !r->password)) {
                int e = r->efd < 0 ? -errno : -ENOMEM;

                if (r->efd >= 0)
                        close(r->efd);
                free(r->conninfo);
                free(r->password);
                free(r);
                return e;
        }
        *ret = r;
        return 0;
}

static void *run(void *userdata) {
        Retention *r = userdata;
        RetentionResult *res = &r->result;
        uint64_t one = 1;
        Store *st = NULL;

        *res = (RetentionResult) {};
        res->result = store_connect(r->conninfo, r->password, &st, res->error, sizeof(res->error));
        if (res->result >= 0) {
                res->result = store_prune(st, r->events_before, r->rejects_before, &res->events, &res->rejects);
                if (res->result < 0)
                        snprintf(res->error, sizeof(res->error), "%s", store_error(st));
                store_free(st);
        }
        (void) !write(r->efd, &one, sizeof(one));
        return NULL;
}

int retention_start(Retention *r, usec_t events_before, usec_t rejects_before) {
        sigset_t all, old;
        int e;

        if (r->running)
                return -EBUSY;
        r->events_before = events_before;
        r->rejects_before = rejects_before;
        /* The thread must not take the signals the main loop reads from its signalfd. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        e = pthread_create(&r->thread, NULL, run, r);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e != 0)
                return -e;
        r->running = true;
        return 0;
}

int retention_fd(const Retention *r) {
        return r->efd;
}

int retention_collect(Retention *r, RetentionResult *ret) {
        uint64_t v;

        if (!r->running || read(r->efd, &v, sizeof(v)) != sizeof(v))
                return 0;
        pthread_join(r->thread, NULL);
        r->running = false;
        *ret = r->result;
        return 1;
}

Retention *retention_free(Retention *r) {
        if (!r)
                return NULL;
        if (r->running)
                pthread_join(r->thread, NULL);
        close(r->efd);
        if (r->password)
                explicit_bzero(r->password, strlen(r->password));
        free(r->conninfo);
        free(r->password);
        free(r);
        return NULL;
}
