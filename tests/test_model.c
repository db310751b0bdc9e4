/*
 * test_model.c -- a randomized model test of the core (issue 6, part 2).
 *
 * A seeded driver performs long random sequences of API operations on a
 * real event_base: spawn, spawn_async (with and without timeout), jobs
 * finishing with random errors (and once more, which must be ignored),
 * wait and close with short random timeouts, limits up and down, job
 * timeouts (the scheduler's and a job's own), set_cancel, ref/unref,
 * exception reports, names, scheduler close /
 * wait_and_close / free at random points (free also from the close
 * callback), interleaved with non-blocking loop passes and passes where
 * time goes by so that timers fire.  Callbacks themselves spawn, close,
 * wait on and finish other jobs (the job they belong to included).
 *
 * A small reference model of every job, waiter, request, report and
 * scheduler is checked after every step and in every callback:
 *  - size == active + pending == the jobs iteration walks, in spawn order,
 *    every active job admitted before every pending one, no free slot while
 *    jobs are pending, the state getters consistent with each other;
 *  - active <= limit and pending <= pending limit unless lowered since;
 *  - jobs start in the order they were admitted (FIFO), after their spawn
 *    callback, never after their own close or their scheduler's;
 *  - release exactly once per admitted job, never for a refused spawn,
 *    only after the job finished, its waiters ran and its refs dropped;
 *  - no callback runs inside an aj_* call (except inside
 *    aj_scheduler_free, which runs them synchronously), and none after
 *    aj_scheduler_free returned but the release of jobs it let go;
 *  - every waiter, close, spawn and scheduler-close callback exactly once,
 *    with an outcome the job's history allows; a timed-out wait closed the
 *    job; a drained wait_and_close closes;
 *  - on virtual time, timeouts are kept: a wait or close with a timeout is
 *    answered by the time its timeout (for a wait: plus the close timeout
 *    its expiry starts) has passed, and a job with a job timeout is closed
 *    once it has, give or take a clock tick (see check_timely);
 *  - stats: spawned == succeeded + failed + cancelled + size,
 *    started <= spawned, and each counter equal to the model's (with job
 *    timeouts in play an outcome may become ETIMEDOUT: then only the sum
 *    of succeeded, failed and cancelled is);
 *  - the exception handler only for jobs nobody waited for, the done
 *    callback once per finished job, after its waiters;
 *  - after the sequence, every byte libaj allocated is freed.
 *
 * Three test cases.  virtual_time runs many sequences on virtual time: the
 * monotonic clocks stand still and the driver moves them (see "Virtual
 * time"), so sequences are fast and exactly reproducible.  real_time runs
 * fewer on real time, with short blocking loop passes.  failing_allocations
 * runs sequences on virtual time where 2% of libaj's allocations fail (a
 * seeded PRNG decides): calls may then fail with ENOMEM, and must take
 * nothing; documented fallbacks may only be logged; every check above
 * still holds, leaks included.
 *
 * Environment: AJ_MODEL_SEED (default 0x5eed), AJ_MODEL_SEQUENCES,
 * AJ_MODEL_STEPS (default 200), AJ_MODEL_REALTIME=1 (real time in every
 * case), AJ_MODEL_OOM=<per mille> (allocation failures), AJ_MODEL_TRACE=1
 * (print every operation and callback); AJ_UNDER_VALGRIND (set by make
 * check-valgrind) runs a twentieth of the sequences.  CK_RUN_CASE picks a
 * case.
 * Sequence i+1 is seeded with a hash of sequence i's seed, so a failing
 * sequence runs alone with AJ_MODEL_SEED=<its seed> AJ_MODEL_SEQUENCES=1.
 * On failure the seed is printed with the shortest failing prefix found by
 * bisection on the step count (each try in a child process when fork is
 * usable, so crashes are bisected too).  fuzz_model.c drives the same code
 * from libFuzzer's input.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <aj/aj.h>

#ifndef AJ_MODEL_FUZZ
#include <check.h>
#endif

/* ------------------------------------------------------------------ */
/* Failing a sequence                                                  */
/* ------------------------------------------------------------------ */

static jmp_buf *fail_jmp;           /* the running sequence, NULL outside */
static char fail_msg[1024];
static long cur_step;               /* -1 in teardown */

static void model_fail(int line, const char *cond, const char *fmt, ...) AJ_PRINTF(3, 4);
static void model_fail(int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    int n;

    n = snprintf(fail_msg, sizeof fail_msg, "step %ld, line %d: ", cur_step, line);
    va_start(ap, fmt);
    vsnprintf(fail_msg + n, sizeof fail_msg - (size_t)n, fmt, ap);
    va_end(ap);
    n = (int)strlen(fail_msg);
    snprintf(fail_msg + n, sizeof fail_msg - (size_t)n, " [%s]", cond);
    if (!fail_jmp) {
        fprintf(stderr, "model: %s\n", fail_msg);
        abort();
    }
    longjmp(*fail_jmp, 1);
}

#define MCHECK(cond, ...)                                    \
    do {                                                     \
        if (!(cond))                                         \
            model_fail(__LINE__, #cond, __VA_ARGS__);        \
    } while (0)

/* ------------------------------------------------------------------ */
/* Virtual time                                                        */
/* ------------------------------------------------------------------ */

/*
 * libaj stamps deadlines with the coarse monotonic clock (4 ms ticks here)
 * and libevent waits on the monotonic clock, so timers need time to pass.
 * Sleeping makes a sequence slow and its timers race the driver.  So the
 * test interposes clock_gettime(): while a sequence runs on virtual time,
 * the monotonic clocks stand still and move only when the driver lets
 * time pass (then a non-blocking loop pass fires what is due).  Sequences
 * are then fast and deterministic, and bisection reproduces them exactly.
 * Sequences on real time (the second test case) really block instead.
 */
#define VCLOCKS 8
static int vclock_on;
static struct timespec vclock_base[VCLOCKS];
static int64_t vclock_offset_ns;

static int vclock_virtual(clockid_t id)
{
    return id == CLOCK_MONOTONIC || id == CLOCK_MONOTONIC_COARSE ||
           id == CLOCK_MONOTONIC_RAW || id == CLOCK_BOOTTIME;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (vclock_on && vclock_virtual(id) && (unsigned)id < VCLOCKS) {
        int64_t ns = (int64_t)vclock_base[id].tv_sec * 1000000000 + vclock_base[id].tv_nsec +
                     vclock_offset_ns;
        ts->tv_sec = (time_t)(ns / 1000000000);
        ts->tv_nsec = (long)(ns % 1000000000);
        return 0;
    }
    return (int)syscall(SYS_clock_gettime, id, ts);
}

static void vclock_freeze(void)
{
    clockid_t id;

    for (id = 0; id < VCLOCKS; id++)
        if (vclock_virtual(id))
            syscall(SYS_clock_gettime, id, &vclock_base[id]);
    vclock_offset_ns = 0;
    vclock_on = 1;
}

static void vclock_advance_us(long us)
{
    vclock_offset_ns += (int64_t)us * 1000;
}

/* Virtual time since the sequence began, in microseconds. */
static int64_t vclock_now_us(void)
{
    return vclock_offset_ns / 1000;
}

#ifndef AJ_MODEL_FUZZ
static void probe_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Whether libevent sees the interposed clock (it should: the executable's
 * definition comes first); if not, every sequence runs on real time. */
static int vclock_works(void)
{
    struct event_base *b;
    struct event *ev;
    struct timeval tv = { 5, 0 };
    int fired = 0;

    vclock_freeze();
    b = event_base_new();
    ev = evtimer_new(b, probe_cb, &fired);
    evtimer_add(ev, &tv);
    vclock_advance_us(6000000);
    event_base_loop(b, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    event_free(ev);
    event_base_free(b);
    vclock_on = 0;
    return fired;
}
#endif

/* ------------------------------------------------------------------ */
/* Counting allocator, log sink                                        */
/* ------------------------------------------------------------------ */

static long live;
static unsigned oom_permille;       /* allocations that fail, per 1000 */
static uint64_t oom_state;          /* their own PRNG: deterministic */
static long oom_fails, oom_logs;

static int oom_now(void)
{
    uint64_t z;

    if (!oom_permille)
        return 0;
    z = (oom_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    if ((z ^ (z >> 31)) % 1000 >= oom_permille)
        return 0;
    oom_fails++;
    return 1;
}

static void *c_malloc(size_t n)
{
    void *p = oom_now() ? NULL : malloc(n);
    if (p)
        live++;
    return p;
}

static void *c_realloc(void *p, size_t n)
{
    void *q = oom_now() ? NULL : realloc(p, n);
    if (q && !p)
        live++;
    return q;
}

static void c_free(void *p)
{
    if (p)
        live--;
    free(p);
}

static char bad_log[256];           /* first warning or error libaj logged */
static int job_timeout_lost;        /* the job about to start runs without one */

static void log_cb(int severity, const char *msg)
{
    if (oom_permille && strstr(msg, "out of memory")) {
        oom_logs++;                 /* a documented fallback */
        /* logged right before that job's start() (check_timely) */
        if (strstr(msg, "it runs without its job timeout"))
            job_timeout_lost = 1;
        return;
    }
    if (severity >= EVENT_LOG_WARN && !bad_log[0])
        snprintf(bad_log, sizeof bad_log, "%s", msg);
}

/* A call failed: fine only if allocations may fail and it said ENOMEM. */
static int oom_ok(int e)
{
    return oom_permille && e == ENOMEM;
}

/* ------------------------------------------------------------------ */
/* Random numbers: splitmix64, or libFuzzer's bytes while they last     */
/* ------------------------------------------------------------------ */

struct rng {
    uint64_t s;
    const uint8_t *data;
    size_t len, pos;
};

static uint64_t mix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#ifndef AJ_MODEL_FUZZ
static uint64_t next_seed(uint64_t seed)
{
    return mix64(&seed);
}
#endif

static unsigned below(struct rng *r, unsigned n)
{
    if (r->data && r->pos < r->len)
        return r->data[r->pos++] % n;
    return (unsigned)(mix64(&r->s) % n);
}

static int chance(struct rng *r, unsigned percent)
{
    return below(r, 100) < percent;
}

/* ------------------------------------------------------------------ */
/* The model                                                           */
/* ------------------------------------------------------------------ */

#define MJOB_MAGIC 0x6d6a6f62u

enum hook { H_HONOUR, H_LATER, H_STUBBORN };

struct msched;

struct mjob {
    unsigned magic;
    int id;
    struct msched *ms;
    aj_job *job;                    /* known once spawned / announced */
    uint64_t seq;                   /* admission order in its scheduler */
    uint8_t async, req_pending, req_timeout;
    uint8_t admitted;               /* aj_spawn gave it, or its spawn cb did */
    uint8_t refused;                /* the spawn failed: never released */
    uint8_t started, done, done_in;  /* done_in: finished while in the sched */
    uint8_t released, left_counted, explicit_, close_called, may_expire;
    uint8_t closed_unstarted;       /* closed before it started: never starts */
    uint8_t orphan_ok;              /* may be released after its sched's free */
    uint8_t cancel_requested, finish_in_start, hook, hook_null;
    uint8_t jt;                     /* a job timeout may apply: outcome ETIMEDOUT */
    uint8_t jt_set;                 /* aj_job_set_timeout before start: 1 a value, 2 none */
    uint8_t jt_watch;               /* check_timely: its job timeout runs */
    int jt_late;
    int64_t jt_set_us, jt_due_us;
    int start_err, done_err;
    int outcome;                    /* as the done callback reported it */
    int refs, waiters_owed, cancels, reported, done_cbs;
    int report_refs;                /* undelivered reports naming it */
    int in_cb;                      /* callbacks of it running: the library
                                     * holds it (SPEC 3.6: released after) */
    int token;                      /* &token is the job's result */
};

enum { W_WAIT, W_CLOSE };
/* What check_timely watches for: nothing, a wait's expiry, the answer. */
enum timely_watch { TIMELY_OFF, TIMELY_EXPIRY, TIMELY_ANSWER };

struct mwait {
    struct mjob *j;
    int kind, had_timeout, calls;
    int before_finish;              /* registered while the job ran or waited */
    int watch;                      /* check_timely: enum timely_watch */
    int late_passes;
    int64_t due_us;                 /* virtual time the watched step is due */
};

struct mcloser {
    struct msched *ms;
    int calls, free_in_cb;
};

/* An aj_scheduler_call_exception_handler report: it holds a reference on
 * its job until delivered (or dropped by its scheduler's free). */
struct mreport {
    struct msched *ms;
    struct mjob *j;
    int over;
};

struct msched {
    aj_scheduler *s;
    int id;
    uint8_t freeing, freed, close_called, drain_called, free_in_cb_set;
    uint8_t limit_lowered, plimit_lowered, has_wait_tv, has_close_tv;
    uint8_t job_timeout;            /* the scheduler has one */
    uint8_t jt_used;                /* some job had one: outcomes may differ */
    int64_t wait_us, close_us;      /* the timeouts, when has_*_tv */
    int64_t job_timeout_us;         /* when job_timeout */
    size_t limit, plimit;
    uint64_t next_seq, last_start_seq;
    /* the model's stats */
    uint64_t spawned, started, succeeded, failed, cancelled, rejected;
    int reqs_owed, closers_owed;
    long idle_since;                /* loop passes when its drain found it empty */
};

#define MAX_SCHEDS 64

static struct {
    struct event_base *base;
    struct event *wake;
    struct rng rng, cbrng;
    struct mjob **jobs;
    size_t njobs, capj;
    struct mwait **waits;
    size_t nwaits, capw;
    struct mcloser **closers;
    size_t nclosers, capc;
    struct mreport **reports;
    size_t nreports, capr;
    struct msched *sch[MAX_SCHEDS];
    int nsch;
    struct mjob **cand;             /* scratch for picking */
    long ops, callbacks, passes;
    int trace;
    int realtime;                   /* sleep for real instead of virtual time */
} M;

struct totals;

/* What the sequences got to exercise (printed at the end). */
enum {
    C_WAIT_TIMEOUT, C_CLOSE_TIMEOUT, C_SPAWN_TIMEOUT, C_LET_GO, C_FREE_LET_GO,
    C_CLOSE_TIMED_OUT_REPORT, C_FAILED_REPORT, C_DISCARDED, C_FREE_IN_CLOSE_CB, C_ORPHANS,
    C_JOB_TIMEOUTS, C_TIMELY, C_FREE_IN_CB, C_REARM, C_NCOUNTERS
};
#ifndef AJ_MODEL_FUZZ
static const char *const counter_names[C_NCOUNTERS] = {
    "waits timed out", "closes timed out", "spawn requests timed out", "jobs let go by a close",
    "jobs let go by free", "close timeouts reported", "failures reported", "jobs discarded",
    "frees from a close callback", "jobs orphaned by free", "job timeouts fired",
    "timeouts kept on time", "frees from another callback", "cancel hooks re-armed inside"
};
#endif
static struct totals {
    long ops, callbacks, counters[C_NCOUNTERS];
} totals_local, *tot = &totals_local;  /* shared with children when forking */
#define counters (tot->counters)

#define TRACE(...)                                              \
    do {                                                        \
        if (M.trace) {                                          \
            fprintf(stderr, "  [%ld] ", cur_step);              \
            fprintf(stderr, __VA_ARGS__);                       \
            fputc('\n', stderr);                                \
        }                                                       \
    } while (0)

static void *xcalloc(size_t n)
{
    void *p = calloc(1, n);
    if (!p)
        abort();
    return p;
}

#define PUSH(arr, n, cap, item)                                         \
    do {                                                                \
        if ((n) == (cap)) {                                             \
            (cap) = (cap) ? 2 * (cap) : 64;                             \
            (arr) = realloc((arr), (cap) * sizeof *(arr));              \
            if (!(arr))                                                 \
                abort();                                                \
        }                                                               \
        (arr)[(n)++] = (item);                                          \
    } while (0)

/* ---- no re-entrancy: a depth counter around every aj_* call ---- */

static int inside_api;              /* aj_* calls in progress in this frame */
static int free_depth = -1;         /* inside_api inside aj_scheduler_free */

#define API(expr) __extension__({ inside_api++; __typeof__(expr) r_ = (expr); inside_api--; r_; })
#define APIV(expr) do { inside_api++; (expr); inside_api--; } while (0)

struct cbframe {
    int api, fdepth;
};

static struct cbframe cb_begin(const char *what)
{
    struct cbframe f;

    MCHECK(inside_api == 0 || inside_api == free_depth, "%s ran inside an aj_* call", what);
    f.api = inside_api;
    f.fdepth = free_depth;
    inside_api = 0;
    free_depth = -1;
    M.callbacks++;
    return f;
}

static void cb_end(struct cbframe f)
{
    inside_api = f.api;
    free_depth = f.fdepth;
}

/* ---- helpers ---- */

static struct mjob *rec_of(aj_job *job)
{
    struct mjob *j;

    MCHECK(job != NULL, "NULL job handed to a callback");
    j = aj_job_arg(job);
    MCHECK(j && j->magic == MJOB_MAGIC, "job %p has a foreign arg", (void *)job);
    return j;
}

static int contained(const struct mjob *j)
{
    return aj_job_scheduler(j->job) != NULL;
}

static int live_job(const struct mjob *j)
{
    return j->job && !j->released;
}

static int let_go(const struct mjob *j)
{
    return j->started && !j->done_in && !contained(j);
}

static int pick_err(struct rng *r)
{
    static const int errs[] = { 0, 0, 0, ECANCELED, EIO, ENOENT };
    return errs[below(r, sizeof errs / sizeof errs[0])];
}

static struct timeval *pick_tv(struct rng *r, struct timeval *tv, unsigned null_pct, unsigned max_ms)
{
    if (chance(r, null_pct))
        return NULL;
    tv->tv_sec = 0;
    tv->tv_usec = (suseconds_t)below(r, max_ms + 1) * 1000;
    return tv;
}

/* A live scheduler: the newest mostly.  `freeing` ones only if allowed
 * (callbacks inside aj_scheduler_free may still name it). */
static struct msched *pick_sched(struct rng *r, int allow_freeing)
{
    struct msched *c[MAX_SCHEDS];
    int i, n = 0;

    for (i = 0; i < M.nsch; i++)
        if (!M.sch[i]->freed && (allow_freeing || !M.sch[i]->freeing))
            c[n++] = M.sch[i];
    if (!n)
        return NULL;
    return chance(r, 75) ? c[n - 1] : c[below(r, (unsigned)n)];
}

typedef int (*job_pred)(const struct mjob *j);

static struct mjob *pick_job(struct rng *r, job_pred pred)
{
    size_t i, n = 0;

    M.cand = realloc(M.cand, (M.njobs + 1) * sizeof *M.cand);
    if (!M.cand)
        abort();
    for (i = 0; i < M.njobs; i++)
        if (pred(M.jobs[i]))
            M.cand[n++] = M.jobs[i];
    return n ? M.cand[below(r, (unsigned)n)] : NULL;
}

static int p_live(const struct mjob *j) { return live_job(j); }
static int p_running(const struct mjob *j) { return live_job(j) && j->started && !j->done; }
static int p_cancel_requested(const struct mjob *j) { return p_running(j) && j->cancel_requested; }
static int p_refd(const struct mjob *j) { return live_job(j) && j->refs > 0; }
static int p_let_go(const struct mjob *j) { return live_job(j) && j->started && !j->done_in && !contained(j); }

/* ------------------------------------------------------------------ */
/* Callbacks                                                           */
/* ------------------------------------------------------------------ */

static void inner_action(struct rng *r);
static void model_done(struct mjob *j, int err);
static void do_free(struct msched *ms);

/*
 * Revision 2: aj_scheduler_free from any callback of the scheduler or of
 * its jobs (SPEC 3.6).  Now and then a callback frees its own scheduler
 * (not from inside aj_scheduler_free, which is running it already); do_free
 * then checks what free promises, and every later callback of it is
 * checked against ms->freed as after any free.
 */
static void maybe_free_here(struct msched *ms)
{
    if (ms->freed || ms->freeing || !chance(&M.cbrng, 2))
        return;
    counters[C_FREE_IN_CB]++;
    do_free(ms);
}

static void m_start(aj_job *job, void *arg)
{
    struct mjob *j = arg;
    struct msched *ms = j->ms;
    struct cbframe f = cb_begin("start");

    MCHECK(j->magic == MJOB_MAGIC && job == (j->job ? j->job : job), "start: wrong job");
    MCHECK(!ms->freed && !ms->freeing, "j%d: start after or inside aj_scheduler_free", j->id);
    MCHECK(j->admitted, "j%d: start before its spawn callback (or of a refused job)", j->id);
    MCHECK(!j->started, "j%d: start called twice", j->id);
    MCHECK(!j->closed_unstarted, "j%d: started although closed before its start", j->id);
    MCHECK(!aj_scheduler_closed(ms->s), "j%d: started after its scheduler closed", j->id);
    MCHECK(j->seq > ms->last_start_seq, "j%d: started out of FIFO order (seq %llu after %llu)",
           j->id, (unsigned long long)j->seq, (unsigned long long)ms->last_start_seq);
    MCHECK(aj_job_active(job) && contained(j), "j%d: start of a job not active", j->id);
    ms->last_start_seq = j->seq;
    j->started = 1;
    ms->started++;
    /* the job timeout counts from now: the job's own, else the scheduler's
     * (unless there was no memory to arm it) */
    if (!M.realtime && !job_timeout_lost && (j->jt_set == 1 || (!j->jt_set && ms->job_timeout))) {
        j->jt_watch = 1;
        j->jt_due_us = vclock_now_us() + (j->jt_set == 1 ? j->jt_set_us : ms->job_timeout_us);
    }
    job_timeout_lost = 0;
    TRACE("start j%d", j->id);
    j->in_cb++;
    if (j->finish_in_start)
        model_done(j, j->start_err);
    else
        inner_action(&M.cbrng);
    maybe_free_here(ms);
    j->in_cb--;
    cb_end(f);
}

static void m_cancel(aj_job *job, void *arg)
{
    struct mjob *j = arg;
    struct cbframe f = cb_begin("cancel");

    MCHECK(job == j->job, "cancel: wrong job");
    MCHECK(!j->ms->freed, "j%d: cancel after aj_scheduler_free", j->id);
    MCHECK(j->started && !j->done, "j%d: cancel of a job not running", j->id);
    MCHECK(!j->hook_null, "j%d: cancel hook called though removed", j->id);
    /* Every hook of the model is the pair (m_cancel, j), and a job has one
     * close: each pair at most once per close (SPEC 3.4). */
    MCHECK(j->cancels == 0, "j%d: cancel hook called %d times", j->id, j->cancels + 1);
    j->cancels++;
    TRACE("cancel j%d (hook %d)", j->id, j->hook);
    j->in_cb++;
    if (chance(&M.cbrng, 30)) {
        /* a state machine re-arming its hook inside it: never called again */
        int rc = API(aj_job_set_cancel(job, m_cancel, j));
        MCHECK(rc == 0 || oom_ok(errno), "j%d: re-arm failed: %s", j->id, strerror(errno));
        counters[C_REARM]++;
        TRACE("cancel j%d re-arms itself -> %d", j->id, rc);
    }
    switch (j->hook) {
    case H_HONOUR:
        model_done(j, ECANCELED);
        break;
    case H_LATER:
        j->cancel_requested = 1;
        break;
    default:
        break;
    }
    inner_action(&M.cbrng);
    maybe_free_here(j->ms);
    j->in_cb--;
    cb_end(f);
}

static void m_release(void *arg)
{
    struct mjob *j = arg;
    struct msched *ms = j->ms;
    struct cbframe f = cb_begin("release");

    TRACE("release j%d", j->id);
    MCHECK(j->magic == MJOB_MAGIC, "release: foreign arg");
    MCHECK(j->admitted && !j->refused, "j%d: release of a job never spawned", j->id);
    MCHECK(!j->released, "j%d: released twice", j->id);
    MCHECK(!j->started || j->done, "j%d: released while running", j->id);
    MCHECK(j->refs == 0, "j%d: released with %d references held", j->id, j->refs);
    MCHECK(j->report_refs == 0, "j%d: released while a report holds it", j->id);
    MCHECK(j->waiters_owed == 0, "j%d: released before %d waiter(s) ran", j->id, j->waiters_owed);
    MCHECK(!ms->freed || j->orphan_ok, "j%d: released after aj_scheduler_free", j->id);
    if (!ms->freed && !ms->freeing) {
        if (!j->left_counted) {                 /* discarded, unseen */
            MCHECK(!j->started, "j%d: left without the model seeing it", j->id);
            j->left_counted = 1;
            ms->cancelled++;
            counters[C_DISCARDED]++;
        }
        if (j->done_in || !j->started)
            MCHECK(j->done_cbs == 1, "j%d: done callback ran %d times", j->id, j->done_cbs);
        if (j->done_in && j->outcome != 0 && j->outcome != ECANCELED && !j->explicit_)
            MCHECK(j->reported == 1, "j%d: failure (%d) reported %d times", j->id, j->outcome,
                   j->reported);
    }
    j->released = 1;
    maybe_free_here(ms);
    cb_end(f);
}

static const struct aj_job_ops ops_cancel = { "model", m_start, m_cancel, m_release };
static const struct aj_job_ops ops_nocancel = { NULL, m_start, NULL, m_release };

/* What a waiter may get, given what the model knows of the job. */
static void check_outcome(const struct mwait *w, int err, void *result)
{
    const struct mjob *j = w->j;
    const struct msched *ms = j->ms;

    switch (err) {
    case ESHUTDOWN:
        MCHECK(ms->freeing && j->started && !j->done_in,
               "j%d: ESHUTDOWN though not let go by aj_scheduler_free", j->id);
        break;
    case ETIMEDOUT:
        MCHECK(w->had_timeout || (j->started && !j->done_in) || (j->jt && j->done_in),
               "j%d: ETIMEDOUT without a timeout and not let go", j->id);
        break;
    case ECANCELED:
        /* a close reports a discarded job as 0, but aj_scheduler_free gives
         * every waiter of a discarded job ECANCELED (SPEC 3.6) */
        MCHECK(w->kind == W_WAIT || (ms->freeing && !j->started),
               "j%d: a close callback got ECANCELED", j->id);
        MCHECK(!j->started || (j->done_in && j->done_err == ECANCELED),
               "j%d: ECANCELED but it %s", j->id, j->done_in ? "finished otherwise" : "runs");
        break;
    case 0:
        if (w->kind == W_CLOSE)
            MCHECK(!j->started || (j->done_in && (j->done_err == 0 || j->done_err == ECANCELED)),
                   "j%d: close got 0 but the job %s (%d)", j->id,
                   j->done_in ? "failed" : "runs", j->done_err);
        else
            MCHECK(j->done_in && j->done_err == 0, "j%d: wait got 0 but the job %s (%d)", j->id,
                   j->done_in ? "failed" : "has not finished", j->done_err);
        break;
    default:
        MCHECK(j->done_in && err == j->done_err, "j%d: waiter got %d, the job %s %d", j->id, err,
               j->done_in ? "finished with" : "has not finished", j->done_err);
        break;
    }
    if (!j->done_in)
        MCHECK(result == NULL, "j%d: a result from a job that has none", j->id);
    else if (err != ETIMEDOUT && err != ESHUTDOWN)
        MCHECK(result == &j->token, "j%d: waiter got the wrong result", j->id);
    /* a timed-out wait or close gets no result, even if the job then
     * finished with one (unless ETIMEDOUT is the job's own outcome) */
    if ((err == ETIMEDOUT && !j->jt) || err == ESHUTDOWN)
        MCHECK(result == NULL, "j%d: a result with %s", j->id, strerror(err));
}

static void m_wait_cb(aj_job *job, int err, void *result, void *cbarg)
{
    struct mwait *w = cbarg;
    struct mjob *j = w->j;
    struct cbframe f = cb_begin(w->kind == W_WAIT ? "wait callback" : "close callback");

    TRACE("%s cb j%d err %d", w->kind == W_WAIT ? "wait" : "close", j->id, err);
    MCHECK(w->calls == 0, "j%d: waiter called twice", j->id);
    w->calls++;
    MCHECK(job == j->job && !j->released, "j%d: waiter for a wrong or released job", j->id);
    MCHECK(!j->ms->freed, "j%d: waiter after aj_scheduler_free", j->id);
    j->waiters_owed--;
    check_outcome(w, err, result);
    if (err == ETIMEDOUT) {
        /* a wait that times out closes the job (aiojobs); a close that
         * times out leaves it closed */
        MCHECK(!contained(j) || aj_job_closed(j->job), "j%d: timed out but not closed", j->id);
        counters[w->kind == W_WAIT ? C_WAIT_TIMEOUT : C_CLOSE_TIMEOUT]++;
        counters[C_TIMELY] += w->watch != TIMELY_OFF;
    }
    j->in_cb++;
    inner_action(&M.cbrng);
    maybe_free_here(j->ms);
    j->in_cb--;
    cb_end(f);
}

static void m_spawn_cb(aj_scheduler *s, aj_job *job, int err, void *cbarg)
{
    struct mjob *j = cbarg;
    struct msched *ms = j->ms;
    struct cbframe f = cb_begin("spawn callback");

    TRACE("spawn cb j%d job %p err %d", j->id, (void *)job, err);
    MCHECK(s == ms->s && !ms->freed, "j%d: spawn callback after free or for another scheduler",
           j->id);
    MCHECK(j->req_pending, "j%d: spawn callback twice", j->id);
    j->req_pending = 0;
    ms->reqs_owed--;
    if (job) {
        MCHECK(err == 0, "j%d: spawn callback with a job and error %d", j->id, err);
        MCHECK(!ms->freeing, "j%d: aj_scheduler_free handed out a job", j->id);
        MCHECK(aj_job_arg(job) == j && !j->started, "j%d: spawned job is not ours or started",
               j->id);
        j->job = job;
        j->admitted = 1;
        ms->spawned++;
        if (!contained(j)) {                    /* discarded by a close */
            MCHECK(aj_scheduler_closed(s), "j%d: handed out already gone", j->id);
            j->left_counted = 1;
            j->closed_unstarted = 1;
            ms->cancelled++;
            counters[C_DISCARDED]++;
        }
        j->in_cb++;
        inner_action(&M.cbrng);
        maybe_free_here(ms);
        j->in_cb--;
    } else {
        MCHECK(err == ETIMEDOUT || err == ESHUTDOWN, "j%d: spawn callback error %d", j->id, err);
        MCHECK(err != ETIMEDOUT || j->req_timeout, "j%d: ETIMEDOUT without a timeout", j->id);
        counters[C_SPAWN_TIMEOUT] += err == ETIMEDOUT;
        MCHECK(err != ESHUTDOWN || aj_scheduler_closed(s), "j%d: ESHUTDOWN while open", j->id);
        j->refused = 1;
        ms->rejected++;
        maybe_free_here(ms);
    }
    cb_end(f);
}

static void m_closer_cb(aj_scheduler *s, void *arg);

static void m_exc(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    struct msched *ms = arg;
    struct cbframe f = cb_begin("exception handler");
    struct mjob *j;

    MCHECK(s == ms->s && !ms->freed && !ms->freeing, "exception handler in or after free");
    TRACE("exception handler: %s job %p err %d", info->message, (void *)info->job, info->error);
    if (strcmp(info->message, "model") == 0) {
        struct mjob *rj = info->job ? rec_of(info->job) : NULL;
        size_t i;
        for (i = 0; i < M.nreports; i++) {
            struct mreport *p = M.reports[i];
            if (p->ms == ms && p->j == rj && !p->over)
                break;
        }
        MCHECK(i < M.nreports, "a report nobody made (or delivered twice)");
        M.reports[i]->over = 1;
        if (rj) {
            MCHECK(!rj->released, "j%d: report of a released job", rj->id);
            rj->report_refs--;
        }
    } else {
        j = rec_of(info->job);
        MCHECK(!j->released, "j%d: report of a released job", j->id);
        MCHECK(!j->explicit_, "j%d: explicit job reported (%s)", j->id, info->message);
        if (strcmp(info->message, "Job processing failed") == 0) {
            MCHECK(j->done_in && ((info->error == j->done_err && j->done_err != 0 &&
                                   j->done_err != ECANCELED) ||
                                  (j->jt && info->error == ETIMEDOUT)),
                   "j%d: reported failure %d, job finished %d with %d", j->id, info->error,
                   j->done_in, j->done_err);
            MCHECK(++j->reported == 1, "j%d: failure reported twice", j->id);
            counters[C_FAILED_REPORT]++;
        } else {
            MCHECK(strcmp(info->message, "Job closing timed out") == 0, "unknown report %s",
                   info->message);
            MCHECK(info->error == ETIMEDOUT && j->started && !j->done_in,
                   "j%d: close timeout reported for a job not running", j->id);
            counters[C_CLOSE_TIMED_OUT_REPORT]++;
        }
    }
    {
        struct mjob *hj = info->job ? rec_of(info->job) : NULL;
        if (hj)
            hj->in_cb++;
        inner_action(&M.cbrng);
        maybe_free_here(ms);
        if (hj)
            hj->in_cb--;
    }
    cb_end(f);
}

static void m_done_cb(aj_scheduler *s, aj_job *job, int err, void *result, void *arg)
{
    struct msched *ms = arg;
    struct cbframe f = cb_begin("done callback");
    struct mjob *j = rec_of(job);

    MCHECK(s == ms->s && j->ms == ms && !ms->freed && !ms->freeing, "done callback in free");
    MCHECK(!j->released, "j%d: done callback for a released job", j->id);
    MCHECK(++j->done_cbs == 1, "j%d: done callback twice", j->id);
    j->outcome = err;
    {
        size_t i;
        for (i = 0; i < M.nwaits; i++)
            MCHECK(M.waits[i]->j != j || !M.waits[i]->before_finish || M.waits[i]->calls == 1,
                   "j%d: done callback before its waiters", j->id);
    }
    if (j->started)
        MCHECK(j->done_in && (err == j->done_err || (j->jt && err == ETIMEDOUT)) &&
                   result == &j->token,
               "j%d: done callback with %d, job finished %d with %d", j->id, err, j->done_in,
               j->done_err);
    else
        MCHECK(err == ECANCELED && !result, "j%d: discarded job reported %d", j->id, err);
    j->in_cb++;
    maybe_free_here(ms);
    j->in_cb--;
    cb_end(f);
}

/* ------------------------------------------------------------------ */
/* Operations (the driver's, and callbacks' own)                       */
/* ------------------------------------------------------------------ */

static struct mjob *new_job(struct msched *ms, struct rng *r, int async)
{
    static const uint8_t hooks[] = { H_HONOUR, H_HONOUR, H_LATER, H_STUBBORN };
    struct mjob *j = xcalloc(sizeof *j);

    j->magic = MJOB_MAGIC;
    j->id = (int)M.njobs;
    j->ms = ms;
    j->async = (uint8_t)async;
    j->seq = ++ms->next_seq;
    j->finish_in_start = chance(r, 25);
    j->start_err = pick_err(r);
    j->hook = hooks[below(r, 4)];
    j->hook_null = chance(r, 20);
    j->jt = ms->job_timeout;
    PUSH(M.jobs, M.njobs, M.capj, j);
    return j;
}

static void model_done(struct mjob *j, int err)
{
    struct msched *ms = j->ms;
    int in = contained(j);

    TRACE("done j%d err %d%s", j->id, err, in ? "" : " (let go)");
    APIV(aj_job_done(j->job, err, &j->token));
    M.ops++;
    j->done = 1;
    j->done_err = err;
    MCHECK(!contained(j), "j%d: still in its scheduler after aj_job_done", j->id);
    if (in) {
        j->done_in = 1;
        j->left_counted = 1;
        if (err == 0)
            ms->succeeded++;
        else if (err == ECANCELED)
            ms->cancelled++;
        else
            ms->failed++;
    } else if (!j->left_counted) {              /* let go: counted then */
        j->left_counted = 1;
        if (!ms->freed && !ms->freeing) {
            ms->cancelled++;
            counters[C_LET_GO]++;
        }
    }
}

static void op_spawn(struct rng *r)
{
    struct msched *ms = pick_sched(r, 1);
    struct mjob *j;
    size_t act, pend;
    int closed, room;
    aj_job *job;

    if (!ms)
        return;
    closed = aj_scheduler_closed(ms->s);
    act = aj_scheduler_active_count(ms->s);
    pend = aj_scheduler_pending_count(ms->s);
    room = ms->limit == 0 || act < ms->limit || ms->plimit == 0 || pend < ms->plimit;
    j = new_job(ms, r, 0);
    job = API(aj_spawn(ms->s, j->hook_null ? &ops_nocancel : &ops_cancel, j));
    M.ops++;
    TRACE("spawn j%d on s%d -> %s", j->id, ms->id, job ? "ok" : strerror(errno));
    if (job) {
        MCHECK(!closed, "j%d: spawned on a closed scheduler", j->id);
        MCHECK(aj_job_arg(job) == j, "aj_job_arg");
        j->job = job;
        j->admitted = 1;
        ms->spawned++;
        MCHECK(!j->started, "j%d: start ran inside aj_spawn", j->id);
        if (ms->limit == 0 || act < ms->limit)
            MCHECK(aj_job_active(job), "j%d: a free slot but not active", j->id);
        else
            MCHECK(aj_job_pending(job), "j%d: no free slot but not pending", j->id);
    } else {
        int e = errno;
        j->refused = 1;
        if (closed) {
            MCHECK(e == ESHUTDOWN, "spawn on a closed scheduler: %s", strerror(e));
        } else if (oom_ok(e)) {
            return;                 /* refused, not counted as rejected */
        } else {
            MCHECK(e == EAGAIN, "spawn failed with %s", strerror(e));
            MCHECK(!room || ms->reqs_owed > 0, "EAGAIN with room and no request ahead");
        }
        ms->rejected++;
    }
}

static void op_spawn_async(struct rng *r)
{
    struct msched *ms = pick_sched(r, 1);
    struct timeval tvb, *tv;
    struct mjob *j;
    int closed, rc;

    if (!ms)
        return;
    closed = aj_scheduler_closed(ms->s);
    tv = pick_tv(r, &tvb, 50, 4);
    j = new_job(ms, r, 1);
    j->req_timeout = tv != NULL;
    rc = API(aj_spawn_async(ms->s, j->hook_null ? &ops_nocancel : &ops_cancel, j, tv,
                            m_spawn_cb, j));
    M.ops++;
    TRACE("spawn_async j%d on s%d timeout %ld ms -> %d", j->id, ms->id,
          tv ? (long)tv->tv_usec / 1000 : -1L, rc);
    if (rc == 0) {
        MCHECK(!closed, "spawn_async accepted on a closed scheduler");
        j->req_pending = 1;
        ms->reqs_owed++;
    } else if (oom_ok(errno) && !closed) {
        j->refused = 1;
    } else {
        MCHECK(closed && errno == ESHUTDOWN, "spawn_async failed: %s", strerror(errno));
        j->refused = 1;
        ms->rejected++;
    }
}

static void op_done(struct rng *r)
{
    struct mjob *j = NULL;

    if (chance(r, 50))
        j = pick_job(r, p_cancel_requested);
    if (!j)
        j = pick_job(r, p_running);
    if (!j)
        return;
    model_done(j, j->cancel_requested && chance(r, 75) ? ECANCELED : pick_err(r));
}

/* aj_job_wait or aj_job_close on a random live job. */
static void op_wait_or_close(struct rng *r, int kind)
{
    struct mjob *j = pick_job(r, p_live);
    struct msched *ms;
    struct timeval tvb, *tv;
    struct mwait *w;
    int in, was_started, expect_ok, rc, with_cb;

    if (!j)
        return;
    ms = j->ms;
    in = !ms->freed && contained(j);
    was_started = j->started;
    expect_ok = !ms->freed && !ms->freeing && !let_go(j);
    tv = pick_tv(r, &tvb, 40, 5);
    with_cb = kind == W_WAIT || chance(r, 80);
    w = xcalloc(sizeof *w);
    w->j = j;
    w->kind = kind;
    if (kind == W_WAIT)
        w->had_timeout = in && (tv || ms->has_wait_tv);
    else
        w->had_timeout = in && was_started && (tv || ms->has_close_tv);
    w->before_finish = in;
    if (kind == W_WAIT)
        rc = API(aj_job_wait(j->job, tv, m_wait_cb, w));
    else
        rc = API(aj_job_close(j->job, tv, with_cb ? m_wait_cb : NULL, w));
    M.ops++;
    TRACE("%s j%d timeout %ld ms%s -> %d", kind == W_WAIT ? "wait" : "close", j->id,
          tv ? (long)tv->tv_usec / 1000 : -1L, with_cb ? "" : " (no cb)", rc);
    if (expect_ok && rc != 0 && oom_ok(errno)) {
        /* took nothing: the job is as it was */
        free(w);
        MCHECK(contained(j) == in, "j%d: a failed %s changed the job", j->id,
               kind == W_WAIT ? "wait" : "close");
        return;
    }
    if (expect_ok)
        MCHECK(rc == 0, "j%d: %s failed: %s", j->id, kind == W_WAIT ? "wait" : "close",
               strerror(errno));
    else
        MCHECK(rc == -1 && errno == ESHUTDOWN, "j%d: %s on a let-go job gave %d", j->id,
               kind == W_WAIT ? "wait" : "close", rc);
    if (rc == 0 && kind == W_WAIT && w->had_timeout)
        j->may_expire = 1;          /* its expiry closes the job */
    if (rc != 0 || !with_cb) {
        free(w);
    } else {
        PUSH(M.waits, M.nwaits, M.capw, w);
        j->waiters_owed++;
        if (w->had_timeout && !M.realtime) {
            int64_t us = tv ? (int64_t)tv->tv_usec : kind == W_WAIT ? ms->wait_us : ms->close_us;
            w->watch = kind == W_WAIT ? TIMELY_EXPIRY : TIMELY_ANSWER;
            w->due_us = vclock_now_us() + us;
        }
    }
    if (rc != 0)
        return;
    j->explicit_ = 1;
    if (kind == W_CLOSE) {
        j->close_called = 1;
        if (in && !was_started) {
            MCHECK(!contained(j), "j%d: closed before its start but not discarded", j->id);
            j->closed_unstarted = 1;
            j->left_counted = 1;
            ms->cancelled++;
            counters[C_DISCARDED]++;
        } else if (in) {
            MCHECK(contained(j) && aj_job_closed(j->job), "j%d: close did not close it", j->id);
        }
    }
}

static void op_set_limit(struct rng *r, int pending)
{
    struct msched *ms = pick_sched(r, 1);
    size_t old, lim;
    int rc;

    if (!ms)
        return;
    lim = below(r, pending ? 6 : 5);
    old = pending ? ms->plimit : ms->limit;
    rc = pending ? API(aj_scheduler_set_pending_limit(ms->s, lim))
                 : API(aj_scheduler_set_limit(ms->s, lim));
    M.ops++;
    TRACE("set_%slimit s%d %zu -> %zu", pending ? "pending_" : "", ms->id, old, lim);
    MCHECK(rc == 0, "set limit failed");
    if (lim != 0 && (old == 0 || lim < old)) {
        if (pending)
            ms->plimit_lowered = 1;
        else
            ms->limit_lowered = 1;
    }
    if (pending)
        ms->plimit = lim;
    else
        ms->limit = lim;
    MCHECK((pending ? aj_scheduler_pending_limit(ms->s) : aj_scheduler_limit(ms->s)) == lim,
           "limit not kept");
}

static void op_set_cancel(struct rng *r)
{
    static const uint8_t hooks[] = { H_HONOUR, H_LATER, H_STUBBORN };
    struct mjob *j = pick_job(r, p_running);
    int none;

    if (!j)
        return;
    {
        uint8_t hook = j->hook, hook_null = j->hook_null;
        int rc;
        none = chance(r, 20);
        j->hook = hooks[below(r, 3)];
        j->hook_null = (uint8_t)none;
        rc = API(aj_job_set_cancel(j->job, none ? NULL : m_cancel, j));
        if (rc < 0) {               /* out of memory: hook unchanged */
            MCHECK(errno == ENOMEM, "set_cancel: -1 with errno %d", errno);
            j->hook = hook;
            j->hook_null = hook_null;
        }
    }
    M.ops++;
    TRACE("set_cancel j%d %s", j->id, none ? "NULL" : "hook");
}

static void op_ref(struct rng *r, int unref)
{
    struct mjob *j = pick_job(r, unref ? p_refd : p_live);

    if (!j)
        return;
    if (unref) {
        j->refs--;
        APIV(aj_job_unref(j->job));
    } else {
        MCHECK(API(aj_job_ref(j->job)) == j->job, "aj_job_ref");
        j->refs++;
    }
    M.ops++;
    TRACE("%s j%d -> %d", unref ? "unref" : "ref", j->id, j->refs);
}

static void op_report(struct rng *r)
{
    struct msched *ms = pick_sched(r, 1);
    struct mjob *j = chance(r, 30) ? pick_job(r, p_let_go) : NULL;   /* no scheduler holds it */
    struct aj_error_info info;
    char msg[8];

    if (!ms)
        return;
    if (!j && chance(r, 80))
        j = pick_job(r, p_live);
    memset(&info, 0, sizeof info);
    strcpy(msg, "model");
    info.message = msg;
    info.job = j ? j->job : NULL;
    info.error = EIO;
    {
        long logs = oom_logs;
        APIV(aj_scheduler_call_exception_handler(ms->s, &info));
        if (oom_logs != logs)
            return;                 /* out of memory: the report is lost */
    }
    msg[0] = 'X';                   /* it was copied */
    M.ops++;
    if (!ms->freeing) {             /* (ignored during free) */
        struct mreport *p = xcalloc(sizeof *p);
        p->ms = ms;
        p->j = j;
        PUSH(M.reports, M.nreports, M.capr, p);
        if (j)
            j->report_refs++;
    }
    TRACE("call_exception_handler s%d job j%d", ms->id, j ? j->id : -1);
}

static int p_done_unreleased(const struct mjob *j) { return live_job(j) && j->done; }
static int p_counted(const struct mjob *j) { return live_job(j) && !j->ms->freed && contained(j); }

/* aj_job_set_timeout on a job in its scheduler: from now (running) or from
 * its start. */
static void op_set_job_timeout(struct rng *r)
{
    struct mjob *j = pick_job(r, p_counted);
    struct timeval tvb, *tv;

    if (!j)
        return;
    tv = pick_tv(r, &tvb, 25, 8);
    if (API(aj_job_set_timeout(j->job, tv)) != 0) {
        MCHECK(oom_ok(errno), "j%d: aj_job_set_timeout: %s", j->id, strerror(errno));
        return;
    }
    M.ops++;
    TRACE("set_timeout j%d %ld ms", j->id, tv ? (long)tv->tv_usec / 1000 : -1L);
    if (tv)                         /* (a fired one stays fired: sticky) */
        j->jt = j->ms->jt_used = 1;
    if (j->started) {               /* counted from now */
        j->jt_watch = tv != NULL && !M.realtime;
        j->jt_due_us = vclock_now_us() + (tv ? (int64_t)tv->tv_usec : 0);
        j->jt_late = 0;
    } else {                        /* counted from its start */
        j->jt_set = tv ? 1 : 2;
        j->jt_set_us = tv ? (int64_t)tv->tv_usec : 0;
    }
}

/* A second aj_job_done is a bug of the job: ignored and logged. */
static void op_done_twice(struct rng *r)
{
    struct mjob *j = pick_job(r, p_done_unreleased);
    int in;

    if (!j)
        return;
    in = contained(j);
    bad_log[0] = '\0';
    APIV(aj_job_done(j->job, EIO, NULL));
    M.ops++;
    TRACE("done again j%d", j->id);
    MCHECK(bad_log[0] != '\0', "j%d: a second aj_job_done was not logged", j->id);
    bad_log[0] = '\0';
    MCHECK(contained(j) == in, "j%d: a second aj_job_done changed the job", j->id);
}

static void op_set_name(struct rng *r)
{
    struct mjob *j = pick_job(r, p_live);

    if (!j)
        return;
    if (API(aj_job_set_name(j->job, "named")) != 0) {
        MCHECK(oom_ok(errno), "set_name failed: %s", strerror(errno));
        return;
    }
    MCHECK(strcmp(aj_job_name(j->job), "named") == 0, "name not kept");
    M.ops++;
}

static void op_set_timeouts(struct rng *r)
{
    struct msched *ms = pick_sched(r, 0);
    struct timeval tvb, *tv;

    if (!ms)
        return;
    if (chance(r, 50)) {
        tv = pick_tv(r, &tvb, 30, 6);
        if (tv && chance(r, 10))
            tv->tv_sec = 60;
        MCHECK(API(aj_scheduler_set_wait_timeout(ms->s, tv)) == 0, "set_wait_timeout");
        ms->has_wait_tv = tv != NULL;
        ms->wait_us = tv ? (int64_t)tv->tv_sec * 1000000 + tv->tv_usec : 0;
    } else {
        size_t i;
        tv = pick_tv(r, &tvb, 15, 4);
        MCHECK(API(aj_scheduler_set_close_timeout(ms->s, tv)) == 0, "set_close_timeout");
        ms->has_close_tv = tv != NULL;
        ms->close_us = tv ? (int64_t)tv->tv_usec : 0;
        /* which close timeout an expired wait got is no longer known */
        for (i = 0; i < M.nwaits; i++)
            if (M.waits[i]->j->ms == ms && M.waits[i]->watch == TIMELY_EXPIRY)
                M.waits[i]->watch = TIMELY_OFF;
    }
    M.ops++;
}

static struct msched *op_new_sched(struct rng *r)
{
    struct msched *ms;
    struct timeval tv;

    if (M.nsch == MAX_SCHEDS)
        return NULL;
    ms = xcalloc(sizeof *ms);
    ms->id = M.nsch;
    ms->idle_since = -1;
    ms->s = API(aj_scheduler_new(M.base));
    if (!ms->s) {
        MCHECK(oom_ok(errno), "aj_scheduler_new failed: %s", strerror(errno));
        free(ms);
        return NULL;
    }
    M.sch[M.nsch++] = ms;
    ms->limit = below(r, 5);
    ms->plimit = below(r, 6);
    aj_scheduler_set_limit(ms->s, ms->limit);
    aj_scheduler_set_pending_limit(ms->s, ms->plimit);
    ms->has_close_tv = !chance(r, 10);
    tv.tv_sec = 0;
    tv.tv_usec = (suseconds_t)below(r, 5) * 1000;
    aj_scheduler_set_close_timeout(ms->s, ms->has_close_tv ? &tv : NULL);
    ms->close_us = tv.tv_usec;
    ms->has_wait_tv = chance(r, 50);
    tv.tv_usec = (suseconds_t)below(r, 8) * 1000;
    aj_scheduler_set_wait_timeout(ms->s, ms->has_wait_tv ? &tv : NULL);
    ms->wait_us = tv.tv_usec;
    if (chance(r, 20)) {
        tv.tv_usec = (suseconds_t)(1 + below(r, 8)) * 1000;
        aj_scheduler_set_job_timeout(ms->s, &tv);
        ms->job_timeout = ms->jt_used = 1;
        ms->job_timeout_us = tv.tv_usec;
    }
    aj_scheduler_set_exception_handler(ms->s, m_exc, ms);
    aj_scheduler_set_done_callback(ms->s, m_done_cb, ms);
    if (chance(r, 5))
        aj_scheduler_set_debug(ms->s, 1);
    M.ops++;
    TRACE("new s%d limit %zu pending %zu", ms->id, ms->limit, ms->plimit);
    return ms;
}

/* aj_scheduler_free, then what it promises: nothing owed any more. */
static void do_free(struct msched *ms)
{
    size_t i;
    int saved = free_depth;

    MCHECK(!ms->freed && !ms->freeing, "s%d: freed twice", ms->id);
    TRACE("free s%d", ms->id);
    for (i = 0; i < M.nreports; i++) {         /* dropped before any release */
        struct mreport *p = M.reports[i];
        if (p->ms == ms && !p->over) {
            p->over = 1;
            if (p->j)
                p->j->report_refs--;
        }
    }
    {
        struct aj_stats st;
        aj_scheduler_get_stats(ms->s, &st);
        counters[C_JOB_TIMEOUTS] += (long)st.job_timeouts;
    }
    ms->freeing = 1;
    inside_api++;
    free_depth = inside_api;
    aj_scheduler_free(ms->s);
    free_depth = saved;
    inside_api--;
    ms->freeing = 0;
    ms->freed = 1;
    M.ops++;
    MCHECK(ms->reqs_owed == 0, "s%d: %d spawn callback(s) owed after free", ms->id, ms->reqs_owed);
    MCHECK(ms->closers_owed == 0, "s%d: %d close callback(s) owed after free", ms->id,
           ms->closers_owed);
    for (i = 0; i < M.njobs; i++) {
        struct mjob *j = M.jobs[i];
        if (j->ms != ms)
            continue;
        MCHECK(j->waiters_owed == 0, "j%d: %d waiter(s) owed after free", j->id, j->waiters_owed);
        MCHECK(!j->req_pending, "j%d: request owed after free", j->id);
        if (j->admitted && !j->released) {
            MCHECK((j->started && !j->done_in) || j->refs > 0 || j->report_refs > 0 || j->in_cb > 0,
                   "j%d: neither released nor let go by free (started %d done %d refs %d)", j->id,
                   j->started, j->done, j->refs);
            j->orphan_ok = 1;
            counters[j->started && !j->done ? C_FREE_LET_GO : C_ORPHANS]++;
        }
    }
}

static void m_closer_cb(aj_scheduler *s, void *arg)
{
    struct mcloser *c = arg;
    struct msched *ms = c->ms;
    struct cbframe f = cb_begin("scheduler close callback");

    TRACE("close cb s%d%s", ms->id, c->free_in_cb ? " (frees)" : "");
    MCHECK(s == ms->s && !ms->freed, "s%d: close callback after free", ms->id);
    MCHECK(c->calls++ == 0, "s%d: close callback twice", ms->id);
    ms->closers_owed--;
    MCHECK(aj_scheduler_size(s) == 0 && aj_scheduler_closed(s),
           "s%d: close callback with %zu jobs left", ms->id, aj_scheduler_size(s));
    if (!ms->freeing) {
        MCHECK(ms->reqs_owed == 0, "s%d: closed with spawn callbacks owed", ms->id);
        if (c->free_in_cb) {
            counters[C_FREE_IN_CLOSE_CB]++;
            do_free(ms);
        }
    }
    cb_end(f);
}

static void op_sched_close(struct rng *r, int drain)
{
    struct msched *ms = pick_sched(r, 0);
    struct mcloser *c = NULL;
    struct timeval tvb, *tv = NULL;
    size_t i;
    int rc;

    if (!ms)
        return;
    if (chance(r, 85)) {
        c = xcalloc(sizeof *c);
        c->ms = ms;
        if (!ms->free_in_cb_set && chance(r, 50))
            c->free_in_cb = ms->free_in_cb_set = 1;
        PUSH(M.closers, M.nclosers, M.capc, c);
    }
    if (drain) {
        tv = pick_tv(r, &tvb, 30, 10);
        rc = API(aj_scheduler_wait_and_close(ms->s, tv, c ? m_closer_cb : NULL, c));
    } else {
        rc = API(aj_scheduler_close(ms->s, c ? m_closer_cb : NULL, c));
    }
    M.ops++;
    TRACE("%s s%d -> %d", drain ? "wait_and_close" : "close", ms->id, rc);
    if (rc != 0 && oom_ok(errno)) {     /* took nothing */
        if (c) {
            if (c->free_in_cb)
                ms->free_in_cb_set = 0;
            M.nclosers--;
            free(c);
        }
        MCHECK(drain || !aj_scheduler_closed(ms->s) || ms->close_called || ms->drain_called,
               "s%d: a failed close closed it", ms->id);
        return;
    }
    MCHECK(rc == 0, "s%d: %s failed: %s", ms->id, drain ? "wait_and_close" : "close",
           strerror(errno));
    if (c)
        ms->closers_owed++;
    if (drain) {
        ms->drain_called = 1;
        return;
    }
    ms->close_called = 1;
    MCHECK(aj_scheduler_closed(ms->s) && aj_scheduler_pending_count(ms->s) == 0,
           "s%d: close left pending jobs", ms->id);
    for (i = 0; i < M.njobs; i++) {
        struct mjob *j = M.jobs[i];
        if (j->ms == ms && live_job(j) && !j->started) {
            MCHECK(!contained(j), "j%d: not discarded by the close", j->id);
            j->closed_unstarted = 1;
        }
    }
}

static void op_sched_free(struct rng *r)
{
    struct msched *ms = pick_sched(r, 0);

    if (ms)
        do_free(ms);
}

/* What callbacks do to other jobs: spawn, finish, close, wait. */
static void inner_action(struct rng *r)
{
    if (!chance(r, 25))
        return;
    switch (below(r, 6)) {
    case 0:
    case 1:
        op_spawn(r);
        break;
    case 2:
        op_done(r);
        break;
    case 3:
        op_wait_or_close(r, W_CLOSE);
        break;
    case 4:
        op_wait_or_close(r, W_WAIT);
        break;
    default:
        op_ref(r, below(r, 2));
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Loop steps and checks                                               */
/* ------------------------------------------------------------------ */

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void check_timely(void);

/* One pass of the loop; with `pass_time`, time passes first: on real time
 * a short blocking pass (a wake-up timer bounds it), on virtual time the
 * clock moves up to `max_us` and a non-blocking pass fires what is due. */
static void loop_step(struct rng *r, int pass_time, unsigned max_us)
{
    if (pass_time && M.realtime) {
        struct timeval tv = { 0, 200 + (suseconds_t)below(r, 1300) };
        evtimer_add(M.wake, &tv);
        event_base_loop(M.base, EVLOOP_ONCE);
        evtimer_del(M.wake);
        M.passes++;
        return;
    }
    M.passes++;
    if (pass_time) {
        long us = (long)below(r, max_us / 1000 + 1) * 1000 + (long)below(r, 1000);
        TRACE("time passes: %ld us", us);
        vclock_advance_us(us);
    }
    event_base_loop(M.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    check_timely();
}

/*
 * Timeouts are kept (virtual time only).  A close with a timeout on a
 * running job must be answered once that timeout has passed.  A wait with
 * a timeout must have expired once its timeout has passed; from the pass
 * that saw that, the close its expiry started must be answered within the
 * scheduler's close timeout (unless it has none: then the wait ends with
 * the job, or unless the close timeout changed meanwhile).  "Passed" allows
 * the clock ticks that libaj adds to deadlines, and "answered" the
 * callbacks the expiry queues: the check fails on the second loop pass
 * after that.  Likewise a running job must be closed once its job timeout
 * has passed.
 */
static int64_t timely_slack_us(void)
{
    static int64_t slack = -1;
    if (slack < 0) {
        struct timespec res;
        int64_t tick = 4000;
#ifdef CLOCK_MONOTONIC_COARSE
        if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0)
            tick = res.tv_nsec / 1000 + 1;
#endif
        slack = 2 * tick + 2000;
    }
    return slack;
}

static void check_timely(void)
{
    int64_t now = vclock_now_us();
    size_t i;

    for (i = 0; i < M.nwaits; i++) {
        struct mwait *w = M.waits[i];
        struct msched *ms = w->j->ms;
        if (w->calls || w->watch == TIMELY_OFF || ms->freed || now < w->due_us + timely_slack_us())
            continue;
        if (w->watch == TIMELY_EXPIRY) {
            w->watch = ms->has_close_tv ? TIMELY_ANSWER : TIMELY_OFF;
            w->due_us = now + ms->close_us;
            continue;
        }
        MCHECK(++w->late_passes < 2, "j%d: a %s with a timeout is unanswered %lld us after it was due",
               w->j->id, w->kind == W_WAIT ? "wait" : "close",
               (long long)(now - w->due_us));
    }
    for (i = 0; i < M.njobs; i++) {
        struct mjob *j = M.jobs[i];
        if (!j->jt_watch || j->released || j->ms->freed || !contained(j) ||
            now < j->jt_due_us + timely_slack_us())
            continue;
        if (aj_job_closed(j->job))
            j->jt_watch = 0;
        else
            MCHECK(++j->jt_late < 2, "j%d: still running, not closed, %lld us after its job timeout",
                   j->id, (long long)(now - j->jt_due_us));
    }
}

static void check_sched(struct msched *ms)
{
    aj_scheduler *s = ms->s;
    size_t size = aj_scheduler_size(s), act = aj_scheduler_active_count(s);
    size_t pend = aj_scheduler_pending_count(s), n = 0, na = 0, np = 0, i;
    uint64_t prev = 0, max_active = 0, min_pending = UINT64_MAX;
    int closed = aj_scheduler_closed(s);
    struct aj_stats st;
    aj_job *it;

    MCHECK(size == act + pend, "s%d: size %zu != active %zu + pending %zu", ms->id, size, act,
           pend);
    for (it = aj_scheduler_first(s); it; it = aj_scheduler_next(s, it)) {
        struct mjob *j = rec_of(it);
        MCHECK(++n <= size, "s%d: iteration longer than the size", ms->id);
        MCHECK(j->ms == ms && !j->released && !j->refused && !j->done_in,
               "j%d: in s%d but should not be", j->id, ms->id);
        MCHECK(j->seq > prev, "s%d: iteration not in spawn order", ms->id);
        prev = j->seq;
        MCHECK(aj_job_active(it) == (!aj_job_pending(it) && !aj_job_closed(it)),
               "j%d: active %d pending %d closed %d", j->id, aj_job_active(it), aj_job_pending(it),
               aj_job_closed(it));
        MCHECK(aj_scheduler_contains(s, it) && aj_job_scheduler(it) == s, "j%d: not contained",
               j->id);
        MCHECK(!closed || aj_job_closed(it), "j%d: its scheduler closed, it did not", j->id);
        if (aj_job_pending(it)) {
            np++;
            MCHECK(!j->started, "j%d: pending after it started", j->id);
            if (j->seq < min_pending)
                min_pending = j->seq;
        } else {
            na++;
            if (j->seq > max_active)
                max_active = j->seq;
            MCHECK(!closed || j->started, "j%d: closed scheduler kept a job that never started",
                   j->id);
        }
    }
    MCHECK(n == size && na == act && np == pend, "s%d: iteration %zu/%zu/%zu, counts %zu/%zu/%zu",
           ms->id, n, na, np, size, act, pend);
    /* wait_and_close closes as soon as no job is left: a loop pass later */
    if (ms->drain_called && !closed && size == 0) {
        if (ms->idle_since < 0)
            ms->idle_since = M.passes;
        MCHECK(M.passes - ms->idle_since < 3, "s%d: drained but not closed", ms->id);
    } else {
        ms->idle_since = -1;
    }
    if (closed) {
        MCHECK(pend == 0, "s%d: closed with pending jobs", ms->id);
    } else if (pend) {
        MCHECK(ms->limit != 0 && act >= ms->limit, "s%d: a free slot and %zu pending", ms->id,
               pend);
        MCHECK(max_active < min_pending, "s%d: a pending job admitted before an active one",
               ms->id);
    }
    if (ms->limit_lowered && act <= ms->limit)
        ms->limit_lowered = 0;
    if (ms->plimit_lowered && pend <= ms->plimit)
        ms->plimit_lowered = 0;
    if (ms->limit && !ms->limit_lowered)
        MCHECK(act <= ms->limit, "s%d: %zu active over the limit %zu", ms->id, act, ms->limit);
    if (ms->plimit && !ms->plimit_lowered)
        MCHECK(pend <= ms->plimit, "s%d: %zu pending over the limit %zu", ms->id, pend,
               ms->plimit);

    /* What the model knows of each job. */
    for (i = 0; i < M.njobs; i++) {
        struct mjob *j = M.jobs[i];
        if (j->ms != ms || !live_job(j))
            continue;
        if (!contained(j)) {
            if (!j->left_counted) {             /* discarded or let go */
                MCHECK(!j->done, "j%d: model error", j->id);
                j->left_counted = 1;
                ms->cancelled++;
                counters[j->started ? C_LET_GO : C_DISCARDED]++;
            }
            MCHECK(j->done || j->close_called || j->may_expire || ms->close_called ||
                       ms->drain_called,
                   "j%d: left its scheduler though nothing closed it", j->id);
        } else if (!j->close_called && !j->may_expire && !j->jt && !ms->close_called &&
                   !ms->drain_called) {
            MCHECK(!aj_job_closed(j->job), "j%d: closed though nothing closed it", j->id);
        }
    }

    aj_scheduler_get_stats(s, &st);
    MCHECK(st.spawned == st.succeeded + st.failed + st.cancelled + size,
           "s%d: spawned %llu != %llu + %llu + %llu + %zu", ms->id,
           (unsigned long long)st.spawned, (unsigned long long)st.succeeded,
           (unsigned long long)st.failed, (unsigned long long)st.cancelled, size);
    MCHECK(st.started <= st.spawned, "s%d: started > spawned", ms->id);
    MCHECK(st.started == ms->started, "s%d: stats.started %llu, model %llu", ms->id,
           (unsigned long long)st.started, (unsigned long long)ms->started);
    MCHECK(st.job_timeouts <= st.started && (ms->jt_used || st.job_timeouts == 0),
           "s%d: %llu job timeouts", ms->id, (unsigned long long)st.job_timeouts);
    /* a job timeout turns an outcome into ETIMEDOUT (failed): with job
     * timeouts in play only the total of the three is the model's */
    if (!ms->jt_used)
        MCHECK(st.succeeded == ms->succeeded && st.failed == ms->failed,
               "s%d: succeeded/failed %llu/%llu, model %llu/%llu", ms->id,
               (unsigned long long)st.succeeded, (unsigned long long)st.failed,
               (unsigned long long)ms->succeeded, (unsigned long long)ms->failed);
    MCHECK(st.spawned >= ms->spawned && st.rejected >= ms->rejected &&
               st.succeeded + st.failed + st.cancelled >=
                   ms->succeeded + ms->failed + ms->cancelled,
           "s%d: stats below the model", ms->id);
    if (ms->reqs_owed == 0) {
        MCHECK(st.spawned == ms->spawned && st.rejected == ms->rejected,
               "s%d: spawned/rejected %llu/%llu, model %llu/%llu", ms->id,
               (unsigned long long)st.spawned, (unsigned long long)st.rejected,
               (unsigned long long)ms->spawned, (unsigned long long)ms->rejected);
        MCHECK(st.cancelled == ms->cancelled || ms->jt_used, "s%d: cancelled %llu, model %llu",
               ms->id, (unsigned long long)st.cancelled, (unsigned long long)ms->cancelled);
    }
    MCHECK(st.pending_peak >= pend, "s%d: pending peak below pending", ms->id);
}

static void check_all(void)
{
    int i;

    MCHECK(!bad_log[0], "libaj logged: %s", bad_log);
    MCHECK(inside_api == 0, "model error: inside_api %d", inside_api);
    for (i = 0; i < M.nsch; i++)
        if (!M.sch[i]->freed)
            check_sched(M.sch[i]);
}

/* ------------------------------------------------------------------ */
/* A sequence                                                          */
/* ------------------------------------------------------------------ */

static void step(struct rng *r)
{
    unsigned k = below(r, 100);

    if (k < 14)
        op_spawn(r);
    else if (k < 22)
        op_spawn_async(r);
    else if (k < 36)
        op_done(r);
    else if (k < 43)
        op_wait_or_close(r, W_WAIT);
    else if (k < 49)
        op_wait_or_close(r, W_CLOSE);
    else if (k < 53)
        op_set_limit(r, 0);
    else if (k < 56)
        op_set_limit(r, 1);
    else if (k < 58)
        op_set_cancel(r);
    else if (k < 61)
        op_ref(r, 0);
    else if (k < 64)
        op_ref(r, 1);
    else if (k < 66)
        op_set_timeouts(r);
    else if (k < 68)
        op_report(r);
    else if (k < 69)
        below(r, 3) == 0 ? op_set_name(r) : below(r, 2) ? op_done_twice(r) : op_set_job_timeout(r);
    else if (k < 71)
        op_sched_close(r, below(r, 2));
    else if (k < 72)
        op_sched_free(r);
    else if (k < 91)
        loop_step(r, 0, 0);
    else
        loop_step(r, 1, 8000);
}

static int everything_over(void)
{
    size_t i;
    int k;

    for (k = 0; k < M.nsch; k++)
        if (!M.sch[k]->freed)
            return 0;
    for (i = 0; i < M.njobs; i++)
        if (M.jobs[i]->admitted && !M.jobs[i]->released)
            return 0;
    return 1;
}

/* Brings everything to an end: every scheduler closed one way or another
 * and freed, every job finished and released. */
static void teardown(struct rng *r)
{
    int k, iter;
    size_t i;

    cur_step = -1;
    for (i = 0; i < M.njobs; i++)               /* some finish first */
        if (p_running(M.jobs[i]) && chance(r, 30))
            model_done(M.jobs[i], pick_err(r));
    for (k = 0; k < M.nsch; k++) {
        struct msched *ms = M.sch[k];
        if (ms->freed)
            continue;
        switch (below(r, 4)) {
        case 0:
            do_free(ms);
            break;
        case 1:
        case 2:
            if (!ms->close_called) {
                struct mcloser *c = xcalloc(sizeof *c);
                c->ms = ms;
                c->free_in_cb = !ms->free_in_cb_set;
                ms->free_in_cb_set = 1;
                if (API(aj_scheduler_wait_and_close(ms->s, NULL, m_closer_cb, c)) != 0) {
                    MCHECK(oom_ok(errno), "teardown: wait_and_close: %s", strerror(errno));
                    free(c);
                    do_free(ms);
                    break;
                }
                PUSH(M.closers, M.nclosers, M.capc, c);
                ms->closers_owed++;
                ms->drain_called = 1;
            }
            break;
        default:
            if (API(aj_scheduler_close(ms->s, NULL, NULL)) != 0) {
                MCHECK(oom_ok(errno), "teardown: close: %s", strerror(errno));
                do_free(ms);
                break;
            }
            ms->close_called = 1;
            break;
        }
    }
    for (iter = 0; iter < 400 && !everything_over(); iter++) {
        int progress_before = (int)M.callbacks;
        /* finish running jobs, slowly at first, then all */
        for (i = 0; i < M.njobs; i++) {
            struct mjob *j = M.jobs[i];
            if (p_running(j) && (iter > 8 || j->cancel_requested || chance(r, 30)))
                model_done(j, j->cancel_requested ? ECANCELED : pick_err(r));
        }
        /* the model's references: some now, all soon */
        for (i = 0; i < M.njobs; i++)
            while (p_refd(M.jobs[i]) && (iter > 2 || chance(r, 50))) {
                M.jobs[i]->refs--;
                APIV(aj_job_unref(M.jobs[i]->job));
            }
        /* closed and drained: free (unless its close callback will) */
        for (k = 0; k < M.nsch; k++) {
            struct msched *ms = M.sch[k];
            if (!ms->freed && aj_scheduler_closed(ms->s) && aj_scheduler_size(ms->s) == 0 &&
                (!ms->free_in_cb_set || iter > 60))
                do_free(ms);
            else if (!ms->freed && iter > 80)
                do_free(ms);
        }
        loop_step(r, 0, 0);
        if ((int)M.callbacks == progress_before)
            loop_step(r, 1, 4000);
        check_all();
    }
    for (i = 0; i < M.njobs; i++) {
        struct mjob *j = M.jobs[i];
        MCHECK(!j->admitted || j->released, "j%d: never released (leaked)", j->id);
        MCHECK(!j->refused || !j->released, "j%d: refused but released", j->id);
        MCHECK(!j->req_pending, "j%d: spawn callback never called", j->id);
        MCHECK(j->admitted || j->refused, "j%d: neither admitted nor refused", j->id);
    }
    for (i = 0; i < M.nwaits; i++)
        MCHECK(M.waits[i]->calls == 1, "j%d: a waiter ran %d times", M.waits[i]->j->id,
               M.waits[i]->calls);
    for (i = 0; i < M.nclosers; i++)
        MCHECK(M.closers[i]->calls == 1, "s%d: a close callback ran %d times",
               M.closers[i]->ms->id, M.closers[i]->calls);
    MCHECK(everything_over(), "teardown did not finish");
}

static void model_reset(void)
{
    size_t i;
    int k;

    for (i = 0; i < M.njobs; i++)
        free(M.jobs[i]);
    for (i = 0; i < M.nwaits; i++)
        free(M.waits[i]);
    for (i = 0; i < M.nclosers; i++)
        free(M.closers[i]);
    for (i = 0; i < M.nreports; i++)
        free(M.reports[i]);
    for (k = 0; k < M.nsch; k++)
        free(M.sch[k]);
    M.njobs = M.nwaits = M.nclosers = M.nreports = 0;
    M.nsch = 0;
}

/* Runs one sequence of `steps` driver steps from `seed` (or from `data`).
 * Returns 0, or 1 with fail_msg set.  A failed sequence's loop and
 * scheduler are abandoned, not freed. */
static int run_sequence(uint64_t seed, const uint8_t *data, size_t len, long steps, int realtime,
                        unsigned oom)
{
    jmp_buf jb;
    long i;

    model_reset();
    M.rng.s = seed;
    M.rng.data = data;
    M.rng.len = len;
    M.rng.pos = 0;
    M.cbrng.s = seed ^ 0xa5a5a5a55a5a5a5aull;
    M.cbrng.data = NULL;
    M.ops = M.callbacks = 0;
    inside_api = 0;
    free_depth = -1;
    live = 0;
    bad_log[0] = '\0';
    job_timeout_lost = 0;
    fail_msg[0] = '\0';
    cur_step = 0;
    M.realtime = realtime;
    oom_permille = 0;               /* the model's own setup never fails */
    oom_state = seed ^ 0x0badc0deull;
    aj_set_log_callback(log_cb);
    aj_set_mem_functions(c_malloc, c_realloc, c_free);
    fail_jmp = &jb;
    if (setjmp(jb)) {
        fail_jmp = NULL;
        vclock_on = 0;
        oom_permille = 0;
        tot->ops += M.ops;
        tot->callbacks += M.callbacks;
        return 1;
    }
    if (!realtime)
        vclock_freeze();
    M.base = event_base_new();
    MCHECK(M.base != NULL, "event_base_new");
    M.wake = evtimer_new(M.base, wake_cb, NULL);
    oom_permille = oom;
    op_new_sched(&M.rng);
    for (i = 0; i < steps; i++) {
        int k, open = 0;
        cur_step = i;
        for (k = 0; k < M.nsch; k++)
            open += !M.sch[k]->freed && !aj_scheduler_closed(M.sch[k]->s);
        if (!open && chance(&M.rng, 30))
            op_new_sched(&M.rng);
        step(&M.rng);
        check_all();
        if (data && M.rng.pos >= len)
            break;
    }
    teardown(&M.rng);
    oom_permille = 0;
    event_free(M.wake);
    event_base_free(M.base);
    M.base = NULL;
    vclock_on = 0;
    MCHECK(live == 0, "%ld libaj allocation(s) not freed", live);
    fail_jmp = NULL;
    tot->ops += M.ops;
    tot->callbacks += M.callbacks;
    model_reset();
    return 0;
}

#ifndef AJ_MODEL_FUZZ

/* ------------------------------------------------------------------ */
/* The Check test: many sequences, bisection on failure                */
/* ------------------------------------------------------------------ */

static int use_fork, realtime_mode;
static unsigned oom_mode;           /* per mille of allocations that fail */
static const char *case_name;
static volatile uint64_t crash_seed;
static volatile long crash_steps;

/* One try of (seed, steps), in a child process when possible so that a
 * crash is a failure like any other.  Returns 1 if it failed. */
static int attempt(uint64_t seed, long steps, char *msg, size_t msz)
{
    int fds[2], status;
    pid_t pid;
    ssize_t n;

    if (!use_fork || pipe(fds) < 0) {
        int rc = run_sequence(seed, NULL, 0, steps, realtime_mode, oom_mode);
        snprintf(msg, msz, "%s", fail_msg);
        return rc;
    }
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        int rc;
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        signal(SIGABRT, SIG_DFL);
        close(fds[0]);
        rc = run_sequence(seed, NULL, 0, steps, realtime_mode, oom_mode);
        if (rc && write(fds[1], fail_msg, strlen(fail_msg)) < 0)
            rc = 2;
        fflush(NULL);
        _exit(rc);
    }
    close(fds[1]);
    n = pid > 0 ? read(fds[0], msg, msz - 1) : -1;
    msg[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    if (pid < 0 || waitpid(pid, &status, 0) < 0) {
        snprintf(msg, msz, "fork failed");
        return 1;
    }
    if (WIFSIGNALED(status)) {
        snprintf(msg, msz, "crashed with signal %d", WTERMSIG(status));
        return 1;
    }
    return WEXITSTATUS(status) != 0;
}

/* The shortest prefix of the sequence that still fails, by bisection on
 * the step count (exact on virtual time; a good guess on real time). */
static long shortest_failing(uint64_t seed, long steps, char *msg, size_t msz)
{
    long lo = 0, hi = steps;
    char m[1024];

    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        if (attempt(seed, mid, m, sizeof m)) {
            hi = mid;
            snprintf(msg, msz, "%s", m);
        } else {
            lo = mid;
        }
    }
    return hi;
}

static void crash_report(void)
{
    char buf[400];
    int n = snprintf(buf, sizeof buf,
                     "\nmodel: crashed in the sequence with seed 0x%llx (%ld steps); bisect it "
                     "with CK_RUN_CASE=%s AJ_MODEL_SEED=0x%llx AJ_MODEL_SEQUENCES=1 "
                     "AJ_MODEL_STEPS=%ld\n",
                     (unsigned long long)crash_seed, crash_steps, case_name,
                     (unsigned long long)crash_seed, crash_steps);
    if (n > 0 && write(2, buf, (size_t)n) < 0)
        return;
}

static void crash_handler(int sig)
{
    crash_report();
    signal(sig, SIG_DFL);
    raise(sig);
}

extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 0) : dflt;
}

static double now_s(void)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Runs the sequences of test case `name`: AJ_MODEL_SEQUENCES (else
 * `dflt`, a twentieth of it under valgrind) of AJ_MODEL_STEPS steps from
 * AJ_MODEL_SEED, on real or virtual time, with `oom` per mille of the
 * allocations failing (AJ_MODEL_OOM overrides).  A failing sequence is
 * bisected and the test fails with its seed and shortest failing prefix.
 */
static void run_many(const char *name, int realtime, unsigned oom, long dflt)
{
    const char *v = getenv("AJ_MODEL_SEED");
    int valgrind = getenv("AJ_UNDER_VALGRIND") != NULL;
    uint64_t seed = v && *v ? strtoull(v, NULL, 0) : 0x5eedull, seed0 = seed;
    long nseq = env_long("AJ_MODEL_SEQUENCES", valgrind ? (dflt + 19) / 20 : dflt);
    long steps = env_long("AJ_MODEL_STEPS", 200);
    double t0 = now_s();
    long i;

    case_name = name;
    oom_mode = (unsigned)env_long("AJ_MODEL_OOM", (long)oom);
    realtime_mode = realtime || getenv("AJ_MODEL_REALTIME") != NULL;
    if (!realtime_mode && !vclock_works()) {
        fprintf(stderr, "# model: clock_gettime is not interposed here; real time instead\n");
        realtime_mode = 1;
    }
    M.trace = getenv("AJ_MODEL_TRACE") != NULL;
    use_fork = !valgrind;
    memset(tot, 0, sizeof *tot);
    oom_fails = oom_logs = 0;
    signal(SIGSEGV, crash_handler);
    signal(SIGBUS, crash_handler);
    signal(SIGABRT, crash_handler);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(crash_report);
    for (i = 0; i < nseq; i++, seed = next_seed(seed)) {
        char msg[1024];
        int failed;

        crash_seed = seed;
        crash_steps = steps;
        /* a lone sequence (a reproduction) runs in a child: crashes bisect too */
        if (nseq == 1)
            failed = attempt(seed, steps, msg, sizeof msg);
        else if ((failed = run_sequence(seed, NULL, 0, steps, realtime_mode, oom_mode)))
            snprintf(msg, sizeof msg, "%s", fail_msg);
        if (failed) {
            char smsg[1024];
            char rt[64];
            long shortest;

            fprintf(stderr, "# model: sequence %ld, seed 0x%llx, %ld steps failed: %s\n", i,
                    (unsigned long long)seed, steps, msg);
            snprintf(smsg, sizeof smsg, "%s", msg);
            M.trace = 0;
            snprintf(rt, sizeof rt, "%s", realtime_mode ? " AJ_MODEL_REALTIME=1" : "");
            if (oom_mode)
                snprintf(rt + strlen(rt), sizeof rt - strlen(rt), " AJ_MODEL_OOM=%u", oom_mode);
            shortest = shortest_failing(seed, steps, smsg, sizeof smsg);
            fprintf(stderr,
                    "# model: shortest failing prefix: %ld steps: %s\n"
                    "# reproduce: CK_RUN_CASE=%s AJ_MODEL_SEED=0x%llx AJ_MODEL_SEQUENCES=1 "
                    "AJ_MODEL_STEPS=%ld%s AJ_MODEL_TRACE=1 tests/test_model\n",
                    shortest, smsg, name, (unsigned long long)seed, shortest, rt);
            ck_abort_msg("seed 0x%llx fails after %ld steps (shortest prefix: %ld steps%s): %s",
                         (unsigned long long)seed, steps, shortest, rt, smsg);
        }
    }
    fprintf(stderr,
            "# model (%s): %ld sequences of %ld steps from seed 0x%llx on %s time, %ld API "
            "operations and %ld callbacks checked, in %.1f s\n",
            name, nseq, steps, (unsigned long long)seed0, realtime_mode ? "real" : "virtual",
            tot->ops, tot->callbacks, now_s() - t0);
    if (oom_mode)
        fprintf(stderr, "#   %-28s %ld (%ld logged fallbacks)\n", "allocations failed",
                oom_fails, oom_logs);
    for (i = 0; i < C_NCOUNTERS; i++)
        fprintf(stderr, "#   %-28s %ld\n", counter_names[i], counters[i]);
}

START_TEST(random_api_sequences_agree_with_the_model)
{
    run_many("virtual_time", 0, 0, 20000);
}
END_TEST

START_TEST(random_api_sequences_with_real_sleeps_agree_with_the_model)
{
    run_many("real_time", 1, 0, 60);
}
END_TEST

START_TEST(random_api_sequences_with_failing_allocations_agree_with_the_model)
{
    run_many("failing_allocations", 0, 20, 5000);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("model");
    TCase *tc = tcase_create("virtual_time"), *tr = tcase_create("real_time");
    TCase *to = tcase_create("failing_allocations");
    SRunner *sr;
    void *shared;
    int failed;

    /* children (bisection, reproductions) add to the same totals */
    shared = mmap(NULL, sizeof *tot, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared != MAP_FAILED)
        tot = shared;
    tcase_set_timeout(tc, 600);
    tcase_set_timeout(tr, 600);
    tcase_set_timeout(to, 600);
    tcase_add_test(tc, random_api_sequences_agree_with_the_model);
    tcase_add_test(tr, random_api_sequences_with_real_sleeps_agree_with_the_model);
    tcase_add_test(to, random_api_sequences_with_failing_allocations_agree_with_the_model);
    suite_add_tcase(su, tc);
    suite_add_tcase(su, tr);
    suite_add_tcase(su, to);
    sr = srunner_create(su);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* AJ_MODEL_FUZZ */
