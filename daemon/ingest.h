/* ingest.h — the MQTT session (paho MQTTAsync, MQTT 5): persistent session, subscription,
 * birth and last will, reconnects. The only module that uses paho. On paho's receive
 * thread every message is appended to the journal and then pushed to the queue before
 * the broker is acknowledged: nothing acknowledged exists only in memory. */
#pragma once

#include "common.h"
#include "config.h"
#include "journal.h"
#include "queue.h"

typedef struct Ingest Ingest;

typedef enum IngestState {
        INGEST_DISCONNECTED,
        INGEST_CONNECTING,
        INGEST_CONNECTED,       /* connected, subscription requested */
        INGEST_SUBSCRIBED,      /* subscription acknowledged: consuming */
        _INGEST_STATE_MAX,
        _INGEST_STATE_INVALID = -EINVAL,
} IngestState;

const char *ingest_state_to_string(IngestState s);

/* Creates the client (nothing is sent yet). Borrows c, journal and queue for the Ingest's
 * lifetime: each message is appended to journal (retried while that fails, holding the
 * broker's in-flight window) and then pushed to queue (blocking while it is full). wake_fd:
 * an eventfd written (value 1) on every state change and when journal appends start or
 * stop failing, so the main loop can react; -1 for none. Returns 0, -EINVAL for a URI or
 * option paho refuses, -ENOMEM. */
int ingest_new(const Config *c, Journal *journal, Queue *queue, int wake_fd, Ingest **ret);

/* Disconnects if still connected, asking the broker to publish the offline will (this is
 * not a clean stop: ingest_stop() was not called or did not finish), and frees. */
Ingest *ingest_free(Ingest *i);

/* Starts connecting. Nothing reconnects by itself: a failed attempt and a lost connection
 * are both reported by the state going to INGEST_DISCONNECTED; then call ingest_start()
 * again later (the caller owns the backoff). Call it only in INGEST_DISCONNECTED. Returns
 * 0 or -EIO. */
int ingest_start(Ingest *i);

IngestState ingest_state(const Ingest *i);

/* The last connection error as text ("" if none). Copied into buf. */
void ingest_last_error(Ingest *i, char *buf, size_t len);

/* Clean stop: publishes the retained offline status (waiting up to timeout for the
 * broker's acknowledgement), then disconnects cleanly so the broker discards the will
 * and keeps the persistent session. Messages that arrive meanwhile still reach the
 * callback. Returns 0, or a negative errno if the broker could not be told. */
int ingest_stop(Ingest *i, usec_t timeout);

/* Pauses consumption by disconnecting (the broker queues for the persistent session; the
 * offline will is published, since nothing is consumed meanwhile) and resumes it. Used
 * when memory is full and the database cannot take a flush. */
int ingest_pause(Ingest *i);
int ingest_resume(Ingest *i);
bool ingest_paused(const Ingest *i);

/* Counters, readable from any thread. */
uint64_t ingest_messages_received(const Ingest *i);
uint64_t ingest_connects(const Ingest *i);
/* A client that only publishes (--republish-rejects): client_id (copied) of its own, a
 * clean session that ends with the connection, no will, no status messages, no
 * subscription; the broker address, credentials and TLS of c. ingest_start() connects it,
 * ingest_state() says when (INGEST_CONNECTED), ingest_publish() sends. */
int ingest_new_publisher(const Config *c, const char *client_id, Ingest **ret);

/* Publications of ingest_publish() still waiting for the broker's answer; *ret_failed (may
 * be NULL) gets how many the broker or the connection failed so far. Any thread. */
int ingest_publish_pending(const Ingest *i, uint64_t *ret_failed);

/* Publishes payload (a NUL-terminated text) to topic with QoS 1, without waiting: paho
 * sends it and retries it while the connection lasts. Main thread. Returns 0; -ENOTCONN
 * when the client is not connected (nothing is queued for later: the caller keeps what it
 * must send again); -ENOBUFS while too many publications wait for the broker's answer;
 * -EIO when paho refuses it. */
int ingest_publish(Ingest *i, const char *topic, const char *payload, bool retained);

/* Messages whose journal append failed at least once (each is retried until it succeeds). */
uint64_t ingest_journal_failures(const Ingest *i);
/* 0, or the negative errno of the journal append that is failing now (disk full). */
int ingest_journal_error(const Ingest *i);
