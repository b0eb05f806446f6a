/* notify.h — the service manager protocol (sd_notify): READY, STATUS, RELOADING,
 * STOPPING. The only module that uses sd-daemon. Without $NOTIFY_SOCKET every call is a
 * cheap no-op. (WATCHDOG=1 is sent by the sd-event loop itself, see main.c.) */
#pragma once

#include "common.h"

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) _printf_(1, 2);
