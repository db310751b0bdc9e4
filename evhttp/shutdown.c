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
 *   4. call the user back from the loop while the closed schedulers still
 *      exist (their final counters can be read), then forget the servers
 *      and free the schedulers without touching any server: the callback
 *      may have freed them.  The user's routes stay in libevent as the
 *      user left them; the atomic ones find no record and answer 503.
 *
 * Steps run from the loop; the user's callback never runs inside a
 * libevent callback, so it may evhttp_free() or aj_evhttp_free() at once.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <event2/http.h>

#include "evhttp-internal.h"

static const struct timeval GRACE = { 2, 0 };

enum { SD_DRAINING, SD_WRITING, SD_CALLBACK, SD_DONE };

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
    int aborted;                   /* aj_evhttp_free took the tree away first */
    int orphaned;                  /* ... from inside the callback */
    struct aj__shutdown *next_abandoned;
};

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
    if (--sd->closing == 0 && !sd->aborted)
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
        /* Out of memory: a drain cannot be armed, so close at once
         * instead (pending jobs discarded, running ones cancelled and
         * waited for the close timeout) rather than free the scheduler
         * early; its own callback reports through sched_closed. */
        aj_log(EVENT_LOG_WARN, "aj_evhttp_shutdown: cannot drain a scheduler (%s): closing it",
               strerror(errno));
        if (aj_scheduler_close(n->sched, sched_closed, sd) != 0) {
            /* Not even that: the scheduler is closed when step 4 frees
             * it, and its jobs are let go. */
            aj_log(EVENT_LOG_ERR, "aj_evhttp_shutdown: cannot close a scheduler (%s): "
                   "its jobs will be let go", strerror(errno));
            sd->closing--;
        }
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

static void finish(struct aj__shutdown *sd)
{
    struct aj__node *dead;

    event_del(&sd->grace_ev);
    event_del(&sd->step_ev);
    /* The records and the closed schedulers are there for the callback;
     * it may free the servers (aj_evhttp_free sees SD_CALLBACK). */
    sd->phase = SD_CALLBACK;
    if (sd->cb)
        sd->cb(sd->http, sd->arg);
    sd->phase = SD_DONE;
    if (!sd->orphaned) {          /* else aj_evhttp_free of a parent did it */
        ajh__forget_tree(sd->top, &dead);
        ajh__free_dead(dead);
    }
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
        ajh__tree_walk(sd->top, answer_held, NULL);
        event_add(&sd->grace_ev, &GRACE);
    }
    if (sd->phase == SD_WRITING) {
        ajh__tree_walk(sd->top, count_held, &held);
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

int ajh__shutdown_in_callback(const struct aj__shutdown *sd)
{
    return sd->phase == SD_CALLBACK;
}

/* One node of a tree aj_evhttp_free takes away: it leaves its shutdown;
 * a shutdown whose top it is ends with it. */
static void release_node(struct aj__node *n, void *arg)
{
    struct aj__shutdown **abandoned = arg;
    struct aj__shutdown *sd = n->shutdown;

    if (!sd)
        return;
    n->shutdown = NULL;
    if (sd->top != n)
        return;                   /* its top stays, or is visited too */
    if (sd->phase == SD_CALLBACK) {
        sd->orphaned = 1;         /* from its callback: it just returns */
        return;
    }
    sd->aborted = 1;              /* its callback never runs */
    event_del(&sd->grace_ev);
    event_del(&sd->step_ev);
    sd->next_abandoned = *abandoned;
    *abandoned = sd;
}

/*
 * aj_evhttp_free(n->http) takes n's tree away from every shutdown that
 * covers part of it (see aj_evhttp_free(3)).  Returns the shutdowns it
 * abandoned: free them with ajh__shutdown_free_abandoned() after the
 * schedulers, whose close callbacks still name them.
 */
struct aj__shutdown *ajh__shutdown_release_tree(struct aj__node *n)
{
    struct aj__shutdown *abandoned = NULL;

    ajh__tree_walk(n, release_node, &abandoned);
    return abandoned;
}

void ajh__shutdown_free_abandoned(struct aj__shutdown *sd)
{
    struct aj__shutdown *next;

    for (; sd; sd = next) {
        next = sd->next_abandoned;
        aj_free(sd);
    }
}

static void any_shutdown(struct aj__node *n, void *arg)
{
    if (n->shutdown)
        *(int *)arg = 1;
}

/* A shutdown covers n, a parent of n, or a vhost below n. */
int ajh__shutdown_near(struct aj__node *n)
{
    struct aj__node *p;
    int found = 0;

    for (p = n; p; p = p->parent)
        if (p->shutdown)
            return 1;
    ajh__tree_walk(n, any_shutdown, &found);
    return found;
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
    struct aj__node *n;
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
    n = ajh__node_find(http);
    if (!n) {
        err = ENOENT;
        goto fail;
    }
    if (ajh__shutdown_near(n)) {
        err = EALREADY;
        goto fail;
    }
    ajh__tree_walk(n, count_scheds, &scheds);
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
    ajh__tree_walk(n, mark, sd);

    /* 1. Stop accepting. */
    for (;;) {
        b = NULL;
        evhttp_foreach_bound_socket(http, pick_first_socket, &b);
        if (!b)
            break;
        evhttp_del_accept_socket(http, b);
    }
    /* 2. Drain. */
    ajh__tree_walk(n, start_close, (void *)&timeout);
    if (sd->closing == 0)
        kick(sd);
    return 0;
fail:
    aj_free(sd);
    errno = err;
    return -1;
}

AJ_EXPORT int aj_evhttp_forget(struct evhttp *http)
{
    struct aj__node *n, *dead;

    if (!http) {
        errno = EINVAL;
        return -1;
    }
    n = ajh__node_find(http);
    if (!n) {
        errno = ENOENT;
        return -1;
    }
    if (ajh__shutdown_near(n)) {
        errno = EALREADY;
        return -1;
    }
    ajh__forget_tree(n, &dead);
    ajh__free_dead(dead);
    return 0;
}
