/* shared_pg.c — one PostgreSQL for every test of the binary it is linked into (common.h:
 * pg_start_shared). Criterion hooks live in this file alone so that only the binaries that
 * want the server get them. */
#include <criterion/hooks.h>

#include "common.h"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
        pg_start_shared();
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
        pg_stop_shared();
}
