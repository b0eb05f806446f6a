/* journal.c — the write-ahead journal: append-only segment files of CRC-checked records in
 * one directory, replayed after a crash and trimmed once the database has committed them.
 * It does not interpret payloads, does not log, and does not read the database.
 *
 * Directory: "lock" (flock'ed while open), "identity" (the uuid of the database the
 * records belong to, one line; written through "identity.tmp" and a rename), and segments named by the sequence number of
 * their first record, 16 lowercase hex digits + ".seg" ("0000000000000001.seg"). A segment
 * is rolled when the next record would take it past the segment size (64 MiB) or when
 * journal_bump_seq() moved the sequence. Records of one segment have consecutive sequence
 * numbers starting at the segment's name, and every record of segment i is below the name
 * of segment i + 1; the scan checks both, which catches most damage a CRC alone would
 * accept (a record from another place).
 *
 * Record, little-endian, 32-byte header then the two strings (no padding, no NUL):
 *
 *   0  u32 magic          JOURNAL_MAGIC ("OJR1")
 *   4  u32 crc            CRC-32C of topic, then payload, then header bytes 8..31
 *   8  u64 seq
 *  16  i64 received_at    microseconds since the epoch
 *  24  u32 payload_len    at most 256 MiB
 *  28  u16 topic_len
 *  30  u16 flags          0 (reserved)
 *  32  topic, payload
 *
 * The CRC covers the body first so that the bulk of it is computed before the lock is
 * taken; only the 24 header bytes holding the sequence number are checksummed inside.
 *
 * Durability: each record is written with one pwritev(2) (looping only on a short write)
 * before journal_append returns, so once it returns the record survives SIGKILL (page
 * cache). fdatasync runs from journal_sync on the caller's timer, or inside journal_append
 * when the sync interval is 0. A record cut by a crash or a full disk is cut off again.
 *
 * Damage: journal_open validates every record (magic, lengths, CRC, sequence). In the last
 * segment the first bad record and everything after it is truncated away: that is what a
 * crash in the middle of a write leaves. In an older segment the first bad record ends the
 * segment: the rest is skipped (and counted) but left on disk, and later segments replay
 * as usual, so one damaged block never costs more than the rest of its segment. Skipping
 * rather than resynchronising on the next valid-looking record is deliberate: a payload can
 * contain bytes that look like a whole record, and replaying those would forge a message.
 * A record of a newer format ("OJR2", or nonzero flags under a valid CRC) is not damage:
 * journal_open then fails with -EPROTONOSUPPORT instead of cutting it (a downgrade must
 * not destroy what a newer version journaled).
 *
 * Threads: one mutex guards the append state and the segment list; it is held for the
 * write itself (and for fdatasync when the interval is 0), never while checksumming, while
 * journal_sync waits for the disk, or while replay reads or calls back. So a replay
 * callback may append, sync or trim (the daemon flushes and trims during a long replay). */
#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "journal.h"

#define JOURNAL_MAGIC     UINT32_C(0x31524a4f)  /* "OJR1" on disk */
#define MAGIC_FAMILY_MASK UINT32_C(0x00ffffff)  /* "OJR", whatever the version */
#define HEADER_SIZE       32
#define SEG_NAME_LEN      20                    /* 16 hex digits + ".seg" */
#define READ_CHUNK        ((size_t) 1 << 20)
#define LOCK_FILE         "lock"
#define IDENTITY_FILE     "identity"
#define IDENTITY_TMP      "identity.tmp"
#define IDENTITY_LEN      36                    /* a uuid in text form */
#define OLD_FDS_MAX       8                     /* unsynced rolled segments kept open */

typedef struct Segment {
        uint64_t first_seq;     /* the name: seq of its first record, or of the next one */
        uint64_t last_seq;      /* of its last good record, 0 if it has none */
        uint64_t size;          /* bytes on disk (valid records only for the last one) */
} Segment;

struct Journal {
        pthread_mutex_t mu;     /* everything below except dir_fd/lock_fd/sync_interval */
        int dir_fd;
        int lock_fd;
        int cur_fd;             /* last segment, written at segs[n_segs - 1].size */
        int old_fds[OLD_FDS_MAX]; /* segments rolled away from, until they have been synced */
        size_t n_old;
        usec_t sync_interval;
        uint64_t segment_size;

        Segment *segs;
        size_t n_segs, cap_segs;

        uint64_t next_seq;
        uint64_t last_seq;      /* atomic loads outside mu */
        uint64_t synced_seq;
        uint64_t disk_bytes;    /* atomic loads outside mu */
        uint64_t skipped_bytes;
        usec_t last_sync;       /* monotonic */
        bool need_roll;         /* journal_bump_seq moved next_seq past this segment */
        bool dir_dirty;         /* a segment was created or renamed since the last sync */
        bool tail_dirty;        /* a failed write could not be cut off yet */
};

/* ---- CRC-32C (Castagnoli), slicing by 8 ---- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? (c >> 1) ^ UINT32_C(0x82f63b78) : c >> 1;
                crc_table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
                for (int t = 1; t < 8; t++)
                        crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                                          crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* Chains like zlib's crc32(): crc32c(crc32c(0, a), b) == crc32c(0, a || b). */
static uint32_t crc32c(uint32_t crc, const void *data, size_t n) {
        const uint8_t *p = data;

        crc = ~crc;
        while (n >= 8) {
                uint32_t lo = crc ^ ((uint32_t) p[0] | (uint32_t) p[1] << 8 |
                                     (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24);
                crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
                      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
                      crc_table[3][p[4]] ^ crc_table[2][p[5]] ^
                      crc_table[1][p[6]] ^ crc_table[0][p[7]];
                p += 8;
                n -= 8;
        }
        while (n--)
                crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
        return ~crc;
}

/* ---- record header ---- */

typedef struct Header {
        uint32_t magic, crc;
        uint64_t seq;
        int64_t received_at;
        uint32_t payload_len;
        uint16_t topic_len, flags;
} Header;

static void header_put(uint8_t b[static HEADER_SIZE], const Header *h) {
        uint32_t u32;
        uint64_t u64;
        uint16_t u16;

        u32 = htole32(h->magic);        memcpy(b + 0, &u32, 4);
        u32 = htole32(h->crc);          memcpy(b + 4, &u32, 4);
        u64 = htole64(h->seq);          memcpy(b + 8, &u64, 8);
        u64 = htole64((uint64_t) h->received_at); memcpy(b + 16, &u64, 8);
        u32 = htole32(h->payload_len);  memcpy(b + 24, &u32, 4);
        u16 = htole16(h->topic_len);    memcpy(b + 28, &u16, 2);
        u16 = htole16(h->flags);        memcpy(b + 30, &u16, 2);
}

static void header_get(const uint8_t b[static HEADER_SIZE], Header *h) {
        uint32_t u32;
        uint64_t u64;
        uint16_t u16;

        memcpy(&u32, b + 0, 4);  h->magic = le32toh(u32);
        memcpy(&u32, b + 4, 4);  h->crc = le32toh(u32);
        memcpy(&u64, b + 8, 8);  h->seq = le64toh(u64);
        memcpy(&u64, b + 16, 8); h->received_at = (int64_t) le64toh(u64);
        memcpy(&u32, b + 24, 4); h->payload_len = le32toh(u32);
        memcpy(&u16, b + 28, 2); h->topic_len = le16toh(u16);
        memcpy(&u16, b + 30, 2); h->flags = le16toh(u16);
}

/* ---- segment names and files ---- */

static void seg_name(char buf[static SEG_NAME_LEN + 1], uint64_t first_seq) {
        (void) snprintf(buf, SEG_NAME_LEN + 1, "%016" PRIx64 ".seg", first_seq);
}

/* Returns true and the sequence number for an exact segment name. */
static bool seg_parse_name(const char *name, uint64_t *ret) {
        uint64_t v = 0;

        if (strlen(name) != SEG_NAME_LEN || !streq(name + 16, ".seg"))
                return false;
        for (int i = 0; i < 16; i++) {
                char c = name[i];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (d < 0)
                        return false;
                v = v << 4 | (uint64_t) d;
        }
        if (v == 0)
                return false;
        *ret = v;
        return true;
}

static int seg_open(int dir_fd, uint64_t first_seq, int flags) {
        char name[SEG_NAME_LEN + 1];
        int fd;

        seg_name(name, first_seq);
        fd = openat(dir_fd, name, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
        return fd < 0 ? -errno : fd;
}

static int segs_push(Journal *j, uint64_t first_seq) {
        if (j->n_segs == j->cap_segs) {
                size_t cap = j->cap_segs ? j->cap_segs * 2 : 16;
                Segment *s = realloc(j->segs, cap * sizeof(*s));
                if (!s)
                        return -ENOMEM;
                j->segs = s;
                j->cap_segs = cap;
        }
        j->segs[j->n_segs++] = (Segment) { .first_seq = first_seq };
        return 0;
}

static int seg_cmp(const void *a, const void *b) {
        uint64_t x = ((const Segment *) a)->first_seq, y = ((const Segment *) b)->first_seq;
        return x < y ? -1 : x > y;
}

/* ---- reading ---- */

/* Buffered sequential reader of one segment; the buffer grows to hold the largest record. */
typedef struct Reader {
        int fd;
        uint64_t limit;         /* read no further than this file offset */
        uint64_t base;          /* file offset of buf[0] */
        uint8_t *buf;
        size_t cap, start, end; /* unread bytes are buf[start..end) */
        uint64_t expect;        /* seq the next record must have */
        uint64_t hi;            /* seqs must stay below this (next segment's name) */
} Reader;

typedef struct Record {
        uint64_t seq;
        usec_t received_at;
        const uint8_t *topic;
        size_t topic_len;
        const uint8_t *payload;
        size_t payload_len;
} Record;

static uint64_t reader_offset(const Reader *r) {
        return r->base + r->start;
}

/* Makes n unread bytes available. Returns 1, 0 if the file (or limit) ends first, or a
 * negative errno. */
static int reader_need(Reader *r, size_t n) {
        if (r->end - r->start >= n)
                return 1;
        if (r->start > 0) {
                memmove(r->buf, r->buf + r->start, r->end - r->start);
                r->base += r->start;
                r->end -= r->start;
                r->start = 0;
        }
        if (n > r->cap) {
                /* A chunk, but no more than is left of the file: a small segment (a
                 * replay after a clean stop) gets a small buffer. */
                uint64_t rest = r->limit > r->base ? r->limit - r->base : 0;
                size_t cap = rest < READ_CHUNK ? (size_t) rest : READ_CHUNK;
                uint8_t *b;

                if (cap < n)
                        cap = n;
                b = realloc(r->buf, cap);
                if (!b)
                        return -ENOMEM;
                r->buf = b;
                r->cap = cap;
        }
        while (r->end < n) {
                uint64_t off = r->base + r->end;
                size_t want = r->cap - r->end;
                ssize_t k;

                if (off >= r->limit)
                        return 0;
                if (want > r->limit - off)
                        want = (size_t) (r->limit - off);
                k = pread(r->fd, r->buf + r->end, want, (off_t) off);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return 0;
                r->end += (size_t) k;
        }
        return 1;
}

/* Reads the next record. Returns 1 (rec points into the reader's buffer until the next
 * call), 0 at a clean end, -EBADMSG for a torn or corrupt record (the reader stays before
 * it), or another negative errno. */
static int reader_next(Reader *r, Record *rec) {
        const uint8_t *b;
        Header h;
        size_t total;
        uint32_t crc;
        int k;

        k = reader_need(r, 1);
        if (k <= 0)
                return k;
        k = reader_need(r, HEADER_SIZE);
        if (k < 0)
                return k;
        if (k == 0)
                return -EBADMSG;        /* torn header */
        header_get(r->buf + r->start, &h);
        if ((h.magic & MAGIC_FAMILY_MASK) == (JOURNAL_MAGIC & MAGIC_FAMILY_MASK) &&
            h.magic != JOURNAL_MAGIC)
                return -EPROTONOSUPPORT;        /* "OJR2"...: written by a newer version */
        if (h.magic != JOURNAL_MAGIC || h.payload_len > JOURNAL_PAYLOAD_MAX ||
            h.seq != r->expect || h.seq >= r->hi)
                return -EBADMSG;
        total = HEADER_SIZE + (size_t) h.topic_len + h.payload_len;
        if (total > r->limit - reader_offset(r))
                return -EBADMSG;        /* torn body, or a length field that lies */
        k = reader_need(r, total);
        if (k < 0)
                return k;
        if (k == 0)
                return -EBADMSG;
        b = r->buf + r->start;
        crc = crc32c(0, b + HEADER_SIZE, total - HEADER_SIZE);
        crc = crc32c(crc, b + 8, HEADER_SIZE - 8);
        if (crc != h.crc)
                return -EBADMSG;
        if (h.flags != 0)
                return -EPROTONOSUPPORT;        /* a valid record using a newer feature */

        *rec = (Record) {
                .seq = h.seq,
                .received_at = h.received_at,
                .topic = b + HEADER_SIZE,
                .topic_len = h.topic_len,
                .payload = b + HEADER_SIZE + h.topic_len,
                .payload_len = h.payload_len,
        };
        r->start += total;
        r->expect = h.seq + 1;
        return 1;
}

static void reader_init(Reader *r, int fd, uint64_t limit, uint64_t first_seq, uint64_t hi) {
        *r = (Reader) { .fd = fd, .limit = limit, .expect = first_seq, .hi = hi };
}

/* ---- opening ---- */

/* mkdir -p, new directories mode 0700. */
static int mkdir_p(const char *path) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; ; s++) {
                if (*s != '/' && *s != '\0')
                        continue;
                char c = *s;
                *s = '\0';
                if (mkdir(p, 0700) < 0 && errno != EEXIST) {
                        /* A read-only or unwritable parent is fine if the path exists. */
                        int e = errno;
                        struct stat st;
                        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))
                                return -e;
                }
                *s = c;
                if (c == '\0')
                        break;
        }
        return 0;
}

static int journal_lock(Journal *j) {
        j->lock_fd = openat(j->dir_fd, LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (j->lock_fd < 0)
                return -errno;
        if (flock(j->lock_fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : -errno;
        return 0;
}

/* The names (first sequence numbers) of every segment file in the directory, unsorted.
 * Reads through a descriptor of its own: one dup'ed from dir_fd would share its read
 * position, and a second listing would come back empty. Caller frees *ret. */
static int seg_list_dir(int dir_fd, uint64_t **ret, size_t *ret_n) {
        _cleanup_free_ uint64_t *names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        DIR *d;
        int fd, r = 0;

        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                (void) close(fd);
                return r;
        }
        errno = 0;
        while ((de = readdir(d))) {
                uint64_t seq;

                if (seg_parse_name(de->d_name, &seq)) {
                        if (n == cap) {
                                uint64_t *v = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof(*v));

                                if (!v) {
                                        r = -ENOMEM;
                                        break;
                                }
                                names = v;
                        }
                        names[n++] = seq;
                }
                errno = 0;
        }
        if (r == 0 && errno != 0)
                r = -errno;
        (void) closedir(d);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(names);
        *ret_n = n;
        return 0;
}

static int journal_list(Journal *j) {
        _cleanup_free_ uint64_t *names = NULL;
        size_t n = 0;
        int r;

        r = seg_list_dir(j->dir_fd, &names, &n);
        for (size_t i = 0; r == 0 && i < n; i++)
                r = segs_push(j, names[i]);
        if (r == 0 && j->n_segs > 1)
                qsort(j->segs, j->n_segs, sizeof(Segment), seg_cmp);
        return r;
}

/* Validates segment i. Sets its size, j->last_seq; cuts a bad tail of the last segment. */
static int journal_scan_segment(Journal *j, size_t i) {
        Segment *s = &j->segs[i];
        bool last = i + 1 == j->n_segs;
        uint64_t hi = last ? UINT64_MAX : j->segs[i + 1].first_seq;
        _cleanup_close_ int fd = -1;
        struct stat st;
        Reader rd;
        Record rec;
        int r;

        fd = seg_open(j->dir_fd, s->first_seq, last ? O_RDWR : O_RDONLY);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return -errno;
        reader_init(&rd, fd, (uint64_t) st.st_size, s->first_seq, hi);
        while ((r = reader_next(&rd, &rec)) > 0)
                s->last_seq = j->last_seq = rec.seq;
        free(rd.buf);
        if (r < 0 && r != -EBADMSG)
                return r;

        s->size = (uint64_t) st.st_size;
        if (reader_offset(&rd) < s->size) {
                j->skipped_bytes += s->size - reader_offset(&rd);
                if (last) {
                        if (ftruncate(fd, (off_t) reader_offset(&rd)) < 0 || fdatasync(fd) < 0)
                                return -errno;
                        s->size = reader_offset(&rd);
                }
        }
        j->disk_bytes += s->size;
        return 0;
}

static int journal_load(Journal *j) {
        Segment *last;
        int r;

        r = journal_list(j);
        if (r < 0)
                return r;
        for (size_t i = 0; i < j->n_segs; i++) {
                r = journal_scan_segment(j, i);
                if (r < 0)
                        return r;
        }
        if (j->n_segs == 0) {
                r = segs_push(j, 1);
                if (r < 0)
                        return r;
                j->cur_fd = seg_open(j->dir_fd, 1, O_WRONLY | O_CREAT | O_EXCL);
                if (j->cur_fd < 0)
                        return j->cur_fd;
                if (fsync(j->dir_fd) < 0)
                        return -errno;
        } else {
                j->cur_fd = seg_open(j->dir_fd, j->segs[j->n_segs - 1].first_seq, O_WRONLY);
                if (j->cur_fd < 0)
                        return j->cur_fd;
        }
        last = &j->segs[j->n_segs - 1];
        j->next_seq = j->last_seq + 1 > last->first_seq ? j->last_seq + 1 : last->first_seq;
        j->synced_seq = j->last_seq;
        return 0;
}

int journal_open(const char *dir, usec_t sync_interval, Journal **ret) {
        Journal *j;
        int r;

        if (!dir || !*dir || sync_interval < 0 || !ret)
                return -EINVAL;
        (void) pthread_once(&crc_once, crc_init);

        r = mkdir_p(dir);
        if (r < 0)
                return r;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (Journal) {
                .dir_fd = -1, .lock_fd = -1, .cur_fd = -1,
                .sync_interval = sync_interval,
                .segment_size = JOURNAL_SEGMENT_SIZE_DEFAULT,
                .last_sync = now_monotonic(),
        };
        (void) pthread_mutex_init(&j->mu, NULL);

        j->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = j->dir_fd < 0 ? -errno : journal_lock(j);
        if (r == 0)
                r = journal_load(j);
        if (r < 0) {
                if (j->cur_fd >= 0)     /* nothing was appended: no sync in journal_free */
                        (void) close(j->cur_fd);
                j->cur_fd = -1;
                journal_free(j);
                return r;
        }
        *ret = j;
        return 0;
}

/* ---- syncing ---- */

/* Syncs with mu held: used after each append when the interval is 0. */
static int journal_sync_locked(Journal *j) {
        while (j->n_old > 0) {
                if (fdatasync(j->old_fds[0]) < 0)
                        return -errno;
                (void) close(j->old_fds[0]);
                memmove(j->old_fds, j->old_fds + 1, --j->n_old * sizeof(int));
        }
        if (fdatasync(j->cur_fd) < 0)
                return -errno;
        if (j->dir_dirty) {
                if (fsync(j->dir_fd) < 0)
                        return -errno;
                j->dir_dirty = false;
        }
        j->synced_seq = j->last_seq;
        return 0;
}

int journal_sync(Journal *j) {
        int old_fds[OLD_FDS_MAX], cur_fd, r = 0;
        size_t n_old;
        uint64_t target;
        bool dir;

        if (!j)
                return -EINVAL;

        /* Take what needs syncing under the lock, wait for the disk without it. */
        pthread_mutex_lock(&j->mu);
        n_old = j->n_old;
        memcpy(old_fds, j->old_fds, n_old * sizeof(int));
        j->n_old = 0;
        cur_fd = fcntl(j->cur_fd, F_DUPFD_CLOEXEC, 3);
        if (cur_fd < 0)
                r = -errno;
        dir = j->dir_dirty;
        j->dir_dirty = false;
        target = j->last_seq;
        pthread_mutex_unlock(&j->mu);

        for (size_t i = 0; i < n_old; i++) {
                if (fdatasync(old_fds[i]) < 0 && r == 0)
                        r = -errno;
                (void) close(old_fds[i]);
        }
        if (cur_fd >= 0) {
                if (fdatasync(cur_fd) < 0 && r == 0)
                        r = -errno;
                (void) close(cur_fd);
        }
        if (dir && r == 0 && fsync(j->dir_fd) < 0)
                r = -errno;

        pthread_mutex_lock(&j->mu);
        if (r < 0)
                j->dir_dirty = j->dir_dirty || dir;
        else if (target > j->synced_seq)
                j->synced_seq = target;
        j->last_sync = now_monotonic();
        pthread_mutex_unlock(&j->mu);
        return r;
}

bool journal_sync_due(Journal *j, usec_t now_mono) {
        bool due;

        if (!j || j->sync_interval == 0)
                return false;
        pthread_mutex_lock(&j->mu);
        due = (j->last_seq != j->synced_seq || j->dir_dirty || j->n_old > 0) &&
              now_mono - j->last_sync >= j->sync_interval;
        pthread_mutex_unlock(&j->mu);
        return due;
}

/* ---- appending ---- */

/* Starts the segment named next_seq, with mu held. An empty current segment is renamed
 * instead, so journal_bump_seq never leaves empty files behind. */
static int journal_roll_locked(Journal *j) {
        Segment *cur = &j->segs[j->n_segs - 1];
        int fd, r;

        if (cur->size == 0) {
                if (cur->first_seq != j->next_seq) {
                        char from[SEG_NAME_LEN + 1], to[SEG_NAME_LEN + 1];

                        seg_name(from, cur->first_seq);
                        seg_name(to, j->next_seq);
                        if (renameat(j->dir_fd, from, j->dir_fd, to) < 0)
                                return -errno;
                        cur->first_seq = j->next_seq;
                        j->dir_dirty = true;
                }
                j->need_roll = false;
                return 0;
        }

        /* A rolled segment stays open until journal_sync has made it durable. Only when
         * more than OLD_FDS_MAX rolls happen within one sync interval (a tiny segment
         * size) does the oldest get synced here, on the appending thread. */
        if (j->n_old == OLD_FDS_MAX) {
                if (fdatasync(j->old_fds[0]) < 0)
                        return -errno;
                (void) close(j->old_fds[0]);
                memmove(j->old_fds, j->old_fds + 1, --j->n_old * sizeof(int));
        }
        r = segs_push(j, j->next_seq);
        if (r < 0)
                return r;
        fd = seg_open(j->dir_fd, j->next_seq, O_WRONLY | O_CREAT | O_EXCL);
        if (fd < 0) {
                j->n_segs--;
                return fd;
        }
        j->old_fds[j->n_old++] = j->cur_fd;
        j->cur_fd = fd;
        j->dir_dirty = true;
        j->need_roll = false;
        return 0;
}

/* pwritev of the whole iovec at off, continuing after a short write. */
static int write_full(int fd, struct iovec *iov, int n, uint64_t off) {
        while (n > 0) {
                ssize_t k = pwritev(fd, iov, n, (off_t) off);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                off += (uint64_t) k;
                while (n > 0 && (size_t) k >= iov->iov_len) {
                        k -= (ssize_t) iov->iov_len;
                        iov++;
                        n--;
                }
                if (n > 0) {
                        iov->iov_base = (uint8_t *) iov->iov_base + k;
                        iov->iov_len -= (size_t) k;
                }
        }
        return 0;
}

/* With mu held: writes the record whose body checksum is body_crc. */
static int journal_write_locked(Journal *j, uint8_t hdr[static HEADER_SIZE], uint32_t body_crc,
                                const char *topic, size_t topic_len, const void *payload,
                                size_t len, uint64_t *ret_seq) {
        Segment *cur;
        uint64_t total = HEADER_SIZE + topic_len + len, seq, u64;
        uint32_t crc;
        int r;

        cur = &j->segs[j->n_segs - 1];
        if (j->tail_dirty) {
                if (ftruncate(j->cur_fd, (off_t) cur->size) < 0)
                        return -errno;
                j->tail_dirty = false;
        }
        if (j->need_roll || (cur->size > 0 && cur->size + total > j->segment_size)) {
                r = journal_roll_locked(j);
                if (r < 0)
                        return r;
                cur = &j->segs[j->n_segs - 1];
        }

        seq = j->next_seq;
        u64 = htole64(seq);
        memcpy(hdr + 8, &u64, 8);
        crc = htole32(crc32c(body_crc, hdr + 8, HEADER_SIZE - 8));
        memcpy(hdr + 4, &crc, 4);

        struct iovec iov[3] = {
                { .iov_base = hdr, .iov_len = HEADER_SIZE },
                { .iov_base = (void *) topic, .iov_len = topic_len },
                { .iov_base = (void *) payload, .iov_len = len },
        };
        r = write_full(j->cur_fd, iov, len > 0 ? 3 : 2, cur->size);
        if (r < 0) {
                /* Never let a later record follow half of this one. */
                if (ftruncate(j->cur_fd, (off_t) cur->size) < 0)
                        j->tail_dirty = true;
                return r;
        }
        cur->size += total;
        cur->last_seq = seq;
        __atomic_store_n(&j->disk_bytes, j->disk_bytes + total, __ATOMIC_RELAXED);
        __atomic_store_n(&j->last_seq, seq, __ATOMIC_RELAXED);
        j->next_seq = seq + 1;
        *ret_seq = seq;

        return j->sync_interval == 0 ? journal_sync_locked(j) : 0;
}

int journal_append(Journal *j, usec_t received_at, const char *topic, const void *payload,
                   size_t len, uint64_t *ret_seq) {
        uint8_t hdr[HEADER_SIZE];
        uint64_t seq = 0;
        uint32_t body_crc;
        size_t topic_len;
        int r;

        if (!j || !topic || (!payload && len > 0) || !ret_seq)
                return -EINVAL;
        topic_len = strlen(topic);
        if (topic_len > JOURNAL_TOPIC_MAX || len > JOURNAL_PAYLOAD_MAX)
                return -EMSGSIZE;

        /* Everything but the sequence number is prepared outside the lock. */
        header_put(hdr, &(Header) {
                .magic = JOURNAL_MAGIC,
                .received_at = received_at,
                .payload_len = (uint32_t) len,
                .topic_len = (uint16_t) topic_len,
        });
        body_crc = crc32c(0, topic, topic_len);
        if (len > 0)
                body_crc = crc32c(body_crc, payload, len);

        pthread_mutex_lock(&j->mu);
        r = journal_write_locked(j, hdr, body_crc, topic, topic_len, payload, len, &seq);
        pthread_mutex_unlock(&j->mu);
        if (r < 0)
                return r;
        *ret_seq = seq;
        return 0;
}

void journal_bump_seq(Journal *j, uint64_t at_least) {
        if (!j || at_least >= UINT64_MAX - 1)
                return;
        pthread_mutex_lock(&j->mu);
        if (j->next_seq <= at_least) {
                j->next_seq = at_least + 1;
                j->need_roll = true;
        }
        pthread_mutex_unlock(&j->mu);
}

/* ---- replay and trim ---- */

static bool seg_trimmed(Journal *j, uint64_t first_seq) {
        bool trimmed;

        pthread_mutex_lock(&j->mu);
        trimmed = j->segs[0].first_seq > first_seq;
        pthread_mutex_unlock(&j->mu);
        return trimmed;
}

static int replay_segment(Journal *j, const Segment *s, uint64_t hi, uint64_t after,
                          journal_record_cb cb, void *userdata, char *topic, int *count) {
        _cleanup_close_ int fd = -1;
        Reader rd;
        Record rec;
        int r, k = 0;

        fd = seg_open(j->dir_fd, s->first_seq, O_RDONLY);
        if (fd == -ENOENT && seg_trimmed(j, s->first_seq))
                return 0;       /* trimmed since the snapshot: all of it is committed */
        if (fd < 0)
                return fd;
        reader_init(&rd, fd, s->size, s->first_seq, hi);
        while ((r = reader_next(&rd, &rec)) > 0) {
                if (rec.seq <= after)
                        continue;
                memcpy(topic, rec.topic, rec.topic_len);
                topic[rec.topic_len] = '\0';
                k = cb(rec.seq, rec.received_at, topic, rec.payload, rec.payload_len, userdata);
                if (k < 0)
                        break;
                if (*count < INT32_MAX)
                        (*count)++;
        }
        free(rd.buf);
        if (k < 0)
                return k;
        /* A bad record ends its segment (journal_open counted what follows it). */
        return r == -EBADMSG ? 0 : r;
}

int journal_replay(Journal *j, uint64_t after, journal_record_cb cb, void *userdata) {
        _cleanup_free_ Segment *segs = NULL;
        _cleanup_free_ char *topic = NULL;
        size_t n;
        int r = 0, count = 0;

        if (!j || !cb)
                return -EINVAL;
        topic = malloc(JOURNAL_TOPIC_MAX + 1);
        if (!topic)
                return -ENOMEM;

        pthread_mutex_lock(&j->mu);
        n = j->n_segs;
        segs = malloc(n * sizeof(*segs));
        if (segs)
                memcpy(segs, j->segs, n * sizeof(*segs));
        pthread_mutex_unlock(&j->mu);
        if (!segs)
                r = -ENOMEM;

        for (size_t i = 0; r >= 0 && i < n; i++) {
                uint64_t hi = i + 1 < n ? segs[i + 1].first_seq : UINT64_MAX;
                if (segs[i].last_seq <= after)
                        continue;       /* empty, or every record of it is <= after */
                r = replay_segment(j, &segs[i], hi, after, cb, userdata, topic, &count);
        }
        return r < 0 ? r : count;
}

int journal_trim(Journal *j, uint64_t committed) {
        _cleanup_free_ uint64_t *names = NULL;
        size_t n = 0;
        uint64_t freed = 0;
        int r = 0;

        if (!j)
                return -EINVAL;

        /* Drop the segments from the list first, then unlink them without the lock: a
         * concurrent replay that finds a file missing sees it is no longer listed. If an
         * unlink fails the file stays on disk unlisted; the next journal_open lists it again
         * and a later trim deletes it. The last segment is never deleted. */
        pthread_mutex_lock(&j->mu);
        while (n + 1 < j->n_segs && j->segs[n].last_seq <= committed)
                n++;
        if (n > 0) {
                names = malloc(n * sizeof(*names));
                if (names) {
                        for (size_t i = 0; i < n; i++) {
                                names[i] = j->segs[i].first_seq;
                                freed += j->segs[i].size;
                        }
                        memmove(j->segs, j->segs + n, (j->n_segs - n) * sizeof(Segment));
                        j->n_segs -= n;
                        __atomic_store_n(&j->disk_bytes, j->disk_bytes - freed, __ATOMIC_RELAXED);
                } else
                        r = -ENOMEM;
        }
        pthread_mutex_unlock(&j->mu);
        if (r < 0 || n == 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                char name[SEG_NAME_LEN + 1];

                seg_name(name, names[i]);
                if (unlinkat(j->dir_fd, name, 0) < 0 && errno != ENOENT && r == 0)
                        r = -errno;
        }
        if (fsync(j->dir_fd) < 0 && r == 0)
                r = -errno;
        return r < 0 ? r : (int) n;
}

/* ---- discarding ---- */

/* With mu held: the records of the listed segments. */
static uint64_t record_count_locked(const Journal *j) {
        uint64_t n = 0;

        for (size_t i = 0; i < j->n_segs; i++)
                if (j->segs[i].last_seq > 0)
                        n += j->segs[i].last_seq - j->segs[i].first_seq + 1;
        return n;
}

uint64_t journal_record_count(Journal *j) {
        uint64_t n;

        if (!j)
                return 0;
        pthread_mutex_lock(&j->mu);
        n = record_count_locked(j);
        pthread_mutex_unlock(&j->mu);
        return n;
}

/* With mu held: makes the current segment an empty one named next_seq, the only listed
 * one. The segments rolled away from are not synced: they are about to go. */
static int discard_roll_locked(Journal *j) {
        bool fresh = j->segs[j->n_segs - 1].size > 0;
        int r;

        r = journal_roll_locked(j);
        if (r < 0)
                return r;
        if (fresh)
                j->tail_dirty = false;          /* that was the old file's tail */
        for (size_t i = 0; i < j->n_old; i++)
                (void) close(j->old_fds[i]);
        j->n_old = 0;
        j->segs[0] = j->segs[j->n_segs - 1];
        j->n_segs = 1;
        __atomic_store_n(&j->disk_bytes, 0, __ATOMIC_RELAXED);
        j->synced_seq = j->last_seq;
        return 0;
}

int journal_discard(Journal *j, uint64_t *ret_records) {
        _cleanup_free_ uint64_t *names = NULL;
        uint64_t dropped, keep;
        size_t n = 0;
        int r;

        if (!j)
                return -EINVAL;
        pthread_mutex_lock(&j->mu);
        dropped = record_count_locked(j);
        r = discard_roll_locked(j);
        keep = j->segs[0].first_seq;
        if (r == 0)
                r = seg_list_dir(j->dir_fd, &names, &n);
        for (size_t i = 0; r == 0 && i < n; i++) {
                char name[SEG_NAME_LEN + 1];

                if (names[i] == keep)
                        continue;
                seg_name(name, names[i]);
                if (unlinkat(j->dir_fd, name, 0) < 0 && errno != ENOENT)
                        r = -errno;
        }
        if (r == 0 && fsync(j->dir_fd) < 0)
                r = -errno;
        j->dir_dirty = r < 0;
        pthread_mutex_unlock(&j->mu);
        if (r < 0)
                return r;
        if (ret_records)
                *ret_records = dropped;
        return 0;
}

/* ---- identity ---- */

/* A uuid in canonical text form: 8-4-4-4-12 lowercase hex digits. */
static bool identity_valid(const char *s, size_t len) {
        if (len != IDENTITY_LEN)
                return false;
        for (size_t i = 0; i < len; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;

                if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        }
        return true;
}

int journal_identity(Journal *j, char ret[static 37]) {
        _cleanup_close_ int fd = -1;
        char buf[IDENTITY_LEN + 2];
        ssize_t n;

        if (!j || !ret)
                return -EINVAL;
        fd = openat(j->dir_fd, IDENTITY_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        do
                n = pread(fd, buf, sizeof(buf), 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        /* exactly the uuid and a newline: anything shorter or longer is damage */
        if (n != IDENTITY_LEN + 1 || buf[IDENTITY_LEN] != '\n' || !identity_valid(buf, IDENTITY_LEN))
                return -EBADMSG;
        memcpy(ret, buf, IDENTITY_LEN);
        ret[IDENTITY_LEN] = '\0';
        return 0;
}

/* Writes the identity line to a fresh IDENTITY_TMP and syncs it. */
static int identity_write_tmp(int dir_fd, const char *id) {
        _cleanup_close_ int fd = -1;
        char line[IDENTITY_LEN + 1];
        struct iovec iov = { .iov_base = line, .iov_len = sizeof(line) };
        int r;

        memcpy(line, id, IDENTITY_LEN);
        line[IDENTITY_LEN] = '\n';
        if (unlinkat(dir_fd, IDENTITY_TMP, 0) < 0 && errno != ENOENT)
                return -errno;
        fd = openat(dir_fd, IDENTITY_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        r = write_full(fd, &iov, 1, 0);
        if (r < 0)
                return r;
        return fsync(fd) < 0 ? -errno : 0;
}

int journal_set_identity(Journal *j, const char *id) {
        int r;

        if (!j || !id || !identity_valid(id, strlen(id)))
                return -EINVAL;
        r = identity_write_tmp(j->dir_fd, id);
        if (r == 0 && renameat(j->dir_fd, IDENTITY_TMP, j->dir_fd, IDENTITY_FILE) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(j->dir_fd, IDENTITY_TMP, 0);
                return r;
        }
        return fsync(j->dir_fd) < 0 ? -errno : 0;
}

/* ---- accessors and teardown ---- */

uint64_t journal_last_seq(const Journal *j) {
        return j ? __atomic_load_n(&j->last_seq, __ATOMIC_RELAXED) : 0;
}

uint64_t journal_disk_bytes(const Journal *j) {
        return j ? __atomic_load_n(&j->disk_bytes, __ATOMIC_RELAXED) : 0;
}

uint64_t journal_skipped_bytes(const Journal *j) {
        return j ? j->skipped_bytes : 0;
}

void journal_set_segment_size(Journal *j, uint64_t bytes) {
        if (!j || bytes == 0)
                return;
        pthread_mutex_lock(&j->mu);
        j->segment_size = bytes;
        pthread_mutex_unlock(&j->mu);
}

Journal *journal_free(Journal *j) {
        if (!j)
                return NULL;
        if (j->cur_fd >= 0 && (j->last_seq != j->synced_seq || j->dir_dirty || j->n_old > 0))
                (void) journal_sync(j);
        for (size_t i = 0; i < j->n_old; i++)
                (void) close(j->old_fds[i]);
        if (j->cur_fd >= 0)
                (void) close(j->cur_fd);
        if (j->lock_fd >= 0)
                (void) close(j->lock_fd);       /* releases the flock */
        if (j->dir_fd >= 0)
                (void) close(j->dir_fd);
        (void) pthread_mutex_destroy(&j->mu);
        free(j->segs);
        free(j);
        return NULL;
}
