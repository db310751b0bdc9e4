/*
 * timer.c -- timers without a struct event each.
 *
 * A scheduler's timeouts come in few distinct durations (the wait timeout,
 * the close timeout, the job timeout, a caller's own).  Timers of one
 * duration expire in the order they were started, so each duration gets one
 * queue, kept in deadline order by appending, and one libevent timer armed
 * for the queue's head.  Starting or stopping a timer is O(1) and allocates
 * nothing once its duration has a queue; finding the queue walks the few
 * durations in use (most recently used first).
 *
 * Invariant: a queue's libevent timer is pending exactly when the queue is
 * not empty, so an idle scheduler never keeps event_base_dispatch() alive.
 *
 * A timer holds no pointer to its queue (every aj_job_wait carries a timer,
 * and 8 bytes less keeps a waiter to one 64-byte cache line, job.c): when
 * removing a timer leaves its neighbours equal, they are the queue's list
 * head, and the queue is found from it.
 */
#include "aj-internal.h"

#include <string.h>
#include <time.h>

/* Empty queues kept for reuse before they are freed. */
#define AJ__TIMERQ_KEEP 8

struct aj__timerq {
    struct aj__q link;              /* s->timerqs, most recently used first */
    struct timeval duration;
    struct aj__q timers;
    struct event *ev;
    aj_scheduler *s;
    int firing;                     /* inside timerq_cb: do not free */
};

/*
 * The clock.  Deadlines are stamped with the coarse monotonic clock where
 * there is one (a few ns instead of a precise clock_gettime, which shows in
 * the cost of every aj_job_wait), plus one tick of its resolution, so a
 * timer never fires early and at most one tick (1-4 ms) late.  Elsewhere:
 * the precise monotonic clock, or gettimeofday.
 */
#if defined(HAVE_CLOCK_GETTIME) && defined(CLOCK_MONOTONIC_COARSE)
#define AJ__CLOCK CLOCK_MONOTONIC_COARSE
#elif defined(HAVE_CLOCK_GETTIME) && defined(CLOCK_MONOTONIC)
#define AJ__CLOCK CLOCK_MONOTONIC
#endif

/* Now, in microseconds. */
static int64_t monotonic_now(void)
{
    struct timeval tv;
#ifdef AJ__CLOCK
    struct timespec ts;
    if (clock_gettime(AJ__CLOCK, &ts) == 0)
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
#endif
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/*
 * One tick of the clock in microseconds, added to every deadline.  Asked
 * of the clock once per scheduler (aj__timers_init), not once per process:
 * a process-wide value that the first of several threads computes is a
 * data race in C11 (revision 1 had one, which ThreadSanitizer and helgrind
 * report); per-scheduler state is thread-clean with no atomics.
 */
static int64_t clock_tick(void)
{
    int64_t tick = 1;
#ifdef AJ__CLOCK
    struct timespec res;
    if (clock_getres(AJ__CLOCK, &res) == 0 && res.tv_sec == 0)
        tick = (res.tv_nsec + 999) / 1000;
#endif
    return tick;
}

void aj__timers_init(aj_scheduler *s)
{
    aj__q_init(&s->timerqs);
    s->ntimerqs = 0;
    s->tick_us = clock_tick();
}

/* tv in microseconds (a valid timeval: tv_usec below 1000000), at most
 * about 70,000 years so that a deadline never overflows. */
#define AJ__MAX_TIMEOUT_SEC ((int64_t)1 << 41)
static int64_t tv_us(const struct timeval *tv)
{
    if ((int64_t)tv->tv_sec >= AJ__MAX_TIMEOUT_SEC)
        return AJ__MAX_TIMEOUT_SEC * 1000000;
    return (int64_t)tv->tv_sec * 1000000 + tv->tv_usec;
}

int aj__timeval_valid(const struct timeval *tv)
{
    return tv->tv_sec >= 0 && tv->tv_usec >= 0 && tv->tv_usec < 1000000;
}

void aj__timer_init(struct aj__timer *t, void (*fire)(struct aj__timer *))
{
    aj__q_init(&t->link);
    t->fire = fire;
    t->deadline = 0;
}

static void timerq_arm(struct aj__timerq *tq, int64_t now)
{
    struct aj__timer *head = aj__q_data(tq->timers.next, struct aj__timer, link);
    int64_t left = head->deadline > now ? head->deadline - now : 0;
    struct timeval rel;

    rel.tv_sec = (time_t)(left / 1000000);
    rel.tv_usec = (suseconds_t)(left % 1000000);
    event_add(tq->ev, &rel);
}

static void timerq_free(struct aj__timerq *tq)
{
    aj__q_remove(&tq->link);
    tq->s->ntimerqs--;
    event_free(tq->ev);
    aj__free(tq);
}

static void timerq_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aj__timerq *tq = arg;
    aj_scheduler *s = tq->s;
    int64_t now = monotonic_now();
    AJ__UNUSED(fd);
    AJ__UNUSED(what);

    /* tq and s stay allocated while depth > 0, even if a callback below
     * frees the scheduler (runq.c). */
    s->depth++;
    tq->firing = 1;
    while (!aj__q_empty(&tq->timers)) {
        struct aj__timer *t = aj__q_data(tq->timers.next, struct aj__timer, link);
        if (t->deadline > now)
            break;
        aj__q_remove(&t->link);
        t->fire(t);   /* may start and stop timers, on this queue too */
        if (s->freeing)
            break;    /* every timer of s was stopped */
    }
    tq->firing = 0;
    s->depth--;
    if (s->freeing)
        aj__sched_reclaim(s);       /* touches nothing of s afterwards */
    else if (!aj__q_empty(&tq->timers))
        timerq_arm(tq, now);
    else if (s->ntimerqs > AJ__TIMERQ_KEEP)
        timerq_free(tq);
}

static struct aj__timerq *timerq_get(aj_scheduler *s, const struct timeval *dur)
{
    struct aj__q *n;
    struct aj__timerq *tq;

    for (n = s->timerqs.next; n != &s->timerqs; n = n->next) {
        tq = aj__q_data(n, struct aj__timerq, link);
        if (tq->duration.tv_sec == dur->tv_sec && tq->duration.tv_usec == dur->tv_usec) {
            if (n != s->timerqs.next) {     /* most recently used first */
                aj__q_remove(n);
                aj__q_insert_head(&s->timerqs, n);
            }
            return tq;
        }
    }
    tq = aj__malloc(sizeof *tq);
    if (!tq)
        return NULL;
    tq->ev = event_new(s->base, -1, 0, timerq_cb, tq);
    if (!tq->ev) {
        aj__free(tq);
        errno = ENOMEM;
        return NULL;
    }
    tq->duration = *dur;
    tq->s = s;
    tq->firing = 0;
    aj__q_init(&tq->timers);
    aj__q_insert_head(&s->timerqs, &tq->link);
    s->ntimerqs++;
    return tq;
}

/*
 * Unlinks a running t.  When that empties its queue, returns the queue (the
 * neighbours t leaves behind are then both the queue's list head), else
 * NULL.
 */
static struct aj__timerq *timer_unlink(struct aj__timer *t)
{
    struct aj__q *prev = t->link.prev, *next = t->link.next;

    aj__q_remove(&t->link);
    return prev == next ? aj__q_data(prev, struct aj__timerq, timers) : NULL;
}

/* The head's timer stays armed (it re-arms lazily when it fires) unless the
 * queue is now empty: then nothing may keep the loop alive. */
static void timerq_emptied(struct aj__timerq *tq)
{
    event_del(tq->ev);
    if (!tq->firing && tq->s->ntimerqs > AJ__TIMERQ_KEEP)
        timerq_free(tq);
}

int aj__timer_start(aj_scheduler *s, struct aj__timer *t, const struct timeval *after)
{
    struct aj__timerq *tq, *emptied = NULL;
    int64_t now;
    int was_empty;

    /* The queue first: without memory, t keeps running as it was. */
    tq = timerq_get(s, after);
    if (!tq)
        return -1;
    if (aj__timer_running(t))
        emptied = timer_unlink(t);
    if (emptied && emptied != tq)   /* never free the queue just picked */
        timerq_emptied(emptied);
    now = monotonic_now();
    t->deadline = now + tv_us(after) + s->tick_us;
    was_empty = aj__q_empty(&tq->timers);
    aj__q_insert_tail(&tq->timers, &t->link);
    if (was_empty)
        timerq_arm(tq, now);
    return 0;
}

void aj__timer_stop(struct aj__timer *t)
{
    struct aj__timerq *tq;

    if (!aj__timer_running(t))
        return;
    tq = timer_unlink(t);
    if (tq)
        timerq_emptied(tq);
}

void aj__timers_free(aj_scheduler *s)
{
    while (!aj__q_empty(&s->timerqs)) {
        struct aj__timerq *tq = aj__q_data(s->timerqs.next, struct aj__timerq, link);
        while (!aj__q_empty(&tq->timers))
            aj__q_remove(tq->timers.next);
        timerq_free(tq);
    }
}
