/* notify.c — sd_notify's datagram protocol, sent without blocking.
 *
 * libsystemd's sd_notify() sends on a blocking socket: when the listener stops reading
 * (a test harness, a wedged manager) and its queue is full (net.unix.max_dgram_qlen, 10
 * by default here), the main loop would hang in the once-a-second STATUS= update. So the
 * datagram is sent here with MSG_DONTWAIT: a STATUS= or WATCHDOG=1 that finds the queue
 * full is dropped (the next one follows within a second); READY=1, RELOADING=1,
 * STOPPING=1 and EXTEND_TIMEOUT_USEC= are retried for a short while. sd-daemon still parses $WATCHDOG_USEC. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "notify.h"

static int notify_fd = -1;

static int send_message(const char *msg, bool important) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t salen;
        size_t len;

        if (!path || !*path)
                return 0;
        len = strlen(path);
        if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path))
                return -EINVAL;
        memcpy(sa.sun_path, path, len);
        if (path[0] == '@')
                sa.sun_path[0] = '\0';          /* abstract namespace */
        salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '/'));

        if (notify_fd < 0) {
                notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (notify_fd < 0)
                        return -errno;
        }
        for (int attempt = 0;; attempt++) {
                if (sendto(notify_fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
                           (struct sockaddr *) &sa, salen) >= 0)
                        return 0;
                if (errno != EAGAIN || !important || attempt >= 50)
                        return -errno;
                usleep(10 * 1000);              /* at most half a second in all */
        }
}

int notify_ready(void) {
        return send_message("READY=1", true);
}

int notify_reloading(void) {
        struct timespec ts;
        char buf[64];

        /* systemd 253+ wants MONOTONIC_USEC with RELOADING=1; older ones ignore it. */
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%lld",
                 (long long) ts.tv_sec * 1000000LL + ts.tv_nsec / 1000);
        return send_message(buf, true);
}

int notify_stopping(void) {
        return send_message("STOPPING=1", true);
}

int notify_watchdog(void) {
        return send_message("WATCHDOG=1", false);
}

int notify_extend_timeout(usec_t usec) {
        char buf[64];

        if (usec <= 0)
                return -EINVAL;
        snprintf(buf, sizeof(buf), "EXTEND_TIMEOUT_USEC=%" PRId64, usec);
        return send_message(buf, true);
}

int notify_status(const char *fmt, ...) {
        char buf[512];
        va_list ap;
        int n;

        n = snprintf(buf, sizeof(buf), "STATUS=");
        va_start(ap, fmt);
        vsnprintf(buf + n, sizeof(buf) - (size_t) n, fmt, ap);
        va_end(ap);
        return send_message(buf, false);
}

usec_t notify_watchdog_usec(void) {
        uint64_t usec = 0;

        if (sd_watchdog_enabled(false, &usec) <= 0)
                return 0;
        return (usec_t) usec;
}
