/*
 * evhttp-internal.h -- the adapter's private structures.
 *
 * libaj_evhttp is built on the public core API (<aj/aj.h>) only; from lib/
 * it borrows just the header-only intrusive list (aj-queue.h).
 *
 * Three objects:
 *
 *   node      one evhttp the adapter knows (set up, given a vhost, or given
 *             an atomic route), in a tree that mirrors libevent's virtual
 *             hosts; lives in a process-wide registry behind one mutex,
 *             because several threads may each run their own servers.
 *   route     one aj_atomic / aj_atomic_gencb registration.
 *   atomic    one request run as a job.  It is the job's arg, and it is
 *             freed when both owners let go: the job (its release) and
 *             libevent (the request completed, or its connection closed).
 *
 * Request lifetime (libevent 2.1 http.c): while a handler holds a request,
 * libevent has disabled reading on its connection, so a client that goes
 * away is only seen when the reply is written -- or by us: for a job that
 * does not reply at once, the adapter watches the socket for EOF
 * (recv MSG_PEEK, as nginx does) and frees the connection then.  libevent
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

struct aj__node {
    struct evhttp *http;
    struct aj__node *parent;      /* the server it is a vhost of, or NULL */
    struct aj__q children;        /* its registered vhosts, in libevent's order */
    struct aj__q sibling;         /* on parent->children */
    struct aj__q reg;             /* on the registry */
    char *pattern;                /* its vhost pattern, NULL for a root */
    aj_scheduler *sched;          /* its own scheduler, or NULL */
    struct aj__shutdown *shutdown;/* set while a shutdown covers it */
    struct aj__q held;            /* atomics its scheduler runs, still tracked */
    struct aj__q routes;          /* aj_atomic registrations */
    struct aj__route *gencb;      /* aj_atomic_gencb registration */
    struct aj__node *next_dead;   /* shutdown: nodes being forgotten */
};

struct aj__route {
    struct aj__q link;            /* on node->routes */
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
    unsigned started : 1;         /* the handler ran */
    unsigned replied : 1;         /* an answer was sent (by anyone) */
    unsigned shed : 1;            /* ... by the adapter, on the job's behalf */
    unsigned tracking : 1;        /* close and complete callbacks are armed */
    unsigned released : 1;        /* the job released its arg */
    unsigned watching : 1;
};

/* registry.c */
void ajh__reg_lock(void);
void ajh__reg_unlock(void);
struct aj__node *ajh__node_find(const struct evhttp *http);      /* locked */
struct aj__node *ajh__node_get(struct evhttp *http);             /* locked; may create */
struct aj__node *ajh__node_sched_node(struct aj__node *n);       /* locked */
void ajh__node_unlink(struct aj__node *n);                       /* locked */
void ajh__node_free(struct aj__node *n);
char *ajh__strdup(const char *s);

/* atomic.c */
void ajh__send_status(struct evhttp_request *req, int code, int retry_after, int close);
void ajh__route_free(struct aj__route *r);
void ajh__shed_cb(struct evhttp_request *req, void *arg);
void ajh__atomic_answer_shed(struct aj__atomic *a, int close);

/* shutdown.c */
void ajh__shutdown_progress(struct aj__shutdown *sd);

#endif /* AJ_EVHTTP_INTERNAL_H */
