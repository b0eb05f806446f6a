/* notify.h — the service manager protocol: READY, STATUS, RELOADING, STOPPING, WATCHDOG,
 * EXTEND_TIMEOUT_USEC. The only module that speaks it. Without $NOTIFY_SOCKET every call is
 * a cheap no-op. Sends never block: a listener that stops reading must not freeze the daemon. */
#pragma once

#include "common.h"

/* Each call sends one datagram to $NOTIFY_SOCKET (a path, or "@name" in the abstract
 * namespace). Returns 0 when it was sent or when $NOTIFY_SOCKET is unset or empty,
 * -EINVAL for a $NOTIFY_SOCKET that is not an absolute path or "@name" (or too long),
 * -EAGAIN when the listener's queue stayed full, or another negative errno of socket(2)
 * or sendto(2). READY=1, RELOADING=1 and STOPPING=1 are retried for up to half a second
 * when the queue is full; STATUS= and WATCHDOG=1 are dropped at once (the next one
 * follows within a second). Callers may ignore the result: nothing depends on delivery. */
int notify_ready(void);
int notify_reloading(void);             /* with MONOTONIC_USEC= (systemd 253+) */
int notify_stopping(void);
int notify_watchdog(void);
/* EXTEND_TIMEOUT_USEC=<usec>: asks the service manager for usec more before the start-up
 * (or stop) timeout fires, e.g. every few seconds of a long journal replay before READY=1.
 * The manager then expects another message within usec; a value of 0 or less is -EINVAL
 * (nothing sent). Retried like READY=1: a lost extension could get the daemon killed. */
int notify_extend_timeout(usec_t usec);
/* STATUS=<text>; the text is cut to about 500 bytes. */
int notify_status(const char *fmt, ...) _printf_(1, 2);

/* The watchdog interval requested by the service manager ($WATCHDOG_USEC, for this pid:
 * $WATCHDOG_PID, when set, must be ours), or 0 when there is none or it does not parse.
 * Ping at half of it. */
usec_t notify_watchdog_usec(void);
