/* notify.c — placeholder until the module lands. */
