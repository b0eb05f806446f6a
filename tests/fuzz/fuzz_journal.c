/* fuzz_journal.c — libFuzzer target for the journal's record reader: the input becomes
 * segment bytes on disk, then journal_open + journal_replay. Checks the contract, not only
 * the absence of crashes: damage is cut (last segment) or skipped (older segment), good
 * records before it replay intact, what remains is consistent, and appending afterwards
 * works. The first input byte picks the shape:
 *
 *   0  the rest is segment 1, the only (last) one: cut to its valid prefix, in place
 *   1  n good records (n from the second byte), then the rest appended to their segment
 *      as a damaged tail: the n records replay intact
 *   2  the rest is segment 1, followed by a good segment starting at GOOD_FIRST: segment
 *      1 is skipped from its first bad record on, the good segment replays intact
 *
 * Runs in a directory on /dev/shm when there is one (fsync is cheap there). */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "journal.h"

#define SEG1 "0000000000000001.seg"
#define GOOD_FIRST 1000
#define GOOD_MAX 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "broken: %s (line %d)\n", #cond, __LINE__); abort(); } } while (0)

static void rm_dir_contents(void) {
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
}

static void cleanup(void) {
        rm_dir_contents();
        (void) rmdir(dir);
}

static void setup_once(void) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");

        if (dir[0])
                return;
        snprintf(dir, sizeof(dir), "%s/fuzz-journal-XXXXXX", base && *base ? base : "/tmp");
        CHECK(mkdtemp(dir));
        atexit(cleanup);
}

static void write_at(const char *name, const uint8_t *p, size_t n, bool append) {
        char path[300];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0600);
        CHECK(fd >= 0);
        CHECK(n == 0 || write(fd, p, n) == (ssize_t) n);
        close(fd);
}

static off_t size_of(const char *name) {
        char path[300];
        struct stat st;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        CHECK(stat(path, &st) == 0);
        return st.st_size;
}

/* The good records: deterministic content per sequence number. */
static void good_content(uint64_t seq, char topic[32], uint8_t payload[64], size_t *len) {
        snprintf(topic, 32, "outages/ctrl_%u", (unsigned) (seq % 1000));
        *len = (size_t) (seq * 13 % 64);
        for (size_t i = 0; i < *len; i++)
                payload[i] = (uint8_t) (seq + i * 7);
}

static void append_good(Journal *j, uint64_t want_seq) {
        char topic[32];
        uint8_t payload[64];
        size_t len;
        uint64_t seq = 0;

        good_content(want_seq, topic, payload, &len);
        CHECK(journal_append(j, (usec_t) want_seq, topic, payload, len, &seq) == 0);
        CHECK(seq == want_seq);
}

typedef struct Seen {
        uint64_t n, last;
        uint64_t good_from, good_to;    /* seqs that must be good records */
        uint64_t n_good;
        uint64_t hash;                  /* of every record, to compare two replays */
        uint64_t prefix_n, prefix_hash; /* the hash after the first prefix_n records */
} Seen;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++)
                h = (h ^ b[i]) * UINT64_C(0x100000001b3);
        return h;
}

static int on_record(uint64_t seq, usec_t received_at, const char *topic, const void *payload,
                     size_t len, void *userdata) {
        Seen *s = userdata;

        CHECK(seq > s->last);                   /* strictly increasing */
        CHECK(topic && (payload || len == 0));
        CHECK(len <= JOURNAL_PAYLOAD_MAX && strlen(topic) <= JOURNAL_TOPIC_MAX);
        if (seq >= s->good_from && seq <= s->good_to) {
                char t[32];
                uint8_t p[64];
                size_t l;

                good_content(seq, t, p, &l);
                CHECK(streq(topic, t) && len == l && (l == 0 || memcmp(payload, p, l) == 0));
                CHECK(received_at == (usec_t) seq);
                s->n_good++;
        }
        s->hash = fnv(fnv(fnv(s->hash, &seq, sizeof(seq)), topic, strlen(topic)), payload, len);
        s->last = seq;
        if (++s->n == s->prefix_n)
                s->prefix_hash = s->hash;
        return 0;
}

static Seen replay_all(Journal *j, uint64_t good_from, uint64_t good_to, uint64_t prefix_n) {
        Seen s = { .good_from = good_from, .good_to = good_to, .hash = UINT64_C(0xcbf29ce484222325),
                   .prefix_n = prefix_n };
        int r;

        s.prefix_hash = s.hash;
        r = journal_replay(j, 0, on_record, &s);
        CHECK(r >= 0 && (uint64_t) r == s.n);
        CHECK(s.n == journal_record_count(j));
        CHECK(s.last == journal_last_seq(j));
        return s;
}

/* Opens; a newer format refusal must leave the file as it was. Returns NULL then. */
static Journal *open_checked(const char *seg_name, off_t size_before) {
        Journal *j = NULL;
        int r = journal_open(dir, 60 * USEC_PER_SEC, &j);

        if (r == -EPROTONOSUPPORT) {
                CHECK(!j && size_of(seg_name) == size_before);
                return NULL;
        }
        CHECK(r == 0 && j);
        return j;
}

/* After the damage is dealt with: one more append, reopen, the same records and it. A cut
 * tail is gone for good; a damaged older segment stays (and is skipped again). */
static void append_and_reopen(Journal *j, const Seen *before, bool older_damage) {
        uint64_t next = journal_last_seq(j) + 1, seq;
        Seen after;

        CHECK(journal_append(j, 1, "outages/after", "x", 1, &seq) == 0);
        CHECK(seq >= next);
        journal_free(j);
        j = NULL;
        CHECK(journal_open(dir, 60 * USEC_PER_SEC, &j) == 0);
        CHECK(older_damage || journal_skipped_bytes(j) == 0);
        after = replay_all(j, before->good_from, before->good_to, before->n);
        CHECK(after.n == before->n + 1 && after.last == seq);
        CHECK(after.n_good == before->n_good);
        CHECK(after.prefix_hash == before->hash);       /* the same records, unchanged */
        journal_free(j);
}

static void shape_last_segment(const uint8_t *d, size_t n) {
        Journal *j;
        Seen s;

        write_at(SEG1, d, n, false);
        j = open_checked(SEG1, (off_t) n);
        if (!j)
                return;
        /* the valid prefix stays, the rest is cut */
        CHECK((uint64_t) size_of(SEG1) == journal_disk_bytes(j));
        CHECK(journal_disk_bytes(j) + journal_skipped_bytes(j) == n);
        s = replay_all(j, 0, 0, 0);
        CHECK(s.n == 0 || s.last == s.n);       /* consecutive from 1 */
        append_and_reopen(j, &s, false);
}

static void shape_damaged_tail(const uint8_t *d, size_t n) {
        uint64_t good = n > 0 ? d[0] % GOOD_MAX + 1 : 1;
        off_t size;
        Journal *j = NULL;
        Seen s;

        CHECK(journal_open(dir, 60 * USEC_PER_SEC, &j) == 0);
        for (uint64_t q = 1; q <= good; q++)
                append_good(j, q);
        journal_free(j);
        size = size_of(SEG1);
        if (n > 1)
                write_at(SEG1, d + 1, n - 1, true);
        j = open_checked(SEG1, size + (off_t) (n > 1 ? n - 1 : 0));
        if (!j)
                return;
        CHECK((uint64_t) size_of(SEG1) >= (uint64_t) size);
        s = replay_all(j, 1, good, 0);
        CHECK(s.n_good == good && s.n >= good);
        append_and_reopen(j, &s, false);
}

static void shape_older_segment(const uint8_t *d, size_t n) {
        uint64_t good = n > 0 ? d[0] % GOOD_MAX + 1 : 1;
        Journal *j = NULL;
        Seen s;

        /* the good segment: an empty journal moved to GOOD_FIRST, then records */
        CHECK(journal_open(dir, 60 * USEC_PER_SEC, &j) == 0);
        journal_bump_seq(j, GOOD_FIRST - 1);
        for (uint64_t q = GOOD_FIRST; q < GOOD_FIRST + good; q++)
                append_good(j, q);
        journal_free(j);
        write_at(SEG1, d, n, false);
        j = open_checked(SEG1, (off_t) n);
        if (!j)
                return;
        CHECK(size_of(SEG1) == (off_t) n);      /* an older segment is never cut */
        s = replay_all(j, GOOD_FIRST, GOOD_FIRST + good - 1, 0);
        CHECK(s.n_good == good);
        CHECK(s.last == GOOD_FIRST + good - 1);
        append_and_reopen(j, &s, true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        setup_once();
        rm_dir_contents();
        if (size == 0)
                return 0;
        switch (data[0] % 3) {
        case 0:
                shape_last_segment(data + 1, size - 1);
                break;
        case 1:
                shape_damaged_tail(data + 1, size - 1);
                break;
        default:
                shape_older_segment(data + 1, size - 1);
                break;
        }
        return 0;
}
