/*
 * <aj/aj.h> -- libaj: managed jobs on a libevent event_base.
 *
 * A scheduler runs callback-style jobs (continuations) under a concurrency
 * limit with a bounded pending queue, closes them with timeouts, reports
 * failures nobody waited for, and drains gracefully.  It is the C counterpart
 * of Python's aiojobs.
 *
 * Conventions (apply to every function below):
 *  - int functions return 0 on success, -1 with errno set on failure;
 *    pointer functions return NULL with errno set.
 *  - Job outcomes are errno-style ints: 0 success, ECANCELED cancelled,
 *    ETIMEDOUT timed out, anything else a failure.
 *  - Timeouts are `const struct timeval *`; NULL means "no timeout" unless
 *    the function says "the scheduler's default".  Values are copied.
 *  - Limits are size_t; 0 means unlimited.
 *  - No re-entrancy: no aj_* call runs a user callback before it returns.
 *    Every callback runs from the scheduler's event loop.  The one
 *    exception is aj_scheduler_free().
 *  - A scheduler belongs to one event_base and to the thread running it.
 *
 * Lifetimes, stated once:
 *  - A scheduler lives from aj_scheduler_new() to aj_scheduler_free().
 *  - A job handle is valid from spawn until its ops->release(arg) runs.
 *    release runs exactly once, last, after the job finished, was discarded
 *    or let go, every wait/close callback on it returned, and every
 *    aj_job_ref() was matched by aj_job_unref().
 */
#ifndef AJ_AJ_H
#define AJ_AJ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(AJ_BUILDING) && defined(__GNUC__)
#define AJ_EXPORT __attribute__((visibility("default")))
#else
#define AJ_EXPORT
#endif

#if defined(__GNUC__)
#define AJ_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define AJ_PRINTF(f, a)
#endif

struct event_base;

/** A scheduler: a container of managed jobs on one event_base. */
typedef struct aj_scheduler aj_scheduler;
/** A job: one unit of work run by a scheduler. */
typedef struct aj_job aj_job;

/*
 * What a job does.  The struct must stay valid (usually static) for as long
 * as any job spawned with it exists.
 *
 * start    required.  The job becomes active: begin the work (arm events,
 *          send requests) and return.  The job's own callbacks advance its
 *          state machine and finally call aj_job_done().
 * cancel   optional.  The job is asked to stop (close, timeout, shutdown).
 *          A job that honours it tidies up and calls
 *          aj_job_done(job, ECANCELED, NULL), now or later.  A job without
 *          cancel cannot be interrupted; closing waits for it.
 * release  optional.  Called exactly once per spawned job, last, when the
 *          library will never touch the job or arg again.  Free arg here.
 * name     default job name, may be NULL.
 */
struct aj_job_ops {
    const char *name;
    void (*start)(aj_job *job, void *arg);
    void (*cancel)(aj_job *job, void *arg);
    void (*release)(void *arg);
};

/* ------------------------------------------------------------------ */
/* Scheduler                                                           */
/* ------------------------------------------------------------------ */

/*
 * Creates a scheduler on `base` with the defaults: limit 100, pending limit
 * 10000, close timeout 0.1 s, wait timeout 60 s, no job timeout, debug mode
 * on if the environment variable AJ_DEBUG is set and not "0".
 * Returns NULL with EINVAL (base NULL) or ENOMEM.
 */
AJ_EXPORT aj_scheduler *aj_scheduler_new(struct event_base *base);

/*
 * Frees the scheduler.  If its close has not completed, ends it at once
 * without waiting.  This is the one call that runs callbacks synchronously:
 * cancel of active jobs; every callback still owed (queued aj_spawn_async
 * requests get ESHUTDOWN; waiters and close callbacks of discarded jobs
 * ECANCELED, of jobs let go ESHUTDOWN; the callbacks of a close in progress);
 * and release of every job that finished or never started.  It does not call
 * the exception handler or the done callback.  A job still running is let
 * go: when it calls aj_job_done() its release runs from the loop.
 * May be called outside the scheduler's callbacks or inside its own close
 * callback; calling it from another of its callbacks is a usage error.
 * NULL is ignored.
 */
AJ_EXPORT void aj_scheduler_free(aj_scheduler *s);

/*
 * Sets the concurrency limit (default 100, 0 = unlimited).  Raising it
 * starts pending jobs at once (their start runs from the loop); lowering it
 * stops nothing that runs.  Returns 0, or -1 with EINVAL (s NULL).
 */
AJ_EXPORT int aj_scheduler_set_limit(aj_scheduler *s, size_t limit);

/*
 * Sets the pending queue limit (default 10000, 0 = unlimited).  Lowering it
 * drops nothing already queued; raising it admits queued aj_spawn_async
 * requests.  Returns 0, or -1 with EINVAL.
 */
AJ_EXPORT int aj_scheduler_set_pending_limit(aj_scheduler *s, size_t limit);

/*
 * Sets how long a close waits for a cancelled job (default 0.1 s, NULL = wait
 * for ever).  Returns 0, or -1 with EINVAL (s NULL or tv out of range).
 */
AJ_EXPORT int aj_scheduler_set_close_timeout(aj_scheduler *s, const struct timeval *tv);

/*
 * Sets the default timeout of aj_job_wait() and aj_scheduler_wait_and_close()
 * (default 60 s, NULL = none).  Returns 0, or -1 with EINVAL.
 */
AJ_EXPORT int aj_scheduler_set_wait_timeout(aj_scheduler *s, const struct timeval *tv);

/* The concurrency limit (0 = unlimited). */
AJ_EXPORT size_t aj_scheduler_limit(const aj_scheduler *s);
/* The pending queue limit (0 = unlimited). */
AJ_EXPORT size_t aj_scheduler_pending_limit(const aj_scheduler *s);
/* The close timeout, or NULL for none.  Points into the scheduler. */
AJ_EXPORT const struct timeval *aj_scheduler_close_timeout(const aj_scheduler *s);
/* The wait timeout, or NULL for none.  Points into the scheduler. */
AJ_EXPORT const struct timeval *aj_scheduler_wait_timeout(const aj_scheduler *s);

/*
 * Jobs in the scheduler: pending + active.  A job counts from spawn until it
 * finished (aj_job_done), was discarded before it started, or was let go by
 * the scheduler's close.
 */
AJ_EXPORT size_t aj_scheduler_size(const aj_scheduler *s);
/* Running slots held by jobs that have not finished (closed or not). */
AJ_EXPORT size_t aj_scheduler_active_count(const aj_scheduler *s);
/* Jobs waiting in the pending queue for a slot. */
AJ_EXPORT size_t aj_scheduler_pending_count(const aj_scheduler *s);
/* 1 once aj_scheduler_close() (or the close of wait_and_close) was called. */
AJ_EXPORT int aj_scheduler_closed(const aj_scheduler *s);
/* The event_base the scheduler runs on. */
AJ_EXPORT struct event_base *aj_scheduler_base(const aj_scheduler *s);

/*
 * Iteration over the jobs in the scheduler (pending and active), in spawn
 * order: for (j = aj_scheduler_first(s); j; j = aj_scheduler_next(s, j)).
 * Do not spawn, finish or close jobs while iterating.
 * aj_scheduler_next returns NULL at the end or if job is not in s.
 */
AJ_EXPORT aj_job *aj_scheduler_first(const aj_scheduler *s);
AJ_EXPORT aj_job *aj_scheduler_next(const aj_scheduler *s, const aj_job *job);
/* 1 if job is in s (pending or active), else 0. */
AJ_EXPORT int aj_scheduler_contains(const aj_scheduler *s, const aj_job *job);

/* ------------------------------------------------------------------ */
/* Spawning                                                            */
/* ------------------------------------------------------------------ */

/*
 * Admits a job now: active if fewer than `limit` jobs are active, else
 * pending (FIFO).  ops->start runs from the loop, never inside this call.
 * Returns the job, or NULL with EINVAL (s, ops or ops->start NULL),
 * ESHUTDOWN (scheduler closed), EAGAIN (pending queue full, or
 * aj_spawn_async requests are queued ahead), ENOMEM.  On failure nothing was
 * taken: release is not called and the caller keeps arg.
 */
AJ_EXPORT aj_job *aj_spawn(aj_scheduler *s, const struct aj_job_ops *ops, void *arg);

typedef void (*aj_spawn_cb)(aj_scheduler *s, aj_job *job, int error, void *cbarg);

/*
 * Spawns with back-pressure (aiojobs' awaiting spawn): the request queues
 * FIFO until there is room, then the job is admitted and
 * cb(s, job, 0, cbarg) runs before the job's start.  If `timeout` (NULL =
 * none) passes first, cb(s, NULL, ETIMEDOUT, cbarg); if the scheduler closes
 * first, cb(s, NULL, ESHUTDOWN, cbarg).  When cb gets an error the job never
 * existed and the caller keeps arg.  cb runs from the loop, exactly once.
 * Returns 0, or -1 with EINVAL, ESHUTDOWN or ENOMEM if the request could not
 * be queued at all (then cb is never called).
 */
AJ_EXPORT int aj_spawn_async(aj_scheduler *s, const struct aj_job_ops *ops, void *arg,
                             const struct timeval *timeout, aj_spawn_cb cb, void *cbarg);

/* ------------------------------------------------------------------ */
/* Jobs                                                                */
/* ------------------------------------------------------------------ */

/*
 * The job reports that it finished with `error` (0 success, ECANCELED after
 * honouring cancel) and `result` (the job's to manage; keep it valid until
 * release).  Call exactly once, from any of the job's callbacks, including
 * inside its own start or cancel.  A second call is ignored and logged.
 * Waiters, the done callback and the exception handler run later, from the
 * loop.
 */
AJ_EXPORT void aj_job_done(aj_job *job, int error, void *result);

typedef void (*aj_job_cb)(aj_job *job, int error, void *result, void *cbarg);

/*
 * Waits for the job: cb(job, error, result, cbarg) runs from the loop once
 * the job finished, with its outcome.  If `timeout` (NULL = the scheduler's
 * wait timeout) passes first, the job is closed and cb gets ETIMEDOUT once
 * that close ended.  On a finished job cb gets the recorded outcome.  Any
 * number of waiters; the job becomes explicit (never reported to the
 * exception handler).  A pending job discarded by a close gives ECANCELED.
 * A waiter that gets ETIMEDOUT gets result NULL.
 * Returns 0, or -1 with EINVAL (job or cb NULL, bad timeout), ESHUTDOWN (the
 * job was let go by its scheduler, or its scheduler is being freed: a call
 * from a callback that aj_scheduler_free() runs) or ENOMEM.
 */
AJ_EXPORT int aj_job_wait(aj_job *job, const struct timeval *timeout, aj_job_cb cb, void *cbarg);

/*
 * Closes the job: a pending (or not yet started) job is discarded and never
 * starts; a running one is asked to stop through its cancel hook.  cb (may
 * be NULL) runs from the loop when the job finished: error 0 if it stopped
 * (cancelled or done), the job's error if it failed with something other
 * than ECANCELED, ETIMEDOUT if it was still running after `timeout` (NULL =
 * the scheduler's close timeout; the job then keeps its slot until it calls
 * aj_job_done).  Closing a closed or finished job succeeds and cb gets what a
 * close would report.  The job becomes explicit.
 * Returns 0, or -1 with EINVAL, ESHUTDOWN (job let go, or its scheduler is
 * being freed) or ENOMEM; on failure nothing changed.
 */
AJ_EXPORT int aj_job_close(aj_job *job, const struct timeval *timeout, aj_job_cb cb, void *cbarg);

/* 1 if the job holds a running slot and is not closed (also before its
 * start ran), else 0. */
AJ_EXPORT int aj_job_active(const aj_job *job);
/* 1 if the job waits in the pending queue. */
AJ_EXPORT int aj_job_pending(const aj_job *job);
/* 1 if the job finished or a close was asked for (it may still run while
 * the cancellation takes effect). */
AJ_EXPORT int aj_job_closed(const aj_job *job);

/*
 * The job's name: the one set with aj_job_set_name(), else ops->name, else a
 * generated "job-N" (N counts spawns in the process, from 1).  Never NULL for
 * a live job; valid until the name changes or the job is released.
 */
AJ_EXPORT const char *aj_job_name(const aj_job *job);
/* Sets (copies) the job's name; NULL restores the default.  -1 with EINVAL
 * or ENOMEM. */
AJ_EXPORT int aj_job_set_name(aj_job *job, const char *name);
/* The arg the job was spawned with. */
AJ_EXPORT void *aj_job_arg(const aj_job *job);
/* The ops the job was spawned with (an extra beyond SPEC: lets a layer
 * such as libaj_evhttp recognise its own jobs without a lookup). */
AJ_EXPORT const struct aj_job_ops *aj_job_ops(const aj_job *job);
/* The job's scheduler, or NULL once the job left it (finished, discarded or
 * let go). */
AJ_EXPORT aj_scheduler *aj_job_scheduler(const aj_job *job);

/*
 * Replaces the job's cancel hook (cancel NULL = not interruptible); a state
 * machine re-arms it per state.  cbarg is passed to the hook instead of the
 * job's arg.  If a close was already asked for and the job is still running,
 * a hook that differs from every hook already called for that close (another
 * function or another cbarg) is called once, from the loop, so no state
 * misses the cancellation; setting a hook already called (e.g. the hook
 * re-arming itself) calls nothing.  Each (cancel, cbarg) pair is called at
 * most once per close, and a job that calls aj_job_done before a queued hook
 * runs never gets it.  Returns 0, or -1 with errno EINVAL (job NULL) or
 * ENOMEM; on failure the old hook stays, so the caller learns that the job
 * is not re-armed.
 */
AJ_EXPORT int aj_job_set_cancel(aj_job *job, void (*cancel)(aj_job *, void *), void *cbarg);

/* Takes a reference: the job is not released before the matching unref.
 * Returns job. */
AJ_EXPORT aj_job *aj_job_ref(aj_job *job);
/* Drops a reference; the release (if due) runs from the loop. */
AJ_EXPORT void aj_job_unref(aj_job *job);

/* ------------------------------------------------------------------ */
/* Failures nobody waited for                                          */
/* ------------------------------------------------------------------ */

struct aj_error_info {
    const char *message;   /* "Job processing failed" or "Job closing timed out" */
    aj_job *job;
    int error;             /* the job's error, or ETIMEDOUT */
    const char *const *source_traceback;  /* symbolised spawn stack in debug mode, else NULL */
    size_t source_traceback_len;
};

typedef void (*aj_exception_handler)(aj_scheduler *s, const struct aj_error_info *info, void *arg);

/*
 * Sets the handler of failures nobody waited for: a job that is not explicit
 * finished with an error other than ECANCELED ("Job processing failed"), or a
 * close its owner did not ask for (scheduler close/free, job timeout) found
 * it still running after the close timeout ("Job closing timed out").
 * info and its strings are valid during the call only.  NULL restores the
 * default, which logs one line through aj_log().  The handler may call
 * aj_scheduler_free(s).  Returns 0, or -1 with errno EINVAL (s NULL).
 */
AJ_EXPORT int aj_scheduler_set_exception_handler(aj_scheduler *s, aj_exception_handler h, void *arg);
/* The handler set, or NULL when the default is in use. */
AJ_EXPORT aj_exception_handler aj_scheduler_exception_handler(const aj_scheduler *s);
/*
 * Calls the exception handler with a copy of info (strings included), from
 * the loop; holds a reference on info->job until then.  Errors (ENOMEM, NULL
 * arguments) are logged.
 */
AJ_EXPORT void aj_scheduler_call_exception_handler(aj_scheduler *s, const struct aj_error_info *info);

/*
 * Debug mode: each spawn records its stack so that reports carry
 * source_traceback.  Default: on if env AJ_DEBUG is set and not "0" when the
 * scheduler is created.  Returns 0, or -1 with EINVAL; ENOTSUP if stacks
 * cannot be captured on this platform (the mode is still set).
 */
AJ_EXPORT int aj_scheduler_set_debug(aj_scheduler *s, int on);

typedef void (*aj_log_cb)(int severity, const char *msg);
/* Sets the process-wide log sink (severities are libevent's EVENT_LOG_*).
 * NULL = one line to stderr.  Set it before starting threads. */
AJ_EXPORT void aj_set_log_callback(aj_log_cb cb);
/* Formats a message printf-style and writes it to the log sink. */
AJ_EXPORT void aj_log(int severity, const char *fmt, ...) AJ_PRINTF(2, 3);

/*
 * Replaces the allocator libaj uses (like libevent's event_set_mem_functions).
 * All three must be given, or all NULL to restore malloc/realloc/free (a
 * partial set also restores them, and logs a warning).  Call
 * it before creating any scheduler: memory is freed with the function current
 * at free time.
 */
AJ_EXPORT void aj_set_mem_functions(void *(*malloc_fn)(size_t sz),
                                    void *(*realloc_fn)(void *ptr, size_t sz),
                                    void (*free_fn)(void *ptr));

/*
 * Allocate and free through the functions set above (extras beyond SPEC,
 * for layers built on libaj such as libaj_evhttp, so that one hook accounts
 * for every allocation).  aj_malloc/aj_calloc return NULL with ENOMEM.
 */
AJ_EXPORT void *aj_malloc(size_t sz);
AJ_EXPORT void *aj_calloc(size_t n, size_t sz);
AJ_EXPORT void aj_free(void *ptr);

/* ------------------------------------------------------------------ */
/* Closing                                                             */
/* ------------------------------------------------------------------ */

typedef void (*aj_scheduler_cb)(aj_scheduler *s, void *arg);

/*
 * Closes the scheduler: further spawns fail with ESHUTDOWN and queued
 * aj_spawn_async requests get ESHUTDOWN; pending jobs are discarded (never
 * started; waiters get ECANCELED); active jobs are cancelled and waited for
 * up to the close timeout; each still running then is reported as "Job
 * closing timed out" (unless explicit), its waiters get ETIMEDOUT, and it is
 * let go.  Then cb(s, arg) runs from the loop (cb may be NULL).  Afterwards
 * the size is 0.  Calling it again is harmless: every cb runs once the close
 * completes.  Returns 0, or -1 with EINVAL or ENOMEM.
 */
AJ_EXPORT int aj_scheduler_close(aj_scheduler *s, aj_scheduler_cb cb, void *arg);

/*
 * Graceful drain: waits up to `timeout` (NULL = the wait timeout) until no job
 * is left (pending jobs start as slots free; jobs spawned meanwhile are waited
 * for too), then closes as aj_scheduler_close().  cb runs once the close
 * completed.  Returns 0, or -1 with EINVAL or ENOMEM.
 */
AJ_EXPORT int aj_scheduler_wait_and_close(aj_scheduler *s, const struct timeval *timeout,
                                          aj_scheduler_cb cb, void *arg);

/* ------------------------------------------------------------------ */
/* Beyond aiojobs                                                      */
/* ------------------------------------------------------------------ */

struct aj_stats {
    uint64_t spawned, started, succeeded, failed, cancelled,
             close_timeouts, job_timeouts,
             rejected;        /* spawns refused: queue full or closed */
    size_t   pending_peak;    /* most jobs ever pending at once */
};

/*
 * Copies the scheduler's counters (since its creation) into *out.
 * spawned == succeeded + failed + cancelled + size holds at all times.
 */
AJ_EXPORT void aj_scheduler_get_stats(const aj_scheduler *s, struct aj_stats *out);

/*
 * The longest a job may stay active, counted from its start (default NULL =
 * none).  When it passes, the job is closed (cancel, then the close timeout);
 * its outcome becomes ETIMEDOUT, reported as "Job processing failed" if
 * nobody waits.  Applies to jobs that start after the call.
 */
AJ_EXPORT int aj_scheduler_set_job_timeout(aj_scheduler *s, const struct timeval *tv);
/* Overrides the job timeout for one job (NULL = none), counted from its
 * start, or from this call if it already started. */
AJ_EXPORT int aj_job_set_timeout(aj_job *job, const struct timeval *tv);

typedef void (*aj_job_done_cb)(aj_scheduler *s, aj_job *job, int error, void *result, void *arg);
/*
 * Sets the callback called from the loop once for every job that finishes,
 * after its waiters, with its outcome; jobs discarded before they started are
 * reported with ECANCELED.  Jobs let go by a close are not reported.
 * NULL removes it.  The callback may call aj_scheduler_free(s).  Returns 0,
 * or -1 with errno EINVAL (s NULL).
 */
AJ_EXPORT int aj_scheduler_set_done_callback(aj_scheduler *s, aj_job_done_cb cb, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* AJ_AJ_H */
