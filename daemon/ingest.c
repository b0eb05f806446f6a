/* ingest.c — placeholder until the module lands. */
