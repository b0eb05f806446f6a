/* test_metrics.c — the Prometheus text file (metrics.c). The written file is parsed as the
 * text exposition format (version 0.0.4) and held to its rules and to Prometheus naming
 * conventions: every sample belongs to a family declared with # HELP and # TYPE before it,
 * families are contiguous, names and labels are valid, counters end in _total, values
 * parse, series are unique, histograms have cumulative buckets ending in +Inf with _sum
 * and _count. Then the values, and how the file is written. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

#include "harness.h"
#include "metrics.h"
#include "report.h"
#include "version.h"

/* ---- a parser of the exposition format ---- */

#define MAX_SAMPLES 512
#define MAX_FAMILIES 128

typedef struct Sample {
        char name[128];
        char labels[512];       /* name="value",... as written, without the braces */
        char le[32];            /* the le label (histogram buckets), else "" */
        double value;
        int family;
} Sample;

typedef struct Family {
        char name[128];
        char type[16];          /* "" until # TYPE */
        bool help;
        bool has_samples;
} Family;

typedef struct Expo {
        Sample s[MAX_SAMPLES];
        size_t n;
        Family f[MAX_FAMILIES];
        size_t nf;
        int line;
        char error[256];        /* why the text is not valid, "" when it is */
} Expo;

/* Records the first violation and makes the enclosing function return false. */
#define CHECK(e, cond, ...)                                                             \
        do {                                                                            \
                if (!(cond)) {                                                          \
                        int _n = snprintf((e)->error, sizeof((e)->error), "line %d: ", (e)->line); \
                        snprintf((e)->error + _n, sizeof((e)->error) - (size_t) _n, __VA_ARGS__); \
                        return false;                                                   \
                }                                                                       \
        } while (0)

static bool valid_metric_name(const char *s, size_t len) {
        if (len == 0 || !(isalpha((unsigned char) s[0]) || s[0] == '_' || s[0] == ':'))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!(isalnum((unsigned char) s[i]) || s[i] == '_' || s[i] == ':'))
                        return false;
        return true;
}

static bool valid_label_name(const char *s, size_t len) {
        if (len == 0 || !(isalpha((unsigned char) s[0]) || s[0] == '_'))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!(isalnum((unsigned char) s[i]) || s[i] == '_'))
                        return false;
        return !(len >= 2 && s[0] == '_' && s[1] == '_');       /* reserved */
}

/* A Go ParseFloat-style number, or +Inf, -Inf, NaN. */
static bool parse_value(const char *s, double *ret) {
        char *end;

        if (streq(s, "+Inf") || streq(s, "-Inf") || streq(s, "NaN")) {
                *ret = streq(s, "NaN") ? NAN : s[0] == '+' ? INFINITY : -INFINITY;
                return true;
        }
        if (!*s || isspace((unsigned char) *s) || strpbrk(s, "xXpPiInN"))
                return false;
        errno = 0;
        *ret = strtod(s, &end);
        return !*end && errno == 0;
}

static int family_find(const Expo *e, const char *name) {
        for (size_t i = 0; i < e->nf; i++)
                if (streq(e->f[i].name, name))
                        return (int) i;
        return -1;
}

static bool parse_comment(Expo *e, char *l) {
        char *kw = l + 2, *name = l + 7, *text;
        int f;

        if (strncmp(l, "# HELP ", 7) && strncmp(l, "# TYPE ", 7))
                return true;            /* any other comment is allowed */
        text = strchr(name, ' ');
        CHECK(e, text, "%.4s without text", kw);
        *text++ = '\0';
        CHECK(e, valid_metric_name(name, strlen(name)), "bad metric name %s", name);
        f = family_find(e, name);
        if (f < 0) {
                CHECK(e, e->nf < MAX_FAMILIES, "too many families");
                f = (int) e->nf++;
                snprintf(e->f[f].name, sizeof(e->f[f].name), "%s", name);
        }
        CHECK(e, !e->f[f].has_samples, "%.4s of %s after its samples", kw, name);
        if (kw[0] == 'H') {
                CHECK(e, !e->f[f].help, "second HELP for %s", name);
                CHECK(e, *text, "empty HELP for %s", name);
                e->f[f].help = true;
        } else {
                CHECK(e, !e->f[f].type[0], "second TYPE for %s", name);
                CHECK(e, streq(text, "counter") || streq(text, "gauge") || streq(text, "histogram") ||
                      streq(text, "summary") || streq(text, "untyped"), "unknown type %s", text);
                snprintf(e->f[f].type, sizeof(e->f[f].type), "%s", text);
        }
        return true;
}

/* Parses {a="x",b="y"} at **pp into s->labels (and s->le), moves *pp past it. */
static bool parse_labels(Expo *e, char **pp, Sample *s) {
        char *p = *pp;
        size_t out = 0;

        if (*p != '{')
                return true;
        for (p++; *p != '}';) {
                char *eq = strchr(p, '='), value[256];
                size_t name_len, vl = 0;

                CHECK(e, eq, "label without =");
                name_len = (size_t) (eq - p);
                CHECK(e, valid_label_name(p, name_len), "bad label name %.*s", (int) name_len, p);
                CHECK(e, eq[1] == '"', "unquoted value of label %.*s", (int) name_len, p);
                for (char *q = eq + 2;; q++) {
                        CHECK(e, *q, "unterminated label value");
                        if (*q == '"') {
                                p = q + 1;
                                break;
                        }
                        if (*q == '\\') {
                                q++;
                                CHECK(e, *q == '\\' || *q == '"' || *q == 'n', "bad escape \\%c", *q);
                        }
                        CHECK(e, vl < sizeof(value) - 1, "label value too long");
                        value[vl++] = *q;
                }
                value[vl] = '\0';
                if (name_len == 2 && strncmp(eq - 2, "le", 2) == 0)
                        snprintf(s->le, sizeof(s->le), "%.31s", value);
                out += (size_t) snprintf(s->labels + out, sizeof(s->labels) - out, "%s%.*s=\"%s\"",
                                         out ? "," : "", (int) name_len, eq - name_len, value);
                if (*p == ',')
                        p++;
                else
                        CHECK(e, *p == '}', "expected , or } after a label");
        }
        *pp = p + 1;
        return true;
}

/* The family of sample name: itself, or a histogram's or summary's _bucket/_sum/_count. */
static int sample_family(const Expo *e, const char *name) {
        static const char *const suffixes[] = { "_bucket", "_sum", "_count" };
        int f = family_find(e, name);

        for (size_t i = 0; f < 0 && i < ELEMENTSOF(suffixes); i++) {
                size_t nl = strlen(name), sl = strlen(suffixes[i]);
                char base[128];

                if (nl <= sl || !streq(name + nl - sl, suffixes[i]))
                        continue;
                snprintf(base, sizeof(base), "%.*s", (int) (nl - sl), name);
                f = family_find(e, base);
                if (f >= 0 && !streq(e->f[f].type, "histogram") && !streq(e->f[f].type, "summary"))
                        f = -1;
        }
        return f;
}

static bool parse_sample(Expo *e, char *l) {
        Sample *s;
        char *p = l, *value, *ts;
        int f;

        CHECK(e, e->n < MAX_SAMPLES, "too many samples");
        s = &e->s[e->n];
        memset(s, 0, sizeof(*s));
        while (*p && *p != '{' && *p != ' ')
                p++;
        CHECK(e, valid_metric_name(l, (size_t) (p - l)) && (size_t) (p - l) < sizeof(s->name),
              "bad metric name %.*s", (int) (p - l), l);
        memcpy(s->name, l, (size_t) (p - l));
        if (!parse_labels(e, &p, s))
                return false;
        CHECK(e, *p == ' ', "no value after %s", s->name);
        value = p + 1;
        ts = strchr(value, ' ');
        if (ts) {
                *ts++ = '\0';
                CHECK(e, *ts && strspn(ts + (*ts == '-'), "0123456789") == strlen(ts + (*ts == '-')),
                      "bad timestamp %s", ts);
        }
        CHECK(e, parse_value(value, &s->value), "value %s of %s does not parse", value, s->name);

        f = sample_family(e, s->name);
        CHECK(e, f >= 0 && e->f[f].help && e->f[f].type[0], "sample %s without # HELP and # TYPE before it",
              s->name);
        CHECK(e, e->n == 0 || e->s[e->n - 1].family == f || !e->f[f].has_samples,
              "samples of %s are not contiguous", e->f[f].name);
        for (size_t i = 0; i < e->n; i++)
                CHECK(e, !streq(e->s[i].name, s->name) || !streq(e->s[i].labels, s->labels),
                      "duplicate series %s{%s}", s->name, s->labels);
        e->f[f].has_samples = true;
        s->family = f;
        e->n++;
        return true;
}

static bool check_histogram(Expo *e, int f) {
        const char *name = e->f[f].name;
        size_t nl = strlen(name);
        double prev_le = -INFINITY, prev = 0, inf = NAN;
        bool have_sum = false, have_count = false;
        int n_buckets = 0;

        for (size_t i = 0; i < e->n; i++) {
                const Sample *s = &e->s[i];
                const char *suffix = s->name + nl;
                double le;

                if (s->family != f)
                        continue;
                if (streq(suffix, "_bucket")) {
                        CHECK(e, s->le[0] && parse_value(s->le, &le), "%s without a valid le", s->name);
                        CHECK(e, le > prev_le, "%s: le %s not increasing", s->name, s->le);
                        CHECK(e, s->value >= prev, "%s: le %s not cumulative", s->name, s->le);
                        CHECK(e, s->value == floor(s->value), "%s: fractional count", s->name);
                        prev_le = le;
                        prev = s->value;
                        n_buckets++;
                        if (isinf(le))
                                inf = s->value;
                } else if (streq(suffix, "_sum"))
                        have_sum = true;
                else if (streq(suffix, "_count")) {
                        have_count = true;
                        CHECK(e, s->value == inf, "%s differs from the +Inf bucket", s->name);
                } else
                        CHECK(e, false, "%s in histogram %s", s->name, name);
        }
        CHECK(e, n_buckets > 1, "%s: no buckets", name);
        CHECK(e, isinf(prev_le), "%s: the last bucket is not +Inf", name);
        CHECK(e, have_sum && have_count, "%s: _sum or _count missing", name);
        return true;
}

/* Parses text (modified in place) into e. Returns true, or false with e->error set. */
static bool parse_exposition(char *text, Expo *e) {
        memset(e, 0, sizeof(*e));
        CHECK(e, *text, "empty file");
        CHECK(e, text[strlen(text) - 1] == '\n', "the last line is not terminated");
        for (char *l = text, *nl; *l; l = nl + 1) {
                nl = strchr(l, '\n');
                *nl = '\0';
                e->line++;
                if (!*l)
                        continue;
                if (!(l[0] == '#' ? parse_comment(e, l) : parse_sample(e, l)))
                        return false;
        }
        e->line = 0;
        for (size_t f = 0; f < e->nf; f++) {
                const char *name = e->f[f].name;
                size_t l = strlen(name);

                CHECK(e, e->f[f].help && e->f[f].type[0], "%s: HELP or TYPE missing", name);
                CHECK(e, !streq(e->f[f].type, "counter") || (l > 6 && streq(name + l - 6, "_total")),
                      "counter %s does not end in _total", name);
                CHECK(e, streq(e->f[f].type, "counter") || l <= 6 || !streq(name + l - 6, "_total"),
                      "%s %s ends in _total", e->f[f].type, name);
                if (streq(e->f[f].type, "histogram") && !check_histogram(e, (int) f))
                        return false;
        }
        return true;
}

/* ---- helpers ---- */

static char *dir;
static char path[512];

static void setup(void) {
        dir = harness_mkdtemp("outaged-metrics-");
        cr_assert_not_null(dir);
        snprintf(path, sizeof(path), "%s/outaged.prom", dir);
}

static void teardown(void) {
        harness_rm_rf(dir);
        free(dir);
        dir = NULL;
}

TestSuite(metrics, .init = setup, .fini = teardown, .timeout = 30);

static char *slurp(const char *p) {
        FILE *f = fopen(p, "r");
        char *buf;
        long n;

        cr_assert_not_null(f, "%s: %m", p);
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        rewind(f);
        buf = malloc((size_t) n + 1);
        cr_assert_not_null(buf);
        cr_assert_eq(fread(buf, 1, (size_t) n, f), (size_t) n);
        buf[n] = '\0';
        fclose(f);
        return buf;
}

/* Writes m, parses the file into a (static) Expo and returns it. */
static const Expo *write_and_parse(const Metrics *m) {
        static Expo e;
        char *text;
        int r = metrics_write(path, m);

        cr_assert_eq(r, 0, "metrics_write: %s", strerror(-r));
        text = slurp(path);
        cr_assert(parse_exposition(text, &e), "%s: %s", path, e.error);
        free(text);
        return &e;
}

/* The value of the series name{labels} (labels "" for none); fails when absent. */
static double value_of(const Expo *e, const char *name, const char *labels) {
        for (size_t i = 0; i < e->n; i++)
                if (streq(e->s[i].name, name) && streq(e->s[i].labels, labels))
                        return e->s[i].value;
        cr_assert_fail("no series %s{%s}", name, labels);
        return NAN;
}

/* Entries of dir other than the metrics file itself (temporary files left behind). */
static int stray_files(void) {
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        cr_assert_not_null(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..") && !streq(de->d_name, "outaged.prom"))
                        n++;
        closedir(d);
        return n;
}

/* ---- the parser refuses what Prometheus would ---- */

static const char *parse_error(const char *text) {
        static Expo e;
        char buf[1024];

        snprintf(buf, sizeof(buf), "%s", text);
        return parse_exposition(buf, &e) ? NULL : e.error;
}

Test(metrics, parser_accepts_valid_text) {
        const char *err = parse_error(
                "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
                "# some comment\n"
                "# HELP g G.\n# TYPE g gauge\ng{x=\"a\\\"b\",y=\"\"} -1.5e3\ng{x=\"c\"} NaN 1700000000000\n"
                "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                "h_sum 0.75\nh_count 2\n");

        cr_assert_null(err, "%s", err);
}

Test(metrics, parser_refuses_invalid_text) {
        static const char *const bad[] = {
                "a_total 1\n",                                                  /* no HELP/TYPE */
                "# TYPE a_total counter\na_total 1\n",                          /* no HELP */
                "# HELP a_total A.\na_total 1\n",                               /* no TYPE */
                "# HELP a A.\n# TYPE a counter\na 1\n",                         /* counter without _total */
                "# HELP a_total A.\n# TYPE a_total gauge\na_total 1\n",         /* _total gauge */
                "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n",                        /* name */
                "# HELP a A.\n# TYPE a gauge\na{1x=\"v\"} 1\n",                 /* label name */
                "# HELP a A.\n# TYPE a gauge\na{x=v} 1\n",                      /* unquoted */
                "# HELP a A.\n# TYPE a gauge\na{x=\"v} 1\n",                    /* unterminated */
                "# HELP a A.\n# TYPE a gauge\na one\n",                         /* value */
                "# HELP a A.\n# TYPE a gauge\na 0x10\n",                        /* hex value */
                "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",                      /* duplicate series */
                "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n",
                "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n",              /* HELP after samples */
                "# HELP a A.\n# TYPE a gauge\n# TYPE a gauge\na 1\n",           /* two TYPEs */
                "# HELP a A.\n# TYPE a gauge\na 1",                             /* unterminated line */
                "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                "h_sum 1\nh_count 1\n",                                         /* not cumulative */
                "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 1\n"
                "h_sum 1\nh_count 1\n",                                         /* no +Inf */
                "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
                "h_sum 1\nh_count 2\n",                                         /* count != +Inf */
                "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
                "h_count 1\n",                                                  /* no _sum */
                "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
                "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",                /* le order */
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_assert_not_null(parse_error(bad[i]), "accepted case %zu:\n%s", i, bad[i]);
}

/* ---- the daemon's file ---- */

Test(metrics, zero_metrics_are_valid) {
        Metrics m = { 0 };
        const Expo *e = write_and_parse(&m);

        cr_assert_gt(e->n, 20);
        cr_assert_eq(value_of(e, "outaged_messages_received_total", ""), 0);
}

Test(metrics, values_are_written) {
        Metrics m = {
                .messages_received = 11, .reports_accepted = 12, .reports_duplicate = 13,
                .flushes_ok = 14, .flushes_failed = 15, .fragments_flushed = 16, .rejects_flushed = 17,
                .last_flush_seconds = 0.25, .events_in_memory = 18, .events_open = 19, .events_dirty = 20,
                .keys_in_memory = 21, .memory_bytes = 22, .queue_length = 23, .journal_bytes = 24,
                .journal_uncommitted = 25, .mqtt_connected = true, .db_connected = false, .paused = true,
                .mqtt_connects = 26, .started_at = 1700000000 * USEC_PER_SEC + 500000,
        };
        const Expo *e = write_and_parse(&m);

        cr_assert_eq(value_of(e, "outaged_messages_received_total", ""), 11);
        cr_assert_eq(value_of(e, "outaged_reports_accepted_total", ""), 12);
        cr_assert_eq(value_of(e, "outaged_reports_duplicate_total", ""), 13);
        cr_assert_eq(value_of(e, "outaged_flushes_total", ""), 14);
        cr_assert_eq(value_of(e, "outaged_flush_failures_total", ""), 15);
        cr_assert_eq(value_of(e, "outaged_fragments_flushed_total", ""), 16);
        cr_assert_eq(value_of(e, "outaged_rejects_flushed_total", ""), 17);
        cr_assert_eq(value_of(e, "outaged_last_flush_seconds", ""), 0.25);
        cr_assert_eq(value_of(e, "outaged_events_in_memory", ""), 18);
        cr_assert_eq(value_of(e, "outaged_events_open", ""), 19);
        cr_assert_eq(value_of(e, "outaged_events_dirty", ""), 20);
        cr_assert_eq(value_of(e, "outaged_keys_in_memory", ""), 21);
        cr_assert_eq(value_of(e, "outaged_memory_bytes", ""), 22);
        cr_assert_eq(value_of(e, "outaged_queue_length", ""), 23);
        cr_assert_eq(value_of(e, "outaged_journal_bytes", ""), 24);
        cr_assert_eq(value_of(e, "outaged_journal_uncommitted_records", ""), 25);
        cr_assert_eq(value_of(e, "outaged_mqtt_connected", ""), 1);
        cr_assert_eq(value_of(e, "outaged_database_connected", ""), 0);
        cr_assert_eq(value_of(e, "outaged_consumption_paused", ""), 1);
        cr_assert_eq(value_of(e, "outaged_mqtt_connects_total", ""), 26);
        cr_assert_eq(value_of(e, "outaged_start_time_seconds", ""), 1700000000.5);
}

Test(metrics, one_reject_series_per_reason) {
        Metrics m = { 0 };
        const Expo *e;
        char labels[64];

        for (int r = REJECT_NONE + 1; r < _REJECT_REASON_MAX; r++)
                m.rejects[r] = (uint64_t) r * 100;
        e = write_and_parse(&m);
        for (int r = REJECT_NONE + 1; r < _REJECT_REASON_MAX; r++) {
                snprintf(labels, sizeof(labels), "reason=\"%s\"", reject_reason_to_string((RejectReason) r));
                cr_assert_eq(value_of(e, "outaged_rejects_total", labels), r * 100.0, "%s", labels);
        }
}

Test(metrics, large_counters_are_exact) {
        Metrics m = { .messages_received = UINT64_MAX, .reports_accepted = (UINT64_C(1) << 53) + 1 };
        char *text;

        cr_assert_eq(metrics_write(path, &m), 0);
        text = slurp(path);
        cr_assert_not_null(strstr(text, "\noutaged_messages_received_total 18446744073709551615\n"));
        cr_assert_not_null(strstr(text, "\noutaged_reports_accepted_total 9007199254740993\n"));
        free(text);
        (void) write_and_parse(&m);
}

Test(metrics, rewrite_replaces_and_leaves_no_temporary_file) {
        Metrics m = { .messages_received = 1 };
        const Expo *e;

        (void) write_and_parse(&m);
        m.messages_received = 2;
        e = write_and_parse(&m);
        cr_assert_eq(value_of(e, "outaged_messages_received_total", ""), 2);
        cr_assert_eq(stray_files(), 0);
}

Test(metrics, missing_directory_fails_cleanly) {
        Metrics m = { 0 };
        char p[600];

        snprintf(p, sizeof(p), "%s/missing/outaged.prom", dir);
        cr_assert_eq(metrics_write(p, &m), -ENOENT);
        cr_assert_eq(stray_files(), 0);
}

/* ---- how the file is written ---- */

static mode_t mode_of(const char *p) {
        struct stat st;

        cr_assert_eq(lstat(p, &st), 0, "%s: %m", p);
        return st.st_mode;
}

Test(metrics, mode_0644_whatever_the_umask) {
        Metrics m = { 0 };

        umask(077);
        cr_assert_eq(metrics_write(path, &m), 0);
        cr_assert_eq(mode_of(path) & 07777, 0644, "mode %o", mode_of(path) & 07777);
        umask(0);
        cr_assert_eq(metrics_write(path, &m), 0);
        cr_assert_eq(mode_of(path) & 07777, 0644, "mode %o", mode_of(path) & 07777);
        cr_assert(S_ISREG(mode_of(path)));
}

Test(metrics, an_existing_file_with_another_mode_is_replaced) {
        Metrics m = { 0 };
        int fd = open(path, O_WRONLY | O_CREAT, 0600);

        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "old\n", 4), 4);
        close(fd);
        (void) write_and_parse(&m);
        cr_assert_eq(mode_of(path) & 07777, 0644);
}

/* A file elsewhere that a symlink at the temporary name points to. */
static void plant_symlink(const char *target) {
        char tmp[600];

        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        cr_assert_eq(symlink(target, tmp), 0, "%m");
}

Test(metrics, a_symlink_at_the_temporary_name_is_not_followed) {
        Metrics m = { .messages_received = 7 };
        char victim[600];
        char *text;
        int fd;

        snprintf(victim, sizeof(victim), "%s/victim", dir);
        fd = open(victim, O_WRONLY | O_CREAT, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "precious\n", 9), 9);
        close(fd);
        plant_symlink(victim);

        cr_assert_eq(value_of(write_and_parse(&m), "outaged_messages_received_total", ""), 7);
        text = slurp(victim);
        cr_assert_str_eq(text, "precious\n", "written through the symlink");
        free(text);
        cr_assert_eq(mode_of(victim) & 07777, 0600, "the target's mode changed");
        cr_assert(S_ISREG(mode_of(path)), "the metrics file is not a regular file");
        unlink(victim);
        cr_assert_eq(stray_files(), 0);
}

Test(metrics, a_dangling_symlink_at_the_temporary_name_creates_nothing) {
        Metrics m = { 0 };
        char victim[600];

        snprintf(victim, sizeof(victim), "%s/created-through-link", dir);
        plant_symlink(victim);
        (void) write_and_parse(&m);
        cr_assert_eq(access(victim, F_OK), -1, "a file was created through the symlink");
        cr_assert_eq(stray_files(), 0);
}

Test(metrics, a_stale_temporary_file_is_replaced) {
        Metrics m = { 0 };
        char tmp[600];
        int fd;

        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        fd = open(tmp, O_WRONLY | O_CREAT, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "garbage that is longer than nothing\n", 36), 36);
        close(fd);
        (void) write_and_parse(&m);
        cr_assert_eq(stray_files(), 0);
}

Test(metrics, unwritable_directory_fails_and_keeps_the_old_file) {
        Metrics m = { .messages_received = 1 };

        if (geteuid() == 0)
                cr_skip_test("root writes anywhere");
        (void) write_and_parse(&m);
        cr_assert_eq(chmod(dir, 0555), 0);
        m.messages_received = 2;
        cr_assert_eq(metrics_write(path, &m), -EACCES);
        chmod(dir, 0755);
        cr_assert_eq(value_of(write_and_parse(&(Metrics) { .messages_received = 1 }),
                              "outaged_messages_received_total", ""), 1);
}

/* ---- the metrics added for operations ---- */

Test(metrics, build_info) {
        Metrics m = { 0 };
        char labels[128];

        snprintf(labels, sizeof(labels), "version=\"%s\"", OUTAGED_VERSION);
        cr_assert_eq(value_of(write_and_parse(&m), "outaged_build_info", labels), 1);
}

Test(metrics, last_flush_success_and_failure_counters) {
        Metrics m = {
                .last_flush_success = 1800000000 * USEC_PER_SEC + 250000,
                .store_refused = 3,
                .journal_write_failures = 4,
        };
        const Expo *e = write_and_parse(&m);

        cr_assert_eq(value_of(e, "outaged_last_flush_success_timestamp_seconds", ""), 1800000000.25);
        cr_assert_eq(value_of(e, "outaged_store_refused_total", ""), 3);
        cr_assert_eq(value_of(e, "outaged_journal_write_failures_total", ""), 4);
        m = (Metrics) { 0 };
        e = write_and_parse(&m);
        cr_assert_eq(value_of(e, "outaged_last_flush_success_timestamp_seconds", ""), 0, "never flushed");
}

static double bucket(const Expo *e, const char *le) {
        char labels[64];

        snprintf(labels, sizeof(labels), "le=\"%s\"", le);
        return value_of(e, "outaged_flush_duration_seconds_bucket", labels);
}

Test(metrics, flush_duration_histogram) {
        Metrics m = { 0 };
        const Expo *e = write_and_parse(&m);

        cr_assert_eq(bucket(e, "+Inf"), 0);
        cr_assert_eq(value_of(e, "outaged_flush_duration_seconds_count", ""), 0);
        cr_assert_eq(value_of(e, "outaged_flush_duration_seconds_sum", ""), 0);

        metrics_observe_flush(&m, 0.005);       /* a bound belongs to its bucket (le) */
        metrics_observe_flush(&m, 0.0050001);
        metrics_observe_flush(&m, 0.3);
        metrics_observe_flush(&m, 30);
        metrics_observe_flush(&m, 31);
        metrics_observe_flush(&m, -1);          /* a clock step: counts as 0 */
        metrics_observe_flush(&m, NAN);
        metrics_observe_flush(&m, INFINITY);
        metrics_observe_flush(NULL, 1);
        e = write_and_parse(&m);
        cr_assert_eq(bucket(e, "0.005"), 2);
        cr_assert_eq(bucket(e, "0.01"), 3);
        cr_assert_eq(bucket(e, "0.25"), 3);
        cr_assert_eq(bucket(e, "0.5"), 4);
        cr_assert_eq(bucket(e, "10"), 4);
        cr_assert_eq(bucket(e, "30"), 5);
        cr_assert_eq(bucket(e, "+Inf"), 6);
        cr_assert_eq(value_of(e, "outaged_flush_duration_seconds_count", ""), 6);
        cr_assert_float_eq(value_of(e, "outaged_flush_duration_seconds_sum", ""),
                           0.005 + 0.0050001 + 0.3 + 30 + 31, 1e-9);
        cr_assert_eq(value_of(e, "outaged_last_flush_seconds", ""), 0, "the last observation");
}

Test(metrics, non_finite_gauges_are_spelled_for_prometheus) {
        Metrics m = { .last_flush_seconds = NAN };
        char *text;

        (void) write_and_parse(&m);
        text = slurp(path);
        cr_assert_not_null(strstr(text, "\noutaged_last_flush_seconds NaN\n"));
        free(text);
        m.last_flush_seconds = INFINITY;
        cr_assert_eq(value_of(write_and_parse(&m), "outaged_last_flush_seconds", ""), INFINITY);
}
