/* service.h — the running daemon: start-up order, the main loop, the drain on stop, and
 * --migrate. main.c parses the command line and turns the returned codes into exits. */
#pragma once

#include "config.h"

/* Exit codes of SPEC section 6. */
enum {
        EXIT_OK = 0,
        EXIT_GENERIC = 1,
        EXIT_USAGE = 64,
        EXIT_UNAVAILABLE = 69,
        EXIT_CONFIG = 78,
};

/* Runs the daemon until SIGTERM/SIGINT (exit 0 after the drain) or a fatal error. Borrows
 * c; config_path is re-read on SIGHUP. Returns an exit code. */
int service_run(Config *c, const char *config_path);

/* Applies pending migrations and returns an exit code (0, 69, 78 or 1). */
int service_migrate(const Config *c);

/* --discard-journal: drops the journal records that belong to another database than the
 * configured one (after saying how many) and records the configured database as the
 * journal's; a journal of this database is left alone. Returns an exit code (0, 69, 78, 1). */
int service_discard_journal(const Config *c);

/* --republish-rejects: publishes again, with QoS 1 on its topic, the payload of every row of
 * outage.rejects matching condition (SQL over its columns, run read-only), except rows
 * whose payload or topic is not stored whole (refused by id). Returns an exit code: 0 when
 * every matching row went out, 1 when some were refused or failed, 69 or 78. */
int service_republish_rejects(const Config *c, const char *condition);
