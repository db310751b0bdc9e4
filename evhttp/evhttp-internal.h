/*
 * evhttp-internal.h -- the adapter's private structures.
 *
 * libaj_evhttp is built on the public core API (<aj/aj.h>) only; from lib/
 * it borrows just the header-only intrusive list (aj-queue.h).
 *
 * Objects:
 *
 *   node      one evhttp the adapter knows (set up, given a vhost, an alias,
 *             flags or an atomic route), in a tree that mirrors libevent's
 *             virtual hosts as they were made through the adapter, with the
 *             aliases added through it.  Lookups read only these records.
 *   route     one aj_atomic / aj_atomic_gencb registration.  libevent gets
 *             its id, never a pointer, so a route callback that outlives
 *             the records (the user's routes stay as the user left them)
 *             finds nothing and answers 503.
 *   atomic    one request run as a job.  It is the job's arg, and it is
 *             freed when both owners let go: the job (its release) and
 *             libevent (the request completed, or its connection closed).
 *
 * Threads (registry.c): the index from an evhttp (or a route id) to its
 * record is the one structure shared by threads; it is a hash table whose
 * buckets have striped locks, so a lookup takes one short lock that only
 * servers hashing alike share, never one lock for every thread.  A tree of
 * nodes and everything in a node belong, like the evhttp itself, to the
 * thread that runs the server.
 *
 * Request lifetime (libevent 2.1 http.c): while a handler holds a request,
 * libevent has disabled reading on its connection, so a client that goes
 * away is only seen when the reply is written -- or by us: for a job that
 * does not reply at once, the adapter watches the socket for EOF
 * (recv MSG_PEEK, as nginx does) and frees the connection then (with
 * AJ_EVHTTP_ALLOW_HALF_CLOSE an EOF is a half-close: it stops watching,
 * and only a reset or a failed write says the client left).  libevent
 * frees a held request in exactly two places, both through
 * evhttp_connection_free(): on a write error and inside evhttp_free().  Both
 * call the connection's close callback first, which is why the adapter owns
 * that single slot while it holds a request; the request's on-complete
 * callback tells it when a reply was fully written and the request is
 * about to be freed.  After either, the adapter never touches the request.
 */
#ifndef AJ_EVHTTP_INTERNAL_H
#define AJ_EVHTTP_INTERNAL_H

#include <aj/aj.h>
#include <aj/evhttp.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>

#include "aj-queue.h"

struct aj__shutdown;

struct aj__alias {
    struct aj__q link;            /* on node->aliases */
    char name[];
};

struct aj__node {
    struct evhttp *http;
    struct aj__q hlink;           /* in the index */
    struct aj__node *parent;      /* the server it is a vhost of, or NULL */
    struct aj__q children;        /* its registered vhosts, in libevent's order */
    struct aj__q sibling;         /* on parent->children */
    char *pattern;                /* its vhost pattern, NULL unless a vhost */
    struct aj__q aliases;         /* aliases added through the adapter */
    aj_scheduler *sched;          /* its own scheduler, or NULL */
    struct aj__shutdown *shutdown;/* set while a shutdown covers it */
    struct aj__q held;            /* atomics its scheduler runs, still tracked */
    struct aj__q routes;          /* aj_atomic registrations */
    struct aj__route *gencb;      /* aj_atomic_gencb registration */
    unsigned flags;               /* AJ_EVHTTP_* */
    struct aj__node *next_dead;   /* being forgotten */
};

struct aj__route {
    struct aj__q link;            /* on node->routes */
    struct aj__q hlink;           /* in the index */
    uintptr_t id;                 /* what libevent holds as the callback arg */
    struct aj__node *node;        /* the server libevent matched */
    aj_atomic_handler handler;
    void *arg;
    char *path;                   /* NULL for the gencb */
};

struct aj__atomic {
    aj_atomic_handler handler;
    void *arg;
    aj_job *job;
    struct aj__node *node;        /* whose held list it is on; NULL once off */
    struct evhttp_request *req;   /* NULL once libevent is done with it */
    struct evhttp_connection *evcon;
    struct event watch;           /* EOF watch while a job holds the request */
    struct aj__q link;            /* on node->held */
    void *data;                   /* aj_evhttp_set_data */
    void (*data_release)(void *data);
    unsigned flags;               /* the route's server's, at arrival */
    unsigned started : 1;         /* the handler ran */
    unsigned replied : 1;         /* an answer was sent (by anyone) */
    unsigned shed : 1;            /* ... by the adapter, on the job's behalf */
    unsigned tracking : 1;        /* close and complete callbacks are armed */
    unsigned released : 1;        /* the job released its arg */
    unsigned watching : 1;
};

/* registry.c: the index (safe from any thread) */
struct aj__node *ajh__node_find(const struct evhttp *http);
struct aj__node *ajh__node_get(struct evhttp *http);             /* may create */
void ajh__node_drop_if_unused(struct aj__node *n);
struct aj__route *ajh__route_find(uintptr_t id);
void ajh__route_index(struct aj__route *r);                      /* gives r its id */
void ajh__route_unindex(struct aj__route *r);
/* registry.c: records (the server's thread) */
struct aj__node *ajh__node_sched_node(struct aj__node *n);
void ajh__tree_walk(struct aj__node *n, void (*fn)(struct aj__node *, void *), void *arg);
void ajh__forget_tree(struct aj__node *top, struct aj__node **dead);
void ajh__free_dead(struct aj__node *dead);
char *ajh__strdup(const char *s);

/* Calls fn for http and every registered vhost below it, parents first
 * (pattern NULL for the root, the vhost pattern otherwise; s may be NULL). */
void ajh__registry_foreach(struct evhttp *root,
    void (*fn)(struct evhttp *http, const char *pattern, aj_scheduler *s, void *arg),
    void *arg);

/* atomic.c */
void ajh__send_status(struct evhttp_request *req, int code, int retry_after, int close);
void ajh__route_free(struct aj__route *r);
void ajh__atomic_answer_shed(struct aj__atomic *a, int close);

/* shutdown.c */
void ajh__shutdown_progress(struct aj__shutdown *sd);
int ajh__shutdown_in_callback(const struct aj__shutdown *sd);
int ajh__shutdown_near(struct aj__node *n);
struct aj__shutdown *ajh__shutdown_release_tree(struct aj__node *n);
void ajh__shutdown_free_abandoned(struct aj__shutdown *sd);

#endif /* AJ_EVHTTP_INTERNAL_H */
