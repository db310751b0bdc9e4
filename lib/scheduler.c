/*
 * scheduler.c -- the scheduler: settings, counts, iteration, stats, and its
 * own small state machine:
 *
 *   OPEN ──wait_and_close──► DRAINING ──no job left / timeout──┐
 *     └────────────close──────────┴───────────────────────────►CLOSING
 *   CLOSING ──every active job finished or let go──► CLOSED (closers called)
 *
 * Closing discards pending jobs, cancels active ones, and gives them the
 * close timeout; those still running then are reported and let go.  The
 * closers' callbacks run from the run queue, after the reports of every job
 * that finished meanwhile.  aj_scheduler_free ends everything at once.
 */
#include "aj-internal.h"

#include <string.h>

static const struct timeval aj__default_close = { 0, 100000 };
static const struct timeval aj__default_wait = { 60, 0 };

static void close_timer_fire(struct aj__timer *t);
static void drain_timer_fire(struct aj__timer *t);

AJ_EXPORT aj_scheduler *aj_scheduler_new(struct event_base *base)
{
    aj_scheduler *s;

    if (!base) {
        errno = EINVAL;
        return NULL;
    }
    s = aj__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base = base;
    if (aj__runq_init(s) < 0) {
        aj__free(s);
        return NULL;
    }
    aj__q_init(&s->jobs);
    aj__q_init(&s->finished);
    aj__q_init(&s->pending);
    aj__q_init(&s->spawn_reqs);
    aj__timers_init(s);
    aj__q_init(&s->closers);
    aj__q_init(&s->let_go);
    aj__job_pools_init(s);
    s->limit = 100;
    s->pending_limit = 10000;
    s->close_timeout = aj__default_close;
    s->has_close_timeout = 1;
    s->wait_timeout = aj__default_wait;
    s->has_wait_timeout = 1;
    s->debug = (uint8_t)aj__debug_default();
    s->phase = AJ__OPEN;
    aj__q_init(&s->close_done.link);
    s->close_done.kind = AJ__CALL_CLOSE_DONE;
    aj__q_init(&s->drained.link);
    s->drained.kind = AJ__CALL_DRAINED;
    aj__timer_init(&s->close_timer, close_timer_fire);
    aj__timer_init(&s->drain_timer, drain_timer_fire);
    return s;
}

/* ---- settings ---- */

static int set_tv(struct timeval *dst, uint8_t *has, const struct timeval *tv)
{
    if (tv && !aj__timeval_valid(tv)) {
        errno = EINVAL;
        return -1;
    }
    *has = tv != NULL;
    if (tv)
        *dst = *tv;
    return 0;
}

#define AJ__CHECK_S(s)          \
    do {                        \
        if (!(s)) {             \
            errno = EINVAL;     \
            return -1;          \
        }                       \
    } while (0)

AJ_EXPORT int aj_scheduler_set_limit(aj_scheduler *s, size_t limit)
{
    AJ__CHECK_S(s);
    s->limit = limit;
    aj__pump(s);
    return 0;
}

AJ_EXPORT int aj_scheduler_set_pending_limit(aj_scheduler *s, size_t limit)
{
    AJ__CHECK_S(s);
    s->pending_limit = limit;
    aj__pump(s);
    return 0;
}

AJ_EXPORT int aj_scheduler_set_close_timeout(aj_scheduler *s, const struct timeval *tv)
{
    AJ__CHECK_S(s);
    return set_tv(&s->close_timeout, &s->has_close_timeout, tv);
}

AJ_EXPORT int aj_scheduler_set_wait_timeout(aj_scheduler *s, const struct timeval *tv)
{
    AJ__CHECK_S(s);
    return set_tv(&s->wait_timeout, &s->has_wait_timeout, tv);
}

AJ_EXPORT int aj_scheduler_set_job_timeout(aj_scheduler *s, const struct timeval *tv)
{
    AJ__CHECK_S(s);
    return set_tv(&s->job_timeout, &s->has_job_timeout, tv);
}

AJ_EXPORT int aj_scheduler_set_done_callback(aj_scheduler *s, aj_job_done_cb cb, void *arg)
{
    AJ__CHECK_S(s);
    s->done_cb = cb;
    s->done_arg = cb ? arg : NULL;
    return 0;
}

const struct timeval *aj__sched_close_tv(const aj_scheduler *s)
{
    return s->has_close_timeout ? &s->close_timeout : NULL;
}

/* ---- getters ---- */

AJ_EXPORT size_t aj_scheduler_limit(const aj_scheduler *s) { return s ? s->limit : 0; }
AJ_EXPORT size_t aj_scheduler_pending_limit(const aj_scheduler *s) { return s ? s->pending_limit : 0; }

AJ_EXPORT const struct timeval *aj_scheduler_close_timeout(const aj_scheduler *s)
{
    return s && s->has_close_timeout ? &s->close_timeout : NULL;
}

AJ_EXPORT const struct timeval *aj_scheduler_wait_timeout(const aj_scheduler *s)
{
    return s && s->has_wait_timeout ? &s->wait_timeout : NULL;
}

AJ_EXPORT size_t aj_scheduler_size(const aj_scheduler *s) { return s ? s->nactive + s->npending : 0; }
AJ_EXPORT size_t aj_scheduler_active_count(const aj_scheduler *s) { return s ? s->nactive : 0; }
AJ_EXPORT size_t aj_scheduler_pending_count(const aj_scheduler *s) { return s ? s->npending : 0; }
AJ_EXPORT int aj_scheduler_closed(const aj_scheduler *s) { return s ? aj__sched_closed(s) : 0; }
AJ_EXPORT struct event_base *aj_scheduler_base(const aj_scheduler *s) { return s ? s->base : NULL; }

AJ_EXPORT void aj_scheduler_get_stats(const aj_scheduler *s, struct aj_stats *out)
{
    if (!out)
        return;
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = s->stats;
}

/* ---- iteration ---- */

AJ_EXPORT int aj_scheduler_contains(const aj_scheduler *s, const aj_job *job)
{
    return s && job && aj__job_counted(job) && job->owner.sched == s;
}

AJ_EXPORT aj_job *aj_scheduler_first(const aj_scheduler *s)
{
    struct aj__q *n = s ? aj__q_first(&s->jobs) : NULL;
    return n ? aj__q_data(n, aj_job, node) : NULL;
}

AJ_EXPORT aj_job *aj_scheduler_next(const aj_scheduler *s, const aj_job *job)
{
    if (!aj_scheduler_contains(s, job)) {
        errno = EINVAL;
        return NULL;
    }
    if (job->node.next == &s->jobs)
        return NULL;
    return aj__q_data(job->node.next, aj_job, node);
}

/* ---- closing ---- */

static int add_closer(aj_scheduler *s, aj_scheduler_cb cb, void *arg)
{
    struct aj__closer *c;

    if (!cb)
        return 0;
    c = aj__malloc(sizeof *c);
    if (!c)
        return -1;
    c->cb = cb;
    c->arg = arg;
    aj__q_insert_tail(&s->closers, &c->link);
    return 0;
}

static void check_close_done(aj_scheduler *s)
{
    if (s->phase == AJ__CLOSING && s->nactive == 0 && s->npending == 0)
        aj__runq_push(s, &s->close_done);
}

/* A job stopped counting (finished, discarded or let go). */
void aj__sched_job_left(aj_scheduler *s)
{
    if (s->freeing)
        return;
    if (s->phase == AJ__DRAINING && s->nactive + s->npending == 0)
        aj__runq_push(s, &s->drained);
    check_close_done(s);
}

static void begin_close(aj_scheduler *s)
{
    struct aj__q *n, *next;

    s->phase = AJ__CLOSING;
    aj__timer_stop(&s->drain_timer);
    aj__spawn_reqs_shutdown(s);
    for (n = s->jobs.next; n != &s->jobs; n = next) {
        next = n->next;             /* no callback runs in this loop */
        aj__job_close(aj__q_data(n, aj_job, node));
    }
    if (s->nactive && s->has_close_timeout &&
        aj__timer_start(s, &s->close_timer, &s->close_timeout) < 0)
        aj_log(EVENT_LOG_ERR, "scheduler close: out of memory for the close timeout; "
                              "waiting for the jobs without it");
    check_close_done(s);
}

static void close_timer_fire(struct aj__timer *t)
{
    aj_scheduler *s = aj__q_data(t, aj_scheduler, close_timer);

    while (!aj__q_empty(&s->jobs)) {
        aj_job *job = aj__q_data(s->jobs.next, aj_job, node);
        s->stats.close_timeouts++;
        if (!(job->call.flags & AJ__JOB_EXPLICIT)) {
            aj__report_job(s, job, AJ__MSG_TIMED_OUT, ETIMEDOUT);
            if (s->freeing)
                return;             /* the handler freed s: all is done */
        }
        if (aj__job_counted(job))   /* the handler may have finished it */
            aj__job_let_go(job, ETIMEDOUT);
        if (s->freeing)
            return;                 /* so did a waiter */
    }
    check_close_done(s);
}

static void drain_timer_fire(struct aj__timer *t)
{
    aj_scheduler *s = aj__q_data(t, aj_scheduler, drain_timer);
    if (s->phase == AJ__DRAINING)
        begin_close(s);
}

void aj__sched_drained_run(aj_scheduler *s)
{
    if (s->phase == AJ__DRAINING && s->nactive + s->npending == 0)
        begin_close(s);
}

void aj__sched_close_done_run(aj_scheduler *s)
{
    s->phase = AJ__CLOSED;
    aj__timer_stop(&s->close_timer);
    while (!aj__q_empty(&s->closers)) {
        struct aj__closer *c = aj__q_data(s->closers.next, struct aj__closer, link);
        aj_scheduler_cb cb = c->cb;
        void *arg = c->arg;
        aj__q_remove(&c->link);
        aj__free(c);
        cb(s, arg);                 /* may free s: the usual pattern */
        if (s->freeing)
            return;                 /* the free called the other closers */
    }
}

AJ_EXPORT int aj_scheduler_close(aj_scheduler *s, aj_scheduler_cb cb, void *arg)
{
    AJ__CHECK_S(s);
    if (s->freeing) {
        errno = ESHUTDOWN;
        return -1;
    }
    if (add_closer(s, cb, arg) < 0)
        return -1;
    if (s->phase == AJ__CLOSED)
        aj__runq_push(s, &s->close_done);
    else if (s->phase != AJ__CLOSING)
        begin_close(s);
    return 0;
}

AJ_EXPORT int aj_scheduler_wait_and_close(aj_scheduler *s, const struct timeval *timeout,
                                          aj_scheduler_cb cb, void *arg)
{
    AJ__CHECK_S(s);
    if (s->freeing) {
        errno = ESHUTDOWN;
        return -1;
    }
    if (timeout && !aj__timeval_valid(timeout)) {
        errno = EINVAL;
        return -1;
    }
    if (add_closer(s, cb, arg) < 0)
        return -1;
    switch (s->phase) {
    case AJ__OPEN:
        if (!timeout && s->has_wait_timeout)
            timeout = &s->wait_timeout;
        if (timeout && aj__timer_start(s, &s->drain_timer, timeout) < 0) {
            if (cb) {               /* undo: nothing was taken */
                struct aj__q *last = s->closers.prev;
                aj__q_remove(last);
                aj__free(aj__q_data(last, struct aj__closer, link));
            }
            return -1;
        }
        s->phase = AJ__DRAINING;
        if (s->nactive + s->npending == 0)
            aj__runq_push(s, &s->drained);
        break;
    case AJ__CLOSED:
        aj__runq_push(s, &s->close_done);
        break;
    default:                        /* draining or closing already */
        break;
    }
    return 0;
}

/* ---- free ---- */

/* Calls the waiters still owed by the jobs on q (s->finished or s->let_go),
 * each list walked once even as callbacks change it. */
static void deliver_all(struct aj__q *q, int let_go)
{
    struct aj__q local;

    aj__q_init(&local);
    aj__q_move_all(q, &local);
    while (!aj__q_empty(&local)) {
        aj_job *job = aj__q_data(local.next, aj_job, node);
        aj__q_remove(&job->node);
        aj__q_insert_tail(q, &job->node);
        if (let_go)
            aj__job_deliver_waiters(job, ESHUTDOWN);
        else
            aj__job_deliver_waiters(job, (job->call.flags & AJ__JOB_DISCARDED) ? ECANCELED : 0);
    }
}

/*
 * The memory of a freed scheduler: once no loop callback of it is on the
 * stack (depth) and no let-go job is left to release from its run queue.
 */
void aj__sched_reclaim(aj_scheduler *s)
{
    if (!s->freeing || s->depth > 0 || !aj__q_empty(&s->let_go))
        return;
    aj__timers_free(s);
    aj__pool_destroy(&s->job_pools[0]);     /* every job is gone by now */
    aj__pool_destroy(&s->job_pools[1]);
    event_free(s->runq_ev);
    aj__free(s);
}

AJ_EXPORT void aj_scheduler_free(aj_scheduler *s)
{
    struct aj__q local, *n, *next;

    if (!s || s->freeing)
        return;
    s->freeing = 1;
    if (s->phase < AJ__CLOSING)
        s->phase = AJ__CLOSING;     /* spawns fail from now on */
    aj__timer_stop(&s->close_timer);
    aj__timer_stop(&s->drain_timer);

    /* 1. Cancel the running jobs, synchronously (the documented exception):
     *    the active ones, and closing ones whose cancel is still owed.  A job
     *    whose current hook already heard the close is not asked twice. */
    aj__q_init(&local);
    for (n = s->jobs.next; n != &s->jobs; n = next) {
        aj_job *job = aj__q_data(n, aj_job, node);
        next = n->next;
        if (aj__job_state(job) == AJ__JOB_RUNNING ||
            (aj__job_state(job) == AJ__JOB_CLOSING && (job->call.flags & AJ__JOB_CANCEL_OWED))) {
            aj__q_remove(n);
            aj__q_insert_tail(&local, n);
        }
    }
    while (!aj__q_empty(&local)) {
        aj_job *job = aj__q_data(local.next, aj_job, node);
        aj__q_remove(&job->node);
        aj__q_insert_tail(&s->jobs, &job->node);
        aj__job_cancel_now(job, 0); /* may finish it, or others */
    }

    /* 2. Spawn requests, waiting or with an outcome not yet delivered; and
     *    whatever else the run queue holds. */
    while (!aj__q_empty(&s->spawn_reqs))
        aj__spawn_req_free_now(s, aj__q_data(s->spawn_reqs.next, struct aj__spawn_req, link));
    aj__q_move_all(&s->runq, &local);
    while (!aj__q_empty(&local)) {
        struct aj__call *c = aj__q_data(local.next, struct aj__call, link);
        aj__q_remove(&c->link);
        if (c->kind == AJ__CALL_JOB && aj__job_state((aj_job *)c) == AJ__JOB_LET_GO_DONE) {
            aj__q_insert_tail(&s->runq, &c->link);  /* a release: still owed */
            continue;
        }
        c->queued = 0;
        if (c->kind == AJ__CALL_SPAWN_REQ)
            aj__spawn_req_free_now(s, (struct aj__spawn_req *)c);
        else if (c->kind == AJ__CALL_REPORT)
            aj__report_drop((struct aj__report *)c);
    }

    /* 3. Jobs never started are discarded; jobs still running are let go. */
    while (!aj__q_empty(&s->jobs)) {
        aj_job *job = aj__q_data(s->jobs.next, aj_job, node);
        if (aj__job_state(job) == AJ__JOB_PENDING || aj__job_state(job) == AJ__JOB_STARTING)
            aj__job_close(job);
        else
            aj__job_let_go(job, ESHUTDOWN);
    }

    /* 4. Every waiter still owed (a job let go earlier may be in the middle
     *    of its delivery, in a callback that called this), then the closers,
     *    then the releases. */
    deliver_all(&s->let_go, 1);
    deliver_all(&s->finished, 0);
    while (!aj__q_empty(&s->closers)) {
        struct aj__closer *c = aj__q_data(s->closers.next, struct aj__closer, link);
        aj__q_remove(&c->link);
        c->cb(s, c->arg);
        aj__free(c);
    }
    while (!aj__q_empty(&s->finished))
        aj__job_release_or_orphan(aj__q_data(s->finished.next, aj_job, node));

    /* 5. From now on the run queue carries only the releases of let-go jobs
     *    (queued when they finished and dropped their last reference). */
    aj__q_move_all(&s->runq, &local);
    while (!aj__q_empty(&local)) {
        struct aj__call *c = aj__q_data(local.next, struct aj__call, link);
        aj__q_remove(&c->link);
        if (c->kind == AJ__CALL_JOB && aj__job_state((aj_job *)c) == AJ__JOB_LET_GO_DONE)
            aj__q_insert_tail(&s->runq, &c->link);
        else
            c->queued = 0;
    }
    aj__sched_reclaim(s);           /* now, or when the last user is done */
}
