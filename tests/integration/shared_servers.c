/* shared_servers.c — one PostgreSQL and one mosquitto for every test of the binary it is
 * linked into (common.h). Criterion hooks live in this file alone so that only the
 * binaries that want shared servers get them. */
#include <criterion/hooks.h>

#include "common.h"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
        servers_start_shared();
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
        servers_stop_shared();
}
