/* flusher.c — the database writer thread: one job at a time, result via eventfd.
 * Backoff between failed jobs is the main loop's decision (it owns the timers and the
 * status line); this thread only reconnects when a job needs the connection. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>

#include "flusher.h"

struct Flusher {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        Store *store;
        char *conninfo;
        char *password;
        char *instance;
        FlushJob *pending;              /* submitted, not yet picked up */
        FlushJob *done;                 /* completed, not yet taken */
        bool busy;
        bool quit;
        _Atomic bool connected;
        int efd;
};

static int ensure_connected(Flusher *f, FlushJob *job) {
        char err[512];
        int r;

        if (f->store && store_connected(f->store))
                return 0;
        f->store = store_free(f->store);
        r = store_connect(f->conninfo, f->password, &f->store, err, sizeof(err));
        if (r < 0) {
                snprintf(job->error, sizeof(job->error), "%s", err);
                atomic_store(&f->connected, false);
                return r;
        }
        atomic_store(&f->connected, true);
        return 0;
}

/* After a lost connection, the checkpoint row tells whether this job's transaction
 * landed: it carries the flush_id of the last committed flush of this instance, and only
 * one job is ever outstanding. (The journal position alone cannot tell: two flushes may
 * cover the same position when memory filled in the middle of a message.) The read waits
 * for the instance's lock, which the old backend holds until its transaction ends (it may
 * still be committing, e.g. waiting for a synchronous standby): so the answer is final. */
static int resolve(Flusher *f, FlushJob *job) {
        uint64_t seq, id;
        int r;

        r = ensure_connected(f, job);
        if (r < 0)
                return -EAGAIN;
        r = store_resolve_checkpoint(f->store, f->instance, &seq, &id);
        if (r < 0) {
                snprintf(job->error, sizeof(job->error), "%s", store_error(f->store));
                return -EAGAIN;
        }
        return id == job->flush_id ? 1 : 0;
}

static void run_job(Flusher *f, FlushJob *job) {
        const FlushBatch *b = job->batch;
        int r;

        job->error[0] = '\0';
        if (job->ambiguous) {
                r = resolve(f, job);
                if (r != 0) {
                        job->result = r > 0 ? 0 : r;
                        return;
                }
                job->ambiguous = false;
        }

        r = ensure_connected(f, job);
        if (r < 0) {
                job->result = r;
                return;
        }
        r = store_flush(f->store, b ? b->fragments : NULL, b ? b->n : 0,
                        job->rejects, job->n_rejects, f->instance, job->seq, job->flush_id,
                        job->notify_channel, job->want_changes ? &job->changes : NULL);
        if (r == 0) {
                job->result = 0;
                return;
        }
        snprintf(job->error, sizeof(job->error), "%s", store_error(f->store));
        if (r != -ECONNRESET) {
                job->result = r;
                return;
        }

        /* The connection broke somewhere in the transaction: find out whether it
         * committed before anyone retries it. */
        atomic_store(&f->connected, false);
        job->ambiguous = true;
        r = resolve(f, job);
        if (r < 0) {
                job->result = -EAGAIN;
                return;
        }
        job->ambiguous = false;
        job->result = r > 0 ? 0 : -ECONNRESET;
}

static void *thread_main(void *userdata) {
        Flusher *f = userdata;

        pthread_mutex_lock(&f->lock);
        for (;;) {
                FlushJob *job;
                uint64_t one = 1;
                usec_t t0;

                while (!f->pending && !f->quit)
                        pthread_cond_wait(&f->cond, &f->lock);
                if (f->quit)
                        break;
                job = f->pending;
                f->pending = NULL;
                pthread_mutex_unlock(&f->lock);

                t0 = now_monotonic();
                run_job(f, job);
                job->duration = now_monotonic() - t0;

                pthread_mutex_lock(&f->lock);
                f->done = job;
                (void) !write(f->efd, &one, sizeof(one));
        }
        pthread_mutex_unlock(&f->lock);
        return NULL;
}

int flusher_new(Store *store, const char *conninfo, const char *password, const char *instance,
                Flusher **ret) {
        Flusher *f = calloc(1, sizeof(*f));
        int r;

        if (!f)
                return -ENOMEM;
        f->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        f->conninfo = strdup(conninfo);
        f->password = password ? strdup(password) : NULL;
        f->instance = strdup(instance);
        if (f->efd < 0 || !f->conninfo || !f->instance || (password && !f->password)) {
                r = f->efd < 0 ? -errno : -ENOMEM;
                goto fail;
        }
        pthread_mutex_init(&f->lock, NULL);
        pthread_cond_init(&f->cond, NULL);
        f->store = store;
        atomic_store(&f->connected, store && store_connected(store));
        r = -pthread_create(&f->thread, NULL, thread_main, f);
        if (r < 0) {
                f->store = NULL;        /* not taken on failure */
                pthread_mutex_destroy(&f->lock);
                pthread_cond_destroy(&f->cond);
                goto fail;
        }
        *ret = f;
        return 0;
fail:
        if (f->efd >= 0)
                close(f->efd);
        free(f->conninfo);
        free(f->password);
        free(f->instance);
        free(f);
        return r;
}

Flusher *flusher_free(Flusher *f) {
        if (!f)
                return NULL;
        pthread_mutex_lock(&f->lock);
        f->quit = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->thread, NULL);
        store_free(f->store);
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->cond);
        close(f->efd);
        if (f->password)
                explicit_bzero(f->password, strlen(f->password));
        free(f->conninfo);
        free(f->password);
        free(f->instance);
        free(f);
        return NULL;
}

int flusher_fd(const Flusher *f) {
        return f->efd;
}

int flusher_submit(Flusher *f, FlushJob *job) {
        pthread_mutex_lock(&f->lock);
        if (f->busy) {
                pthread_mutex_unlock(&f->lock);
                return -EBUSY;
        }
        f->busy = true;
        f->pending = job;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
        return 0;
}

FlushJob *flusher_take(Flusher *f) {
        FlushJob *job;
        uint64_t v;

        (void) !read(f->efd, &v, sizeof(v));
        pthread_mutex_lock(&f->lock);
        job = f->done;
        if (job) {
                f->done = NULL;
                f->busy = false;
        }
        pthread_mutex_unlock(&f->lock);
        return job;
}

bool flusher_connected(const Flusher *f) {
        return atomic_load(&((Flusher *) f)->connected);
}
