/* ingest.c — the MQTT session with paho MQTTAsync (MQTT 5): persistent session, the
 * subscription (re-requested on every connect), birth and last will, pause and stop.
 * It does not parse payloads. On paho's receive thread it makes each message durable
 * (journal_append) and hands it to the main loop (queue_push) before the callback
 * returns, which is when paho sends the PUBACK: the hand-off is the at-least-once
 * boundary, and it lives here so that the main loop's code runs on one thread only.
 *
 * paho facts this file relies on: the PUBACK of a QoS 1 message is sent after
 * messageArrived returns 1; callbacks run on one thread holding paho's lock, so they only
 * touch atomics and the caller's callback, never MQTTAsync_isConnected or wait calls.
 *
 * Reconnects are the caller's, not paho's automaticReconnect: in paho 1.3.12 an automatic
 * retry keeps running after MQTTAsync_disconnect (which would defeat a pause), and
 * MQTTAsync_connect rewrites the client's will, credentials and TLS options without
 * paho's lock, so it must not run while paho may be retrying on its own. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>

#include <MQTTAsync.h>

#include "ingest.h"
#include "journal.h"
#include "queue.h"
#include "text.h"
#include "timestamp.h"
#include "version.h"

#define INGEST_KEEPALIVE_S 30
#define INGEST_CONNECT_TIMEOUT_S 10
#define JOURNAL_RETRY_USEC (200 * 1000)
#define PUBLISH_INFLIGHT_MAX 10000      /* ingest_publish(): messages paho holds for us */

struct Ingest {
        const Config *config;
        MQTTAsync client;
        Journal *journal;
        Queue *queue;
        int wake_fd;

        char *filter;                   /* what we subscribe to, "$share/G/" included */
        char *status_topic;             /* outaged/<client_id>/status */
        char *online_payload;
        char *offline_payload;

        _Atomic int state;              /* IngestState */
        _Atomic bool paused;
        _Atomic bool stopping;
        _Atomic int publish_done;       /* 0 pending, 1 ok, -1 failed */
        _Atomic int disconnect_done;
        _Atomic uint64_t n_received;
        _Atomic uint64_t n_connects;
        _Atomic int journal_error;      /* 0, or the -errno of a failing append */
        _Atomic uint64_t n_journal_failures;
        _Atomic int n_inflight;         /* ingest_publish() messages not yet acknowledged */
        _Atomic uint64_t n_publish_failed;
        bool publish_only;              /* ingest_new_publisher(): no session, no subscription */
        char *client_id;

        /* last error text, written by paho's thread, read by the main thread */
        pthread_mutex_t last_error_lock;
        char last_error[256];
};

static const char *const state_names[_INGEST_STATE_MAX] = {
        [INGEST_DISCONNECTED] = "disconnected",
        [INGEST_CONNECTING] = "connecting",
        [INGEST_CONNECTED] = "connected",
        [INGEST_SUBSCRIBED] = "subscribed",
};

const char *ingest_state_to_string(IngestState s) {
        if (s < 0 || s >= _INGEST_STATE_MAX)
                return NULL;
        return state_names[s];
}

static void wake(Ingest *i) {
        uint64_t one = 1;

        if (i->wake_fd >= 0)
                (void) !write(i->wake_fd, &one, sizeof(one));
}

static void set_state(Ingest *i, IngestState s) {
        atomic_store(&i->state, s);
        wake(i);
}

/* Written on paho's thread, read on the main thread. */
static void set_error(Ingest *i, const char *what, int code, const char *msg) {
        pthread_mutex_lock(&i->last_error_lock);
        snprintf(i->last_error, sizeof(i->last_error), "%s: %s (code %d)", what,
                 msg ? msg : MQTTAsync_strerror(code), code);
        pthread_mutex_unlock(&i->last_error_lock);
}

void ingest_last_error(Ingest *i, char *buf, size_t len) {
        if (len == 0)
                return;
        pthread_mutex_lock(&i->last_error_lock);
        snprintf(buf, len, "%s", i->last_error);
        pthread_mutex_unlock(&i->last_error_lock);
}

/* Makes the message durable, then hands it over. The broker gets its PUBACK when the
 * callback returns, so this never gives up on a message: a journal that cannot be
 * written (disk full) holds the message, and with it paho's receive thread and the
 * broker's in-flight window, until it can (the broker keeps what it could not deliver). */
static void hand_off(Ingest *i, const char *topic, size_t topic_len, const void *payload, size_t len) {
        usec_t received = now_realtime();
        QueueItem *item;
        int r;

        if (topic_len > JOURNAL_TOPIC_MAX)
                topic_len = JOURNAL_TOPIC_MAX;
        /* The item first: it holds the NUL-terminated topic the journal takes. Its
         * sequence number is the journal's. */
        while (!(item = queue_item_new(0, received, topic, topic_len, payload, len)))
                usleep(JOURNAL_RETRY_USEC);

        for (bool failed = false; (r = journal_append(i->journal, received, item->topic, item->payload, len,
                                                      &item->seq)) < 0;) {
                if (!failed)
                        atomic_fetch_add(&i->n_journal_failures, 1);    /* messages, not attempts */
                failed = true;
                if (atomic_exchange(&i->journal_error, r) != r)
                        wake(i);        /* the main loop reports it */
                usleep(JOURNAL_RETRY_USEC);
        }
        /* A plain load first: the exchange is a locked instruction, and appends rarely fail. */
        if (atomic_load_explicit(&i->journal_error, memory_order_relaxed) != 0 &&
            atomic_exchange(&i->journal_error, 0) != 0)
                wake(i);
        (void) queue_push(i->queue, item);     /* -EPIPE when stopping: the journal has it */
}

static int on_message(void *context, char *topic, int topic_len, MQTTAsync_message *m) {
        Ingest *i = context;
        size_t tl = topic_len > 0 ? (size_t) topic_len : strlen(topic);

        atomic_fetch_add(&i->n_received, 1);
        hand_off(i, topic, tl, m->payload, m->payloadlen > 0 ? (size_t) m->payloadlen : 0);
        MQTTAsync_freeMessage(&m);
        MQTTAsync_free(topic);
        return 1;       /* always: 0 is not backpressure, see the file comment */
}

static void on_subscribe_ok(void *context, MQTTAsync_successData5 *response) {
        Ingest *i = context;

        /* A v5 SUBACK carries a reason code per topic; >= 0x80 is a refusal (ACL). */
        if (response && response->reasonCode >= 0x80) {
                set_error(i, "subscribe refused", response->reasonCode,
                          MQTTReasonCode_toString(response->reasonCode));
                set_state(i, INGEST_CONNECTED);
                return;
        }
        set_state(i, INGEST_SUBSCRIBED);
}

static void on_subscribe_fail(void *context, MQTTAsync_failureData5 *response) {
        Ingest *i = context;

        set_error(i, "subscribe failed", response ? response->code : -1,
                  response && response->message ? response->message : NULL);
        set_state(i, INGEST_CONNECTED);
}

static void publish_status(Ingest *i, const char *payload, bool track);

static void on_connected(void *context, char *cause) {
        Ingest *i = context;
        MQTTAsync_callOptions opts = MQTTAsync_callOptions_initializer;
        int r;

        atomic_fetch_add(&i->n_connects, 1);
        if (atomic_load(&i->paused) || atomic_load(&i->stopping)) {
                /* A connect that was in flight when consumption paused or stopped. */
                MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;

                (void) MQTTAsync_disconnect(i->client, &d);
                set_state(i, INGEST_DISCONNECTED);
                return;
        }
        set_state(i, INGEST_CONNECTED);
        if (i->publish_only)
                return;
        publish_status(i, i->online_payload, false);

        /* Subscribe again on every connect: cheap, and right even when the broker lost
         * the session. */
        opts.onSuccess5 = on_subscribe_ok;
        opts.onFailure5 = on_subscribe_fail;
        opts.context = i;
        r = MQTTAsync_subscribe(i->client, i->filter, i->config->mqtt_qos, &opts);
        if (r != MQTTASYNC_SUCCESS)
                set_error(i, "subscribe", r, NULL);
}

static void on_connect_fail(void *context, MQTTAsync_failureData5 *response) {
        Ingest *i = context;

        /* paho also calls this after on_connection_lost when an established connection
         * breaks (no onSuccess5 is set, so it keeps onFailure5): that was no connect. */
        if (atomic_load(&i->state) != INGEST_CONNECTING)
                return;
        set_error(i, "connect failed", response ? response->code : -1,
                  response && response->message ? response->message :
                  response ? MQTTReasonCode_toString(response->reasonCode) : NULL);
        set_state(i, INGEST_DISCONNECTED);
}

static void on_connection_lost(void *context, char *cause) {
        Ingest *i = context;

        set_error(i, "connection lost", 0, cause ? cause : "no reason given");
        /* The caller reconnects (ingest_start), see the file comment. */
        set_state(i, INGEST_DISCONNECTED);
}

static void on_publish_ok(void *context, MQTTAsync_successData5 *response) {
        Ingest *i = context;

        atomic_store(&i->publish_done, 1);
        wake(i);
}

static void on_publish_fail(void *context, MQTTAsync_failureData5 *response) {
        Ingest *i = context;

        atomic_store(&i->publish_done, -1);
        wake(i);
}

static void publish_status(Ingest *i, const char *payload, bool track) {
        MQTTAsync_message m = MQTTAsync_message_initializer;
        MQTTAsync_callOptions opts = MQTTAsync_callOptions_initializer;
        int r;

        m.payload = (void *) payload;
        m.payloadlen = (int) strlen(payload);
        m.qos = 1;
        m.retained = 1;
        if (track) {
                opts.onSuccess5 = on_publish_ok;
                opts.onFailure5 = on_publish_fail;
                opts.context = i;
        }
        r = MQTTAsync_sendMessage(i->client, i->status_topic, &m, &opts);
        if (r != MQTTASYNC_SUCCESS) {
                set_error(i, "publish status", r, NULL);
                if (track)
                        atomic_store(&i->publish_done, -1);
        }
}

static char *status_json(const Config *c, const char *state, const char *started_at) {
        char *s = NULL;

        /* client_id is restricted by config.c to [A-Za-z0-9_.:-]: nothing to escape. */
        if (asprintf(&s, "{\"state\":\"%s\",\"client_id\":\"%s\",\"version\":\"%s\",\"started_at\":\"%s\"}",
                     state, c->mqtt_client_id, OUTAGED_VERSION, started_at) < 0)
                return NULL;
        return s;
}

static int ingest_create(const Config *c, const char *client_id, bool publish_only, Journal *journal,
                         Queue *queue, int wake_fd, Ingest **ret);

int ingest_new(const Config *c, Journal *journal, Queue *queue, int wake_fd, Ingest **ret) {
        return ingest_create(c, c->mqtt_client_id, false, journal, queue, wake_fd, ret);
}

int ingest_new_publisher(const Config *c, const char *client_id, Ingest **ret) {
        return ingest_create(c, client_id, true, NULL, NULL, -1, ret);
}

static int ingest_create(const Config *c, const char *client_id, bool publish_only, Journal *journal,
                         Queue *queue, int wake_fd, Ingest **ret) {
        MQTTAsync_createOptions copts = MQTTAsync_createOptions_initializer5;
        char started[TIMESTAMP_FORMAT_MAX];
        Ingest *i;
        int r;

        i = calloc(1, sizeof(*i));
        if (!i)
                return -ENOMEM;
        i->config = c;
        i->journal = journal;
        i->queue = queue;
        i->publish_only = publish_only;
        i->client_id = strdup(client_id);
        if (!i->client_id) {
                free(i);
                return -ENOMEM;
        }
        i->wake_fd = wake_fd;
        pthread_mutex_init(&i->last_error_lock, NULL);
        atomic_store(&i->state, INGEST_DISCONNECTED);

        if (timestamp_format(now_realtime() / USEC_PER_SEC * USEC_PER_SEC, started) < 0)
                started[0] = '\0';
        if ((c->mqtt_share_group ? asprintf(&i->filter, "$share/%s/%s", c->mqtt_share_group, c->mqtt_topic)
                                 : asprintf(&i->filter, "%s", c->mqtt_topic)) < 0) {
                i->filter = NULL;
                goto oom;
        }
        if (asprintf(&i->status_topic, "outaged/%s/status", c->mqtt_client_id) < 0) {
                i->status_topic = NULL;
                goto oom;
        }
        i->online_payload = status_json(c, "online", started);
        i->offline_payload = status_json(c, "offline", started);
        if (!i->online_payload || !i->offline_payload)
                goto oom;

        /* No paho persistence: durability is the journal's job, and paho's file store
         * would hold only our own status publications. */
        copts.sendWhileDisconnected = 0;
        r = MQTTAsync_createWithOptions(&i->client, c->mqtt_uri, i->client_id,
                                        MQTTCLIENT_PERSISTENCE_NONE, NULL, &copts);
        if (r != MQTTASYNC_SUCCESS) {
                i->client = NULL;
                ingest_free(i);
                return -EINVAL;
        }
        /* Callbacks before connecting: redelivered messages can arrive before the
         * connected callback runs. */
        r = MQTTAsync_setCallbacks(i->client, i, on_connection_lost, on_message, NULL);
        if (r == MQTTASYNC_SUCCESS)
                r = MQTTAsync_setConnected(i->client, i, on_connected);
        if (r != MQTTASYNC_SUCCESS) {
                ingest_free(i);
                return -EINVAL;
        }

        *ret = i;
        return 0;
oom:
        ingest_free(i);
        return -ENOMEM;
}

Ingest *ingest_free(Ingest *i) {
        if (!i)
                return NULL;
        if (i->client) {
                if (MQTTAsync_isConnected(i->client)) {
                        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;

                        /* Not a clean stop (ingest_stop did not run): let the broker
                         * publish the offline will rather than discard it. */
                        d.timeout = 1000;
                        d.reasonCode = MQTTREASONCODE_DISCONNECT_WITH_WILL_MESSAGE;
                        (void) MQTTAsync_disconnect(i->client, &d);
                }
                MQTTAsync_destroy(&i->client);
        }
        free(i->client_id);
        free(i->filter);
        free(i->status_topic);
        free(i->online_payload);
        free(i->offline_payload);
        pthread_mutex_destroy(&i->last_error_lock);
        free(i);
        return NULL;
}

int ingest_start(Ingest *i) {
        MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer5;
        MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
        MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
        MQTTProperties props = MQTTProperties_initializer;
        MQTTProperty p = { .identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL };
        const Config *c = i->config;
        usec_t expiry_s = c->mqtt_session_expiry / USEC_PER_SEC;
        int r;

        o.keepAliveInterval = INGEST_KEEPALIVE_S;
        o.connectTimeout = INGEST_CONNECT_TIMEOUT_S;
        o.cleanstart = 0;
        o.MQTTVersion = MQTTVERSION_5;
        o.automaticReconnect = 0;      /* the caller's backoff, see the file comment */
        /* The in-flight window is the broker's; keep paho's own bound generous. */
        o.maxInflight = 65535;
        o.username = c->mqtt_username;
        o.password = c->mqtt_password;
        o.onFailure5 = on_connect_fail;
        o.context = i;

        will.topicName = i->status_topic;
        will.message = i->offline_payload;
        will.retained = 1;
        will.qos = 1;
        o.will = &will;
        if (i->publish_only) {
                /* A session of its own that ends with the connection: nothing queues for it. */
                o.cleanstart = 1;
                o.will = NULL;
                expiry_s = 0;
        }

        if (text_uri_is_tls(c->mqtt_uri)) {
                ssl.trustStore = c->mqtt_ca_file;
                ssl.keyStore = c->mqtt_cert_file;
                ssl.privateKey = c->mqtt_key_file;
                ssl.enableServerCertAuth = 1;
                ssl.verify = 1;         /* paho defaults to no host name check */
                ssl.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
                o.ssl = &ssl;
        }

        p.value.integer4 = (unsigned) (expiry_s > UINT32_MAX ? UINT32_MAX : expiry_s);
        if (MQTTProperties_add(&props, &p) != 0)
                return -ENOMEM;
        o.connectProperties = &props;
        /* No Maximum Packet Size property: an oversized message must reach us and be
         * recorded as a reject rather than be dropped by the broker (SPEC section 2). */

        set_state(i, INGEST_CONNECTING);
        r = MQTTAsync_connect(i->client, &o);
        MQTTProperties_free(&props);
        if (r != MQTTASYNC_SUCCESS) {
                set_error(i, "connect", r, NULL);
                set_state(i, INGEST_DISCONNECTED);
                return -EIO;
        }
        return 0;
}

IngestState ingest_state(const Ingest *i) {
        return atomic_load(&((Ingest *) i)->state);
}

static void on_disconnect_done(void *context, MQTTAsync_successData5 *response) {
        Ingest *i = context;

        atomic_store(&i->disconnect_done, 1);
        wake(i);
}

static void on_disconnect_fail(void *context, MQTTAsync_failureData5 *response) {
        Ingest *i = context;

        atomic_store(&i->disconnect_done, -1);
        wake(i);
}

/* with_will: ask the broker to publish the offline will (MQTT 5 reason code 0x04), for
 * a disconnect that is not a clean stop, so the retained status stays truthful. */
static int disconnect_and_wait(Ingest *i, usec_t timeout, bool with_will) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
        usec_t deadline = now_monotonic() + timeout;
        int r;

        atomic_store(&i->disconnect_done, 0);
        d.timeout = (int) (timeout / USEC_PER_MSEC);
        if (with_will)
                d.reasonCode = MQTTREASONCODE_DISCONNECT_WITH_WILL_MESSAGE;
        d.onSuccess5 = on_disconnect_done;
        d.onFailure5 = on_disconnect_fail;
        d.context = i;
        r = MQTTAsync_disconnect(i->client, &d);
        if (r != MQTTASYNC_SUCCESS)
                return r == MQTTASYNC_DISCONNECTED ? 0 : -EIO;
        while (atomic_load(&i->disconnect_done) == 0 && now_monotonic() < deadline)
                usleep(2000);
        set_state(i, INGEST_DISCONNECTED);
        return atomic_load(&i->disconnect_done) == 1 ? 0 : -ETIMEDOUT;
}

int ingest_stop(Ingest *i, usec_t timeout) {
        usec_t deadline = now_monotonic() + timeout;
        int r = 0;

        atomic_store(&i->stopping, true);
        /* The state, not MQTTAsync_isConnected(): that takes paho's lock, which the
         * receive thread holds while the message callback blocks on a full queue. */
        if (atomic_load(&i->state) < INGEST_CONNECTED)
                return -ENOTCONN;

        atomic_store(&i->publish_done, 0);
        publish_status(i, i->offline_payload, true);
        while (atomic_load(&i->publish_done) == 0 && now_monotonic() < deadline)
                usleep(2000);
        if (atomic_load(&i->publish_done) != 1)
                r = -ETIMEDOUT;

        if (disconnect_and_wait(i, USEC_PER_SEC, false) < 0 && r == 0)
                r = -ETIMEDOUT;
        return r;
}

int ingest_pause(Ingest *i) {
        if (atomic_exchange(&i->paused, true))
                return 0;
        return disconnect_and_wait(i, USEC_PER_SEC, true);
}

int ingest_resume(Ingest *i) {
        if (!atomic_exchange(&i->paused, false))
                return 0;
        if (atomic_load(&i->state) != INGEST_DISCONNECTED)
                return 0;       /* a connect still in flight goes on, or fails and says so */
        return ingest_start(i);
}

bool ingest_paused(const Ingest *i) {
        return atomic_load(&((Ingest *) i)->paused);
}

uint64_t ingest_messages_received(const Ingest *i) {
        return atomic_load(&((Ingest *) i)->n_received);
}

uint64_t ingest_connects(const Ingest *i) {
        return atomic_load(&((Ingest *) i)->n_connects);
}

static void on_announce_done(void *context, MQTTAsync_successData5 *response) {
        Ingest *i = context;

        atomic_fetch_sub(&i->n_inflight, 1);
}

static void on_announce_fail(void *context, MQTTAsync_failureData5 *response) {
        Ingest *i = context;

        atomic_fetch_add(&i->n_publish_failed, 1);
        atomic_fetch_sub(&i->n_inflight, 1);
}

int ingest_publish_pending(const Ingest *i, uint64_t *ret_failed) {
        if (ret_failed)
                *ret_failed = atomic_load(&((Ingest *) i)->n_publish_failed);
        return atomic_load(&((Ingest *) i)->n_inflight);
}

int ingest_publish(Ingest *i, const char *topic, const char *payload, bool retained) {
        MQTTAsync_message m = MQTTAsync_message_initializer;
        MQTTAsync_callOptions opts = MQTTAsync_callOptions_initializer;
        int r;

        /* The state, not MQTTAsync_isConnected(), which may wait for paho's lock. */
        if (atomic_load(&i->state) < INGEST_CONNECTED || atomic_load(&i->stopping))
                return -ENOTCONN;
        if (atomic_load(&i->n_inflight) >= PUBLISH_INFLIGHT_MAX)
                return -ENOBUFS;
        m.payload = (void *) payload;
        m.payloadlen = (int) strlen(payload);
        m.qos = 1;
        m.retained = retained;
        opts.onSuccess5 = on_announce_done;
        opts.onFailure5 = on_announce_fail;
        opts.context = i;
        atomic_fetch_add(&i->n_inflight, 1);
        r = MQTTAsync_sendMessage(i->client, topic, &m, &opts);
        if (r != MQTTASYNC_SUCCESS) {
                atomic_fetch_sub(&i->n_inflight, 1);
                return r == MQTTASYNC_DISCONNECTED ? -ENOTCONN : -EIO;
        }
        return 0;
}

uint64_t ingest_journal_failures(const Ingest *i) {
        return atomic_load(&((Ingest *) i)->n_journal_failures);
}

int ingest_journal_error(const Ingest *i) {
        return atomic_load(&((Ingest *) i)->journal_error);
}
