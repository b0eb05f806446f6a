/* agg.c — placeholder until the module lands. */
