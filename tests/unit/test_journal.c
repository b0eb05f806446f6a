/* test_journal.c — the write-ahead journal: round trips, crash and damage recovery, trimming,
 * segment rolling, sequence bumps, locking, SIGKILL at random moments, and concurrent
 * append + trim. Runs on the local disk in temporary directories. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "journal.h"

/* ---- helpers ---- */

static char *tmp_root;          /* the temporary directory of one test */
static char jdir[512];          /* the journal directory inside it (created by open) */

static void setup(void) {
        const char *t = getenv("TMPDIR");
        char tmpl[512];

        (void) snprintf(tmpl, sizeof(tmpl), "%s/journal-test-XXXXXX", t && *t ? t : "/tmp");
        tmp_root = strdup(tmpl);
        cr_assert(tmp_root && mkdtemp(tmp_root));
        (void) snprintf(jdir, sizeof(jdir), "%s/state/journal", tmp_root);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st; (void) flag; (void) ftw;
        return remove(path);
}

static void teardown(void) {
        if (tmp_root)
                (void) nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(tmp_root);
        tmp_root = NULL;
}

TestSuite(journal, .init = setup, .fini = teardown, .timeout = 120);

typedef struct Rec {
        uint64_t seq;
        usec_t received_at;
        char *topic;
        uint8_t *payload;
        size_t len;
} Rec;

typedef struct Recs {
        Rec *v;
        size_t n, cap;
        int stop_after;         /* > 0: return -ECANCELED after this many */
} Recs;

static int collect(uint64_t seq, usec_t received_at, const char *topic, const void *payload,
                   size_t len, void *userdata) {
        Recs *rs = userdata;

        if (rs->stop_after > 0 && rs->n == (size_t) rs->stop_after)
                return -ECANCELED;
        if (rs->n == rs->cap) {
                rs->cap = rs->cap ? rs->cap * 2 : 64;
                rs->v = realloc(rs->v, rs->cap * sizeof(Rec));
                cr_assert(rs->v);
        }
        Rec *r = &rs->v[rs->n++];
        r->seq = seq;
        r->received_at = received_at;
        r->topic = strdup(topic);
        r->payload = malloc(len + 1);
        cr_assert(r->topic && r->payload);
        if (len > 0)
                memcpy(r->payload, payload, len);
        r->len = len;
        return 0;
}

static void recs_clear(Recs *rs) {
        for (size_t i = 0; i < rs->n; i++) {
                free(rs->v[i].topic);
                free(rs->v[i].payload);
        }
        free(rs->v);
        *rs = (Recs) {};
}

static Recs replay(Journal *j, uint64_t after) {
        Recs rs = {};
        int r = journal_replay(j, after, collect, &rs);
        cr_assert_eq(r, (int) rs.n, "replay returned %d for %zu records", r, rs.n);
        return rs;
}

static Journal *open_j(usec_t sync_interval) {
        Journal *j = NULL;
        int r = journal_open(jdir, sync_interval, &j);
        cr_assert_eq(r, 0, "journal_open: %s", strerror(-r));
        cr_assert_not_null(j);
        return j;
}

/* Deterministic content for record seq: a topic and a payload of varying length. */
static void content_for(uint64_t seq, char topic[64], uint8_t *payload, size_t *len) {
        (void) snprintf(topic, 64, "outages/ctrl_%" PRIu64, seq % 97);
        *len = (size_t) (seq * 7919 % 300);
        for (size_t i = 0; i < *len; i++)
                payload[i] = (uint8_t) (seq * 31 + i * 17);
}

static uint64_t append_seq_content(Journal *j, uint64_t expect_seq) {
        char topic[64];
        uint8_t payload[512];
        size_t len;
        uint64_t seq = 0;

        content_for(expect_seq, topic, payload, &len);
        cr_assert_eq(journal_append(j, (usec_t) expect_seq * 1000, topic, payload, len, &seq), 0);
        cr_assert_eq(seq, expect_seq);
        return seq;
}

static void check_content(const Rec *r) {
        char topic[64];
        uint8_t payload[512];
        size_t len;

        content_for(r->seq, topic, payload, &len);
        cr_assert_str_eq(r->topic, topic, "seq %" PRIu64, r->seq);
        cr_assert_eq(r->len, len, "seq %" PRIu64 " len %zu != %zu", r->seq, r->len, len);
        cr_assert(len == 0 || memcmp(r->payload, payload, len) == 0, "seq %" PRIu64, r->seq);
        cr_assert_eq(r->received_at, (usec_t) r->seq * 1000);
}

/* Segment files in jdir, sorted by first sequence number. Returns how many. */
static size_t list_segments(uint64_t *names, size_t max) {
        DIR *d = opendir(jdir);
        struct dirent *de;
        size_t n = 0;

        cr_assert_not_null(d);
        while ((de = readdir(d))) {
                uint64_t v;
                char tail[8];
                if (strlen(de->d_name) == 20 &&
                    sscanf(de->d_name, "%16" SCNx64 "%4s", &v, tail) == 2 &&
                    strcmp(tail, ".seg") == 0) {
                        cr_assert_lt(n, max);
                        names[n++] = v;
                }
        }
        (void) closedir(d);
        for (size_t i = 1; i < n; i++)
                for (size_t k = i; k > 0 && names[k - 1] > names[k]; k--) {
                        uint64_t t = names[k];
                        names[k] = names[k - 1];
                        names[k - 1] = t;
                }
        return n;
}

static void seg_path(char *buf, size_t size, uint64_t first_seq) {
        (void) snprintf(buf, size, "%s/%016" PRIx64 ".seg", jdir, first_seq);
}

static off_t file_size(const char *path) {
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s", path);
        return st.st_size;
}

/* ---- round trips ---- */

Test(journal, round_trip) {
        Journal *j = open_j(USEC_PER_SEC);
        uint8_t binary[256];
        char *long_topic = malloc(JOURNAL_TOPIC_MAX + 2);
        uint64_t seq;
        Recs rs;

        for (size_t i = 0; i < sizeof(binary); i++)
                binary[i] = (uint8_t) i;        /* NULs included */
        memset(long_topic, 't', JOURNAL_TOPIC_MAX);
        long_topic[JOURNAL_TOPIC_MAX] = '\0';

        cr_assert_eq(journal_last_seq(j), 0);
        cr_assert_eq(journal_append(j, 111, "outages/ctrl_1", "{\"a\":1}", 7, &seq), 0);
        cr_assert_eq(seq, 1);
        cr_assert_eq(journal_append(j, -5, "outages/bin", binary, sizeof(binary), &seq), 0);
        cr_assert_eq(seq, 2);
        cr_assert_eq(journal_append(j, 333, "outages/empty", NULL, 0, &seq), 0);
        cr_assert_eq(seq, 3);
        cr_assert_eq(journal_append(j, 444, "", "x", 1, &seq), 0);
        cr_assert_eq(seq, 4);
        cr_assert_eq(journal_append(j, 555, long_topic, "y", 1, &seq), 0);
        cr_assert_eq(seq, 5);
        cr_assert_eq(journal_last_seq(j), 5);
        cr_assert_gt(journal_disk_bytes(j), JOURNAL_TOPIC_MAX);

        /* Twice: in this process, and after reopening. */
        for (int pass = 0; pass < 2; pass++) {
                rs = replay(j, 0);
                cr_assert_eq(rs.n, 5);
                cr_assert_eq(rs.v[0].seq, 1);
                cr_assert_eq(rs.v[0].received_at, 111);
                cr_assert_str_eq(rs.v[0].topic, "outages/ctrl_1");
                cr_assert_eq(rs.v[0].len, 7);
                cr_assert(memcmp(rs.v[0].payload, "{\"a\":1}", 7) == 0);
                cr_assert_eq(rs.v[1].received_at, -5);
                cr_assert_eq(rs.v[1].len, sizeof(binary));
                cr_assert(memcmp(rs.v[1].payload, binary, sizeof(binary)) == 0);
                cr_assert_eq(rs.v[2].len, 0);
                cr_assert_str_eq(rs.v[2].topic, "outages/empty");
                cr_assert_str_eq(rs.v[3].topic, "");
                cr_assert_str_eq(rs.v[4].topic, long_topic);
                recs_clear(&rs);
                journal_free(j);
                j = open_j(USEC_PER_SEC);
                cr_assert_eq(journal_skipped_bytes(j), 0);
        }
        journal_free(j);
        free(long_topic);
}

Test(journal, limits) {
        Journal *j = open_j(USEC_PER_SEC);
        char *long_topic = malloc(JOURNAL_TOPIC_MAX + 2);
        uint64_t seq = 77;

        memset(long_topic, 't', JOURNAL_TOPIC_MAX + 1);
        long_topic[JOURNAL_TOPIC_MAX + 1] = '\0';
        cr_assert_eq(journal_append(j, 1, long_topic, "x", 1, &seq), -EMSGSIZE);
        /* The length is checked before the payload is touched. */
        cr_assert_eq(journal_append(j, 1, "t", "x", JOURNAL_PAYLOAD_MAX + 1, &seq), -EMSGSIZE);
        cr_assert_eq(journal_append(j, 1, NULL, "x", 1, &seq), -EINVAL);
        cr_assert_eq(journal_append(j, 1, "t", NULL, 1, &seq), -EINVAL);
        cr_assert_eq(seq, 77, "ret_seq untouched on failure");
        cr_assert_eq(journal_append(j, 1, "t", "x", 1, &seq), 0);
        cr_assert_eq(seq, 1, "failed appends use no sequence number");
        free(long_topic);
        journal_free(j);
}

Test(journal, replay_after_position) {
        Journal *j = open_j(USEC_PER_SEC);
        Recs rs;

        for (uint64_t s = 1; s <= 10; s++)
                append_seq_content(j, s);
        rs = replay(j, 4);
        cr_assert_eq(rs.n, 6);
        for (size_t i = 0; i < rs.n; i++) {
                cr_assert_eq(rs.v[i].seq, 5 + i);
                check_content(&rs.v[i]);
        }
        recs_clear(&rs);
        rs = replay(j, 10);
        cr_assert_eq(rs.n, 0);
        rs = replay(j, 1000);
        cr_assert_eq(rs.n, 0);

        /* A negative return from the callback stops the replay and is returned. */
        rs.stop_after = 3;
        cr_assert_eq(journal_replay(j, 0, collect, &rs), -ECANCELED);
        cr_assert_eq(rs.n, 3);
        recs_clear(&rs);
        journal_free(j);
}

Test(journal, reopen_continues_sequence) {
        Journal *j = open_j(USEC_PER_SEC);
        Recs rs;

        for (uint64_t s = 1; s <= 5; s++)
                append_seq_content(j, s);
        journal_free(j);
        j = open_j(0);
        cr_assert_eq(journal_last_seq(j), 5);
        append_seq_content(j, 6);
        journal_free(j);
        j = open_j(USEC_PER_SEC);
        rs = replay(j, 0);
        cr_assert_eq(rs.n, 6);
        for (size_t i = 0; i < rs.n; i++) {
                cr_assert_eq(rs.v[i].seq, i + 1);
                check_content(&rs.v[i]);
        }
        recs_clear(&rs);
        journal_free(j);
}

/* ---- damage ---- */

static void check_contiguous(Journal *j, uint64_t from, uint64_t to) {
        Recs rs = replay(j, from - 1);
        cr_assert_eq(rs.n, to - from + 1, "replayed %zu, expected %" PRIu64 "..%" PRIu64,
                     rs.n, from, to);
        for (size_t i = 0; i < rs.n; i++) {
                cr_assert_eq(rs.v[i].seq, from + i);
                check_content(&rs.v[i]);
        }
        recs_clear(&rs);
}

Test(journal, torn_tail_is_cut) {
        Journal *j = open_j(USEC_PER_SEC);
        char path[600];
        off_t before;

        for (uint64_t s = 1; s <= 5; s++)
                append_seq_content(j, s);
        journal_free(j);
        seg_path(path, sizeof(path), 1);
        before = file_size(path);
        cr_assert_eq(truncate(path, before - 3), 0);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 4);
        cr_assert_gt(journal_skipped_bytes(j), 0);
        cr_assert_lt(file_size(path), before - 3, "the torn record was cut off");
        cr_assert_eq((uint64_t) file_size(path), journal_disk_bytes(j));
        append_seq_content(j, 5);
        append_seq_content(j, 6);
        check_contiguous(j, 1, 6);
        journal_free(j);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_skipped_bytes(j), 0);
        check_contiguous(j, 1, 6);
        journal_free(j);
}

Test(journal, torn_header_is_cut) {
        Journal *j = open_j(USEC_PER_SEC);
        char path[600];
        int fd;

        append_seq_content(j, 1);
        journal_free(j);
        seg_path(path, sizeof(path), 1);
        /* 10 bytes of a header that looks like ours. */
        fd = open(path, O_WRONLY | O_APPEND);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "OJR1\0\0\0\0\2\0", 10), 10);
        close(fd);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 1);
        cr_assert_eq(journal_skipped_bytes(j), 10);
        append_seq_content(j, 2);
        check_contiguous(j, 1, 2);
        journal_free(j);
}

Test(journal, garbage_tail_is_cut) {
        Journal *j = open_j(USEC_PER_SEC);
        char path[600];
        uint8_t garbage[1000];
        int fd;

        for (uint64_t s = 1; s <= 3; s++)
                append_seq_content(j, s);
        journal_free(j);
        seg_path(path, sizeof(path), 1);
        memset(garbage, 0xab, sizeof(garbage));
        fd = open(path, O_WRONLY | O_APPEND);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, garbage, sizeof(garbage)), (ssize_t) sizeof(garbage));
        close(fd);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 3);
        cr_assert_eq(journal_skipped_bytes(j), sizeof(garbage));
        append_seq_content(j, 4);
        check_contiguous(j, 1, 4);
        journal_free(j);
}

Test(journal, zero_filled_tail_is_cut) {
        /* What a power loss can leave: the size was updated, the data never written. */
        Journal *j = open_j(USEC_PER_SEC);
        char path[600];

        for (uint64_t s = 1; s <= 3; s++)
                append_seq_content(j, s);
        journal_free(j);
        seg_path(path, sizeof(path), 1);
        cr_assert_eq(truncate(path, file_size(path) + 4096), 0);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 3);
        append_seq_content(j, 4);
        check_contiguous(j, 1, 4);
        journal_free(j);
}

Test(journal, corrupt_crc_in_tail) {
        Journal *j = open_j(USEC_PER_SEC);
        char path[600];
        uint8_t b;
        int fd;

        for (uint64_t s = 1; s <= 3; s++)
                append_seq_content(j, s);
        journal_free(j);
        seg_path(path, sizeof(path), 1);
        /* Flip one bit of the last byte: the payload of record 3. */
        fd = open(path, O_RDWR);
        cr_assert_geq(fd, 0);
        off_t end = file_size(path);
        cr_assert_eq(pread(fd, &b, 1, end - 1), 1);
        b ^= 0x10;
        cr_assert_eq(pwrite(fd, &b, 1, end - 1), 1);
        close(fd);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 2);
        cr_assert_gt(journal_skipped_bytes(j), 0);
        append_seq_content(j, 3);
        check_contiguous(j, 1, 3);
        journal_free(j);
}

Test(journal, corrupt_older_segment_keeps_later_segments) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[64], first_of_second;
        char path[600];
        size_t n;
        int fd;
        Recs rs;

        journal_set_segment_size(j, 2000);
        for (uint64_t s = 1; s <= 40; s++)
                append_seq_content(j, s);
        journal_free(j);
        n = list_segments(names, ELEMENTSOF(names));
        cr_assert_geq(n, 3);
        first_of_second = names[1];
        cr_assert_geq(first_of_second, 4);

        /* Damage the second record of the first segment (its header's seq field). */
        seg_path(path, sizeof(path), 1);
        {
                uint8_t hdr[32];
                uint32_t plen;
                uint16_t tlen;
                fd = open(path, O_RDWR);
                cr_assert_geq(fd, 0);
                cr_assert_eq(pread(fd, hdr, 32, 0), 32);
                memcpy(&plen, hdr + 24, 4);
                memcpy(&tlen, hdr + 28, 2);
                off_t second = 32 + plen + tlen;
                cr_assert_eq(pwrite(fd, "\xff", 1, second + 9), 1);
                close(fd);
        }

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 40, "later segments survive");
        cr_assert_gt(journal_skipped_bytes(j), 0);
        rs = replay(j, 0);
        cr_assert_eq(rs.v[0].seq, 1);
        cr_assert_eq(rs.v[1].seq, first_of_second, "the rest of segment 1 is skipped");
        cr_assert_eq(rs.n, 1 + 40 - first_of_second + 1);
        for (size_t i = 1; i < rs.n; i++) {
                cr_assert_eq(rs.v[i].seq, first_of_second + i - 1);
                check_content(&rs.v[i]);
        }
        recs_clear(&rs);
        cr_assert_eq((uint64_t) file_size(path) > 0, true, "the damaged segment stays on disk");
        append_seq_content(j, 41);

        /* Trim still removes the damaged segment once everything in it is committed. */
        cr_assert_geq(journal_trim(j, first_of_second - 1), 1);
        cr_assert_eq(access(path, F_OK), -1);
        journal_free(j);
}

Test(journal, newer_format_is_refused_not_cut) {
        /* A downgrade must not destroy what a newer version journaled. */
        Journal *j = open_j(USEC_PER_SEC), *k = NULL;
        char path[600];
        off_t size;
        int fd;

        for (uint64_t s = 1; s <= 3; s++)
                append_seq_content(j, s);
        journal_free(j);
        seg_path(path, sizeof(path), 1);
        size = file_size(path);
        fd = open(path, O_RDWR);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pwrite(fd, "2", 1, 3), 1);         /* "OJR1" -> "OJR2" */
        close(fd);
        cr_assert_eq(journal_open(jdir, USEC_PER_SEC, &k), -EPROTONOSUPPORT);
        cr_assert_null(k);
        cr_assert_eq(file_size(path), size);
}

/* ---- segments, trim, bump ---- */

Test(journal, rolls_segments) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[256], seq;
        uint8_t payload[1000];
        uint8_t *big = calloc(1, 20000);
        size_t n;
        char path[600];

        journal_set_segment_size(j, 4096);
        memset(payload, 'p', sizeof(payload));
        /* Each record is 32 + 9 + 1000 bytes: three fit in 4096, the fourth rolls. */
        for (int i = 0; i < 12; i++)
                cr_assert_eq(journal_append(j, i, "outages/r", payload, sizeof(payload), &seq), 0);
        n = list_segments(names, ELEMENTSOF(names));
        cr_assert_eq(n, 4);
        for (size_t i = 0; i < n; i++) {
                cr_assert_eq(names[i], 1 + 3 * i);
                seg_path(path, sizeof(path), names[i]);
                cr_assert_eq(file_size(path), 3 * 1041);
        }
        cr_assert_eq(journal_disk_bytes(j), 12 * 1041);

        /* A record larger than the segment size gets a segment of its own. */
        cr_assert_eq(journal_append(j, 0, "outages/big", big, 20000, &seq), 0);
        cr_assert_eq(seq, 13);
        cr_assert_eq(journal_append(j, 0, "outages/r", payload, 10, &seq), 0);
        n = list_segments(names, ELEMENTSOF(names));
        cr_assert_eq(n, 6);
        cr_assert_eq(names[4], 13);
        cr_assert_eq(names[5], 14);
        journal_free(j);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 14);
        Recs rs = replay(j, 0);
        cr_assert_eq(rs.n, 14);
        cr_assert_eq(rs.v[12].len, 20000);
        recs_clear(&rs);
        journal_free(j);
        free(big);
}

Test(journal, trim_deletes_only_committed_segments) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[256];
        size_t n, before;
        Recs rs;

        journal_set_segment_size(j, 1500);
        for (uint64_t s = 1; s <= 60; s++)
                append_seq_content(j, s);
        before = list_segments(names, ELEMENTSOF(names));
        cr_assert_geq(before, 5);

        /* committed just below the end of segment 3: segments 1 and 2 go. */
        cr_assert_eq(journal_trim(j, names[3] - 2), 2);
        n = list_segments(names, ELEMENTSOF(names));
        cr_assert_eq(n, before - 2);
        rs = replay(j, 0);
        cr_assert_eq(rs.v[0].seq, names[0], "replay starts at the oldest kept segment");
        cr_assert_eq(rs.v[rs.n - 1].seq, 60);
        recs_clear(&rs);

        /* committed exactly at a segment's last record: that segment goes too. */
        cr_assert_eq(journal_trim(j, names[1] - 1), 1);
        cr_assert_eq(journal_trim(j, names[1] - 1), 0, "idempotent");

        /* Everything committed: only the current segment is left, and appends continue. */
        uint64_t bytes_before = journal_disk_bytes(j);
        cr_assert_gt(journal_trim(j, UINT64_MAX), 0);
        n = list_segments(names, ELEMENTSOF(names));
        cr_assert_eq(n, 1);
        cr_assert_lt(journal_disk_bytes(j), bytes_before);
        char path[600];
        seg_path(path, sizeof(path), names[0]);
        cr_assert_eq((uint64_t) file_size(path), journal_disk_bytes(j));
        append_seq_content(j, 61);
        check_contiguous(j, names[0], 61);
        journal_free(j);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 61);
        check_contiguous(j, names[0], 61);
        journal_free(j);
}

typedef struct TrimInReplay {
        Journal *j;
        uint64_t expect;
        int trimmed;
        bool ok;
} TrimInReplay;

static int trim_cb(uint64_t seq, usec_t received_at, const char *topic, const void *payload,
                   size_t len, void *userdata) {
        TrimInReplay *t = userdata;
        uint64_t s;

        (void) received_at; (void) topic; (void) payload; (void) len;
        if (seq != t->expect++)
                t->ok = false;
        /* What the daemon does when memory fills during a replay: flush, then trim. */
        if (seq % 10 == 0) {
                int r = journal_trim(t->j, seq);
                if (r < 0 || journal_append(t->j, 0, "outages/new", "n", 1, &s) < 0 ||
                    journal_sync(t->j) < 0)
                        t->ok = false;
                t->trimmed += r;
        }
        return 0;
}

Test(journal, trim_and_append_inside_replay_callback) {
        Journal *j = open_j(USEC_PER_SEC);
        TrimInReplay t = { .j = j, .expect = 1, .ok = true };

        journal_set_segment_size(j, 700);
        for (uint64_t s = 1; s <= 100; s++)
                append_seq_content(j, s);
        cr_assert_eq(journal_replay(j, 0, trim_cb, &t), 100, "only what existed at the call");
        cr_assert(t.ok);
        cr_assert_eq(t.expect, 101);
        cr_assert_gt(t.trimmed, 5);
        cr_assert_eq(journal_last_seq(j), 110);
        Recs rs = replay(j, 100);
        cr_assert_eq(rs.n, 10);
        cr_assert_eq(rs.v[0].seq, 101);
        cr_assert_str_eq(rs.v[9].topic, "outages/new");
        recs_clear(&rs);
        journal_free(j);
}

Test(journal, trim_never_deletes_current) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[4];

        for (uint64_t s = 1; s <= 5; s++)
                append_seq_content(j, s);
        cr_assert_eq(journal_trim(j, 1000), 0);
        cr_assert_eq(list_segments(names, ELEMENTSOF(names)), 1);
        check_contiguous(j, 1, 5);
        journal_free(j);
}

Test(journal, bump_seq) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[8], seq;
        Recs rs;

        for (uint64_t s = 1; s <= 3; s++)
                append_seq_content(j, s);
        journal_bump_seq(j, 2);         /* behind: no effect */
        append_seq_content(j, 4);
        journal_bump_seq(j, 100);
        cr_assert_eq(journal_last_seq(j), 4);
        append_seq_content(j, 101);
        append_seq_content(j, 102);
        cr_assert_eq(list_segments(names, ELEMENTSOF(names)), 2);
        cr_assert_eq(names[1], 101);
        rs = replay(j, 0);
        cr_assert_eq(rs.n, 6);
        cr_assert_eq(rs.v[3].seq, 4);
        cr_assert_eq(rs.v[4].seq, 101);
        recs_clear(&rs);
        rs = replay(j, 50);
        cr_assert_eq(rs.n, 2);
        recs_clear(&rs);
        journal_free(j);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 102);
        cr_assert_eq(journal_append(j, 0, "t", "x", 1, &seq), 0);
        cr_assert_eq(seq, 103);
        /* Segment 1 holds seqs 1..4: committed 4 is enough to delete it. */
        cr_assert_eq(journal_trim(j, 4), 1);
        journal_free(j);
}

Test(journal, bump_seq_on_empty_journal_renames) {
        /* A wiped journal directory while the database checkpoint is at 1000. */
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[8], seq;

        journal_bump_seq(j, 1000);
        journal_bump_seq(j, 999);
        cr_assert_eq(journal_append(j, 0, "t", "x", 1, &seq), 0);
        cr_assert_eq(seq, 1001);
        cr_assert_eq(list_segments(names, ELEMENTSOF(names)), 1, "no empty segment left");
        cr_assert_eq(names[0], 1001);
        journal_free(j);
        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 1001);
        journal_free(j);
}

Test(journal, bump_seq_survives_reopen_of_empty_segment) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t seq;

        append_seq_content(j, 1);
        journal_bump_seq(j, 500);
        journal_set_segment_size(j, 1);  /* force a roll for the next record too */
        cr_assert_eq(journal_append(j, 0, "t", "x", 1, &seq), 0);
        cr_assert_eq(seq, 501);
        journal_free(j);
        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_last_seq(j), 501);
        cr_assert_eq(journal_append(j, 0, "t", "x", 1, &seq), 0);
        cr_assert_eq(seq, 502);
        journal_free(j);
}

/* ---- locking, syncing ---- */

Test(journal, second_open_is_busy) {
        Journal *j = open_j(USEC_PER_SEC), *k = NULL;

        cr_assert_eq(journal_open(jdir, USEC_PER_SEC, &k), -EBUSY);
        cr_assert_null(k);
        journal_free(j);
        cr_assert_eq(journal_open(jdir, USEC_PER_SEC, &k), 0);
        journal_free(k);
}

Test(journal, second_process_is_busy) {
        Journal *j = open_j(USEC_PER_SEC);
        pid_t pid = fork();

        cr_assert_geq(pid, 0);
        if (pid == 0) {
                Journal *k = NULL;
                _exit(journal_open(jdir, USEC_PER_SEC, &k) == -EBUSY ? 0 : 1);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        journal_free(j);
}

Test(journal, open_errors) {
        Journal *j = NULL;
        char path[600];

        (void) snprintf(path, sizeof(path), "%s/file", tmp_root);
        int fd = open(path, O_WRONLY | O_CREAT, 0600);
        cr_assert_geq(fd, 0);
        close(fd);
        cr_assert_eq(journal_open(path, USEC_PER_SEC, &j), -ENOTDIR);
        cr_assert_null(j);
        cr_assert_eq(journal_open("", USEC_PER_SEC, &j), -EINVAL);
        cr_assert_null(journal_free(NULL));
}

Test(journal, sync_due) {
        Journal *j = open_j(USEC_PER_SEC), *k;
        usec_t now = now_monotonic();
        uint64_t seq;

        cr_assert_not(journal_sync_due(j, now + 10 * USEC_PER_SEC), "nothing written");
        cr_assert_eq(journal_append(j, 0, "t", "x", 1, &seq), 0);
        cr_assert_not(journal_sync_due(j, now), "interval not over");
        cr_assert(journal_sync_due(j, now + 2 * USEC_PER_SEC));
        cr_assert_eq(journal_sync(j), 0);
        cr_assert_not(journal_sync_due(j, now_monotonic() + 2 * USEC_PER_SEC));
        journal_free(j);

        cr_assert_eq(journal_open(jdir, 0, &k), 0);
        cr_assert_eq(journal_append(k, 0, "t", "x", 1, &seq), 0);
        cr_assert_not(journal_sync_due(k, now_monotonic() + 10 * USEC_PER_SEC),
                      "interval 0 syncs inside append");
        journal_free(k);
}

/* ---- failing writes ---- */

Test(journal, short_write_is_cut_and_appends_continue) {
        /* RLIMIT_FSIZE makes a write stop at the limit (short) and the next fail with
         * EFBIG: the same shapes as a full disk. In a child, not to limit the runner. */
        pid_t pid = fork();

        cr_assert_geq(pid, 0);
        if (pid == 0) {
                Journal *j = NULL;
                uint64_t seq = 0, last = 0;
                uint8_t payload[300];
                struct rlimit rl = { .rlim_cur = 10000, .rlim_max = RLIM_INFINITY };
                int r = 0;

                memset(payload, 'z', sizeof(payload));
                (void) signal(SIGXFSZ, SIG_IGN);
                if (journal_open(jdir, 0, &j) < 0 || setrlimit(RLIMIT_FSIZE, &rl) < 0)
                        _exit(10);
                for (int i = 0; i < 100 && r == 0; i++) {
                        r = journal_append(j, i, "outages/x", payload, sizeof(payload), &seq);
                        if (r == 0)
                                last = seq;
                }
                if (r != -EFBIG)
                        _exit(11);
                /* No half record: the file ends at the last good record. */
                if (journal_disk_bytes(j) != last * (32 + 9 + 300))
                        _exit(12);
                rl.rlim_cur = RLIM_INFINITY;
                if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
                        _exit(13);
                if (journal_append(j, 0, "outages/x", payload, sizeof(payload), &seq) < 0 ||
                    seq != last + 1)
                        _exit(14);
                journal_free(j);
                _exit(0);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status), "child died");
        cr_assert_eq(WEXITSTATUS(status), 0, "child step %d failed", WEXITSTATUS(status));

        Journal *j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_skipped_bytes(j), 0, "no torn record was left behind");
        Recs rs = replay(j, 0);
        cr_assert_eq(rs.n, journal_last_seq(j));
        cr_assert_eq(rs.n, 10000 / (32 + 9 + 300) + 1);
        recs_clear(&rs);
        journal_free(j);
}

/* ---- SIGKILL at random moments ---- */

static void sigkill_child(int wfd, usec_t sync_interval) {
        Journal *j = NULL;
        uint64_t next;

        if (journal_open(jdir, sync_interval, &j) < 0)
                _exit(2);
        journal_set_segment_size(j, 64 << 10);
        next = journal_last_seq(j) + 1;
        for (;;) {
                char topic[64];
                uint8_t payload[512];
                size_t len;
                uint64_t seq;

                content_for(next, topic, payload, &len);
                if (journal_append(j, (usec_t) next * 1000, topic, payload, len, &seq) < 0 ||
                    seq != next)
                        _exit(3);
                /* Only now may the "broker" consider it delivered. */
                if (write(wfd, &seq, sizeof(seq)) != sizeof(seq))
                        _exit(4);
                next++;
                if (journal_sync_due(j, now_monotonic()))
                        (void) journal_sync(j);
        }
}

Test(journal, sigkill_loses_no_acknowledged_record) {
        uint64_t acked_max = 0, acked_total = 0;

        srand((unsigned) time(NULL) ^ (unsigned) getpid());
        for (int round = 0; round < 6; round++) {
                int p[2];
                pid_t pid;

                cr_assert_eq(pipe(p), 0);
                pid = fork();
                cr_assert_geq(pid, 0);
                if (pid == 0) {
                        close(p[0]);
                        sigkill_child(p[1], round % 2 ? 0 : 10 * USEC_PER_MSEC);
                }
                close(p[1]);

                /* Drain acknowledgements while the child runs, then kill it. */
                usec_t until = now_monotonic() + (20 + rand() % 200) * USEC_PER_MSEC;
                uint64_t seq;
                int fl = fcntl(p[0], F_GETFL);
                cr_assert_eq(fcntl(p[0], F_SETFL, fl | O_NONBLOCK), 0);
                while (now_monotonic() < until) {
                        ssize_t k = read(p[0], &seq, sizeof(seq));
                        if (k == sizeof(seq)) {
                                cr_assert_eq(seq, acked_max + 1);
                                acked_max = seq;
                                acked_total++;
                        } else
                                cr_assert(k < 0 && errno == EAGAIN, "child died early");
                }
                cr_assert_eq(kill(pid, SIGKILL), 0);
                int status;
                cr_assert_eq(waitpid(pid, &status, 0), pid);
                cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                          "child exited by itself (status %d)", status);
                cr_assert_eq(fcntl(p[0], F_SETFL, fl), 0);
                while (read(p[0], &seq, sizeof(seq)) == sizeof(seq)) {
                        cr_assert_eq(seq, acked_max + 1);
                        acked_max = seq;
                        acked_total++;
                }
                close(p[0]);

                /* Every acknowledged record replays with its content; at most one more
                 * (written, killed before the acknowledgement) may follow. */
                Journal *j = open_j(USEC_PER_SEC);
                Recs rs = replay(j, 0);
                cr_assert_geq(rs.n, acked_max, "round %d: %zu replayed < %" PRIu64 " acked",
                              round, rs.n, acked_max);
                cr_assert_leq(rs.n, acked_max + 1);
                for (size_t i = 0; i < rs.n; i++) {
                        cr_assert_eq(rs.v[i].seq, i + 1);
                        check_content(&rs.v[i]);
                }
                acked_max = rs.n;       /* the next child continues after what replays */
                recs_clear(&rs);
                journal_free(j);
        }
        cr_assert_gt(acked_total, 100, "the children appended too little to prove much");
}

/* ---- concurrency ---- */

#define MT_RECORDS 20000

typedef struct MtState {
        Journal *j;
        uint64_t acked;         /* atomic */
        bool done;              /* atomic */
} MtState;

static void *mt_appender(void *arg) {
        MtState *st = arg;

        for (uint64_t s = 1; s <= MT_RECORDS; s++) {
                char topic[64];
                uint8_t payload[512];
                size_t len;
                uint64_t seq;

                content_for(s, topic, payload, &len);
                if (journal_append(st->j, (usec_t) s * 1000, topic, payload, len, &seq) < 0 ||
                    seq != s)
                        abort();
                __atomic_store_n(&st->acked, seq, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&st->done, true, __ATOMIC_RELEASE);
        return NULL;
}

typedef struct Check {
        uint64_t expect;
        bool ok;
} Check;

static int check_cb(uint64_t seq, usec_t received_at, const char *topic, const void *payload,
                    size_t len, void *userdata) {
        Check *c = userdata;
        char t[64];
        uint8_t p[512];
        size_t l;

        content_for(seq, t, p, &l);
        if (seq != c->expect || received_at != (usec_t) seq * 1000 || strcmp(topic, t) != 0 ||
            len != l || (l > 0 && memcmp(payload, p, l) != 0))
                c->ok = false;
        c->expect++;
        return 0;
}

Test(journal, concurrent_append_trim_sync_replay) {
        MtState st = { .j = open_j(5 * USEC_PER_MSEC) };
        pthread_t t;
        uint64_t committed = 0;
        int trimmed = 0, rounds = 0;

        journal_set_segment_size(st.j, 8192);
        cr_assert_eq(pthread_create(&t, NULL, mt_appender, &st), 0);
        while (!__atomic_load_n(&st.done, __ATOMIC_ACQUIRE) || rounds == 0) {
                uint64_t acked = __atomic_load_n(&st.acked, __ATOMIC_ACQUIRE);
                if (acked > 50 && acked - 50 > committed)
                        committed = acked - 50;
                int r = journal_trim(st.j, committed);
                cr_assert_geq(r, 0);
                trimmed += r;
                if (journal_sync_due(st.j, now_monotonic()))
                        cr_assert_eq(journal_sync(st.j), 0);
                /* Replay while appends go on: everything after committed, in order. */
                Check c = { .expect = committed + 1, .ok = true };
                r = journal_replay(st.j, committed, check_cb, &c);
                cr_assert_geq(r, 0);
                cr_assert(c.ok, "replay during appends saw a wrong record");
                cr_assert_geq(c.expect - 1, acked, "replay missed acknowledged records");
                rounds++;
        }
        cr_assert_eq(pthread_join(t, NULL), 0);
        cr_assert_gt(trimmed, 10);

        Check c = { .expect = committed + 1, .ok = true };
        cr_assert_eq(journal_replay(st.j, committed, check_cb, &c), (int) (MT_RECORDS - committed));
        cr_assert(c.ok);
        cr_assert_geq(journal_trim(st.j, MT_RECORDS), 0);
        uint64_t names[16];
        cr_assert_eq(list_segments(names, ELEMENTSOF(names)), 1);
        journal_free(st.j);
}

/* ---- record count ---- */

Test(journal, record_count) {
        Journal *j = open_j(USEC_PER_SEC);
        char path[600];

        cr_assert_eq(journal_record_count(j), 0);
        cr_assert_eq(journal_record_count(NULL), 0);
        journal_set_segment_size(j, 2000);
        for (uint64_t s = 1; s <= 30; s++)
                append_seq_content(j, s);
        cr_assert_eq(journal_record_count(j), 30);
        cr_assert_geq(journal_trim(j, 10), 1);
        cr_assert_lt(journal_record_count(j), 30, "trimmed segments are gone");
        uint64_t left = journal_record_count(j);
        Recs rs = replay(j, 0);
        cr_assert_eq(rs.n, left, "counts what replay from 0 passes on");
        recs_clear(&rs);
        journal_free(j);

        /* a torn tail is not a record */
        uint64_t names[64];
        size_t n = list_segments(names, ELEMENTSOF(names));
        seg_path(path, sizeof(path), names[n - 1]);
        cr_assert_eq(truncate(path, file_size(path) - 1), 0);
        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_record_count(j), left - 1);
        journal_free(j);
}

/* ---- durability, seen through the linker's --wrap of fsync and renameat ---- */

int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __real_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
int __wrap_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);

static char io_log[256][700];
static int n_io_log;

static void io_log_add(const char *op, int fd, const char *a, const char *b) {
        char link[64], target[600] = "?";
        ssize_t n;

        if (n_io_log >= (int) ELEMENTSOF(io_log))
                return;
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        n = readlink(link, target, sizeof(target) - 1);
        if (n >= 0)
                target[n] = '\0';
        if (a)
                snprintf(io_log[n_io_log++], sizeof(io_log[0]), "%s %s/%s %s", op, target, a, b);
        else
                snprintf(io_log[n_io_log++], sizeof(io_log[0]), "%s %s", op, target);
}

int __wrap_fsync(int fd) {
        io_log_add("fsync", fd, NULL, NULL);
        return __real_fsync(fd);
}

int __wrap_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
        io_log_add("rename", olddirfd, oldpath, newpath);
        return __real_renameat(olddirfd, oldpath, newdirfd, newpath);
}

/* Index of the first log entry at or after from that equals want, or -1. */
static int io_log_find(int from, const char *want) {
        for (int i = from; i < n_io_log; i++)
                if (streq(io_log[i], want))
                        return i;
        return -1;
}

static void io_log_dump(void) {
        for (int i = 0; i < n_io_log; i++)
                fprintf(stderr, "  io %d: %s\n", i, io_log[i]);
}

/* ---- identity ---- */

#define ID_A "0f8fad5b-d9cb-469f-a165-70867728950e"
#define ID_B "7c9e6679-7425-40de-944b-e07fc1f90ae7"

static void write_file(const char *name, const void *data, size_t len) {
        char path[600];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", jdir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        cr_assert_geq(fd, 0, "%s: %m", path);
        cr_assert_eq(write(fd, data, len), (ssize_t) len);
        close(fd);
}

static char *read_file(const char *name) {
        char path[600], *buf = calloc(1, 4096);
        int fd;

        snprintf(path, sizeof(path), "%s/%s", jdir, name);
        fd = open(path, O_RDONLY);
        cr_assert_geq(fd, 0, "%s: %m", path);
        cr_assert_geq(read(fd, buf, 4095), 0);
        close(fd);
        return buf;
}

static bool exists(const char *name) {
        char path[600];
        struct stat st;

        snprintf(path, sizeof(path), "%s/%s", jdir, name);
        return lstat(path, &st) == 0;
}

Test(journal, identity_missing) {
        Journal *j = open_j(USEC_PER_SEC);
        char id[37] = "untouched";

        cr_assert_eq(journal_identity(j, id), -ENOENT);
        cr_assert_str_eq(id, "untouched");
        cr_assert_eq(journal_identity(NULL, id), -EINVAL);
        journal_free(j);
}

Test(journal, identity_round_trip_and_reopen) {
        Journal *j = open_j(USEC_PER_SEC);
        char id[37];
        char *text;
        struct stat st;
        char path[600];

        cr_assert_eq(journal_set_identity(j, ID_A), 0);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_A);
        text = read_file("identity");
        cr_assert_str_eq(text, ID_A "\n", "one line in the file");
        free(text);
        snprintf(path, sizeof(path), "%s/identity", jdir);
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0600);
        cr_assert(!exists("identity.tmp"));
        append_seq_content(j, 1);
        journal_free(j);

        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_A);
        cr_assert_eq(journal_set_identity(j, ID_B), 0);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_B);
        Recs rs = replay(j, 0);
        cr_assert_eq(rs.n, 1, "records are not touched");
        recs_clear(&rs);
        journal_free(j);
}

Test(journal, identity_must_be_a_canonical_uuid) {
        static const char *const bad[] = {
                "", "0f8fad5b", ID_A "0", "0F8FAD5B-D9CB-469F-A165-70867728950E",
                "{0f8fad5b-d9cb-469f-a165-70867728950e}", "0f8fad5bd9cb469fa16570867728950e",
                "0f8fad5b-d9cb-469f-a165-70867728950g", "0f8fad5b_d9cb-469f-a165-70867728950e",
                ID_A "\n", "0f8fad5b-d9cb-469f-a165-70867728950",
        };
        Journal *j = open_j(USEC_PER_SEC);
        char id[37];

        cr_assert_eq(journal_set_identity(j, ID_A), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_assert_eq(journal_set_identity(j, bad[i]), -EINVAL, "accepted \"%s\"", bad[i]);
        cr_assert_eq(journal_set_identity(j, NULL), -EINVAL);
        cr_assert_eq(journal_set_identity(NULL, ID_A), -EINVAL);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_A, "the recorded identity stays");
        journal_free(j);
}

Test(journal, damaged_identity_is_reported_and_can_be_replaced) {
        static const char *const damaged[] = {
                "", "\n", "0f8fad5b-d9cb", ID_A, ID_A "\n\n", ID_A "\nextra", " " ID_A,
                "0F8FAD5B-D9CB-469F-A165-70867728950E\n", "0f8fad5b-d9cb-469f-a165-70867728950e\r",
                "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n",
        };
        Journal *j = open_j(USEC_PER_SEC);
        char id[37] = "untouched";

        for (size_t i = 0; i < ELEMENTSOF(damaged); i++) {
                write_file("identity", damaged[i], strlen(damaged[i]));
                cr_assert_eq(journal_identity(j, id), -EBADMSG, "accepted \"%s\"", damaged[i]);
                cr_assert_str_eq(id, "untouched");
        }
        write_file("identity", ID_A "\0", 38);
        cr_assert_eq(journal_identity(j, id), -EBADMSG, "a NUL after the newline");
        cr_assert_eq(journal_set_identity(j, ID_B), 0);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_B);
        journal_free(j);
}

Test(journal, identity_symlinks_are_not_followed) {
        Journal *j = open_j(USEC_PER_SEC);
        char target[600], link[600], id[37];
        char *text;

        /* a symlink as the identity: refused, not read through */
        snprintf(target, sizeof(target), "%s/elsewhere", tmp_root);
        snprintf(link, sizeof(link), "%s/identity", jdir);
        write_file("../../elsewhere", ID_A "\n", 37);
        cr_assert_eq(symlink(target, link), 0);
        cr_assert_eq(journal_identity(j, id), -ELOOP);

        /* a symlink at the temporary name: removed, the target is not written */
        cr_assert_eq(unlink(link), 0);
        snprintf(link, sizeof(link), "%s/identity.tmp", jdir);
        cr_assert_eq(symlink(target, link), 0);
        cr_assert_eq(journal_set_identity(j, ID_B), 0);
        text = read_file("../../elsewhere");
        cr_assert_str_eq(text, ID_A "\n", "written through the symlink");
        free(text);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_B);
        cr_assert(!exists("identity.tmp"));
        journal_free(j);
}

Test(journal, stale_temporary_identity_is_ignored_and_replaced) {
        /* a crash between writing identity.tmp and the rename */
        Journal *j = open_j(USEC_PER_SEC);
        char id[37];

        cr_assert_eq(journal_set_identity(j, ID_A), 0);
        write_file("identity.tmp", "0f8f", 4);
        journal_free(j);
        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_A);
        cr_assert_eq(journal_set_identity(j, ID_B), 0);
        cr_assert(!exists("identity.tmp"));
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_B);
        journal_free(j);
}

Test(journal, identity_is_synced_then_renamed_then_the_directory_synced) {
        Journal *j = open_j(USEC_PER_SEC);
        char dir_real[600], want[800];
        int a, b, c;

        cr_assert_not_null(realpath(jdir, dir_real));
        n_io_log = 0;
        cr_assert_eq(journal_set_identity(j, ID_A), 0);
        snprintf(want, sizeof(want), "fsync %s/identity.tmp", dir_real);
        a = io_log_find(0, want);
        snprintf(want, sizeof(want), "rename %s/identity.tmp identity", dir_real);
        b = a < 0 ? -1 : io_log_find(a + 1, want);
        snprintf(want, sizeof(want), "fsync %s", dir_real);
        c = b < 0 ? -1 : io_log_find(b + 1, want);
        if (c < 0)
                io_log_dump();
        cr_assert(a >= 0 && b > a && c > b, "fsync(file), rename, fsync(directory) expected in that order");
        journal_free(j);
}

/* ---- discard ---- */

Test(journal, discard_drops_every_record_and_numbering_continues) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[64], dropped = 0, seq;
        size_t n;

        journal_set_segment_size(j, 2000);
        for (uint64_t s = 1; s <= 30; s++)
                append_seq_content(j, s);
        cr_assert_geq(list_segments(names, ELEMENTSOF(names)), 3);
        cr_assert_eq(journal_discard(j, &dropped), 0);
        cr_assert_eq(dropped, 30);
        cr_assert_eq(journal_record_count(j), 0);
        cr_assert_eq(journal_disk_bytes(j), 0);
        Recs rs = replay(j, 0);
        cr_assert_eq(rs.n, 0);
        recs_clear(&rs);
        n = list_segments(names, ELEMENTSOF(names));
        cr_assert_eq(n, 1, "one empty segment is left");
        cr_assert_eq(names[0], 31, "named by the next sequence number");

        append_seq_content(j, 31);
        journal_free(j);

        j = open_j(USEC_PER_SEC);
        rs = replay(j, 0);
        cr_assert_eq(rs.n, 1);
        cr_assert_eq(rs.v[0].seq, 31);
        check_content(&rs.v[0]);
        recs_clear(&rs);
        cr_assert_eq(journal_append(j, 0, "t", "x", 1, &seq), 0);
        cr_assert_eq(seq, 32);
        journal_free(j);
}

Test(journal, discard_then_reopen_keeps_the_next_sequence) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t dropped, seq;

        for (uint64_t s = 1; s <= 5; s++)
                append_seq_content(j, s);
        cr_assert_eq(journal_discard(j, &dropped), 0);
        cr_assert_eq(dropped, 5);
        journal_free(j);                /* nothing appended since */
        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_record_count(j), 0);
        cr_assert_eq(journal_append(j, 0, "t", NULL, 0, &seq), 0);
        cr_assert_eq(seq, 6, "sequence numbers never go back");
        journal_free(j);
}

Test(journal, discard_after_bump_and_on_an_empty_journal) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t dropped = 99, seq, names[8];

        cr_assert_eq(journal_discard(j, &dropped), 0);
        cr_assert_eq(dropped, 0);
        cr_assert_eq(journal_discard(j, NULL), 0);
        journal_bump_seq(j, 100);
        cr_assert_eq(journal_discard(j, &dropped), 0);
        cr_assert_eq(dropped, 0);
        cr_assert_eq(list_segments(names, ELEMENTSOF(names)), 1);
        cr_assert_eq(names[0], 101);
        journal_free(j);
        j = open_j(USEC_PER_SEC);
        cr_assert_eq(journal_append(j, 0, "t", NULL, 0, &seq), 0);
        cr_assert_eq(seq, 101);
        journal_free(j);
        cr_assert_eq(journal_discard(NULL, &dropped), -EINVAL);
}

Test(journal, discard_removes_damaged_and_stray_segments) {
        Journal *j = open_j(USEC_PER_SEC);
        uint64_t names[64], dropped;
        char path[600];
        int fd;

        journal_set_segment_size(j, 2000);
        for (uint64_t s = 1; s <= 30; s++)
                append_seq_content(j, s);
        journal_free(j);
        /* damage the first segment: its records after the first are skipped */
        seg_path(path, sizeof(path), 1);
        fd = open(path, O_RDWR);
        cr_assert_geq(fd, 0);
        cr_assert_eq(pwrite(fd, "\xff\xff\xff\xff", 4, 60), 4);
        close(fd);
        j = open_j(USEC_PER_SEC);
        cr_assert_gt(journal_skipped_bytes(j), 0);
        uint64_t readable = journal_record_count(j);
        cr_assert_lt(readable, 30);

        /* a segment file the journal does not list (as a failed unlink in trim leaves) */
        write_file("0000000000000100.seg", "junk", 4);
        cr_assert_eq(journal_discard(j, &dropped), 0);
        cr_assert_eq(dropped, readable, "counts the records it could read");
        cr_assert_eq(list_segments(names, ELEMENTSOF(names)), 1);
        cr_assert_eq(names[0], 31);
        journal_free(j);
}

Test(journal, discard_keeps_the_identity_and_the_lock) {
        Journal *j = open_j(USEC_PER_SEC), *k = NULL;
        char id[37];

        cr_assert_eq(journal_set_identity(j, ID_A), 0);
        append_seq_content(j, 1);
        cr_assert_eq(journal_discard(j, NULL), 0);
        cr_assert_eq(journal_identity(j, id), 0);
        cr_assert_str_eq(id, ID_A);
        cr_assert_eq(journal_open(jdir, USEC_PER_SEC, &k), -EBUSY);
        journal_free(j);
}

Test(journal, discard_is_durable) {
        Journal *j = open_j(USEC_PER_SEC);
        char dir_real[600], want[800];

        for (uint64_t s = 1; s <= 3; s++)
                append_seq_content(j, s);
        cr_assert_not_null(realpath(jdir, dir_real));
        n_io_log = 0;
        cr_assert_eq(journal_discard(j, NULL), 0);
        snprintf(want, sizeof(want), "fsync %s", dir_real);
        if (io_log_find(0, want) < 0)
                io_log_dump();
        cr_assert_geq(io_log_find(0, want), 0, "the directory is not synced");
        journal_free(j);
}

Test(journal, discard_with_unsynced_rolled_segments) {
        /* segments rolled away from but not yet synced are dropped with the rest */
        Journal *j = open_j(60 * USEC_PER_SEC);
        uint64_t dropped, names[64];

        journal_set_segment_size(j, 500);
        for (uint64_t s = 1; s <= 40; s++)
                append_seq_content(j, s);
        cr_assert_eq(journal_discard(j, &dropped), 0);
        cr_assert_eq(dropped, 40);
        cr_assert_eq(list_segments(names, ELEMENTSOF(names)), 1);
        append_seq_content(j, 41);
        cr_assert_eq(journal_sync(j), 0);
        cr_assert(!journal_sync_due(j, now_monotonic() + 120 * USEC_PER_SEC));
        journal_free(j);
        j = open_j(USEC_PER_SEC);
        Recs rs = replay(j, 0);
        cr_assert_eq(rs.n, 1);
        cr_assert_eq(rs.v[0].seq, 41);
        recs_clear(&rs);
        journal_free(j);
}
