/* notify.h — the service manager protocol: READY, STATUS, RELOADING, STOPPING, WATCHDOG.
 * The only module that speaks it. Without $NOTIFY_SOCKET every call is a cheap no-op.
 * Sends never block: a listener that stops reading must not freeze the daemon. */
#pragma once

#include "common.h"

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_watchdog(void);
/* Asks for usec more time to start (or stop) from now: EXTEND_TIMEOUT_USEC=. */
void notify_extend_timeout(usec_t usec);
void notify_status(const char *fmt, ...) _printf_(1, 2);

/* The watchdog interval requested by the service manager ($WATCHDOG_USEC, for this pid),
 * or 0 when there is none. Ping at half of it. */
usec_t notify_watchdog_usec(void);
