/*
 * runq.c -- the run queue: how libaj keeps its no-re-entrancy promise.
 *
 * An aj_* call never runs a user callback; it changes state and appends an
 * aj__call to the scheduler's run queue.  One libevent event per scheduler
 * drains the queue from the loop, in FIFO order, so callbacks run in the
 * order their causes happened (an aj_spawn_async callback before its job's
 * start, a job's reports before the close that waited for it).  One
 * exception, for speed: a job that finishes inside its own start() is
 * reported as soon as start() returns (aj__job_run), ahead of calls queued
 * meanwhile -- still from the loop, never inside aj_job_done.
 *
 * The first push activates the event (it runs in the current pass of the
 * loop, like event_active).  A drain runs at most AJ__RUNQ_BUDGET calls and
 * then re-arms with a zero timeout, so a chain of jobs that spawn jobs cannot
 * starve I/O: the loop polls between batches.
 *
 * Invariant: s->runq_scheduled is set exactly when runq_ev is active or
 * pending, and the queue is non-empty only while it is set.
 *
 * After aj_scheduler_free the queue carries only the releases of jobs the
 * scheduler let go (aj__job_run): the scheduler's memory, this event with
 * it, stays until the last of them (aj__sched_reclaim), so a release never
 * needs memory that could be refused (event_base_once) and never runs
 * inside aj_job_done or aj_job_unref.
 */
#include "aj-internal.h"

#define AJ__RUNQ_BUDGET 1024

void aj__runq_push(aj_scheduler *s, struct aj__call *c)
{
    if (c->queued)
        return;
    c->queued = 1;
    aj__q_insert_tail(&s->runq, &c->link);
    if (!s->runq_scheduled) {
        s->runq_scheduled = 1;
        event_active(s->runq_ev, EV_TIMEOUT, 1);
    }
}

void aj__runq_remove(aj_scheduler *s, struct aj__call *c)
{
    AJ__UNUSED(s);
    if (!c->queued)
        return;
    c->queued = 0;
    aj__q_remove(&c->link);
}

static void runq_cb(evutil_socket_t fd, short what, void *arg)
{
    aj_scheduler *s = arg;
    int budget = AJ__RUNQ_BUDGET;
    AJ__UNUSED(fd);
    AJ__UNUSED(what);

    /* s stays allocated while depth > 0, even if a callback below frees it
     * (aj_scheduler_free then empties the queue but for the releases of
     * let-go jobs, which are still ours to run). */
    s->depth++;
    while (budget-- > 0 && !aj__q_empty(&s->runq)) {
        struct aj__call *c = aj__q_data(s->runq.next, struct aj__call, link);
        aj__q_remove(&c->link);
        c->queued = 0;
        switch (c->kind) {
        case AJ__CALL_JOB:
            aj__job_run(s, (aj_job *)c);
            break;
        case AJ__CALL_SPAWN_REQ:
            aj__spawn_req_run(s, (struct aj__spawn_req *)c);
            break;
        case AJ__CALL_REPORT:
            aj__report_run(s, (struct aj__report *)c);
            break;
        case AJ__CALL_CLOSE_DONE:
            aj__sched_close_done_run(s);
            break;
        case AJ__CALL_DRAINED:
            aj__sched_drained_run(s);
            break;
        }
    }
    s->depth--;
    if (aj__q_empty(&s->runq)) {
        s->runq_scheduled = 0;
    } else {
        static const struct timeval zero = { 0, 0 };
        /* event_add may need memory (libevent's timer heap); without it
         * the queue still drains, only without polling in between. */
        if (event_add(s->runq_ev, &zero) < 0)
            event_active(s->runq_ev, EV_TIMEOUT, 1);
    }
    if (s->freeing)
        aj__sched_reclaim(s);       /* touches nothing of s afterwards */
}

int aj__runq_init(aj_scheduler *s)
{
    aj__q_init(&s->runq);
    s->runq_scheduled = 0;
    s->runq_ev = event_new(s->base, -1, 0, runq_cb, s);
    if (!s->runq_ev) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}
