/* flusher.c — placeholder until the module lands. */
