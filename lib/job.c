/*
 * job.c -- the job state machine (the diagram is in aj-internal.h).
 *
 * job_move() is the one function that changes a job's state, and it keeps
 * the scheduler's books with it: which list the job is on, the active and
 * pending counts, the size.  Everything else decides *when* to move; what a
 * move means is written once, here.
 *
 * Invariants:
 *  - size == nactive + npending == the jobs on s->jobs (PENDING..CLOSING);
 *  - a job is on the run queue at most once; what the loop does with it
 *    depends on its state when it gets there (aj__job_run);
 *  - release runs exactly once, from the loop (or aj_scheduler_free), when
 *    the job is FINISHED or LET_GO_DONE, has no waiter and no reference;
 *  - while a user callback of a job runs (start, cancel, a waiter, the
 *    exception handler, the done callback, a spawn callback) the library
 *    holds a reference on it, so that aj_scheduler_free inside the callback
 *    cannot release the job under it; after every such callback the caller
 *    checks s->freeing before it touches anything else.
 */
#include "aj-internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/*
 * Waiters: aj_job_wait and aj_job_close records, in call order.
 *
 * One per aj_job_wait, so it is kept to 64 bytes: one cache line, and a
 * job with a waiter slot (below) stays within 168 bytes.  Its kind is not
 * stored: it is which function its timer fires (waiter_kind), one per kind
 * because each kind's timeout means something else.  The list is singly
 * linked: callers are answered from its head, and a waiter leaves from
 * elsewhere only when its own timeout fires, which scans from the head --
 * the timeouts of one duration fire in call order, so that scan stops at
 * once in practice.
 */
enum aj__waiter_kind {
    AJ__WAIT,              /* aj_job_wait: gets the outcome */
    AJ__WAIT_EXPIRED,      /* its timeout passed: the job is being closed */
    AJ__CLOSE              /* aj_job_close: gets the close outcome */
};

struct aj__waiter {
    struct aj__waiter *next;         /* circular; job->waiters is the last */
    struct aj__timer timer;          /* its fire function tells the kind */
    aj_job *job;
    aj_job_cb cb;                    /* may be NULL for a close */
    void *cbarg;
};

static void wait_timer_fire(struct aj__timer *t);
static void expired_timer_fire(struct aj__timer *t);
static void close_timer_fire(struct aj__timer *t);

static inline enum aj__waiter_kind waiter_kind(const struct aj__waiter *w)
{
    if (w->timer.fire == wait_timer_fire)
        return AJ__WAIT;
    return w->timer.fire == expired_timer_fire ? AJ__WAIT_EXPIRED : AJ__CLOSE;
}

static inline struct aj__waiter *waiter_first(const aj_job *job)
{
    return job->waiters ? job->waiters->next : NULL;
}

static uint64_t aj__spawn_seq;        /* "job-N": spawns in the process */

static void waiters_stop_timers(aj_job *job)
{
    struct aj__waiter *first = waiter_first(job), *w = first;

    if (w) {
        do {
            aj__timer_stop(&w->timer);
            w = w->next;
        } while (w != first);
    }
}

/* ------------------------------------------------------------------ */
/* The state machine                                                   */
/* ------------------------------------------------------------------ */

static void count_outcome(aj_scheduler *s, int error)
{
    if (error == 0)
        s->stats.succeeded++;
    else if (error == ECANCELED)
        s->stats.cancelled++;
    else
        s->stats.failed++;
}

/*
 * Moves job to state `to`, keeping the scheduler's lists and counts.
 * Legal moves: EMBRYO->PENDING|STARTING, PENDING->STARTING|FINISHING,
 * STARTING->RUNNING|FINISHING, RUNNING->CLOSING|FINISHING|LET_GO,
 * CLOSING->FINISHING|LET_GO, FINISHING->FINISHED, LET_GO->LET_GO_DONE,
 * and FINISHING|FINISHED->LET_GO_DONE when a scheduler is freed with
 * references still held.
 *
 * Always inlined: every call names `to` as a constant, so each call site
 * keeps only its own case (bench_core: a spawned job costs 44 ns, not 54).
 */
static AJ__ALWAYS_INLINE void job_move(aj_job *job, enum aj__job_state to)
{
    aj_scheduler *s = job->owner.sched;
    enum aj__job_state from = aj__job_state(job);

    /* Leave `from`. */
    switch (from) {
    case AJ__JOB_PENDING:
        aj__q_remove(&job->call.link);
        s->npending--;
        break;
    case AJ__JOB_STARTING:
    case AJ__JOB_RUNNING:
    case AJ__JOB_CLOSING:
        if (to == AJ__JOB_FINISHING || to == AJ__JOB_LET_GO) {
            s->nactive--;
            if (job->call.queued)
                aj__runq_remove(s, &job->call);
            if (job->ext)
                aj__timer_stop(&job->ext->timer);
        }
        break;
    default:
        break;
    }

    job->call.state = (uint8_t)to;

    /* Enter `to`. */
    switch (to) {
    case AJ__JOB_PENDING:
        aj__q_insert_tail(&s->jobs, &job->node);
        aj__q_insert_tail(&s->pending, &job->call.link);
        if (++s->npending > s->stats.pending_peak)
            s->stats.pending_peak = s->npending;
        break;
    case AJ__JOB_STARTING:
        if (from == AJ__JOB_EMBRYO)
            aj__q_insert_tail(&s->jobs, &job->node);
        s->nactive++;
        aj__runq_push(s, &job->call);
        break;
    case AJ__JOB_FINISHING:
        aj__q_remove(&job->node);
        aj__q_insert_tail(&s->finished, &job->node);
        waiters_stop_timers(job);   /* the outcome is known: no wait expires */
        count_outcome(s, job->call.error);
        aj__runq_push(s, &job->call);
        aj__sched_job_left(s);
        break;
    case AJ__JOB_CLOSING:
        /* A closed job is no longer "active": its job timeout stops, unless
         * the timer already counts the close that timeout started. */
        if (job->ext && !job->ext->timer_closing)
            aj__timer_stop(&job->ext->timer);
        break;
    case AJ__JOB_LET_GO:
        aj__q_remove(&job->node);
        aj__q_insert_tail(&s->let_go, &job->node);
        s->stats.cancelled++;
        aj__sched_job_left(s);
        break;
    case AJ__JOB_LET_GO_DONE:
        if (from == AJ__JOB_FINISHING || from == AJ__JOB_FINISHED) {
            aj__q_remove(&job->node);
            aj__q_insert_tail(&s->let_go, &job->node);
            if (job->call.queued)
                aj__runq_remove(s, &job->call);
        }
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Creation, admission, start                                          */
/* ------------------------------------------------------------------ */

/*
 * The waiter slot.  Most code that waits on a job waits on every job it
 * spawns (aj_atomic does), and a waiter is a second allocation, touched
 * again when the job finishes.  So while a scheduler's jobs are being
 * waited on, each new job is allocated with room for one waiter right
 * after it: one object instead of two, and the waiter shares the job's
 * cache lines.  Jobs of the two sizes come from the scheduler's two pools
 * (pool.c).  wait_hint rises by AJ__WAIT_HINT_STEP when a wait finds no
 * slot and falls by one when a job with a slot is released unused, so a
 * scheduler whose jobs are not waited on keeps its jobs at their small size.
 */
#define AJ__WAIT_HINT_STEP 8
#define AJ__WAIT_HINT_MAX 64

static inline struct aj__waiter *job_wslot(aj_job *job)
{
    return (struct aj__waiter *)(void *)(job + 1);
}

static inline size_t job_size(int slot)
{
    return sizeof(aj_job) + (slot ? sizeof(struct aj__waiter) : 0);
}

void aj__job_pools_init(aj_scheduler *s)
{
    aj__pool_init(&s->job_pools[0], job_size(0));
    aj__pool_init(&s->job_pools[1], job_size(1));
}

/* Gives the job's memory back to its slab (the scheduler may be gone). */
static void job_mem_free(aj_job *job)
{
    aj__pool_put(job, job_size((job->call.flags & AJ__JOB_WSLOT) != 0), job->pool_idx);
}

aj_job *aj__job_new(aj_scheduler *s, const struct aj_job_ops *ops, void *arg, void *caller)
{
    int slot = s->wait_hint > 0;
    uint16_t idx;
    aj_job *job = aj__pool_get(&s->job_pools[slot], &idx);
    if (!job)
        return NULL;
    job->pool_idx = idx;
    aj__q_init(&job->call.link);
    job->call.kind = AJ__CALL_JOB;
    job->call.queued = 0;
    job->call.state = AJ__JOB_EMBRYO;
    job->call.flags = slot ? AJ__JOB_WSLOT : 0;
    job->call.error = 0;
    aj__q_init(&job->node);
    job->owner.sched = s;
    job->ops = ops;
    job->arg = arg;
    job->result = NULL;
    job->ext = NULL;
    job->waiters = NULL;
    job->seq = 0;
    job->refs = 0;
    /* Debug: the stack of the call that asked for the job (aj_spawn or
     * aj_spawn_async), not of whatever later made room to admit it. */
    if (s->debug)
        aj__capture_stack(job, caller);
    return job;
}

static void ext_free(struct aj__job_ext *ext)
{
    if (!ext)
        return;
    if (ext->heard != &ext->heard1)
        aj__free(ext->heard);
    aj__free(ext->name);
    aj__free(ext->frames);
    aj__free(ext);
}

void aj__job_free_embryo(aj_job *job)
{
    ext_free(job->ext);
    job_mem_free(job);
}

static void job_timer_fire(struct aj__timer *t);

struct aj__job_ext *aj__job_ext(aj_job *job)
{
    if (!job->ext) {
        struct aj__job_ext *ext = aj__calloc(1, sizeof *ext);
        if (!ext)
            return NULL;
        aj__timer_init(&ext->timer, job_timer_fire);
        ext->job = job;
        ext->heard = &ext->heard1;
        ext->capheard = 1;
        /* Made during a close whose hook was called (ops->cancel, since
         * there was no ext to hold another): that pair was heard. */
        if (aj__job_state(job) == AJ__JOB_CLOSING && !(job->call.flags & AJ__JOB_CANCEL_OWED) &&
            job->ops->cancel) {
            ext->heard1.fn = job->ops->cancel;
            ext->heard1.arg = job->arg;
            ext->nheard = 1;
        }
        job->ext = ext;
    }
    return job->ext;
}

/* Admits an EMBRYO job: counted from now on, active if a slot is free. */
void aj__job_admit(aj_scheduler *s, aj_job *job)
{
    job->seq = __atomic_add_fetch(&aj__spawn_seq, 1, __ATOMIC_RELAXED);
    s->stats.spawned++;
    if (s->limit == 0 || s->nactive < s->limit)
        job_move(job, AJ__JOB_STARTING);
    else
        job_move(job, AJ__JOB_PENDING);
}

void aj__job_promote(aj_scheduler *s, aj_job *job)
{
    AJ__UNUSED(s);
    job_move(job, AJ__JOB_STARTING);
}

static void job_arm_timeout(aj_scheduler *s, aj_job *job)
{
    const struct timeval *tv = NULL;
    struct aj__job_ext *ext = job->ext;

    if (ext && ext->timeout_set)
        tv = ext->timeout_none ? NULL : &ext->timeout;
    else if (s->has_job_timeout)
        tv = &s->job_timeout;
    if (!tv)
        return;
    ext = aj__job_ext(job);
    if (!ext || aj__timer_start(s, &ext->timer, tv) < 0)
        aj_log(EVENT_LOG_ERR, "job %s: out of memory, it runs without its job timeout",
               aj_job_name(job));
    else
        ext->timer_closing = 0;
}

static void job_start(aj_scheduler *s, aj_job *job)
{
    job_move(job, AJ__JOB_RUNNING);
    s->stats.started++;
    if (s->has_job_timeout || (job->ext && job->ext->timeout_set))
        job_arm_timeout(s, job);
    job->ops->start(job, job->arg);
}

static int hook_heard(const struct aj__job_ext *ext, void (*fn)(aj_job *, void *), void *arg)
{
    uint32_t i;

    for (i = 0; i < ext->nheard; i++)
        if (ext->heard[i].fn == fn && ext->heard[i].arg == arg)
            return 1;
    return 0;
}

/* Room for one more heard hook: 0, or -1 with ENOMEM. */
static int hook_reserve(struct aj__job_ext *ext)
{
    struct aj__hook *h;
    uint32_t cap;

    if (ext->nheard < ext->capheard)
        return 0;
    cap = ext->capheard * 2;
    if (ext->heard == &ext->heard1) {
        h = aj__malloc(cap * sizeof *h);
        if (h)
            h[0] = ext->heard1;
    } else {
        h = aj__realloc(ext->heard, cap * sizeof *h);
    }
    if (!h)
        return -1;
    ext->heard = h;
    ext->capheard = cap;
    return 0;
}

/* Calls the job's cancel hook, whichever is current, unless that pair was
 * already called during this close (SPEC 3.4). */
void aj__job_cancel_now(aj_job *job, int from_loop)
{
    struct aj__job_ext *ext = job->ext;
    void (*fn)(aj_job *, void *);
    void *arg;

    job->call.flags &= (uint8_t)~AJ__JOB_CANCEL_OWED;
    if (ext && ext->cancel_set) {
        fn = ext->cancel;
        arg = ext->cancel_arg;
    } else {
        fn = job->ops->cancel;
        arg = job->arg;
    }
    if (!fn)
        return;
    if (ext) {                      /* without ext: the first, ops' pair */
        if (hook_heard(ext, fn, arg))
            return;
        if (ext->nheard < ext->capheard)    /* room was reserved */
            ext->heard[ext->nheard++] = (struct aj__hook){ fn, arg };
    }
    job->refs++;
    fn(job, arg);
    if (from_loop)
        aj__job_unhold(job);
    else
        job->refs--;                /* aj_scheduler_free releases it */
}

/* ------------------------------------------------------------------ */
/* Waiters                                                             */
/* ------------------------------------------------------------------ */

/* Unlinks w, which is on its job's list. */
static void waiter_unlink(struct aj__waiter *w)
{
    aj_job *job = w->job;
    struct aj__waiter *last = job->waiters, *prev = last;

    while (prev->next != w)         /* from the head: w is nearly always it */
        prev = prev->next;
    if (prev == w) {
        job->waiters = NULL;        /* w was the only one */
    } else {
        prev->next = w->next;
        if (last == w)
            job->waiters = prev;
    }
    w->next = w;
    aj__timer_stop(&w->timer);
}

/* Appends w: waiters are answered in call order. */
static void waiter_link(aj_job *job, struct aj__waiter *w)
{
    struct aj__waiter *last = job->waiters;

    if (!last) {
        w->next = w;
    } else {
        w->next = last->next;
        last->next = w;
    }
    job->waiters = w;
}

/* What waiter w receives from a job that finished with `error`. */
static int waiter_value(const struct aj__waiter *w, int error)
{
    switch (waiter_kind(w)) {
    case AJ__WAIT_EXPIRED:
        return ETIMEDOUT;
    case AJ__CLOSE:
        return (error == 0 || error == ECANCELED) ? 0 : error;
    default:
        return error;
    }
}

/* Frees w, which is unlinked: its job's slot is free again, or it goes
 * back to the allocator. */
static void waiter_free(struct aj__waiter *w)
{
    aj_job *job = w->job;

    if (w == job_wslot(job) && (job->call.flags & AJ__JOB_WSLOT))
        job->call.flags = (uint8_t)(job->call.flags & ~AJ__JOB_WSLOT_BUSY);
    else
        aj__free(w);
}

static void waiter_call(struct aj__waiter *w, int error, void *result)
{
    aj_job *job = w->job;

    waiter_unlink(w);
    if (w->cb)
        w->cb(job, error, result, w->cbarg);
    waiter_free(w);
}

/*
 * Calls every waiter of the job, including ones added meanwhile.  With
 * forced_error != 0 (a let-go or a free) each gets that, else what its kind
 * gets from the job's outcome.
 */
void aj__job_deliver_waiters(aj_job *job, int forced_error)
{
    job->refs++;                    /* the job outlives its callbacks */
    while (job->waiters) {
        struct aj__waiter *w = job->waiters->next;
        int err = forced_error ? forced_error : waiter_value(w, job->call.error);
        /* A wait that timed out has no result, even if the job then
         * finished with one during the close the timeout started. */
        int no_result = forced_error || waiter_kind(w) == AJ__WAIT_EXPIRED;
        waiter_call(w, err, no_result ? NULL : job->result);
    }
    job->refs--;
}

static struct aj__waiter *waiter_new(aj_job *job, enum aj__waiter_kind kind, aj_job_cb cb,
                                     void *cbarg)
{
    struct aj__waiter *w;
    uint8_t f = job->call.flags;

    if ((f & (AJ__JOB_WSLOT | AJ__JOB_WSLOT_BUSY)) == AJ__JOB_WSLOT) {
        w = job_wslot(job);
        job->call.flags = (uint8_t)(f | AJ__JOB_WSLOT_BUSY | AJ__JOB_WSLOT_USED);
    } else {
        if (!(f & AJ__JOB_WSLOT) && aj__job_counted(job)) {
            aj_scheduler *s = job->owner.sched;     /* waited on, no room */
            s->wait_hint = (uint8_t)(s->wait_hint + AJ__WAIT_HINT_STEP > AJ__WAIT_HINT_MAX
                                         ? AJ__WAIT_HINT_MAX
                                         : s->wait_hint + AJ__WAIT_HINT_STEP);
        }
        w = aj__malloc(sizeof *w);
        if (!w)
            return NULL;
    }
    w->next = w;
    aj__timer_init(&w->timer, kind == AJ__WAIT ? wait_timer_fire : close_timer_fire);
    w->job = job;
    w->cb = cb;
    w->cbarg = cbarg;
    return w;
}

/*
 * A job's reference or waiter went away: release it if that was the last.
 * from_loop: the caller runs from the loop, not inside an aj_* call, so
 * the release may run now; else it is queued on the scheduler's run queue
 * (which a freed scheduler keeps for its let-go jobs: aj__sched_reclaim).
 */
static void job_maybe_release(aj_job *job, int from_loop)
{
    if (job->refs || job->waiters || job->call.queued)
        return;
    switch (aj__job_state(job)) {
    case AJ__JOB_FINISHED:
        if (job->owner.sched->freeing)
            return;                 /* aj_scheduler_free releases it */
        /* fall through */
    case AJ__JOB_LET_GO_DONE:
        if (from_loop)
            aj__job_free_release(job);
        else
            aj__runq_push(job->owner.sched, &job->call);
        break;
    default:
        break;
    }
}

void aj__job_unhold(aj_job *job)
{
    if (--job->refs == 0)
        job_maybe_release(job, 1);
}

/* w's timer ends its wait: it gets ETIMEDOUT now.  `gave_up`: a close's
 * timeout passed with the job still running (the job goes on without w),
 * which the stats count. */
static void waiter_time_out(struct aj__waiter *w, int gave_up)
{
    aj_job *job = w->job;

    if (gave_up)
        job->owner.sched->stats.close_timeouts++;
    job->refs++;
    waiter_call(w, ETIMEDOUT, NULL);
    job->refs--;
    job_maybe_release(job, 1);
}

/* aiojobs: a wait that times out closes the job; the waiter gets ETIMEDOUT
 * once that close ended (the job finished or the close timed out). */
static void wait_timer_fire(struct aj__timer *t)
{
    struct aj__waiter *w = aj__q_data(t, struct aj__waiter, timer);
    aj_job *job = w->job;
    aj_scheduler *s = job->owner.sched;
    const struct timeval *ctv = aj__sched_close_tv(s);

    if (!aj__job_counted(job)) {    /* not expected: timers stop at FINISHING */
        waiter_time_out(w, 1);
        return;
    }
    t->fire = expired_timer_fire;
    aj__job_close(job);
    if (!aj__job_counted(job) || !ctv)
        return;                     /* delivered when the job finishes */
    if (aj__timer_start(s, t, ctv) == 0)
        return;
    waiter_time_out(w, 0);          /* no memory for the close timer: now */
}

/* The close an expired wait started timed out. */
static void expired_timer_fire(struct aj__timer *t)
{
    waiter_time_out(aj__q_data(t, struct aj__waiter, timer), 1);
}

/* An aj_job_close timed out.  (A function of its own, not expired's: the
 * two kinds differ in what a finished job gives them, see waiter_value.) */
static void close_timer_fire(struct aj__timer *t)
{
    waiter_time_out(aj__q_data(t, struct aj__waiter, timer), 1);
}

/* ------------------------------------------------------------------ */
/* Finishing, reporting, releasing                                     */
/* ------------------------------------------------------------------ */

/* Waiters, report, done callback.  Any of them may free s: then the job
 * is LET_GO_DONE (aj_scheduler_free let it go, our reference held it) and
 * nothing else is called. */
static void job_report(aj_scheduler *s, aj_job *job)
{
    int err = job->call.error;

    job->refs++;
    aj__job_deliver_waiters(job, 0);
    if (s->freeing)
        goto out;
    if (!(job->call.flags & AJ__JOB_EXPLICIT) && err != 0 && err != ECANCELED) {
        aj__report_job(s, job, AJ__MSG_FAILED, err);
        if (s->freeing)
            goto out;
    }
    if (s->done_cb) {
        s->done_cb(s, job, err, job->result, s->done_arg);
        if (s->freeing)
            goto out;
    }
    job_move(job, AJ__JOB_FINISHED);
out:
    job->refs--;
}

/* Runs whatever the loop owes the job, by its state. */
void aj__job_run(aj_scheduler *s, aj_job *job)
{
    switch (aj__job_state(job)) {
    case AJ__JOB_STARTING:
        job->refs++;                /* start may free s: the job stays */
        job_start(s, job);
        if (s->freeing) {
            aj__job_unhold(job);
            return;
        }
        job->refs--;
        /* A job that finished inside its own start() is reported now,
         * from the loop as always, rather than behind every call queued
         * meanwhile: the job is still in cache, where a million queued
         * starts later it would be fetched from memory again. */
        if (aj__job_state(job) != AJ__JOB_FINISHING)
            return;
        aj__runq_remove(s, &job->call);
        job_report(s, job);
        break;
    case AJ__JOB_CLOSING:
        if (job->call.flags & AJ__JOB_CANCEL_OWED)
            aj__job_cancel_now(job, 1);
        return;
    case AJ__JOB_FINISHING:
        job_report(s, job);
        break;
    case AJ__JOB_FINISHED:
        aj__job_deliver_waiters(job, 0);
        break;
    case AJ__JOB_LET_GO_DONE:       /* its release was queued */
        break;
    default:
        return;
    }
    job_maybe_release(job, 1);
}

/* Frees the job (out of s->finished or s->let_go), then calls release.  A
 * freed scheduler is reclaimed by its loop callback's frame, which is on
 * the stack: callers come from the loop or aj_scheduler_free. */
void aj__job_free_release(aj_job *job)
{
    const struct aj_job_ops *ops = job->ops;
    void *arg = job->arg;

    if ((job->call.flags & (AJ__JOB_WSLOT | AJ__JOB_WSLOT_USED)) == AJ__JOB_WSLOT &&
        aj__job_state(job) == AJ__JOB_FINISHED && job->owner.sched->wait_hint > 0)
        job->owner.sched->wait_hint--;      /* its room went unused */

    aj__q_remove(&job->node);
    ext_free(job->ext);
    job_mem_free(job);
    if (ops->release)
        ops->release(arg);
}

/* aj_scheduler_free: a finished job is released now, or, if references are
 * still held, when the last one is dropped (from the freed scheduler's run
 * queue, which stays for it). */
void aj__job_release_or_orphan(aj_job *job)
{
    aj__runq_remove(job->owner.sched, &job->call);
    if (job->refs == 0) {
        aj__job_free_release(job);
    } else {
        job_move(job, AJ__JOB_LET_GO_DONE);
        job->call.queued = 0;
    }
}

/* Discards a job that never started: it finishes as cancelled. */
static void job_discard(aj_job *job)
{
    aj_scheduler *s = job->owner.sched;

    job->call.error = ECANCELED;
    job->call.flags |= AJ__JOB_DISCARDED;
    job_move(job, AJ__JOB_FINISHING);
    aj__pump(s);
}

/* Asks the job to stop: discards it if it never started, else cancels. */
void aj__job_close(aj_job *job)
{
    switch (aj__job_state(job)) {
    case AJ__JOB_PENDING:
    case AJ__JOB_STARTING:
        job_discard(job);
        break;
    case AJ__JOB_RUNNING:
        job_move(job, AJ__JOB_CLOSING);
        job->call.flags |= AJ__JOB_CANCEL_OWED;
        aj__runq_push(job->owner.sched, &job->call);
        break;
    default:
        break;
    }
}

/*
 * The scheduler gives up on a running job: its waiters get waiter_error
 * now, and it goes on without the scheduler until it calls aj_job_done.
 * Called from the loop (close timeout) or aj_scheduler_free.
 */
void aj__job_let_go(aj_job *job, int waiter_error)
{
    job->call.flags &= (uint8_t)~AJ__JOB_CANCEL_OWED;
    job_move(job, AJ__JOB_LET_GO);
    aj__job_deliver_waiters(job, waiter_error);
    /* A waiter may have finished the job (now LET_GO_DONE) while the
     * delivery held it: its release is due now. */
    job_maybe_release(job, 0);
}

/* aj_scheduler_free: an admitted aj_spawn_async job whose callback never ran
 * never existed for the caller; it goes without release. */
void aj__job_discard_silently(aj_job *job)
{
    aj_scheduler *s = job->owner.sched;

    switch (aj__job_state(job)) {
    case AJ__JOB_PENDING:
        aj__q_remove(&job->call.link);
        s->npending--;
        break;
    case AJ__JOB_STARTING:
        s->nactive--;
        aj__runq_remove(s, &job->call);
        break;
    default:
        aj__runq_remove(s, &job->call);
        break;
    }
    aj__q_remove(&job->node);
    aj__job_free_embryo(job);
}

/* ------------------------------------------------------------------ */
/* Job timeout (3.7)                                                   */
/* ------------------------------------------------------------------ */

static void job_timer_fire(struct aj__timer *t)
{
    struct aj__job_ext *ext = aj__q_data(t, struct aj__job_ext, timer);
    aj_job *job = ext->job;
    aj_scheduler *s = job->owner.sched;
    const struct timeval *ctv;

    if (!aj__job_counted(job))
        return;
    if (!ext->timer_closing) {
        /* The job timeout passed: close the job as a wait timeout does. */
        job->call.flags |= AJ__JOB_TIMED_OUT;
        s->stats.job_timeouts++;
        aj__job_close(job);
        ctv = aj__sched_close_tv(s);
        if (ctv && aj__job_counted(job)) {
            ext->timer_closing = 1;
            if (aj__timer_start(s, t, ctv) < 0) {
                ext->timer_closing = 0;
                aj_log(EVENT_LOG_ERR, "job %s: out of memory for its close timeout",
                       aj_job_name(job));
            }
        }
        return;
    }
    /* The close that followed the job timeout gave up on the job: it keeps
     * its slot until it calls aj_job_done. */
    s->stats.close_timeouts++;
    if (!(job->call.flags & AJ__JOB_EXPLICIT))
        aj__report_job(s, job, AJ__MSG_TIMED_OUT, ETIMEDOUT);
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */
/* ------------------------------------------------------------------ */

AJ_EXPORT void aj_job_done(aj_job *job, int error, void *result)
{
    if (!job) {
        aj_log(EVENT_LOG_WARN, "aj_job_done: NULL job ignored");
        return;
    }
    switch (aj__job_state(job)) {
    case AJ__JOB_RUNNING:
    case AJ__JOB_CLOSING:
        job->call.error = (job->call.flags & AJ__JOB_TIMED_OUT) ? ETIMEDOUT : error;
        job->result = result;
        job->call.flags &= (uint8_t)~AJ__JOB_CANCEL_OWED;
        job_move(job, AJ__JOB_FINISHING);
        aj__pump(job->owner.sched);
        break;
    case AJ__JOB_LET_GO:
        job->call.error = error;
        job->result = result;
        job_move(job, AJ__JOB_LET_GO_DONE);
        job_maybe_release(job, 0);
        break;
    case AJ__JOB_FINISHING:
    case AJ__JOB_FINISHED:
    case AJ__JOB_LET_GO_DONE:
        aj_log(EVENT_LOG_WARN, "aj_job_done called twice on job %s (error %d ignored)",
               aj_job_name(job), error);
        break;
    default:
        aj_log(EVENT_LOG_ERR, "aj_job_done on job %s, which has not started: ignored",
               aj_job_name(job));
        break;
    }
}

/* Shared by wait and close: the checks both make. */
static int job_waitable(const aj_job *job, const struct timeval *tv)
{
    if (!job || (tv && !aj__timeval_valid(tv))) {
        errno = EINVAL;
        return -1;
    }
    switch (aj__job_state(job)) {
    case AJ__JOB_LET_GO:
    case AJ__JOB_LET_GO_DONE:
        errno = ESHUTDOWN;
        return -1;
    case AJ__JOB_EMBRYO:
        errno = EINVAL;
        return -1;
    default:
        if (job->owner.sched->freeing) {
            errno = ESHUTDOWN;
            return -1;
        }
        return 0;
    }
}

/* A waiter on a finished job is answered from the loop. */
static void waiter_add_finished(aj_job *job, struct aj__waiter *w)
{
    waiter_link(job, w);
    aj__runq_push(job->owner.sched, &job->call);
}

AJ_EXPORT int aj_job_wait(aj_job *job, const struct timeval *timeout, aj_job_cb cb, void *cbarg)
{
    struct aj__waiter *w;
    aj_scheduler *s;

    if (job_waitable(job, timeout) < 0)
        return -1;
    if (!cb) {
        errno = EINVAL;
        return -1;
    }
    s = job->owner.sched;
    w = waiter_new(job, AJ__WAIT, cb, cbarg);
    if (!w)
        return -1;
    if (!aj__job_counted(job)) {
        waiter_add_finished(job, w);
    } else {
        if (!timeout && s->has_wait_timeout)
            timeout = &s->wait_timeout;
        if (timeout && aj__timer_start(s, &w->timer, timeout) < 0) {
            waiter_free(w);
            return -1;
        }
        waiter_link(job, w);
    }
    job->call.flags |= AJ__JOB_EXPLICIT;
    return 0;
}

AJ_EXPORT int aj_job_close(aj_job *job, const struct timeval *timeout, aj_job_cb cb, void *cbarg)
{
    struct aj__waiter *w;
    aj_scheduler *s;

    if (job_waitable(job, timeout) < 0)
        return -1;
    s = job->owner.sched;
    w = waiter_new(job, AJ__CLOSE, cb, cbarg);
    if (!w)
        return -1;
    if (!aj__job_counted(job)) {
        job->call.flags |= AJ__JOB_EXPLICIT;
        waiter_add_finished(job, w);
        return 0;
    }
    if (aj__job_state(job) == AJ__JOB_RUNNING || aj__job_state(job) == AJ__JOB_CLOSING) {
        if (!timeout)
            timeout = aj__sched_close_tv(s);
        if (timeout && aj__timer_start(s, &w->timer, timeout) < 0) {
            waiter_free(w);         /* failed: the job stays as it was */
            return -1;
        }
    }
    job->call.flags |= AJ__JOB_EXPLICIT;
    waiter_link(job, w);
    aj__job_close(job);             /* a discarded job is now FINISHING */
    return 0;
}

AJ_EXPORT int aj_job_active(const aj_job *job)
{
    return job && (aj__job_state(job) == AJ__JOB_STARTING || aj__job_state(job) == AJ__JOB_RUNNING);
}

AJ_EXPORT int aj_job_pending(const aj_job *job)
{
    return job && aj__job_state(job) == AJ__JOB_PENDING;
}

AJ_EXPORT int aj_job_closed(const aj_job *job)
{
    return job && aj__job_state(job) >= AJ__JOB_CLOSING;
}

AJ_EXPORT const char *aj_job_name(const aj_job *job)
{
    aj_job *j = (aj_job *)job;      /* the generated name is made lazily */
    struct aj__job_ext *ext;
    char buf[32];

    if (!job)
        return NULL;
    if (job->ext && job->ext->name)
        return job->ext->name;
    if (job->ops->name)
        return job->ops->name;
    ext = aj__job_ext(j);
    if (ext) {
        snprintf(buf, sizeof buf, "job-%" PRIu64, job->seq);
        ext->name = aj__strdup(buf);
        if (ext->name)
            return ext->name;
    }
    return "job";                   /* out of memory: a name all the same */
}

AJ_EXPORT int aj_job_set_name(aj_job *job, const char *name)
{
    struct aj__job_ext *ext;
    char *copy = NULL;

    if (!job) {
        errno = EINVAL;
        return -1;
    }
    if (!name && !job->ext)
        return 0;                   /* nothing set: nothing to clear */
    if (name && !(copy = aj__strdup(name)))
        return -1;
    ext = aj__job_ext(job);
    if (!ext) {
        aj__free(copy);
        return -1;
    }
    aj__free(ext->name);
    ext->name = copy;
    return 0;
}

AJ_EXPORT void *aj_job_arg(const aj_job *job)
{
    return job ? job->arg : NULL;
}

AJ_EXPORT const struct aj_job_ops *aj_job_ops(const aj_job *job)
{
    return job ? job->ops : NULL;
}

AJ_EXPORT aj_scheduler *aj_job_scheduler(const aj_job *job)
{
    return job && aj__job_counted(job) ? job->owner.sched : NULL;
}

AJ_EXPORT int aj_job_set_cancel(aj_job *job, void (*cancel)(aj_job *, void *), void *cbarg)
{
    struct aj__job_ext *ext;
    int call;

    if (!job) {
        errno = EINVAL;
        return -1;
    }
    ext = aj__job_ext(job);
    if (!ext)
        return -1;
    /* A close already asked for (and heard by an earlier hook) reaches a
     * hook not yet called during it; a hook already called hears nothing
     * more, even when it re-arms itself.  Room to record the call is taken
     * now, so that the call cannot fail later. */
    call = cancel && aj__job_state(job) == AJ__JOB_CLOSING &&
           !(job->call.flags & AJ__JOB_CANCEL_OWED) && !job->owner.sched->freeing &&
           !hook_heard(ext, cancel, cbarg);
    if (call && hook_reserve(ext) < 0)
        return -1;                  /* the old hook stays */
    ext->cancel = cancel;
    ext->cancel_arg = cbarg;
    ext->cancel_set = 1;
    if (call) {
        job->call.flags |= AJ__JOB_CANCEL_OWED;
        aj__runq_push(job->owner.sched, &job->call);
    }
    return 0;
}

AJ_EXPORT aj_job *aj_job_ref(aj_job *job)
{
    if (job)
        job->refs++;
    return job;
}

AJ_EXPORT void aj_job_unref(aj_job *job)
{
    if (!job)
        return;
    if (job->refs == 0) {
        aj_log(EVENT_LOG_WARN, "aj_job_unref(%s): no reference to drop", aj_job_name(job));
        return;
    }
    if (--job->refs == 0)
        job_maybe_release(job, 0);
}

AJ_EXPORT int aj_job_set_timeout(aj_job *job, const struct timeval *tv)
{
    struct aj__job_ext *ext;
    aj_scheduler *s;

    if (!job || (tv && !aj__timeval_valid(tv)) || !aj__job_counted(job)) {
        errno = EINVAL;
        return -1;
    }
    s = job->owner.sched;
    ext = aj__job_ext(job);
    if (!ext)
        return -1;
    if (aj__job_state(job) == AJ__JOB_RUNNING && !ext->timer_closing) {
        if (!tv)
            aj__timer_stop(&ext->timer);
        else if (aj__timer_start(s, &ext->timer, tv) < 0)
            return -1;              /* the timeout it had still runs */
    }
    ext->timeout_set = 1;
    ext->timeout_none = tv == NULL;
    if (tv)
        ext->timeout = *tv;
    return 0;
}
