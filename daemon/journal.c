/* journal.c — placeholder until the module lands. */
