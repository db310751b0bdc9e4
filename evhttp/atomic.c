/*
 * atomic.c -- whole HTTP handlers run as jobs (aj_atomic).
 *
 * route_cb is what libevent calls for a registered path.  It finds the
 * scheduler (the route's server, else its nearest parent), spawns a job
 * whose start is the user's handler, waits on it (so the scheduler's wait
 * timeout bounds the handler and the outcome never reaches the exception
 * handler), and holds the request until the job answers.  Whatever the
 * job does, the client gets exactly one answer, and no request is touched
 * after libevent freed it (see evhttp-internal.h for how we know).
 *
 *   job replies (aj_evhttp_reply)           -> its reply
 *   job done with an error, or 0, no reply  -> 500
 *   ... with ECANCELED, wait timeout, let go-> 503 + Retry-After
 *   queue full / scheduler closed           -> 503 + Retry-After, no job
 *   no scheduler                            -> 500 and a log line
 *   client gone first                       -> the job runs to its end,
 *                                              its reply is dropped
 *                                              (a job still pending is
 *                                              discarded: nobody to answer;
 *                                              with CANCEL_ON_DISCONNECT a
 *                                              running one is closed)
 *
 * Every answer the adapter makes is a fresh response (ajh__send_status).
 * The route's libevent arg is its id in the registry's index, so a route
 * the records forgot (shutdown, forget) answers 503 instead of reading
 * freed memory.  The request's per-request data (aj_evhttp_set_data) is
 * released with the job.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "evhttp-internal.h"

static void atomic_start(aj_job *job, void *arg);
static void atomic_release(void *arg);

static const struct aj_job_ops atomic_ops = {
    .name = "aj_atomic",
    .start = atomic_start,
    .cancel = NULL,          /* the handler arms its own with aj_job_set_cancel */
    .release = atomic_release,
};

static const char *status_reason(int code)
{
    switch (code) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

/*
 * A reply the adapter makes itself (SPEC 4.2): a fresh response.  Whatever
 * the handler put into the response so far (a Set-Cookie, its own
 * Content-Length, part of a body) is discarded first, so none of it reaches
 * the client with the error and the framing stays right for keep-alive.
 * evhttp_send_error() would drop our own headers: evhttp_send_reply().
 */
void ajh__send_status(struct evhttp_request *req, int code, int retry_after, int close)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    const char *reason = status_reason(code);

    evhttp_clear_headers(h);
    evbuffer_drain(out, evbuffer_get_length(out));
    if (retry_after)
        evhttp_add_header(h, "Retry-After", "1");
    if (close)
        evhttp_add_header(h, "Connection", "close");
    evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    /* Into the request's own buffer: no allocation that could fail. */
    evbuffer_add_printf(out, "%d %s\n", code, reason);
    evhttp_send_reply(req, code, reason, NULL);
}

/* ------------------------------------------------------------------ */
/* Tracking the request: who frees it, and when                        */
/* ------------------------------------------------------------------ */

static void watch_stop(struct aj__atomic *a)
{
    if (a->watching) {
        event_del(&a->watch);
        a->watching = 0;
    }
}

/* libevent is done with the request (or will be when we return). */
static void untrack(struct aj__atomic *a)
{
    struct aj__node *n = a->node;

    watch_stop(a);
    a->req = NULL;
    a->evcon = NULL;
    if (!a->tracking)
        return;
    a->tracking = 0;
    if (n) {
        aj__q_remove(&a->link);
        a->node = NULL;
        if (n->shutdown)
            ajh__shutdown_progress(n->shutdown);
    }
    if (a->released)
        aj_free(a);
}

static void departure_closed(aj_job *job, int error, void *result, void *arg)
{
    (void)result;
    (void)arg;
    if (error == ETIMEDOUT)
        aj_log(EVENT_LOG_WARN, "aj_atomic: Job closing timed out: job %s, closed when its "
               "client left, still runs", aj_job_name(job));
}

/* The client is gone.  A job that has not started is discarded (nobody is
 * left to answer); a running one runs to its end, or with
 * AJ_EVHTTP_CANCEL_ON_DISCONNECT is closed: its cancel hook runs from the
 * loop.  The close is the adapter's: its outcome only reaches the log. */
static void client_gone(struct aj__atomic *a)
{
    if (!a->released && a->job && !a->replied &&
        (!a->started || (a->flags & AJ_EVHTTP_CANCEL_ON_DISCONNECT)))
        if (aj_job_close(a->job, NULL, a->started ? departure_closed : NULL, NULL) != 0)
            aj_log(EVENT_LOG_WARN, "aj_atomic: cannot close job %s whose client left: %s",
                   aj_job_name(a->job), strerror(errno));
    untrack(a);
}

/*
 * The connection's close callback: libevent is tearing the connection down
 * (a write error, or evhttp_free).  If the request is still attached
 * libevent frees it when we return; if it was detached (a read EOF or
 * timeout before any reply, not seen in 2.1 while reading is off but
 * handled anyway) nobody else will, so we do.
 */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    struct aj__atomic *a = arg;

    (void)evcon;
    if (a->req && !evhttp_request_get_connection(a->req) && !a->replied)
        evhttp_request_free(a->req);
    client_gone(a);
}

/* The reply was written in full; libevent frees the request next. */
static void req_complete(struct evhttp_request *req, void *arg)
{
    struct aj__atomic *a = arg;

    (void)req;
    if (a->evcon)
        evhttp_connection_set_closecb(a->evcon, NULL, NULL);
    a->replied = 1;           /* also when the handler replied by itself */
    untrack(a);
}

/*
 * EOF watch.  Reading is off while a handler holds the request, so libevent
 * would only learn that the client left when writing the reply; a job that
 * waits on a slow backend would hold the fd that long.  Peek instead: EOF
 * or an error means gone, data means a pipelined request (we cannot see
 * past it, so stop watching).
 */
static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aj__atomic *a = arg;
    struct evhttp_connection *evcon = a->evcon;
    char c;
    ssize_t n;

    (void)what;
    n = recv(fd, &c, 1, MSG_PEEK);
    if (n > 0) {
        watch_stop(a);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n == 0 && (a->flags & AJ_EVHTTP_ALLOW_HALF_CLOSE)) {
        /* A half-close: the client still reads.  Only a failed write will
         * say it left (EOF stays readable: stop watching). */
        watch_stop(a);
        return;
    }
    /* Forget the request first, then let libevent free it. */
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    client_gone(a);
    evhttp_connection_free(evcon);
}

static void watch_start(struct aj__atomic *a)
{
    struct bufferevent *bev;
    evutil_socket_t fd;

    if (a->watching || !a->evcon || a->replied)
        return;
    bev = evhttp_connection_get_bufferevent(a->evcon);
    fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return;
    if (event_assign(&a->watch, evhttp_connection_get_base(a->evcon), fd, EV_READ | EV_PERSIST,
                     watch_cb, a) == 0 &&
        event_add(&a->watch, NULL) == 0)
        a->watching = 1;
}

/* ------------------------------------------------------------------ */
/* The job                                                             */
/* ------------------------------------------------------------------ */

static void atomic_start(aj_job *job, void *arg)
{
    struct aj__atomic *a = arg;

    a->started = 1;
    if (!a->req || a->replied) {     /* answered or gone meanwhile */
        aj_job_done(job, ECANCELED, NULL);
        return;
    }
    watch_stop(a);
    a->handler(job, a->req, a->arg);
    /* Still holding it after the handler returned: a slow job.  Watch for
     * the client leaving.  (A job that replies at once costs no syscall.) */
    if (!a->released && a->req && !a->replied)
        watch_start(a);
}

static void atomic_release(void *arg)
{
    struct aj__atomic *a = arg;

    if (a->data_release)
        a->data_release(a->data);
    a->data = NULL;
    a->data_release = NULL;
    a->released = 1;
    a->job = NULL;
    if (!a->tracking)
        aj_free(a);
}

/* The adapter answers on the job's behalf. */
void ajh__atomic_answer_shed(struct aj__atomic *a, int close)
{
    watch_stop(a);
    a->replied = 1;
    a->shed = 1;
    ajh__send_status(a->req, 503, 1, close);
}

/* The job finished (or the wait timed out, or it was let go): answer the
 * client unless someone did. */
static void atomic_waited(aj_job *job, int error, void *result, void *arg)
{
    struct aj__atomic *a = arg;
    int close = a->node && a->node->shutdown;

    (void)result;
    if (!a->req || a->replied)
        return;
    if (evhttp_request_get_response_code(a->req) != 0) {
        a->replied = 1;       /* the handler replied with evhttp_send_* itself */
        return;
    }
    if (error == ECANCELED || error == ETIMEDOUT || error == ESHUTDOWN) {
        ajh__atomic_answer_shed(a, close);
        return;
    }
    if (error == 0)
        aj_log(EVENT_LOG_WARN, "aj_atomic: job %s finished without a reply: 500",
               aj_job_name(job));
    watch_stop(a);
    a->replied = 1;
    a->shed = 1;
    ajh__send_status(a->req, 500, 0, close);
}

/* libevent calls this for every request on an atomic route.  Its arg is
 * the route's id: the records may be gone (a shutdown or forget leaves the
 * user's routes in libevent as they are), and then it answers 503. */
static void route_cb(struct evhttp_request *req, void *arg)
{
    struct aj__route *r = ajh__route_find((uintptr_t)arg);
    struct aj__node *sn;
    struct aj__atomic *a;
    aj_scheduler *s;
    aj_job *job;
    int err;

    if (!r) {
        ajh__send_status(req, 503, 1, 1);
        return;
    }
    sn = ajh__node_sched_node(r->node);
    s = sn ? sn->sched : NULL;
    if (!s) {
        aj_log(EVENT_LOG_WARN, "aj_atomic: no scheduler for %s: aj_evhttp_setup() was not called "
               "for this server or a parent; answering 500", evhttp_request_get_uri(req));
        ajh__send_status(req, 500, 0, 0);
        return;
    }
    if (sn->shutdown) {
        ajh__send_status(req, 503, 1, 1);
        return;
    }
    a = aj_calloc(1, sizeof *a);
    if (!a) {
        aj_log(EVENT_LOG_WARN, "aj_atomic: out of memory; answering 503");
        ajh__send_status(req, 503, 1, 0);
        return;
    }
    a->handler = r->handler;
    a->arg = r->arg;
    a->flags = r->node->flags;
    a->req = req;
    a->evcon = evhttp_request_get_connection(req);
    job = aj_spawn(s, &atomic_ops, a);
    if (!job) {
        err = errno;
        aj_free(a);
        if (err == EAGAIN || err == ESHUTDOWN) {
            ajh__send_status(req, 503, 1, err == ESHUTDOWN);
        } else {
            aj_log(EVENT_LOG_WARN, "aj_atomic: cannot spawn: %s; answering 503", strerror(err));
            ajh__send_status(req, 503, 1, 0);
        }
        return;
    }
    a->job = job;
    if (aj_job_wait(job, NULL, atomic_waited, a) != 0) {
        /* Out of memory: without a waiter nobody would answer.  Discard the
         * job (it has not started) and answer now. */
        aj_log(EVENT_LOG_WARN, "aj_atomic: cannot wait on the job: %s; answering 503",
               strerror(errno));
        ajh__atomic_answer_shed(a, 0);
        a->req = NULL;
        a->evcon = NULL;
        aj_job_close(job, NULL, NULL, NULL);
        return;
    }
    /* Hold the request: from here libevent tells us before it frees it. */
    a->tracking = 1;
    a->node = sn;
    aj__q_insert_tail(&sn->held, &a->link);
    evhttp_connection_set_closecb(a->evcon, conn_closed, a);
    evhttp_request_set_on_complete_cb(req, req_complete, a);
    if (aj_job_pending(job))
        watch_start(a);
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */
/* ------------------------------------------------------------------ */

void ajh__route_free(struct aj__route *r)
{
    aj_free(r->path);
    aj_free(r);
}

/* A route record for http, its node made if need be; not yet indexed nor
 * on the node (the caller does both once libevent took it). */
static struct aj__route *route_new(struct evhttp *http, const char *path, aj_atomic_handler handler,
                                   void *arg)
{
    struct aj__route *r = aj_calloc(1, sizeof *r);

    if (!r)
        return NULL;
    r->handler = handler;
    r->arg = arg;
    aj__q_init(&r->link);
    aj__q_init(&r->hlink);
    if ((path && !(r->path = ajh__strdup(path))) || !(r->node = ajh__node_get(http))) {
        ajh__route_free(r);
        return NULL;
    }
    ajh__route_index(r);
    return r;
}

/* Takes back route_new (libevent refused it): nothing stays behind. */
static void route_undo(struct aj__route *r)
{
    struct aj__node *n = r->node;

    ajh__route_unindex(r);
    ajh__route_free(r);
    ajh__node_drop_if_unused(n);
}

AJ_EXPORT int aj_atomic(struct evhttp *http, const char *path, aj_atomic_handler handler,
                        void *arg)
{
    struct aj__route *r;
    int rc;

    if (!http || !path || !handler) {
        errno = EINVAL;
        return -1;
    }
    r = route_new(http, path, handler, arg);
    if (!r)
        return -1;
    rc = evhttp_set_cb(http, path, route_cb, (void *)r->id);
    if (rc != 0) {
        route_undo(r);
        errno = rc == -1 ? EEXIST : ENOMEM;
        return -1;
    }
    aj__q_insert_tail(&r->node->routes, &r->link);
    return 0;
}

AJ_EXPORT int aj_atomic_gencb(struct evhttp *http, aj_atomic_handler handler, void *arg)
{
    struct aj__route *r, *old;

    if (!http || !handler) {
        errno = EINVAL;
        return -1;
    }
    r = route_new(http, NULL, handler, arg);
    if (!r)
        return -1;
    evhttp_set_gencb(http, route_cb, (void *)r->id);
    old = r->node->gencb;
    r->node->gencb = r;
    /* route_cb copies what it needs: the old route is unused from here. */
    if (old) {
        ajh__route_unindex(old);
        ajh__route_free(old);
    }
    return 0;
}

AJ_EXPORT struct evhttp_request *aj_evhttp_request(const aj_job *job)
{
    struct aj__atomic *a;

    if (!job || aj_job_ops(job) != &atomic_ops)
        return NULL;
    a = aj_job_arg(job);
    return a->replied ? NULL : a->req;
}

AJ_EXPORT int aj_evhttp_reply(aj_job *job, int code, const char *reason, struct evbuffer *body)
{
    struct aj__atomic *a;

    if (!job || aj_job_ops(job) != &atomic_ops) {
        errno = EINVAL;
        return -1;
    }
    a = aj_job_arg(job);
    if (a->replied && !a->shed) {
        errno = EINVAL;          /* replied already */
        return -1;
    }
    if (!a->req || a->shed) {
        /* The client went away (or was answered for the job): drop it. */
        if (body)
            evbuffer_drain(body, evbuffer_get_length(body));
        aj_job_done(job, 0, NULL);
        errno = ENOTCONN;
        return -1;
    }
    watch_stop(a);
    a->replied = 1;
    evhttp_send_reply(a->req, code, reason, body);
    aj_job_done(job, 0, NULL);
    return 0;
}

AJ_EXPORT int aj_evhttp_set_data(aj_job *job, void *data, void (*release)(void *data))
{
    struct aj__atomic *a;

    if (!job || aj_job_ops(job) != &atomic_ops) {
        errno = EINVAL;
        return -1;
    }
    a = aj_job_arg(job);
    if (a->released) {
        errno = EINVAL;
        return -1;
    }
    a->data = data;
    a->data_release = release;
    return 0;
}

AJ_EXPORT void *aj_evhttp_data(const aj_job *job)
{
    if (!job || aj_job_ops(job) != &atomic_ops)
        return NULL;
    return ((struct aj__atomic *)aj_job_arg(job))->data;
}
