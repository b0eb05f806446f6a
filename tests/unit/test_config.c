/* test_config.c — the configuration parser: every key, default and bound, every error
 * message with its file:line, durations and sizes, secrets, and the dump. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "harness.h"

static char err[2048];

static void clean_env(void) {
        unsetenv("CREDENTIALS_DIRECTORY");
        unsetenv("STATE_DIRECTORY");
}

TestSuite(config, .init = clean_env);

static int load(const char *text, Config **ret) {
        return config_load_buffer("t.conf", text, strlen(text), ret, err, sizeof err);
}

static Config *load_ok(const char *text) {
        Config *c = NULL;
        int r = load(text, &c);

        cr_assert_eq(r, 0, "config rejected: %s\n---\n%s", err, text);
        cr_assert_not_null(c);
        return c;
}

/* Asserts the load fails with -EINVAL and the message starts with want. */
static void load_fail(const char *text, const char *want) {
        Config *c = (Config *) 0x1;
        int r = load(text, &c);

        cr_assert_eq(r, -EINVAL, "accepted or wrong error %d for:\n%s", r, text);
        cr_assert_eq(c, (Config *) 0x1, "*ret clobbered on failure");
        cr_assert(strncmp(err, want, strlen(want)) == 0, "message\n  %s\nwanted prefix\n  %s", err, want);
}

static void write_file(const char *path, const char *content, size_t len) {
        FILE *f = fopen(path, "w");

        cr_assert_not_null(f, "%s: %m", path);
        cr_assert_eq(fwrite(content, 1, len, f), len);
        cr_assert_eq(fclose(f), 0);
}

/* ---- defaults ---- */

Test(config, defaults_match_spec) {
        Config *c = NULL;

        cr_assert_eq(config_defaults(&c), 0);
        cr_assert_str_eq(c->mqtt_uri, "tcp://localhost:1883");
        cr_assert_str_eq(c->mqtt_client_id, "outaged");
        cr_assert_str_eq(c->mqtt_topic, "outages/+");
        cr_assert_null(c->mqtt_share_group);
        cr_assert_eq(c->mqtt_qos, 1);
        cr_assert_eq(c->mqtt_session_expiry, USEC_PER_DAY);
        cr_assert_null(c->mqtt_username);
        cr_assert_null(c->mqtt_password_file);
        cr_assert_null(c->mqtt_password);
        cr_assert_null(c->mqtt_ca_file);
        cr_assert_null(c->mqtt_cert_file);
        cr_assert_null(c->mqtt_key_file);
        cr_assert_str_eq(c->pg_conninfo, "dbname=outages");
        cr_assert_null(c->pg_password_file);
        cr_assert_null(c->pg_password);
        cr_assert_eq(c->gap, 12 * USEC_PER_MINUTE);
        cr_assert_null(c->outage_types);
        cr_assert_eq(c->n_outage_types, 0);
        cr_assert_eq(c->max_future_skew, 5 * USEC_PER_MINUTE);
        cr_assert_eq(c->max_age, 365 * USEC_PER_DAY);
        cr_assert_eq(c->flush_interval, USEC_PER_SEC);
        cr_assert_eq(c->batch_max, 10000);
        cr_assert_str_eq(c->journal_dir, "/var/lib/outaged/journal");
        cr_assert_eq(c->journal_sync, USEC_PER_SEC);
        cr_assert_eq(c->max_payload, 64 * 1024);
        cr_assert_eq(c->max_batch_items, 1000);
        cr_assert_eq(c->max_events_in_memory, 5000000);
        cr_assert_eq(c->startup_timeout, USEC_PER_MINUTE);
        cr_assert_null(c->events_topic_prefix);
        cr_assert_null(c->events_notify_channel);
        cr_assert_eq(c->retention_events, 0);
        cr_assert_eq(c->retention_rejects, 90 * USEC_PER_DAY);
        cr_assert_eq(c->log_level, LOG_LEVEL_INFO);
        cr_assert_null(c->metrics_file);
        config_free(c);
}

Test(config, empty_file_and_null_path_give_defaults) {
        Config *c = load_ok("");
        Config *d = NULL;

        cr_assert_eq(config_load(NULL, &d, err, sizeof err), 0);
        cr_assert_str_eq(c->mqtt_uri, d->mqtt_uri);
        cr_assert_eq(c->gap, d->gap);
        config_free(c);
        config_free(d);
}

Test(config, example_config_is_valid_and_all_defaults) {
        char path[4096], *a = NULL, *b = NULL;
        size_t la, lb;
        Config *c = NULL, *d = NULL;
        FILE *f;

        snprintf(path, sizeof path, "%s/config/outaged.conf", harness_source_root());
        cr_assert_eq(config_load(path, &c, err, sizeof err), 0, "%s", err);
        cr_assert_eq(config_defaults(&d), 0);
        f = open_memstream(&a, &la);
        config_dump(c, f);
        fclose(f);
        f = open_memstream(&b, &lb);
        config_dump(d, f);
        fclose(f);
        cr_assert_str_eq(a, b, "the example config must show the defaults");
        free(a);
        free(b);
        config_free(c);
        config_free(d);
}

Test(config, empty_value_means_default) {
        Config *c = load_ok("[mqtt]\nuri =\nclient_id =   \nqos=\nsession_expiry =\n"
                            "[postgres]\nconninfo =\n"
                            "[aggregation]\ngap =\nbatch_max =\noutage_types =\n"
                            "[limits]\nmax_payload =\n[log]\nlevel =\n");

        cr_assert_str_eq(c->mqtt_uri, "tcp://localhost:1883");
        cr_assert_str_eq(c->mqtt_client_id, "outaged");
        cr_assert_eq(c->mqtt_qos, 1);
        cr_assert_eq(c->mqtt_session_expiry, USEC_PER_DAY);
        cr_assert_str_eq(c->pg_conninfo, "dbname=outages");
        cr_assert_eq(c->gap, 12 * USEC_PER_MINUTE);
        cr_assert_eq(c->batch_max, 10000);
        cr_assert_null(c->outage_types);
        cr_assert_eq(c->max_payload, 65536);
        cr_assert_eq(c->log_level, LOG_LEVEL_INFO);
        config_free(c);
}

/* ---- every key ---- */

Test(config, every_key_parses) {
        Config *c = load_ok(
                "[mqtt]\n"
                "uri = ssl://broker.example:8883\n"
                "client_id = outaged-2.a:b_c\n"
                "topic = city/+/outage\n"
                "share_group = grp1\n"
                "qos = 2\n"
                "session_expiry = 2h\n"
                "username = outaged user\n"
                "ca_file = /etc/ssl/ca.pem\n"
                "cert_file = /etc/outaged/cert.pem\n"
                "key_file = /etc/outaged/key.pem\n"
                "[postgres]\n"
                "conninfo = host=/run/postgresql dbname=x application_name='outaged #1'\n"
                "[aggregation]\n"
                "gap = 15min\n"
                "outage_types = panel_outage lamp_outage\n"
                "max_future_skew = 30s\n"
                "max_age = 0\n"
                "flush_interval = 250ms\n"
                "batch_max = 500\n"
                "[storage]\n"
                "journal_dir = /srv/journal\n"
                "journal_sync = 0\n"
                "[limits]\n"
                "max_payload = 1MiB\n"
                "max_batch_items = 20\n"
                "max_events_in_memory = 1000\n"
                "startup_timeout = 2min\n"
                "[events]\n"
                "topic_prefix = outaged/events\n"
                "notify_channel = outage_events\n"
                "[retention]\n"
                "events = 400d\n"
                "rejects = 0\n"
                "[log]\n"
                "level = debug\n"
                "metrics_file = /run/outaged/metrics.prom\n");

        cr_assert_str_eq(c->mqtt_uri, "ssl://broker.example:8883");
        cr_assert_str_eq(c->mqtt_client_id, "outaged-2.a:b_c");
        cr_assert_str_eq(c->mqtt_topic, "city/+/outage");
        cr_assert_str_eq(c->mqtt_share_group, "grp1");
        cr_assert_eq(c->mqtt_qos, 2);
        cr_assert_eq(c->mqtt_session_expiry, 2 * USEC_PER_HOUR);
        cr_assert_str_eq(c->mqtt_username, "outaged user");
        cr_assert_str_eq(c->mqtt_ca_file, "/etc/ssl/ca.pem");
        cr_assert_str_eq(c->mqtt_cert_file, "/etc/outaged/cert.pem");
        cr_assert_str_eq(c->mqtt_key_file, "/etc/outaged/key.pem");
        cr_assert_str_eq(c->pg_conninfo, "host=/run/postgresql dbname=x application_name='outaged #1'");
        cr_assert_eq(c->gap, 15 * USEC_PER_MINUTE);
        cr_assert_eq(c->n_outage_types, 2);
        cr_assert_str_eq(c->outage_types[0], "lamp_outage");
        cr_assert_str_eq(c->outage_types[1], "panel_outage");
        cr_assert_null(c->outage_types[2]);
        cr_assert_eq(c->max_future_skew, 30 * USEC_PER_SEC);
        cr_assert_eq(c->max_age, 0);
        cr_assert_eq(c->flush_interval, 250 * USEC_PER_MSEC);
        cr_assert_eq(c->batch_max, 500);
        cr_assert_str_eq(c->journal_dir, "/srv/journal");
        cr_assert_eq(c->journal_sync, 0);
        cr_assert_eq(c->max_payload, 1024 * 1024);
        cr_assert_eq(c->max_batch_items, 20);
        cr_assert_eq(c->max_events_in_memory, 1000);
        cr_assert_eq(c->startup_timeout, 2 * USEC_PER_MINUTE);
        cr_assert_str_eq(c->events_topic_prefix, "outaged/events");
        cr_assert_str_eq(c->events_notify_channel, "outage_events");
        cr_assert_eq(c->retention_events, 400 * USEC_PER_DAY);
        cr_assert_eq(c->retention_rejects, 0);
        cr_assert_eq(c->log_level, LOG_LEVEL_DEBUG);
        cr_assert_str_eq(c->metrics_file, "/run/outaged/metrics.prom");
        config_free(c);
}

typedef struct Bound {
        const char *section, *key;
        const char *ok[4];              /* accepted values */
        const char *out[4];             /* out of range */
        const char *range;              /* as the message spells it */
} Bound;

static const Bound bounds[] = {
        { "mqtt", "qos", { "0", "2" }, { "3", "99999999999999999999999" }, "0..2" },
        { "mqtt", "session_expiry", { "0", "4294967295s" }, { "4294967296s" }, "0..49710d6h28min15s" },
        { "aggregation", "gap", { "1s", "1d" }, { "999ms", "1d1us" }, "1s..1d" },
        { "aggregation", "max_future_skew", { "0", "1d" }, { "1d1s" }, "0..1d" },
        { "aggregation", "max_age", { "0", "36500d" }, { "36501d" }, "0..36500d" },
        { "aggregation", "flush_interval", { "10ms", "1h" }, { "9ms", "61min" }, "10ms..1h" },
        { "aggregation", "batch_max", { "1", "1000000" }, { "0", "1000001" }, "1..1000000" },
        { "storage", "journal_sync", { "0", "1h" }, { "1h1us" }, "0..1h" },
        { "limits", "max_payload", { "16B", "256MiB" }, { "15B", "257MiB", "1GiB" }, "16B..256MiB" },
        { "limits", "max_batch_items", { "1", "1000000" }, { "0", "1000001" }, "1..1000000" },
        { "limits", "max_events_in_memory", { "1000", "1000000000" }, { "999", "1000000001" }, "1000..1000000000" },
        { "limits", "startup_timeout", { "1s", "1d" }, { "999ms", "2d" }, "1s..1d" },
        { "retention", "events", { "0", "1us", "36500d" }, { "36500d1us" }, "0..36500d" },
        { "retention", "rejects", { "0", "90d", "36500d" }, { "36501d" }, "0..36500d" },
};

Test(config, bounds_in_and_out_of_range) {
        for (size_t i = 0; i < ELEMENTSOF(bounds); i++) {
                const Bound *b = &bounds[i];
                char text[256], want[256];

                for (size_t j = 0; j < 4 && b->ok[j]; j++) {
                        snprintf(text, sizeof text, "# c\n[%s]\n%s = %s\n", b->section, b->key, b->ok[j]);
                        config_free(load_ok(text));
                }
                for (size_t j = 0; j < 4 && b->out[j]; j++) {
                        snprintf(text, sizeof text, "# c\n[%s]\n%s = %s\n", b->section, b->key, b->out[j]);
                        snprintf(want, sizeof want, "t.conf:3: %s.%s: \"%s\" is out of range (expected %s)",
                                 b->section, b->key, b->out[j], b->range);
                        load_fail(text, want);
                        cr_assert_str_eq(err, want);
                }
        }
}

Test(config, session_expiry_whole_seconds) {
        load_fail("[mqtt]\nsession_expiry = 1500ms\n",
                  "t.conf:2: mqtt.session_expiry: invalid value \"1500ms\" (expected a whole number of seconds");
}

Test(config, bad_values_name_file_line_key) {
        static const struct { const char *text, *want; } cases[] = {
                { "[mqtt]\nqos = one\n", "t.conf:2: mqtt.qos: invalid value \"one\" (expected a non-negative integer)" },
                { "[mqtt]\nqos = -1\n", "t.conf:2: mqtt.qos: invalid value \"-1\"" },
                { "[mqtt]\nqos = 1 \n\n", NULL },
                { "[aggregation]\nbatch_max = 10k\n", "t.conf:2: aggregation.batch_max: invalid value \"10k\"" },
                { "[aggregation]\ngap = 12\n", "t.conf:2: aggregation.gap: invalid value \"12\" (expected a duration" },
                { "[limits]\nmax_payload = 64\n", "t.conf:2: limits.max_payload: invalid value \"64\" (expected a size" },
                { "[limits]\nmax_payload = 64kib\n", "t.conf:2: limits.max_payload: invalid value \"64kib\"" },
                { "[log]\nlevel = error\n", "t.conf:2: log.level: invalid value \"error\" (expected one of debug, info, notice, warning, err)" },
                { "[log]\nlevel = INFO\n", "t.conf:2: log.level: invalid value \"INFO\"" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                if (cases[i].want)
                        load_fail(cases[i].text, cases[i].want);
                else
                        config_free(load_ok(cases[i].text));
        }
}

/* ---- string keys ---- */

static void value_ok(const char *section, const char *key, const char *value) {
        char text[2048];

        snprintf(text, sizeof text, "[%s]\n%s = %s\n", section, key, value);
        config_free(load_ok(text));
}

static void value_bad(const char *section, const char *key, const char *value) {
        char text[2048], want[256];

        snprintf(text, sizeof text, "[%s]\n%s = %s\n", section, key, value);
        snprintf(want, sizeof want, "t.conf:2: %s.%s: invalid value", section, key);
        load_fail(text, want);
}

Test(config, uri) {
        const char *ok[] = { "tcp://h:1883", "ssl://h:8883", "mqtt://h", "mqtts://h", "ws://h/mqtt",
                             "wss://h:443/mqtt", "tcp://[::1]:1883" };
        const char *bad[] = { "http://h", "h:1883", "tcp://", "tcp:// h", "TCP://h", "tcp:///x", "tcp://h\x7f" };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                value_ok("mqtt", "uri", ok[i]);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                value_bad("mqtt", "uri", bad[i]);
}

Test(config, client_id) {
        char long_id[80];

        memset(long_id, 'a', 64);
        long_id[64] = '\0';
        value_ok("mqtt", "client_id", long_id);
        value_ok("mqtt", "client_id", "A-z_0.9:x");
        long_id[64] = 'a';
        long_id[65] = '\0';
        value_bad("mqtt", "client_id", long_id);
        value_bad("mqtt", "client_id", "out aged");
        value_bad("mqtt", "client_id", "out/aged");
        value_bad("mqtt", "client_id", "out+aged");
        value_bad("mqtt", "client_id", "\xc3\xa9t\xc3\xa9");
}

Test(config, topic) {
        const char *ok[] = { "outages/+", "+", "+/outage", "a/+/b/c", "a//+", "\xc3\xa9\x63lairage/+" };
        const char *bad[] = { "outages/#", "outages/+/#", "outages/x+", "outages/+x", "+/+",
                              "outages", "$share/g/outages/+", "$SYS/+", "outages/+\x01",
                              "outages/\xff/+" };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                value_ok("mqtt", "topic", ok[i]);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                value_bad("mqtt", "topic", bad[i]);
}

Test(config, events_topic_prefix) {
        const char *ok[] = { "outaged/events", "events", "a/b/c", "/leading", "a//b",
                             "\xc3\xa9v\xc3\xa9nements/x", "with space" };
        const char *bad[] = { "outaged/events/", "/", "outaged/+", "outaged/#", "+", "a+b",
                              "$SYS/events", "outaged/\x01", "outaged/\xff", "outaged/\xc2\x85" };
        Config *c = load_ok("[events]\ntopic_prefix =\n");

        cr_assert_null(c->events_topic_prefix, "empty: off");
        config_free(c);
        for (size_t i = 0; i < ELEMENTSOF(ok); i++)
                value_ok("events", "topic_prefix", ok[i]);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                value_bad("events", "topic_prefix", bad[i]);
        load_fail("[events]\ntopic_prefix = a/\n", "t.conf:2: events.topic_prefix: invalid value \"a/\" (expected "
                  "empty, or an MQTT topic without '+' or '#'");
}

Test(config, events_notify_channel) {
        char max[80];
        Config *c = load_ok("[events]\nnotify_channel =\n");

        cr_assert_null(c->events_notify_channel, "empty: off");
        config_free(c);
        memset(max, 'a', 63);
        max[63] = '\0';
        value_ok("events", "notify_channel", max);
        value_ok("events", "notify_channel", "outage_events");
        value_ok("events", "notify_channel", "_x9");
        max[63] = 'a';
        max[64] = '\0';
        value_bad("events", "notify_channel", max);
        value_bad("events", "notify_channel", "Outage");
        value_bad("events", "notify_channel", "9lives");
        value_bad("events", "notify_channel", "outage-events");
        value_bad("events", "notify_channel", "outage events");
        value_bad("events", "notify_channel", "\"quoted\"");
        value_bad("events", "notify_channel", "caf\xc3\xa9");
}

Test(config, share_group) {
        Config *c = load_ok("[mqtt]\nshare_group =\n");

        cr_assert_null(c->mqtt_share_group);
        config_free(c);
        value_ok("mqtt", "share_group", "workers");
        value_bad("mqtt", "share_group", "a/b");
        value_bad("mqtt", "share_group", "a+");
        value_bad("mqtt", "share_group", "a#");
        value_bad("mqtt", "share_group", "a b");
        value_bad("mqtt", "share_group", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
}

Test(config, outage_types_sorted_deduplicated) {
        Config *c = load_ok("[aggregation]\noutage_types =  panel_outage \t lamp_outage panel_outage a z9_\n");

        cr_assert_eq(c->n_outage_types, 4);
        cr_assert_str_eq(c->outage_types[0], "a");
        cr_assert_str_eq(c->outage_types[1], "lamp_outage");
        cr_assert_str_eq(c->outage_types[2], "panel_outage");
        cr_assert_str_eq(c->outage_types[3], "z9_");
        cr_assert_null(c->outage_types[4]);
        config_free(c);

        value_bad("aggregation", "outage_types", "Panel");
        value_bad("aggregation", "outage_types", "ok 1bad");
        value_bad("aggregation", "outage_types", "panel-outage");
        value_bad("aggregation", "outage_types", "a,b");
        value_bad("aggregation", "outage_types",
                  "a2345678901234567890123456789012345678901234567890123456789012345");
        value_ok("aggregation", "outage_types",
                 "a234567890123456789012345678901234567890123456789012345678901234");
}

Test(config, paths_and_text_reject_control_characters) {
        value_bad("mqtt", "username", "a\x01");
        value_bad("storage", "journal_dir", "/x\x1b[0m");
        value_bad("log", "metrics_file", "/x\xc0\xaf");        /* overlong UTF-8 */
        value_ok("log", "metrics_file", "relative/metrics.prom");
}

/* ---- syntax ---- */

Test(config, comments_and_whitespace) {
        Config *c = load_ok("\xef\xbb\xbf# leading comment\n"
                            "; another\n"
                            "   # indented comment\n"
                            "\t; indented too\n"
                            "\n   \n"
                            "  [ mqtt ]  \r\n"
                            "\tqos\t=\t0\t\r\n"
                            "client_id=abc\n"
                            "username = a ; not a comment\n"
                            "[log]\n"
                            "level = debug");       /* no final newline */

        cr_assert_eq(c->mqtt_qos, 0);
        cr_assert_str_eq(c->mqtt_client_id, "abc");
        cr_assert_str_eq(c->mqtt_username, "a ; not a comment");
        cr_assert_eq(c->log_level, LOG_LEVEL_DEBUG);
        config_free(c);
}

Test(config, value_may_contain_equals_and_hash) {
        Config *c = load_ok("[postgres]\nconninfo = postgresql://u@h/db?sslmode=require#x\n");

        cr_assert_str_eq(c->pg_conninfo, "postgresql://u@h/db?sslmode=require#x");
        config_free(c);
}

Test(config, syntax_errors) {
        static const struct { const char *text, *want; } cases[] = {
                { "[mqtt]\nqos = 1\n[mqttt]\n", "t.conf:3: [mqttt]: unknown section (expected one of mqtt, postgres, aggregation, storage, limits, events, retention, log)" },
                { "[mqtt]\nfoo = 1\n", "t.conf:2: mqtt.foo: unknown key" },
                { "[log]\nqos = 1\n", "t.conf:2: log.qos: unknown key" },
                { "# x\nqos = 1\n", "t.conf:2: qos: key outside a section (expected a [section] line first)" },
                { "[mqtt]\nqos = 1\n\nqos = 2\n", "t.conf:4: mqtt.qos: duplicate key (first set on line 2)" },
                { "[mqtt]\nqos = 1\n[log]\n[mqtt]\nqos = 1\n", "t.conf:5: mqtt.qos: duplicate key (first set on line 2)" },
                { "[mqtt]\njust words\n", "t.conf:2: syntax: malformed line \"just words\" (expected [section], key = value, or a comment starting with # or ;)" },
                { "[mqtt]\n= 1\n", "t.conf:2: syntax: malformed line" },
                { "[mqtt\n", "t.conf:1: syntax: malformed section header \"[mqtt\" (expected [section])" },
                { "[mqtt] x\n", "t.conf:1: syntax: malformed section header" },
                { "[]\n", "t.conf:1: []: unknown section" },
                { "[ Log ]\n", "t.conf:1: [Log]: unknown section" },
                { "[mqtt]\nq\"o = 1\n", "t.conf:2: mqtt.q\\x22o: unknown key" },
                { "[mqtt]\n# ok\n\n\nqos = 7\n", "t.conf:5: mqtt.qos: \"7\" is out of range" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                load_fail(cases[i].text, cases[i].want);
}

Test(config, nul_byte_and_long_line) {
        Config *c = NULL;
        char *big;
        static const char nul[] = "[mqtt]\nqos = 1\0\n";

        cr_assert_eq(config_load_buffer("t.conf", nul, sizeof nul - 1, &c, err, sizeof err), -EINVAL);
        cr_assert_str_eq(err, "t.conf:2: syntax: NUL byte in line (expected text)");

        big = malloc(10000);
        memset(big, '#', 9999);
        big[9999] = '\0';
        cr_assert_eq(load(big, &c), -EINVAL);
        cr_assert_str_eq(err, "t.conf:1: syntax: line too long (expected at most 8192 bytes)");
        free(big);
}

Test(config, long_value_is_truncated_in_message) {
        char text[3000];

        snprintf(text, sizeof text, "[mqtt]\nclient_id = %0200d\n", 0);
        load_fail(text, "t.conf:2: mqtt.client_id: invalid value \"000");
        cr_assert(strstr(err, "...\" (expected"), "%s", err);
        cr_assert_lt(strlen(err), 400);
}

/* ---- cross-field rules ---- */

Test(config, cross_field_rules) {
        load_fail("[mqtt]\nuri = ssl://h\n\ncert_file = /c.pem\n",
                  "t.conf:4: mqtt.cert_file: set without mqtt.key_file (expected both or neither)");
        load_fail("[mqtt]\nuri = ssl://h\nkey_file = /k.pem\n",
                  "t.conf:3: mqtt.key_file: set without mqtt.cert_file (expected both or neither)");
        load_fail("[mqtt]\nca_file = /ca.pem\n",
                  "t.conf:2: mqtt.ca_file: set but mqtt.uri is not a TLS URI");
        config_free(load_ok("[mqtt]\nuri = mqtts://h\nca_file = /ca.pem\n"));
        config_free(load_ok("[mqtt]\nuri = wss://h\ncert_file = /c\nkey_file = /k\n"));
}

/* ---- durations and sizes ---- */

Test(config, durations_out_of_range_name_the_bounds) {
        /* the notation itself is tested in test_text.c */
        load_fail("[aggregation]\ngap = 99999999999999999999d\n",
                  "t.conf:2: aggregation.gap: \"99999999999999999999d\" is out of range (expected 1s..1d)");
}

/* ---- journal_dir ---- */

Test(config, journal_dir_from_state_directory) {
        Config *c;

        setenv("STATE_DIRECTORY", "/var/lib/outaged", 1);
        c = load_ok("");
        cr_assert_str_eq(c->journal_dir, "/var/lib/outaged/journal");
        config_free(c);

        setenv("STATE_DIRECTORY", "/state/a:/state/b", 1);
        c = load_ok("");
        cr_assert_str_eq(c->journal_dir, "/state/a/journal");
        config_free(c);

        c = load_ok("[storage]\njournal_dir = /elsewhere\n");
        cr_assert_str_eq(c->journal_dir, "/elsewhere");
        config_free(c);

        setenv("STATE_DIRECTORY", "", 1);
        c = load_ok("");
        cr_assert_str_eq(c->journal_dir, "/var/lib/outaged/journal");
        config_free(c);
}

/* ---- files and secrets ---- */

Test(config, missing_file) {
        Config *c = (Config *) 0x1;

        cr_assert_eq(config_load("/nonexistent/outaged.conf", &c, err, sizeof err), -ENOENT);
        cr_assert_str_eq(err, "/nonexistent/outaged.conf: cannot read: No such file or directory");
        cr_assert_eq(c, (Config *) 0x1);
        cr_assert_eq(config_load("/", &c, err, sizeof err), -EISDIR);
}

Test(config, file_too_large) {
        char *dir = harness_mkdtemp("outaged-config-");
        char path[512];
        Config *c = NULL;
        FILE *f;

        snprintf(path, sizeof path, "%s/big.conf", dir);
        f = fopen(path, "w");
        for (int i = 0; i < 200000; i++)
                fputs("#######\n", f);
        fclose(f);
        cr_assert_eq(config_load(path, &c, err, sizeof err), -EFBIG);
        cr_assert(strstr(err, "larger than 1 MiB"), "%s", err);
        harness_rm_rf(dir);
        free(dir);
}

Test(config, load_from_file_names_path_and_line) {
        char *dir = harness_mkdtemp("outaged-config-");
        char path[512], want[600];
        Config *c = NULL;
        static const char text[] = "[mqtt]\nqos = 1\n[aggregation]\nbogus = 3\n";

        snprintf(path, sizeof path, "%s/outaged.conf", dir);
        write_file(path, text, sizeof text - 1);
        cr_assert_eq(config_load(path, &c, err, sizeof err), -EINVAL);
        snprintf(want, sizeof want, "%s:4: aggregation.bogus: unknown key", path);
        cr_assert_str_eq(err, want);
        harness_rm_rf(dir);
        free(dir);
}

Test(config, password_files) {
        char *dir = harness_mkdtemp("outaged-config-");
        char mp[512], pp[512], text[2048], want[1200];
        Config *c;

        snprintf(mp, sizeof mp, "%s/mqtt.pw", dir);
        snprintf(pp, sizeof pp, "%s/pg.pw", dir);
        write_file(mp, "s3cret\n", 7);
        write_file(pp, "pg pass\r\n", 9);
        snprintf(text, sizeof text, "[mqtt]\npassword_file = %s\n[postgres]\npassword_file = %s\n", mp, pp);
        c = load_ok(text);
        cr_assert_str_eq(c->mqtt_password, "s3cret");
        cr_assert_str_eq(c->pg_password, "pg pass");
        cr_assert_str_eq(c->mqtt_password_file, mp);
        config_free(c);

        /* no trailing newline */
        write_file(mp, "abc", 3);
        c = load_ok(text);
        cr_assert_str_eq(c->mqtt_password, "abc");
        config_free(c);

        /* empty, only a newline, two lines, NUL */
        const char *bad[] = { "", "\n", "a\nb\n", "a\0b" };
        const size_t badlen[] = { 0, 1, 4, 3 };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                write_file(mp, bad[i], badlen[i]);
                snprintf(want, sizeof want, "t.conf:2: mqtt.password_file: cannot read %s: ", mp);
                load_fail(text, want);
        }
        write_file(mp, "", 0);
        load_fail(text, "t.conf:2: mqtt.password_file: cannot read");
        cr_assert(strstr(err, "empty (expected a password)"), "%s", err);

        /* missing */
        unlink(mp);
        snprintf(want, sizeof want, "t.conf:2: mqtt.password_file: cannot read %s: No such file or directory", mp);
        load_fail(text, want);
        cr_assert_str_eq(err, want);

        /* unreadable (as root, permissions do not apply: use a directory instead) */
        snprintf(text, sizeof text, "[postgres]\n\npassword_file = %s\n", dir);
        snprintf(want, sizeof want, "t.conf:3: postgres.password_file: cannot read %s: ", dir);
        load_fail(text, want);

        harness_rm_rf(dir);
        free(dir);
}

Test(config, credentials_directory) {
        char *dir = harness_mkdtemp("outaged-creds-");
        char path[512], own[512], text[1024];
        Config *c;

        setenv("CREDENTIALS_DIRECTORY", dir, 1);

        /* none present: no secrets, no error */
        c = load_ok("");
        cr_assert_null(c->mqtt_password);
        cr_assert_null(c->pg_password);
        config_free(c);

        snprintf(path, sizeof path, "%s/mqtt-password", dir);
        write_file(path, "from-creds\n", 11);
        snprintf(path, sizeof path, "%s/pg-password", dir);
        write_file(path, "pg-creds", 8);
        c = load_ok("");
        cr_assert_str_eq(c->mqtt_password, "from-creds");
        cr_assert_str_eq(c->pg_password, "pg-creds");
        cr_assert_null(c->mqtt_password_file);
        config_free(c);

        /* password_file wins */
        snprintf(own, sizeof own, "%s/own", dir);
        write_file(own, "own\n", 4);
        snprintf(text, sizeof text, "[mqtt]\npassword_file = %s\n", own);
        c = load_ok(text);
        cr_assert_str_eq(c->mqtt_password, "own");
        cr_assert_str_eq(c->pg_password, "pg-creds");
        config_free(c);

        /* an empty credential is an error, naming it */
        write_file(path, "", 0);
        load_fail("", "t.conf: postgres.password_file: cannot read credential ");
        cr_assert(strstr(err, "/pg-password: empty"), "%s", err);

        harness_rm_rf(dir);
        free(dir);
}

/* ---- dump ---- */

static char *dump(const Config *c) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        config_dump(c, f);
        fclose(f);
        return buf;
}

Test(config, dump_masks_secrets) {
        char *dir = harness_mkdtemp("outaged-config-");
        char mp[512], text[1024], *out;
        Config *c;

        snprintf(mp, sizeof mp, "%s/mqtt.pw", dir);
        write_file(mp, "hunter2\n", 8);
        snprintf(text, sizeof text, "[mqtt]\nusername = bob\npassword_file = %s\n", mp);
        setenv("CREDENTIALS_DIRECTORY", dir, 1);
        snprintf(mp, sizeof mp, "%s/pg-password", dir);
        write_file(mp, "tiger\n", 6);
        c = load_ok(text);
        out = dump(c);
        cr_assert_null(strstr(out, "hunter2"), "%s", out);
        cr_assert_null(strstr(out, "tiger"), "%s", out);
        cr_assert(strstr(out, "# password: ******** (from password_file)\n"), "%s", out);
        cr_assert(strstr(out, "# password: ******** (from $CREDENTIALS_DIRECTORY/pg-password)\n"), "%s", out);
        cr_assert(strstr(out, "username = bob\n"), "%s", out);
        free(out);
        config_free(c);
        harness_rm_rf(dir);
        free(dir);
}

/* ---- masking the secrets inside values ---- */

static void masked_conninfo(const char *in, const char *want) {
        char *out = config_mask_conninfo(in);

        cr_assert_not_null(out);
        cr_assert_str_eq(out, want, "conninfo: %s", in);
        free(out);
}

static void masked_uri(const char *in, const char *want) {
        char *out = config_mask_uri(in);

        cr_assert_not_null(out);
        cr_assert_str_eq(out, want, "uri: %s", in);
        free(out);
}

Test(config, mask_conninfo_keyword_form) {
        masked_conninfo("dbname=outages", "dbname=outages");
        masked_conninfo("", "");
        masked_conninfo("password=secret", "password=********");
        masked_conninfo("host=h password=secret dbname=x", "host=h password=******** dbname=x");
        masked_conninfo("password = 'se cret' user=u", "password = ******** user=u");
        masked_conninfo("password='it\\'s \\\\ x' user=u", "password=******** user=u");
        masked_conninfo("password=sec\\ ret user=u", "password=******** user=u");
        masked_conninfo("\tpassword\t=\tsecret\n", "\tpassword\t=\t********\n");
        masked_conninfo("sslpassword=keypass sslkey=/k", "sslpassword=******** sslkey=/k");
        masked_conninfo("password=a password=b", "password=******** password=********");
        /* libpq skips blanks after '=': the value is what follows */
        masked_conninfo("password= host=h", "password= ********");
        masked_conninfo("password=", "password=");
        /* other keys that merely contain the word stay */
        masked_conninfo("passfile=/p application_name=password", "passfile=/p application_name=password");
        masked_conninfo("user=password", "user=password");
        /* keywords are case-sensitive in libpq */
        masked_conninfo("PASSWORD=x", "PASSWORD=x");
}

Test(config, mask_conninfo_nested_in_dbname) {
        masked_conninfo("dbname='host=h password=secret' user=u", "dbname='host=h password=********' user=u");
        masked_conninfo("dbname='password=\\'a b\\''", "dbname='password=********'");
        masked_conninfo("dbname=postgresql://u:secret@h/db", "dbname=postgresql://u:********@h/db");
        masked_conninfo("dbname=outages password=x", "dbname=outages password=********");
}

Test(config, mask_conninfo_unparsable_is_hidden_whole) {
        masked_conninfo("password='unterminated", "********");
        masked_conninfo("host=h password", "********");
        masked_conninfo("just words password secret", "********");
}

Test(config, mask_conninfo_uri_form) {
        masked_conninfo("postgresql://user:secret@host/db", "postgresql://user:********@host/db");
        masked_conninfo("postgres://user:secret@host:5432/db", "postgres://user:********@host:5432/db");
        masked_conninfo("postgresql://user@host/db", "postgresql://user@host/db");
        masked_conninfo("postgresql://host/db", "postgresql://host/db");
        masked_conninfo("postgresql://", "postgresql://");
        masked_conninfo("postgresql://user:@host/db", "postgresql://user:@host/db");
        masked_conninfo("postgresql://u:p%40ss@h", "postgresql://u:********@h");
        masked_conninfo("postgresql://u:p@ss@h/db", "postgresql://u:********@h/db");
        masked_conninfo("postgresql://:secret@h", "postgresql://:********@h");
        masked_conninfo("postgresql://h/db?password=secret", "postgresql://h/db?password=********");
        masked_conninfo("postgresql://h/db?sslmode=require&password=secret&application_name=x",
                        "postgresql://h/db?sslmode=require&password=********&application_name=x");
        masked_conninfo("postgresql://h/db?pass%77ord=secret", "postgresql://h/db?pass%77ord=********");
        masked_conninfo("postgresql://h/db?sslpassword=k", "postgresql://h/db?sslpassword=********");
        masked_conninfo("postgresql://h?password=secret", "postgresql://h?password=********");
        masked_conninfo("postgresql://u:a@h/db?password=b", "postgresql://u:********@h/db?password=********");
        masked_conninfo("postgresql://h/db?passwordx=1&password", "postgresql://h/db?passwordx=1&password");
        /* an '@' in the query with no '/' before it: libpq takes it for user information */
        masked_conninfo("postgresql://h?password=x:y@z", "postgresql://h?password=********");
}

Test(config, mask_mqtt_uri) {
        masked_uri("tcp://localhost:1883", "tcp://localhost:1883");
        masked_uri("tcp://user:pass@host:1883", "tcp://user:********@host:1883");
        masked_uri("ssl://user:p@ss@host:8883", "ssl://user:********@host:8883");
        masked_uri("ws://user@host/mqtt", "ws://user@host/mqtt");
        masked_uri("wss://u:p@host/mqtt?x=a@b", "wss://u:********@host/mqtt?x=a@b");
        masked_uri("tcp://host/u:p@x", "tcp://host/u:p@x");
}

Test(config, dump_masks_secrets_inside_values) {
        Config *c = load_ok("[mqtt]\nuri = tcp://bob:hunter2@broker:1883\n"
                            "[postgres]\nconninfo = host=db password = 'ti ger' dbname=outages\n");
        char *out = dump(c);

        cr_assert_null(strstr(out, "hunter2"), "%s", out);
        cr_assert_null(strstr(out, "ti ger"), "%s", out);
        cr_assert(strstr(out, "\nuri = tcp://bob:********@broker:1883\n"), "%s", out);
        cr_assert(strstr(out, "\nconninfo = host=db password = ******** dbname=outages\n"), "%s", out);
        free(out);
        config_free(c);

        c = load_ok("[postgres]\nconninfo = postgresql://u:tiger@db/outages?password=lion\n");
        out = dump(c);
        cr_assert_null(strstr(out, "tiger"), "%s", out);
        cr_assert_null(strstr(out, "lion"), "%s", out);
        cr_assert(strstr(out, "\nconninfo = postgresql://u:********@db/outages?password=********\n"), "%s", out);
        free(out);
        config_free(c);
}

Test(config, dump_round_trips) {
        Config *c = load_ok("[mqtt]\nsession_expiry = 90000s\nshare_group = g\n"
                            "[aggregation]\ngap = 1h30min\nflush_interval = 1500ms\n"
                            "outage_types = b a\nmax_age = 0\n"
                            "[limits]\nmax_payload = 1025B\nstartup_timeout = 61s\n"
                            "[retention]\nevents = 720h\n"
                            "[events]\ntopic_prefix = live/ev\n"
                            "[log]\nlevel = warning\n");
        char *a = dump(c), *b;
        Config *d = load_ok(a);

        cr_assert(strstr(a, "session_expiry = 1d1h\n"), "%s", a);
        cr_assert(strstr(a, "gap = 1h30min\n"), "%s", a);
        cr_assert(strstr(a, "flush_interval = 1s500ms\n"), "%s", a);
        cr_assert(strstr(a, "outage_types = a b\n"), "%s", a);
        cr_assert(strstr(a, "max_age = 0\n"), "%s", a);
        cr_assert(strstr(a, "max_payload = 1025B\n"), "%s", a);
        cr_assert(strstr(a, "startup_timeout = 1min1s\n"), "%s", a);
        cr_assert(strstr(a, "level = warning\n"), "%s", a);
        cr_assert(strstr(a, "[events]\ntopic_prefix = live/ev\nnotify_channel =\n"), "%s", a);
        cr_assert(strstr(a, "[retention]\nevents = 30d\nrejects = 90d\n"), "%s", a);
        cr_assert(strstr(a, "username =\n"), "%s", a);
        b = dump(d);
        cr_assert_str_eq(a, b);
        free(a);
        free(b);
        config_free(c);
        config_free(d);
}

/* ---- reload ---- */

Test(config, reload_moves_only_the_reloadable_keys) {
        Config *running = load_ok("[mqtt]\nuri = tcp://a:1883\n[aggregation]\noutage_types = b a\n[log]\nlevel = info\n");
        Config *next = load_ok("[mqtt]\nuri = tcp://b:1883\n[aggregation]\noutage_types = c\ngap = 13min\n"
                               "[log]\nlevel = debug\n");
        char restart[256];

        cr_assert_eq(config_reload_apply(running, next, restart, sizeof restart), 2);
        cr_assert_eq(running->log_level, LOG_LEVEL_DEBUG);
        cr_assert_eq(running->n_outage_types, 1);
        cr_assert_str_eq(running->outage_types[0], "c");
        cr_assert_null(running->outage_types[1]);
        /* the rest stays as it was */
        cr_assert_str_eq(running->mqtt_uri, "tcp://a:1883");
        cr_assert_eq(running->gap, 12 * USEC_PER_MINUTE);
        cr_assert_str_eq(restart, "mqtt.uri, aggregation.gap");
        /* next holds the old values, for config_free */
        cr_assert_eq(next->log_level, LOG_LEVEL_INFO);
        cr_assert_eq(next->n_outage_types, 2);
        cr_assert_str_eq(next->outage_types[0], "a");
        config_free(next);
        cr_assert_str_eq(running->outage_types[0], "c");
        config_free(running);
}

Test(config, reload_unchanged_and_allowlist_cleared) {
        Config *running = load_ok("[aggregation]\noutage_types = a\n");
        Config *same = load_ok("[aggregation]\noutage_types = a\n");
        Config *cleared = load_ok("");
        char restart[8] = "junk";

        cr_assert_eq(config_reload_apply(running, same, restart, sizeof restart), 0);
        cr_assert_str_eq(restart, "");
        cr_assert_eq(config_reload_apply(running, cleared, NULL, 0), 1);
        cr_assert_null(running->outage_types);
        cr_assert_eq(running->n_outage_types, 0);
        cr_assert_eq(cleared->n_outage_types, 1);
        config_free(same);
        config_free(cleared);
        config_free(running);
}

Test(config, reload_restart_list_is_cut_at_a_name) {
        Config *running = load_ok("");
        Config *next = load_ok("[mqtt]\nqos = 2\nclient_id = other\n[limits]\nmax_batch_items = 5\n");
        char restart[32];

        cr_assert_eq(config_reload_apply(running, next, restart, sizeof restart), 0);
        cr_assert_str_eq(restart, "mqtt.client_id, mqtt.qos");
        config_free(next);
        config_free(running);
}

/* ---- the key table ---- */

Test(config, key_table) {
        ConfigKeyInfo k, gap = {}, size = {}, level = {};
        size_t n = config_key_count(), reloadable = 0;

        cr_assert_gt(n, 20);
        cr_assert_eq(config_key_info(n, &k), -ERANGE);
        for (size_t i = 0; i < n; i++) {
                char want[64];

                cr_assert_eq(config_key_info(i, &k), 0);
                snprintf(want, sizeof want, "%s.%s", k.section, k.key);
                cr_assert_str_eq(k.name, want);
                cr_assert_not_null(k.type);
                cr_assert_not_null(k.default_value);
                for (size_t j = 0; j < i; j++) {
                        ConfigKeyInfo o;
                        cr_assert_eq(config_key_info(j, &o), 0);
                        cr_assert_str_neq(o.name, k.name, "listed twice");
                }
                if (k.reloadable) {
                        reloadable++;
                        cr_assert(streq(k.name, "log.level") || streq(k.name, "aggregation.outage_types"), "%s", k.name);
                }
                if (streq(k.name, "aggregation.gap"))
                        gap = k;
                if (streq(k.name, "limits.max_payload"))
                        size = k;
                if (streq(k.name, "log.level"))
                        level = k;
        }
        cr_assert_eq(reloadable, 2);
        cr_assert_str_eq(gap.type, "duration");
        cr_assert_str_eq(gap.default_value, "12min");
        cr_assert_str_eq(gap.min, "1s");
        cr_assert_str_eq(gap.max, "1d");
        cr_assert_str_eq(size.type, "size");
        cr_assert_str_eq(size.min, "16B");
        cr_assert_str_eq(size.max, "256MiB");
        cr_assert_str_eq(level.type, "log-level");
        cr_assert_str_eq(level.min, "");
        cr_assert_str_eq(level.max, "");
}

/* Each default is spelled as the dump spells it, so the table can document itself. */
Test(config, key_table_defaults_are_canonical) {
        Config *c = load_ok("");
        char *out = dump(c);

        for (size_t i = 0; i < config_key_count(); i++) {
                ConfigKeyInfo k;
                char line[256];

                cr_assert_eq(config_key_info(i, &k), 0);
                if (streq(k.name, "storage.journal_dir"))
                        continue;               /* derived from $STATE_DIRECTORY */
                snprintf(line, sizeof line, "\n%s =%s%s\n", k.key, *k.default_value ? " " : "", k.default_value);
                cr_assert(strstr(out, line), "%s: %s", k.name, line);
        }
        free(out);
        config_free(c);
}

/* The example configuration documents every key, in its section. */
Test(config, example_config_lists_every_key) {
        char path[4096], *text;
        size_t len;
        FILE *f;

        snprintf(path, sizeof path, "%s/config/outaged.conf", harness_source_root());
        f = fopen(path, "r");
        cr_assert_not_null(f);
        text = calloc(1, 1 << 20);
        len = fread(text, 1, (1 << 20) - 1, f);
        fclose(f);
        cr_assert_gt(len, 0);
        for (size_t i = 0; i < config_key_count(); i++) {
                ConfigKeyInfo k;
                char section[64], key[80];
                const char *sec, *next;

                cr_assert_eq(config_key_info(i, &k), 0);
                snprintf(section, sizeof section, "\n[%s]\n", k.section);
                snprintf(key, sizeof key, "\n%s =", k.key);
                sec = strstr(text, section);
                cr_assert_not_null(sec, "no [%s] in %s", k.section, path);
                next = strstr(sec + 1, "\n[");
                const char *at = strstr(sec, key);
                cr_assert(at && (!next || at < next), "%s not documented in [%s]", k.name, k.section);
        }
        free(text);
}

Test(config, free_accepts_null) {
        cr_assert_null(config_free(NULL));
}
