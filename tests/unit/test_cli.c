/* test_cli.c — the built binary's command line: flags, exit codes (SPEC section 6) and
 * --check-config output. Runs no services. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "common.h"
#include "harness.h"

#define CAP (256 * 1024)

static char *out, *err, *dir;

static void setup(void) {
        dir = harness_mkdtemp("outaged-cli-");
        cr_assert_not_null(dir);
        out = err = NULL;
}

static void teardown(void) {
        free(out);
        free(err);
        harness_rm_rf(dir);
        free(dir);
}

TestSuite(cli, .init = setup, .fini = teardown);

/* Runs the daemon with args (NULL-terminated), no credentials or state directory. */
static int run_args(const char *a1, const char *a2, const char *a3, const char *a4) {
        char *argv[] = { (char *) harness_binary(), (char *) a1, (char *) a2, (char *) a3, (char *) a4, NULL };
        static char *env[] = { "CREDENTIALS_DIRECTORY=", "STATE_DIRECTORY=", "JOURNAL_STREAM=", NULL };

        free(out);
        free(err);
        out = err = NULL;
        return proc_run(argv, env, &out, &err, CAP, 10000);
}

static char *example_config(void) {
        char *p;

        cr_assert_geq(asprintf(&p, "%s/config/outaged.conf", harness_source_root()), 0);
        return p;
}

static char *write_config(const char *name, const char *text) {
        char *p;
        FILE *f;

        cr_assert_geq(asprintf(&p, "%s/%s", dir, name), 0);
        f = fopen(p, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        return p;
}

Test(cli, version) {
        cr_assert_eq(run_args("--version", NULL, NULL, NULL), 0);
        cr_assert(strncmp(out, "outaged ", 8) == 0, "%s", out);
        cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1);
        cr_assert_eq(run_args("-V", NULL, NULL, NULL), 0);
        cr_assert(strncmp(out, "outaged ", 8) == 0, "%s", out);
}

Test(cli, help) {
        cr_assert_eq(run_args("--help", NULL, NULL, NULL), 0);
        cr_assert(strstr(out, "Usage: outaged [-c FILE] [--check-config] [--migrate] [--discard-journal]\n"
                              "       [--republish-rejects CONDITION] [--version] [--help]"), "%s", out);
        cr_assert(strstr(out, "--discard-journal"), "%s", out);
        cr_assert_str_eq(err, "");
        cr_assert_eq(run_args("-h", NULL, NULL, NULL), 0);
        cr_assert(strstr(out, "--check-config"), "%s", out);
}

Test(cli, check_config_example) {
        _cleanup_free_ char *conf = example_config();

        cr_assert_eq(run_args("-c", conf, "--check-config", NULL), 0, "stderr: %s", err);
        cr_assert(strncmp(out, "[mqtt]\nuri = tcp://localhost:1883\n", 34) == 0, "%s", out);
        cr_assert(strstr(out, "\ngap = 12min\n"), "%s", out);
        cr_assert(strstr(out, "\nlevel = info\n"), "%s", out);
        cr_assert(strstr(out, "\nconfiguration OK\n"), "%s", out);
        cr_assert_str_eq(err, "");
}

Test(cli, check_config_masks_secret) {
        _cleanup_free_ char *pw = write_config("pw", "Sup3rS3cret!\n");
        _cleanup_free_ char *text = NULL, *conf = NULL;

        cr_assert_geq(asprintf(&text, "[mqtt]\nusername = outaged\npassword_file = %s\n", pw), 0);
        conf = write_config("outaged.conf", text);
        cr_assert_eq(run_args("--check-config", "-c", conf, NULL), 0, "stderr: %s", err);
        cr_assert(strstr(out, "# password: ********"), "%s", out);
        cr_assert_null(strstr(out, "Sup3rS3cret"), "%s", out);
        cr_assert_null(strstr(err, "Sup3rS3cret"), "%s", err);
        cr_assert(strstr(out, "configuration OK"), "%s", out);
}

Test(cli, check_config_credentials_directory) {
        _cleanup_free_ char *conf = example_config();
        _cleanup_free_ char *creds = NULL;
        char *argv[] = { (char *) harness_binary(), "-c", conf, "--check-config", NULL };
        char *env[] = { creds, NULL };

        free(write_config("pg-password", "pgS3cret\n"));
        cr_assert_geq(asprintf(&creds, "CREDENTIALS_DIRECTORY=%s", dir), 0);
        env[0] = creds;
        cr_assert_eq(proc_run(argv, env, &out, &err, CAP, 10000), 0, "stderr: %s", err);
        cr_assert(strstr(out, "# password: ******** (from $CREDENTIALS_DIRECTORY/pg-password)"), "%s", out);
        cr_assert_null(strstr(out, "pgS3cret"), "%s", out);
}

Test(cli, unknown_key_is_config_error_with_file_line) {
        _cleanup_free_ char *conf = write_config("bad.conf", "[mqtt]\nqos = 1\n\n[aggregation]\ngapp = 5min\n");
        _cleanup_free_ char *want = NULL;

        cr_assert_eq(run_args("-c", conf, "--check-config", NULL), 78);
        cr_assert_geq(asprintf(&want, "%s:5: aggregation.gapp: unknown key", conf), 0);
        cr_assert(strstr(err, want), "stderr: %s", err);
        cr_assert(strncmp(err, "<3>", 3) == 0, "stderr: %s", err);
        cr_assert_str_eq(out, "");
        /* the daemon itself (no --check-config) refuses the same way */
        cr_assert_eq(run_args("-c", conf, NULL, NULL), 78);
}

Test(cli, bad_value_is_config_error) {
        _cleanup_free_ char *conf = write_config("bad.conf", "[limits]\nmax_payload = 1TiB\n");

        cr_assert_eq(run_args("--check-config", "-c", conf, NULL), 78);
        cr_assert(strstr(err, ":2: limits.max_payload: invalid value \"1TiB\""), "stderr: %s", err);
}

Test(cli, missing_config_file) {
        _cleanup_free_ char *conf = NULL;

        cr_assert_geq(asprintf(&conf, "%s/nonexistent.conf", dir), 0);
        cr_assert_eq(run_args("-c", conf, "--check-config", NULL), 78);
        cr_assert(strstr(err, "nonexistent.conf: cannot read: No such file or directory"), "%s", err);
        cr_assert_eq(run_args("-c", conf, NULL, NULL), 78);
        cr_assert_eq(run_args("--config", conf, "--migrate", NULL), 78);
}

Test(cli, unreadable_password_file_is_config_error) {
        _cleanup_free_ char *text = NULL, *conf = NULL;

        cr_assert_geq(asprintf(&text, "[postgres]\npassword_file = %s/missing\n", dir), 0);
        conf = write_config("outaged.conf", text);
        cr_assert_eq(run_args("-c", conf, "--check-config", NULL), 78);
        cr_assert(strstr(err, ":2: postgres.password_file: cannot read "), "%s", err);
        cr_assert(strstr(err, "/missing: No such file or directory"), "%s", err);
}

Test(cli, usage_errors) {
        _cleanup_free_ char *conf = example_config();

        cr_assert_eq(run_args("--bogus", NULL, NULL, NULL), 64);
        cr_assert(strstr(err, "--help"), "%s", err);
        cr_assert_eq(run_args("-x", NULL, NULL, NULL), 64);
        cr_assert_eq(run_args("-c", conf, "stray", NULL), 64);
        cr_assert(strstr(err, "unexpected argument 'stray'"), "%s", err);
        cr_assert_eq(run_args("--check-config", "--migrate", NULL, NULL), 64);
        cr_assert_eq(run_args("--discard-journal", NULL, NULL, NULL), 64);
        cr_assert(strstr(err, "--discard-journal needs -c FILE"), "%s", err);
        cr_assert_eq(run_args("-c", conf, "--discard-journal", "--migrate"), 64);
        cr_assert_eq(run_args("--republish-rejects", "reason = 'x'", NULL, NULL), 64);
        cr_assert(strstr(err, "--republish-rejects needs -c FILE"), "%s", err);
        cr_assert_eq(run_args("-c", conf, "--republish-rejects", ""), 64);
        cr_assert_eq(run_args("-c", NULL, NULL, NULL), 64);
        cr_assert_eq(run_args("-c", "", NULL, NULL), 64);
        cr_assert_eq(run_args("--version=1", NULL, NULL, NULL), 64);
        cr_assert_str_eq(out, "");
}
