/* notify.c — sd_notify wrappers. Errors are ignored on purpose: a daemon must run the
 * same with or without a service manager listening. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "notify.h"

void notify_ready(void) {
        (void) sd_notify(0, "READY=1");
}

void notify_reloading(void) {
        struct timespec ts;
        char buf[64];

        /* systemd 253+ wants MONOTONIC_USEC with RELOADING=1; older ones ignore it. */
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%lld",
                 (long long) ts.tv_sec * 1000000LL + ts.tv_nsec / 1000);
        (void) sd_notify(0, buf);
}

void notify_stopping(void) {
        (void) sd_notify(0, "STOPPING=1");
}

void notify_status(const char *fmt, ...) {
        char buf[512];
        va_list ap;
        int n;

        n = snprintf(buf, sizeof(buf), "STATUS=");
        va_start(ap, fmt);
        vsnprintf(buf + n, sizeof(buf) - (size_t) n, fmt, ap);
        va_end(ap);
        (void) sd_notify(0, buf);
}
