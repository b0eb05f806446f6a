/* main.c — process lifecycle: command line, configuration, dispatch to check / migrate /
 * run. The only place that exits; the running daemon itself is service.c. */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <sysexits.h>

#include "config.h"
#include "log.h"
#include "service.h"
#include "version.h"

/* Exit codes, SPEC section 6 (service.h names them). */
_Static_assert(EXIT_USAGE == EX_USAGE, "exit code 64");
_Static_assert(EXIT_UNAVAILABLE == EX_UNAVAILABLE, "exit code 69");
_Static_assert(EXIT_CONFIG == EX_CONFIG, "exit code 78");

typedef enum Action {
        ACTION_RUN,
        ACTION_CHECK_CONFIG,
        ACTION_MIGRATE,
        ACTION_DISCARD_JOURNAL,
        ACTION_REPUBLISH_REJECTS,
        ACTION_VERSION,
        ACTION_HELP,
        _ACTION_MAX,
        _ACTION_INVALID = -1,
} Action;

typedef struct Args {
        Action action;
        const char *config_path;        /* NULL: OUTAGED_DEFAULT_CONFIG, may be absent */
        const char *republish;          /* --republish-rejects CONDITION */
} Args;

static void help(FILE *f) {
        fprintf(f,
                "Usage: %s [-c FILE] [--check-config] [--migrate] [--discard-journal]\n"
                "       [--republish-rejects CONDITION] [--version] [--help]\n"
                "\n"
                "Aggregates street-light outage reports from MQTT into PostgreSQL events.\n"
                "\n"
                "  -c, --config FILE   configuration file (default %s;\n"
                "                      built-in defaults if that file does not exist)\n"
                "      --check-config  validate the configuration, print the effective\n"
                "                      settings (secrets masked) and exit\n"
                "      --migrate       create or upgrade the database schema and exit\n"
                "      --discard-journal\n"
                "                      drop the journal records that belong to another\n"
                "                      database than the configured one, and exit\n"
                "      --republish-rejects CONDITION\n"
                "                      publish again (QoS 1, on its topic) the payload of\n"
                "                      every row of outage.rejects matching the SQL\n"
                "                      CONDITION, e.g. \"reason = 'unknown_outage_type'\", and exit\n"
                "  -V, --version       print the version and exit\n"
                "  -h, --help          print this help and exit\n"
                "\n"
                "Exit status: 0 success, 64 usage error, 78 configuration error,\n"
                "69 broker or database unreachable at startup, 1 other failure.\n",
                program_invocation_short_name, OUTAGED_DEFAULT_CONFIG);
}

/* Returns 0 with *a filled, or -EINVAL after printing the problem to stderr. */
static int parse_argv(int argc, char *argv[], Args *a) {
        enum { ARG_CHECK_CONFIG = 0x100, ARG_MIGRATE, ARG_DISCARD_JOURNAL, ARG_REPUBLISH };
        static const struct option options[] = {
                { "config",       required_argument, NULL, 'c' },
                { "check-config", no_argument,       NULL, ARG_CHECK_CONFIG },
                { "migrate",      no_argument,       NULL, ARG_MIGRATE },
                { "discard-journal", no_argument,    NULL, ARG_DISCARD_JOURNAL },
                { "republish-rejects", required_argument, NULL, ARG_REPUBLISH },
                { "version",      no_argument,       NULL, 'V' },
                { "help",         no_argument,       NULL, 'h' },
                {}
        };
        bool check = false, migrate = false, discard = false, version = false, helpme = false;
        int c;

        *a = (Args) { .action = ACTION_RUN };
        opterr = 1;
        while ((c = getopt_long(argc, argv, "c:Vh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        if (!*optarg) {
                                fprintf(stderr, "%s: -c needs a file name\n", program_invocation_short_name);
                                return -EINVAL;
                        }
                        a->config_path = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        check = true;
                        break;
                case ARG_MIGRATE:
                        migrate = true;
                        break;
                case ARG_DISCARD_JOURNAL:
                        discard = true;
                        break;
                case ARG_REPUBLISH:
                        if (!*optarg) {
                                fprintf(stderr, "%s: --republish-rejects needs a condition\n",
                                        program_invocation_short_name);
                                return -EINVAL;
                        }
                        a->republish = optarg;
                        break;
                case 'V':
                        version = true;
                        break;
                case 'h':
                        helpme = true;
                        break;
                default:        /* getopt_long has printed what was wrong */
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "%s: unexpected argument '%s'\n", program_invocation_short_name,
                        argv[optind]);
                return -EINVAL;
        }
        if ((int) check + (int) migrate + (int) discard + (a->republish != NULL) > 1) {
                fprintf(stderr, "%s: --check-config, --migrate, --discard-journal and --republish-rejects exclude each other\n",
                        program_invocation_short_name);
                return -EINVAL;
        }
        /* Dropping or re-sending is never done on the default configuration by accident. */
        if ((discard || a->republish) && !a->config_path && !helpme && !version) {
                fprintf(stderr, "%s: %s needs -c FILE\n", program_invocation_short_name,
                        discard ? "--discard-journal" : "--republish-rejects");
                return -EINVAL;
        }
        /* --help and --version win over everything else, as in most tools. */
        a->action = helpme ? ACTION_HELP : version ? ACTION_VERSION :
                    check ? ACTION_CHECK_CONFIG : migrate ? ACTION_MIGRATE :
                    discard ? ACTION_DISCARD_JOURNAL : a->republish ? ACTION_REPUBLISH_REJECTS : ACTION_RUN;
        return 0;
}

/* Loads the configuration. The default path may be absent (a fresh install, a developer
 * run): then the built-in defaults apply, with a notice. A path given with -c must exist.
 * Returns 0 or -EINVAL after logging the problem. */
static int load_config(const Args *a, Config **ret, const char **ret_path) {
        const char *path = a->config_path ? a->config_path : OUTAGED_DEFAULT_CONFIG;
        char err[1200];
        int r;

        if (!a->config_path && access(path, F_OK) < 0 && errno == ENOENT) {
                log_notice("No configuration file %s, using built-in defaults.", path);
                path = NULL;
        }
        r = config_load(path, ret, err, sizeof err);
        if (r < 0) {
                log_error("Configuration error: %s", err);
                return -EINVAL;
        }
        *ret_path = path;
        return 0;
}

static int check_config(const Config *c) {
        config_dump(c, stdout);
        printf("\nconfiguration OK\n");
        return fflush(stdout) == 0 && !ferror(stdout) ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char *argv[]) {
        Config *config = NULL;
        const char *path = NULL;
        Args args;
        int r;

        /* A fixed threshold: glibc would otherwise raise it to the size of any large block
         * freed (the configuration file's read buffer, libpq's COPY buffer), and the
         * aggregation's tables, outgrown and freed, would stay behind as holes in the heap,
         * resident for good. */
        (void) mallopt(M_MMAP_THRESHOLD, 128 * 1024);
        log_setup(LOG_LEVEL_INFO);
        if (parse_argv(argc, argv, &args) < 0) {
                fprintf(stderr, "Try '%s --help'.\n", program_invocation_short_name);
                return EXIT_USAGE;
        }
        switch (args.action) {
        case ACTION_HELP:
                help(stdout);
                return EXIT_SUCCESS;
        case ACTION_VERSION:
                printf("outaged %s\n", OUTAGED_VERSION);
                return EXIT_SUCCESS;
        default:
                break;
        }

        if (load_config(&args, &config, &path) < 0)
                return EXIT_CONFIG;
        log_set_level(config->log_level);

        switch (args.action) {
        case ACTION_CHECK_CONFIG:
                r = check_config(config);
                break;
        case ACTION_MIGRATE:
                r = service_migrate(config);
                break;
        case ACTION_DISCARD_JOURNAL:
                r = service_discard_journal(config);
                break;
        case ACTION_REPUBLISH_REJECTS:
                r = service_republish_rejects(config, args.republish);
                break;
        default:
                r = service_run(config, path);
                break;
        }
        config_free(config);
        return r;
}
