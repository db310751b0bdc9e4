/*
 * aj-internal.h -- the core's data structures and the internal interface
 * between its files.  Never installed.
 *
 *   alloc.c      the allocator hook
 *   pool.c       job memory: slabs of equal-sized jobs, one pool per size
 *   log.c        the log sink
 *   timer.c      timer queues: one libevent timer per distinct duration
 *   runq.c       the run queue: every user callback is called from here
 *                (or from a timer), never from inside an aj_* call
 *   job.c        the job state machine, waiters, names, refs, release
 *   spawn.c      admission: aj_spawn, aj_spawn_async, the pump
 *   report.c     failures nobody waited for, debug spawn stacks
 *   scheduler.c  the scheduler: settings, counts, close, drain, free
 */
#ifndef AJ_INTERNAL_H
#define AJ_INTERNAL_H

#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/time.h>

#include <event2/event.h>

#include <aj/aj.h>
#include "aj-queue.h"

#ifndef ESHUTDOWN
#define ESHUTDOWN EPIPE
#endif

#define AJ__UNUSED(x) ((void)(x))

#if defined(__GNUC__)
#define AJ__ALWAYS_INLINE inline __attribute__((always_inline))
#define AJ__PREFETCH(p) __builtin_prefetch((p))
#else
#define AJ__ALWAYS_INLINE inline
#define AJ__PREFETCH(p) ((void)(p))
#endif

/* Where the calling function returns to: it finds the spawn call in a debug
 * stack (aj__capture_stack).  NULL where the compiler cannot tell. */
#if defined(__GNUC__)
#define AJ__CALLER() __builtin_return_address(0)
#else
#define AJ__CALLER() NULL
#endif

/* ---- alloc.c ---- */
void *aj__malloc(size_t sz);
void *aj__calloc(size_t n, size_t sz);
void *aj__realloc(void *p, size_t sz);
void aj__free(void *p);
char *aj__strdup(const char *s);

/* ---- pool.c ---- */
struct aj__pool {
    struct aj__q partial;            /* slabs with room, the latest first */
    struct aj__q full;               /* slabs without */
    size_t objsz;                    /* rounded up to the jobs' alignment */
    uint32_t next_nobj;              /* capacity of the next slab */
};
void aj__pool_init(struct aj__pool *p, size_t objsz);
/* An object of the pool's size, and its index in its slab for
 * aj__pool_put; NULL with ENOMEM when a new slab cannot be allocated. */
void *aj__pool_get(struct aj__pool *p, uint16_t *idx);
/* Gives obj back; objsz as given to aj__pool_init.  Needs no pool: obj
 * may outlive it (aj__pool_destroy). */
void aj__pool_put(void *obj, size_t objsz, uint16_t idx);
/* Frees the empty slabs; the others are freed with their last object. */
void aj__pool_destroy(struct aj__pool *p);

/* ---- log.c ---- */
void aj__logv(int severity, const char *fmt, va_list ap);

/* ---- timer.c ---- */
/* 32 bytes: every waiter carries one, so it is kept small.  Its queue is
 * found from the list itself (timer.c), not from a pointer. */
struct aj__timer {
    struct aj__q link;               /* in its timer queue, deadline order;
                                      * linked to itself when not running */
    int64_t deadline;                /* monotonic, in microseconds */
    void (*fire)(struct aj__timer *t);
};
void aj__timer_init(struct aj__timer *t, void (*fire)(struct aj__timer *));
/* Starts (or restarts) t to fire after `after`.  -1 with ENOMEM: t is
 * then unchanged (still running if it was). */
int aj__timer_start(aj_scheduler *s, struct aj__timer *t, const struct timeval *after);
void aj__timer_stop(struct aj__timer *t);
static inline int aj__timer_running(const struct aj__timer *t) { return aj__q_linked(&t->link); }
/* Sets up s's timer queues and its clock tick (aj_scheduler_new). */
void aj__timers_init(aj_scheduler *s);
void aj__timers_free(aj_scheduler *s);
int aj__timeval_valid(const struct timeval *tv);

/* ---- runq.c ---- */
enum aj__call_kind {
    AJ__CALL_JOB,          /* a job: start, cancel, report or release it */
    AJ__CALL_SPAWN_REQ,    /* deliver an aj_spawn_async outcome */
    AJ__CALL_REPORT,       /* a copied aj_scheduler_call_exception_handler */
    AJ__CALL_CLOSE_DONE,   /* the scheduler's close completed: call closers */
    AJ__CALL_DRAINED       /* wait_and_close: check whether no job is left */
};

/*
 * Anything the loop must do later.  Jobs reuse the spare bytes of this
 * header for their state, flags and outcome so that a job stays small.
 */
struct aj__call {
    struct aj__q link;     /* run queue; a pending job: the pending queue */
    uint8_t kind;          /* enum aj__call_kind */
    uint8_t queued;        /* on the run queue */
    uint8_t state;         /* jobs: enum aj__job_state */
    uint8_t flags;         /* jobs: AJ__JOB_* */
    int32_t error;         /* jobs: the outcome once finished */
};

void aj__runq_push(aj_scheduler *s, struct aj__call *c);
void aj__runq_remove(aj_scheduler *s, struct aj__call *c);
int aj__runq_init(aj_scheduler *s);

/* ---- job.c ---- */

/*
 * The job state machine (see job.c for the transitions):
 *
 *   EMBRYO ──admit──► PENDING ──slot──► STARTING ──start()──► RUNNING
 *                        │                 │                     │ close,
 *                        └──close──────────┤ (discard)           ▼ timeout
 *                                          │                  CLOSING
 *                                          ▼                     │
 *                      FINISHING ◄──────aj_job_done──────────────┘ (or RUNNING)
 *                          │ waiters, exception handler, done cb
 *                          ▼
 *                      FINISHED ──refs 0, no waiters──► release
 *
 *   RUNNING/CLOSING ──scheduler close gives up──► LET_GO ──aj_job_done──►
 *   LET_GO_DONE ──refs 0──► release (from the scheduler's run queue, which
 *   outlives aj_scheduler_free until the last let-go job is released)
 */
enum aj__job_state {
    AJ__JOB_EMBRYO,        /* allocated by aj_spawn_async, not admitted yet */
    AJ__JOB_PENDING,       /* in the pending queue */
    AJ__JOB_STARTING,      /* holds a slot; start() queued on the loop */
    AJ__JOB_RUNNING,       /* start() ran; the job owns its work */
    AJ__JOB_CLOSING,       /* running, asked to stop */
    AJ__JOB_FINISHING,     /* outcome known; reports owed */
    AJ__JOB_FINISHED,      /* reported; waits for refs and late waiters */
    AJ__JOB_LET_GO,        /* running, given up by its scheduler's close */
    AJ__JOB_LET_GO_DONE    /* let go and finished; released when refs drop */
};

#define AJ__JOB_EXPLICIT     0x01u  /* wait/close was called: never reported */
#define AJ__JOB_TIMED_OUT    0x02u  /* its job timeout fired: outcome ETIMEDOUT */
#define AJ__JOB_DISCARDED    0x04u  /* finished without ever starting */
#define AJ__JOB_CANCEL_OWED  0x08u  /* cancel() must be called from the loop */
#define AJ__JOB_UNANNOUNCED  0x10u  /* admitted by spawn_async, cb not run yet */
#define AJ__JOB_WSLOT        0x20u  /* allocated with room for one waiter */
#define AJ__JOB_WSLOT_BUSY   0x40u  /* a waiter lives in that room */
#define AJ__JOB_WSLOT_USED   0x80u  /* one ever did */

struct aj__waiter;
struct aj__job_ext;

struct aj_job {
    struct aj__call call;           /* run queue / pending queue + state */
    struct aj__q node;              /* s->jobs while counted, then s->finished,
                                     * or s->let_go once let go */
    struct {
        aj_scheduler *sched;        /* always: a let-go job's keeps its run
                                     * queue alive after aj_scheduler_free */
    } owner;
    const struct aj_job_ops *ops;
    void *arg;
    void *result;
    struct aj__job_ext *ext;        /* rarely used extras, allocated lazily */
    struct aj__waiter *waiters;     /* circular list, the last waiter */
    uint64_t seq;                   /* spawn number, for "job-N" */
    uint32_t refs;
    uint16_t pool_idx;              /* its place in its slab (pool.c) */
    /* With AJ__JOB_WSLOT, room for one struct aj__waiter follows (job.c). */
};

/* A cancel hook: the function and its cbarg. */
struct aj__hook {
    void (*fn)(aj_job *, void *);
    void *arg;
};

/* Extras most jobs never need: one allocation when first needed. */
struct aj__job_ext {
    aj_job *job;
    char *name;                               /* set or generated name */
    void (*cancel)(aj_job *, void *);         /* aj_job_set_cancel() */
    void *cancel_arg;
    struct aj__timer timer;                   /* job timeout, then its close */
    struct timeval timeout;                   /* aj_job_set_timeout() value */
    uint8_t cancel_set;
    uint8_t timeout_set;                      /* override of the sched's */
    uint8_t timeout_none;                     /* the override is "none" */
    uint8_t timer_closing;                    /* timer now counts the close */
    void **frames;                            /* debug: spawn stack */
    int nframes;
    /* The hooks called during the job's close (each pair at most once,
     * SPEC 3.4): heard[0..nheard), room for capheard; heard points at
     * heard1 until a second one is needed.  While a call is owed
     * (AJ__JOB_CANCEL_OWED) there is room for one more. */
    struct aj__hook *heard;
    uint32_t nheard, capheard;
    struct aj__hook heard1;
};

static inline enum aj__job_state aj__job_state(const aj_job *job)
{
    return (enum aj__job_state)job->call.state;
}
static inline int aj__job_counted(const aj_job *job)
{
    return job->call.state >= AJ__JOB_PENDING && job->call.state <= AJ__JOB_CLOSING;
}

/* Sets up s->job_pools, one pool per job size (with and without a waiter
 * slot); aj_scheduler_free destroys them. */
void aj__job_pools_init(aj_scheduler *s);
/* caller: AJ__CALLER() of the aj_spawn or aj_spawn_async call, for debug
 * stacks. */
aj_job *aj__job_new(aj_scheduler *s, const struct aj_job_ops *ops, void *arg, void *caller);
void aj__job_free_embryo(aj_job *job);
struct aj__job_ext *aj__job_ext(aj_job *job);
void aj__job_admit(aj_scheduler *s, aj_job *job);
void aj__job_promote(aj_scheduler *s, aj_job *job);
void aj__job_run(aj_scheduler *s, aj_job *job);
void aj__job_close(aj_job *job);
void aj__job_let_go(aj_job *job, int waiter_error);
void aj__job_discard_silently(aj_job *job);
void aj__job_deliver_waiters(aj_job *job, int forced_error);
void aj__job_free_release(aj_job *job);
void aj__job_release_or_orphan(aj_job *job);
/* Calls the job's current cancel hook unless that pair was already called
 * during this close; from_loop as for aj__job_unhold. */
void aj__job_cancel_now(aj_job *job, int from_loop);
/* Drops a reference the library held across a callback (refs++ before it);
 * a job whose last reference that was, and that is owed its release, is
 * released now: callers are on the loop, never inside an aj_* call. */
void aj__job_unhold(aj_job *job);

/* ---- spawn.c ---- */
struct aj__spawn_req {
    struct aj__call call;           /* run queue: deliver the outcome */
    struct aj__q link;              /* s->spawn_reqs while waiting */
    struct aj__timer timer;
    aj_scheduler *s;
    aj_job *job;                    /* preallocated; freed if never admitted */
    aj_spawn_cb cb;
    void *cbarg;
    int error;
};
void aj__pump(aj_scheduler *s);
void aj__spawn_req_run(aj_scheduler *s, struct aj__spawn_req *req);
void aj__spawn_reqs_shutdown(aj_scheduler *s);
void aj__spawn_req_free_now(aj_scheduler *s, struct aj__spawn_req *req);

/* ---- report.c ---- */
struct aj__report {
    struct aj__call call;
    struct aj_error_info info;      /* strings below are owned copies */
    char *message;
    char **traceback;
};
void aj__report_job(aj_scheduler *s, aj_job *job, const char *message, int error);
void aj__report_run(aj_scheduler *s, struct aj__report *r);
void aj__report_drop(struct aj__report *r);
void aj__capture_stack(aj_job *job, void *caller);
int aj__debug_default(void);

#define AJ__MSG_FAILED    "Job processing failed"
#define AJ__MSG_TIMED_OUT "Job closing timed out"

/* ---- scheduler.c ---- */
enum aj__phase {
    AJ__OPEN,              /* accepting jobs */
    AJ__DRAINING,          /* wait_and_close: waiting for the jobs to end */
    AJ__CLOSING,           /* closed; cancelled jobs get the close timeout */
    AJ__CLOSED             /* close completed */
};

struct aj__closer {
    struct aj__q link;
    aj_scheduler_cb cb;
    void *arg;
};

struct aj_scheduler {
    struct event_base *base;
    struct event *runq_ev;
    struct aj__q runq;              /* struct aj__call, FIFO */
    struct aj__q jobs;              /* counted jobs in spawn order (job->node) */
    struct aj__q finished;          /* finished jobs awaiting release */
    struct aj__q pending;           /* pending jobs FIFO (job->call.link) */
    struct aj__q spawn_reqs;        /* queued aj_spawn_async requests */
    struct aj__q timerqs;           /* struct aj__timerq */
    struct aj__q closers;           /* struct aj__closer owed a call */
    struct aj__q let_go;            /* LET_GO and LET_GO_DONE jobs (job->node) */
    size_t ntimerqs;
    int64_t tick_us;                /* the clock's resolution (timer.c) */

    size_t limit, pending_limit;
    size_t nactive, npending;

    struct timeval close_timeout, wait_timeout, job_timeout;
    uint8_t has_close_timeout, has_wait_timeout, has_job_timeout;
    uint8_t debug;
    uint8_t runq_scheduled;         /* runq_ev is active or armed */
    uint8_t freeing;                /* aj_scheduler_free ran (or runs) */
    uint8_t wait_hint;              /* > 0: new jobs get a waiter slot (job.c) */
    uint8_t phase;                  /* enum aj__phase */

    struct aj__call close_done;     /* AJ__CALL_CLOSE_DONE */
    struct aj__call drained;        /* AJ__CALL_DRAINED */
    struct aj__timer close_timer;   /* the scheduler close's timeout */
    struct aj__timer drain_timer;   /* wait_and_close's timeout */

    aj_exception_handler exc;
    void *exc_arg;
    aj_job_done_cb done_cb;
    void *done_arg;

    struct aj_stats stats;
    /* How many of the scheduler's loop callbacks (runq_cb, timerq_cb) are
     * on the stack.  aj_scheduler_free inside a user callback does all it
     * must at once, but the memory those frames still use is reclaimed
     * (aj__sched_reclaim) only once the count is back to 0 and no let-go
     * job is left to release, as libuv defers a close. */
    uint32_t depth;
    struct aj__pool job_pools[2];   /* job memory: [1] with a waiter slot */
};

static inline int aj__sched_closed(const aj_scheduler *s) { return s->phase >= AJ__CLOSING; }
void aj__sched_job_left(aj_scheduler *s);
void aj__sched_close_done_run(aj_scheduler *s);
void aj__sched_drained_run(aj_scheduler *s);
const struct timeval *aj__sched_close_tv(const aj_scheduler *s);
/* Frees a freed scheduler's memory if nothing uses it any more: no loop
 * callback of it on the stack, no let-go job still to release.  Callers
 * touch nothing of s afterwards. */
void aj__sched_reclaim(aj_scheduler *s);

#endif /* AJ_INTERNAL_H */
