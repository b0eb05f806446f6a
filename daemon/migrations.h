/* migrations.h — the SQL migrations of sql/, embedded at build time by sql/embed.py. */
#pragma once

#include <stddef.h>

typedef struct Migration {
        int version;                    /* 1, 2, 3, ... */
        const char *name;               /* file name, e.g. "001_schema.sql" */
        const char *sql;
} Migration;

extern const Migration migrations[];
extern const size_t n_migrations;
