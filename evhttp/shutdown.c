/*
 * shutdown.c -- aj_evhttp_shutdown: a graceful stop after which
 * evhttp_free() is safe.
 *
 *   1. stop accepting (the server's listening sockets are closed); new
 *      requests on open keep-alive connections get 503 + Retry-After +
 *      Connection: close
 *   2. wait-and-close every scheduler of the server and its registered
 *      vhosts (the timeout, or each scheduler's wait timeout)
 *   3. answer every request a job still holds (a job let go by the close)
 *      with 503 + Retry-After, and wait, at most GRACE, until every answer
 *      (those and the replies jobs sent) is written or its connection
 *      closed; answers still unwritten then are logged: evhttp_free() will
 *      cut them
 *   4. free the schedulers, point the atomic routes at a 503 handler,
 *      forget the servers, and call the user back from the loop.
 *
 * Steps run from the loop; the user's callback never runs inside a
 * libevent callback, so it may evhttp_free() at once.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <event2/http.h>

#include "evhttp-internal.h"

static const struct timeval GRACE = { 2, 0 };

enum { SD_DRAINING, SD_WRITING, SD_DONE };

struct aj__shutdown {
    struct aj__node *top;
    struct evhttp *http;
    aj_evhttp_cb cb;
    void *arg;
    struct event step_ev;          /* one step of the shutdown, from the loop */
    struct event grace_ev;         /* bounds SD_WRITING */
    int closing;                   /* schedulers whose close has not ended */
    int phase;
    int grace_over;
};

/* Calls fn on n and every registered vhost below it (pre-order). */
static void tree_walk(struct aj__node *n, void (*fn)(struct aj__node *, void *), void *arg)
{
    struct aj__q *q, *next;

    fn(n, arg);
    for (q = n->children.next; q != &n->children; q = next) {
        next = q->next;
        tree_walk(aj__q_data(q, struct aj__node, sibling), fn, arg);
    }
}

static void count_scheds(struct aj__node *n, void *arg)
{
    if (n->sched)
        ++*(int *)arg;
}

static void count_held(struct aj__node *n, void *arg)
{
    struct aj__q *q;

    for (q = n->held.next; q != &n->held; q = q->next)
        ++*(int *)arg;
}

static void mark(struct aj__node *n, void *arg)
{
    n->shutdown = arg;
}

static void kick(struct aj__shutdown *sd)
{
    event_active(&sd->step_ev, EV_TIMEOUT, 1);
}

static void sched_closed(aj_scheduler *s, void *arg)
{
    struct aj__shutdown *sd = arg;

    (void)s;
    if (--sd->closing == 0)
        kick(sd);
}

static void start_close(struct aj__node *n, void *arg)
{
    const struct timeval *timeout = *(const struct timeval **)((char *)arg);
    struct aj__shutdown *sd = n->shutdown;

    if (!n->sched)
        return;
    sd->closing++;
    if (aj_scheduler_wait_and_close(n->sched, timeout, sched_closed, sd) != 0) {
        /* Closing already (the user's own close): its callback is the
         * user's; step 4's aj_scheduler_free() ends it. */
        aj_log(EVENT_LOG_WARN, "aj_evhttp_shutdown: scheduler already closing (%s)",
               strerror(errno));
        sd->closing--;
    }
}

/* Step 3: answer what jobs still hold (let go by their close). */
static void answer_held(struct aj__node *n, void *arg)
{
    struct aj__q *q;

    (void)arg;
    for (q = n->held.next; q != &n->held; q = q->next) {
        struct aj__atomic *a = aj__q_data(q, struct aj__atomic, link);
        if (a->req && !a->replied)
            ajh__atomic_answer_shed(a, 1);
    }
}

static void pick_first_socket(struct evhttp_bound_socket *b, void *arg)
{
    struct evhttp_bound_socket **first = arg;

    if (!*first)
        *first = b;
}

struct forget_ctx {
    struct aj__node *dead;        /* chained through next_dead */
    int http_alive;               /* 0: evhttp_free ran, do not touch it */
};

/* Step 4, per node: stop referring to it, chain it for freeing. */
static void forget(struct aj__node *n, void *arg)
{
    struct forget_ctx *ctx = arg;
    struct aj__q *q;

    /* Requests whose answer is still being written keep their callbacks
     * (they free themselves when libevent is done) but leave the node. */
    while ((q = aj__q_first(&n->held)) != NULL) {
        aj__q_data(q, struct aj__atomic, link)->node = NULL;
        aj__q_remove(q);
    }
    /* libevent keeps calling the routes until evhttp_free: point them at
     * a handler that needs no state. */
    while ((q = aj__q_first(&n->routes)) != NULL) {
        struct aj__route *r = aj__q_data(q, struct aj__route, link);
        aj__q_remove(q);
        if (ctx->http_alive) {
            evhttp_del_cb(n->http, r->path);
            evhttp_set_cb(n->http, r->path, ajh__shed_cb, NULL);
        }
        ajh__route_free(r);
    }
    if (n->gencb) {
        if (ctx->http_alive)
            evhttp_set_gencb(n->http, ajh__shed_cb, NULL);
        ajh__route_free(n->gencb);
        n->gencb = NULL;
    }
    n->next_dead = ctx->dead;
    ctx->dead = n;
}

/* Step 4: forget top and its vhosts (the registry lock is held), free
 * their schedulers (it is not). */
static void forget_tree(struct aj__node *top, int http_alive)
{
    struct forget_ctx ctx = { NULL, http_alive };
    struct aj__node *dead, *n;
    struct aj__q *q;

    tree_walk(top, forget, &ctx);
    dead = ctx.dead;
    for (n = dead; n; n = n->next_dead) {
        /* Children of the top are chained too: unlink each from the
         * registry and its parent; the top may stay a vhost of a parent
         * we do not shut down, so it leaves that parent's list as well. */
        while ((q = aj__q_first(&n->children)) != NULL)
            aj__q_remove(q);
        ajh__node_unlink(n);
    }
    ajh__reg_unlock();
    /* Outside the lock: freeing a scheduler runs owed callbacks, which
     * may call back into the adapter. */
    while ((n = dead) != NULL) {
        dead = n->next_dead;
        if (n->sched)
            aj_scheduler_free(n->sched);
        ajh__node_free(n);
    }
}

static void finish(struct aj__shutdown *sd)
{
    sd->phase = SD_DONE;
    event_del(&sd->grace_ev);
    event_del(&sd->step_ev);
    ajh__reg_lock();
    forget_tree(sd->top, 1);
    if (sd->cb)
        sd->cb(sd->http, sd->arg);
    aj_free(sd);
}

static void step(evutil_socket_t fd, short what, void *arg)
{
    struct aj__shutdown *sd = arg;
    int held = 0;

    (void)fd;
    (void)what;
    if (sd->phase == SD_DRAINING) {
        if (sd->closing > 0)
            return;
        sd->phase = SD_WRITING;
        tree_walk(sd->top, answer_held, NULL);
        event_add(&sd->grace_ev, &GRACE);
    }
    if (sd->phase == SD_WRITING) {
        tree_walk(sd->top, count_held, &held);
        if (held > 0 && sd->grace_over)
            aj_log(EVENT_LOG_WARN,
                   "aj_evhttp_shutdown: %d answer%s still being written after %d s: "
                   "evhttp_free() will cut %s", held, held == 1 ? "" : "s", (int)GRACE.tv_sec,
                   held == 1 ? "it" : "them");
        if (held == 0 || sd->grace_over)
            finish(sd);
    }
}

static void grace_over(evutil_socket_t fd, short what, void *arg)
{
    struct aj__shutdown *sd = arg;

    (void)fd;
    (void)what;
    sd->grace_over = 1;
    step(-1, 0, sd);
}

/* An atomic request left a node under shutdown: maybe the last one. */
void ajh__shutdown_progress(struct aj__shutdown *sd)
{
    if (sd->phase == SD_WRITING)
        kick(sd);
}

static struct event_base *first_base(struct aj__node *n)
{
    struct aj__q *q;
    struct event_base *b;

    if (n->sched)
        return aj_scheduler_base(n->sched);
    for (q = n->children.next; q != &n->children; q = q->next)
        if ((b = first_base(aj__q_data(q, struct aj__node, sibling))) != NULL)
            return b;
    return NULL;
}

AJ_EXPORT int aj_evhttp_shutdown(struct evhttp *http, const struct timeval *timeout,
                                 aj_evhttp_cb cb, void *arg)
{
    struct aj__shutdown *sd;
    struct aj__node *n, *p;
    struct evhttp_bound_socket *b;
    struct event_base *base;
    int scheds = 0, err;

    if (!http || (timeout && (timeout->tv_sec < 0 || timeout->tv_usec < 0 ||
                              timeout->tv_usec >= 1000000))) {
        errno = EINVAL;
        return -1;
    }
    sd = aj_calloc(1, sizeof *sd);
    if (!sd)
        return -1;
    ajh__reg_lock();
    n = ajh__node_find(http);
    if (!n) {
        err = ENOENT;
        goto fail;
    }
    for (p = n; p; p = p->parent)
        if (p->shutdown) {
            err = EALREADY;
            goto fail;
        }
    tree_walk(n, count_scheds, &scheds);
    if (scheds == 0) {
        err = ENOENT;
        goto fail;
    }
    base = first_base(n);
    sd->top = n;
    sd->http = http;
    sd->cb = cb;
    sd->arg = arg;
    event_assign(&sd->step_ev, base, -1, 0, step, sd);
    event_assign(&sd->grace_ev, base, -1, 0, grace_over, sd);
    tree_walk(n, mark, sd);
    ajh__reg_unlock();

    /* 1. Stop accepting. */
    for (;;) {
        b = NULL;
        evhttp_foreach_bound_socket(http, pick_first_socket, &b);
        if (!b)
            break;
        evhttp_del_accept_socket(http, b);
    }
    /* 2. Drain. */
    tree_walk(n, start_close, (void *)&timeout);
    if (sd->closing == 0)
        kick(sd);
    return 0;
fail:
    ajh__reg_unlock();
    aj_free(sd);
    errno = err;
    return -1;
}

AJ_EXPORT int aj_evhttp_forget(struct evhttp *http)
{
    struct aj__node *n, *p;

    if (!http) {
        errno = EINVAL;
        return -1;
    }
    ajh__reg_lock();
    n = ajh__node_find(http);
    for (p = n; p; p = p->parent)
        if (p->shutdown) {
            ajh__reg_unlock();
            errno = EALREADY;
            return -1;
        }
    if (!n) {
        ajh__reg_unlock();
        errno = ENOENT;
        return -1;
    }
    forget_tree(n, 0);   /* unlocks */
    return 0;
}
