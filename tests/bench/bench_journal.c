/* bench_journal.c — appends per second into the write-ahead journal for 200-byte payloads,
 * with fdatasync every second (a second thread plays the main loop's sync timer) and after
 * every append. Prints one line per mode. Writes to a temporary directory it removes.
 *
 *   bench_journal [DIR [SECONDS]]      DIR default $TMPDIR or /var/tmp, SECONDS default 3 */
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "journal.h"

#define PAYLOAD_LEN 200
#define MAX_SAMPLES (1u << 24)

typedef struct Syncer {
        Journal *j;
        bool stop;              /* atomic */
        unsigned syncs;
        int error;
} Syncer;

static void *syncer_run(void *arg) {
        Syncer *s = arg;
        const struct timespec tick = { .tv_nsec = 10 * 1000 * 1000 };

        while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
                if (journal_sync_due(s->j, now_monotonic())) {
                        int r = journal_sync(s->j);
                        if (r < 0)
                                s->error = r;
                        s->syncs++;
                }
                (void) nanosleep(&tick, NULL);
        }
        return NULL;
}

static int cmp_usec(const void *a, const void *b) {
        usec_t x = *(const usec_t *) a, y = *(const usec_t *) b;
        return x < y ? -1 : x > y;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st; (void) flag; (void) ftw;
        return remove(path);
}

static int run(const char *dir, usec_t sync_interval, usec_t duration) {
        Journal *j = NULL;
        Syncer s = {};
        pthread_t t;
        uint8_t payload[PAYLOAD_LEN];
        usec_t *lat = malloc(MAX_SAMPLES * sizeof(usec_t));
        size_t n = 0;
        usec_t start, end, now;
        uint64_t seq;
        int r;

        if (!lat)
                return -ENOMEM;
        for (size_t i = 0; i < sizeof(payload); i++)
                payload[i] = (uint8_t) ('a' + i % 26);
        r = journal_open(dir, sync_interval, &j);
        if (r < 0) {
                free(lat);
                return r;
        }
        s.j = j;
        if (pthread_create(&t, NULL, syncer_run, &s) != 0) {
                journal_free(j);
                free(lat);
                return -EAGAIN;
        }

        start = now = now_monotonic();
        end = start + duration;
        while (now < end && n < MAX_SAMPLES) {
                usec_t t0 = now;
                r = journal_append(j, now_realtime(), "outages/ctrl_0012345", payload,
                                   sizeof(payload), &seq);
                if (r < 0)
                        break;
                now = now_monotonic();
                lat[n++] = now - t0;
        }
        __atomic_store_n(&s.stop, true, __ATOMIC_RELEASE);
        (void) pthread_join(t, NULL);
        if (r >= 0)
                r = journal_sync(j);
        if (r >= 0 && s.error < 0)
                r = s.error;
        if (r >= 0) {
                double secs = (double) (now - start) / USEC_PER_SEC;
                qsort(lat, n, sizeof(*lat), cmp_usec);
                printf("sync %-5s  %9.0f appends/s  %7.1f MiB/s  latency p50 %4" PRId64
                       " us  p99 %5" PRId64 " us  max %6" PRId64 " us  (%zu appends, %.1f s, "
                       "%" PRIu64 " MiB on disk, %u timer syncs)\n",
                       sync_interval == 0 ? "every" : "1s", n / secs,
                       (double) journal_disk_bytes(j) / secs / (1 << 20),
                       lat[n / 2], lat[n * 99 / 100], lat[n - 1], n, secs,
                       journal_disk_bytes(j) >> 20, s.syncs);
        }
        journal_free(j);
        free(lat);
        return r;
}

int main(int argc, char **argv) {
        const char *base = argc > 1 ? argv[1] : getenv("TMPDIR");
        usec_t duration = (argc > 2 ? atoi(argv[2]) : 3) * USEC_PER_SEC;
        const usec_t modes[] = { 0, USEC_PER_SEC };    /* fsync-bound first, before the
                                                          * other mode leaves writeback behind */
        char root[4096], dir[4200];
        int r = 0;

        if (!base || !*base)
                base = "/var/tmp";
        if (duration <= 0) {
                fprintf(stderr, "usage: bench_journal [DIR [SECONDS]]\n");
                return 64;
        }
        (void) snprintf(root, sizeof(root), "%s/bench-journal-XXXXXX", base);
        if (!mkdtemp(root)) {
                perror(root);
                return 1;
        }
        printf("journal: %d-byte payloads, %s\n", PAYLOAD_LEN, root);
        for (size_t i = 0; i < ELEMENTSOF(modes) && r >= 0; i++) {
                (void) snprintf(dir, sizeof(dir), "%s/j%zu", root, i);
                r = run(dir, modes[i], duration);
                if (r < 0)
                        fprintf(stderr, "bench_journal: %s\n", strerror(-r));
        }
        (void) nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        return r < 0 ? 1 : 0;
}
