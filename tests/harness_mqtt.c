/* harness_mqtt.c — a throwaway mosquitto for tests (own config, loopback port, persistence
 * in a temporary directory) and a small synchronous publisher built on paho. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <MQTTAsync.h>

#include "harness.h"

static int free_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd, port = -1;

        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
                return -1;
        if (bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
            getsockname(fd, (struct sockaddr *) &a, &len) == 0)
                port = ntohs(a.sin_port);
        close(fd);
        return port;
}

static int port_open(int port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

        if (fd < 0)
                return 0;
        ok = connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0;
        close(fd);
        return ok;
}

static int write_config(MqttBroker *b) {
        char path[512];
        FILE *f;

        snprintf(path, sizeof(path), "%s/mosquitto.conf", b->dir);
        f = fopen(path, "w");
        if (!f)
                return -1;
        fprintf(f,
                "listener %d 127.0.0.1\n"
                "allow_anonymous true\n"
                "persistence true\n"
                "persistence_location %s/\n"
                "autosave_interval 1\n"
                "max_queued_messages 2000000\n"
                "max_queued_bytes 0\n"
                "max_inflight_messages 100\n"
                "log_dest file %s/mosquitto.log\n"
                "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                "%s",
                b->port, b->dir, b->dir, geteuid() == 0 ? "user root\n" : "");
        return fclose(f) == 0 ? 0 : -1;
}

static int launch(MqttBroker *b) {
        char conf[512], log[512];
        char *argv[] = { "/usr/sbin/mosquitto", "-c", conf, NULL };

        snprintf(conf, sizeof(conf), "%s/mosquitto.conf", b->dir);
        snprintf(log, sizeof(log), "%s/mosquitto.out", b->dir);
        b->pid = proc_spawn(argv, NULL, log);
        if (b->pid < 0)
                return -1;
        for (int i = 0; i < 500; i++) {
                if (port_open(b->port))
                        return 0;
                if (waitpid(b->pid, NULL, WNOHANG) == b->pid) {
                        char cmd[600];

                        fprintf(stderr, "harness: mosquitto exited at start:\n");
                        snprintf(cmd, sizeof(cmd), "tail -5 %s/mosquitto.log %s >&2", b->dir, log);
                        (void) !system(cmd);
                        b->pid = -1;
                        return -1;
                }
                harness_sleep_ms(10);
        }
        fprintf(stderr, "harness: mosquitto did not open port %d\n", b->port);
        return -1;
}

int mqtt_broker_start(MqttBroker *b) {
        memset(b, 0, sizeof(*b));
        b->pid = -1;
        b->dir = harness_mkdtemp("outaged-mqtt");
        if (!b->dir)
                return -1;
        b->port = free_port();
        if (b->port < 0 || asprintf(&b->uri, "tcp://127.0.0.1:%d", b->port) < 0)
                return -1;
        if (write_config(b) < 0)
                return -1;
        return launch(b);
}

int mqtt_broker_pause(MqttBroker *b) {
        if (b->pid <= 0)
                return 0;
        kill(b->pid, SIGTERM);
        if (proc_wait(b->pid, 10000) < 0) {
                kill(b->pid, SIGKILL);
                (void) proc_wait(b->pid, 5000);
        }
        b->pid = -1;
        return 0;
}

int mqtt_broker_resume(MqttBroker *b) {
        /* The port was just released: give the kernel and mosquitto's own start-up a few
         * chances before calling it a failure. */
        for (int attempt = 0; attempt < 5; attempt++) {
                if (launch(b) == 0)
                        return 0;
                harness_sleep_ms(500);
        }
        return -1;
}

void mqtt_broker_stop(MqttBroker *b) {
        mqtt_broker_pause(b);
        if (b->dir && !getenv("OUTAGED_KEEP_TEST_DIRS"))
                harness_rm_rf(b->dir);
        free(b->dir);
        free(b->uri);
        b->dir = b->uri = NULL;
}

/* ---- publisher ---- */

static int publisher_connect(const MqttBroker *b, MQTTAsync *ret) {
        MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer5;
        MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
        MQTTAsync c;
        char id[64];
        int r;

        snprintf(id, sizeof(id), "test-pub-%d-%ld", getpid(), random());
        r = MQTTAsync_createWithOptions(&c, b->uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
        if (r != MQTTASYNC_SUCCESS)
                return -1;
        o.cleanstart = 1;
        o.keepAliveInterval = 30;
        o.maxInflight = 1000;
        r = MQTTAsync_connect(c, &o);
        for (int i = 0; r == MQTTASYNC_SUCCESS && i < 1000 && !MQTTAsync_isConnected(c); i++)
                harness_sleep_ms(5);
        if (!MQTTAsync_isConnected(c)) {
                MQTTAsync_destroy(&c);
                return -1;
        }
        *ret = c;
        return 0;
}

static void publisher_close(MQTTAsync c) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;

        d.timeout = 1000;
        MQTTAsync_disconnect(c, &d);
        for (int i = 0; i < 200 && MQTTAsync_isConnected(c); i++)
                harness_sleep_ms(5);
        MQTTAsync_destroy(&c);
}

int mqtt_publish_many(const MqttBroker *b, const char *const *topics, const char *const *payloads,
                      size_t n) {
        MQTTAsync c;
        MQTTAsync_token last = 0;
        int r = 0;

        if (publisher_connect(b, &c) < 0)
                return -1;
        for (size_t i = 0; i < n; i++) {
                MQTTAsync_message m = MQTTAsync_message_initializer;
                MQTTAsync_callOptions o = MQTTAsync_callOptions_initializer;

                m.payload = (void *) payloads[i];
                m.payloadlen = (int) strlen(payloads[i]);
                m.qos = 1;
                for (int tries = 0;; tries++) {
                        r = MQTTAsync_sendMessage(c, topics[i], &m, &o);
                        if (r == MQTTASYNC_SUCCESS || tries > 2000)
                                break;
                        harness_sleep_ms(2);    /* in-flight window full */
                }
                if (r != MQTTASYNC_SUCCESS) {
                        fprintf(stderr, "harness: publish failed: %s\n", MQTTAsync_strerror(r));
                        r = -1;
                        break;
                }
                last = o.token;
        }
        if (r == 0 && n > 0 && MQTTAsync_waitForCompletion(c, last, 60000) != MQTTASYNC_SUCCESS)
                r = -1;
        /* Completion of the last token does not imply the earlier ones on every path:
         * wait until nothing is pending. */
        for (int i = 0; r == 0 && i < 6000; i++) {
                MQTTAsync_token *tokens = NULL;

                if (MQTTAsync_getPendingTokens(c, &tokens) != MQTTASYNC_SUCCESS)
                        break;
                bool none = !tokens || tokens[0] == -1;
                MQTTAsync_free(tokens);
                if (none)
                        break;
                harness_sleep_ms(10);
        }
        publisher_close(c);
        return r;
}

int mqtt_publish(const MqttBroker *b, const char *topic, const void *payload, size_t len) {
        MQTTAsync c;
        MQTTAsync_message m = MQTTAsync_message_initializer;
        MQTTAsync_callOptions o = MQTTAsync_callOptions_initializer;
        int r;

        if (publisher_connect(b, &c) < 0)
                return -1;
        m.payload = (void *) payload;
        m.payloadlen = (int) len;
        m.qos = 1;
        r = MQTTAsync_sendMessage(c, topic, &m, &o);
        if (r == MQTTASYNC_SUCCESS)
                r = MQTTAsync_waitForCompletion(c, o.token, 10000);
        publisher_close(c);
        return r == MQTTASYNC_SUCCESS ? 0 : -1;
}
