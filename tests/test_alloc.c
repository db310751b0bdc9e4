/*
 * test_alloc.c -- the core when an allocation fails (issue 6, part 1; the
 * adapter's share is test_evhttp_alloc.c).
 *
 * Each scenario below runs on a real event loop, again and again, with the
 * n-th libaj allocation failing (through aj_set_mem_functions), for n = 1,
 * 2, ... until a run meets no failure.  Every run checks:
 *  - a call that failed says ENOMEM and took nothing (a failed spawn is
 *    never released; a failed wait or close leaves the job as it was);
 *    internal allocations that have a documented fallback (no spawn stack,
 *    no close timer, the name "job", a lost report) take it;
 *  - the scheduler is still usable: the call retried succeeds, a canary job
 *    spawned afterwards starts and is released;
 *  - every job's release ran exactly once, and every waiter, close and spawn
 *    callback exactly once;
 *  - every byte libaj allocated was freed.
 * The number of failure points each scenario exercised is printed on
 * stderr (the test's log) and must be > 0.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <aj/aj.h>

#include "harness.h"

static int oom_logs;                /* log lines that mention memory */

static void log_cb(int severity, const char *msg)
{
    (void)severity;
    if (strstr(msg, "out of memory"))
        oom_logs++;
}

/* ------------------------------------------------------------------ */
/* Jobs, waiters (the loop, run() and the allocator are the harness's)  */
/* ------------------------------------------------------------------ */

static long run_n;                  /* the n of the current run, for messages */

/* A job: finishes with `error` inside start (ms 0), after ms (> 0), or only
 * when told (< 0).  cancel finishes it with ECANCELED unless stubborn.
 * Unlike the harness's tjob it finishes at most once (a run may finish it
 * by hand after a failed call), fails the test if started twice, remembers
 * whether the library took it, and is numbered by its place in fj[]. */
struct fjob {
    aj_job *job;
    struct event *ev;
    int ms, error, stubborn;
    int spawned;                    /* aj_spawn or the spawn callback gave a job */
    int started, cancelled, released, done;
    void *result;
};

#define MAX_FJOBS 16
static struct fjob fj[MAX_FJOBS];
static int starts, order[MAX_FJOBS];

static void fjob_done(struct fjob *t, int error)
{
    if (t->done)
        return;
    t->done = 1;
    if (t->ev)
        evtimer_del(t->ev);
    aj_job_done(t->job, error, t->result);
}

static void fjob_fire(evutil_socket_t fd, short w, void *arg)
{
    struct fjob *t = arg;
    (void)fd;
    (void)w;
    fjob_done(t, t->error);
}

static void fjob_start(aj_job *job, void *arg)
{
    struct fjob *t = arg;

    ck_assert_int_eq(t->started, 0);
    t->job = job;
    t->started++;
    if (starts < MAX_FJOBS)
        order[starts] = (int)(t - fj);
    starts++;
    if (t->ms == 0) {
        fjob_done(t, t->error);
    } else if (t->ms > 0) {
        struct timeval tv = { t->ms / 1000, (t->ms % 1000) * 1000 };
        t->ev = evtimer_new(base, fjob_fire, t);     /* libevent's memory */
        evtimer_add(t->ev, &tv);
    }
}

static void fjob_cancel(aj_job *job, void *arg)
{
    struct fjob *t = arg;
    (void)job;
    t->cancelled++;
    if (!t->stubborn)
        fjob_done(t, ECANCELED);
}

static void fjob_release(void *arg)
{
    struct fjob *t = arg;

    t->released++;
    if (t->ev) {
        event_free(t->ev);
        t->ev = NULL;
    }
}

static const struct aj_job_ops fjob_ops = { "tjob", fjob_start, fjob_cancel, fjob_release };
static const struct aj_job_ops fjob_ops_noname = { NULL, fjob_start, fjob_cancel, fjob_release };

/* A waiter / close / spawn / scheduler callback record. */
struct rec {
    int calls, error;
    void *result;
    aj_job *job;
};

#define MAX_RECS 16
static struct rec rc[MAX_RECS];

static void rec_job_cb(aj_job *job, int error, void *result, void *cbarg)
{
    struct rec *r = cbarg;
    r->calls++;
    r->error = error;
    r->result = result;
    r->job = job;
}

static void rec_spawn_cb(aj_scheduler *s, aj_job *job, int error, void *cbarg)
{
    struct rec *r = cbarg;
    (void)s;
    r->calls++;
    r->error = error;
    r->job = job;
    if (job)
        ((struct fjob *)aj_job_arg(job))->spawned = 1;
}

static void rec_sched_cb(aj_scheduler *s, void *arg)
{
    struct rec *r = arg;
    r->calls++;
    r->error = (int)aj_scheduler_size(s);  /* must be 0 */
}

static void rec_free_in_close_cb(aj_scheduler *s, void *arg)
{
    rec_sched_cb(s, arg);
    aj_scheduler_free(s);
}

/* Exception handler record. */
static struct {
    int calls, error, failed, timed_out, custom;
    size_t tb_len;
    aj_job *job;
    char tb0[64];
} exc;

static void exc_cb(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    (void)s;
    (void)arg;
    exc.calls++;
    exc.error = info->error;
    exc.job = info->job;
    exc.tb_len = info->source_traceback_len;
    if (strcmp(info->message, "Job processing failed") == 0)
        exc.failed++;
    else if (strcmp(info->message, "Job closing timed out") == 0)
        exc.timed_out++;
    else if (strcmp(info->message, "custom") == 0)
        exc.custom++;
    if (info->source_traceback_len && info->source_traceback)
        snprintf(exc.tb0, sizeof exc.tb0, "%s", info->source_traceback[0]);
}

/* ------------------------------------------------------------------ */
/* Run bookkeeping                                                     */
/* ------------------------------------------------------------------ */

static int enomem_seen;             /* calls that failed with ENOMEM */

/* A call failed: it must say ENOMEM. */
static void failed_with_enomem(const char *what)
{
    ck_assert_msg(errno == ENOMEM, "n=%ld: %s failed with %s, not ENOMEM", run_n, what,
                  strerror(errno));
    enomem_seen++;
}

static void begin_run(long n)
{
    run_n = n;
    snprintf(run_note, sizeof run_note, "n=%ld: ", n);
    oom_logs = 0;
    enomem_seen = 0;
    starts = 0;
    memset(fj, 0, sizeof fj);
    memset(rc, 0, sizeof rc);
    memset(order, 0, sizeof order);
    memset(&exc, 0, sizeof exc);
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
}

/* Ends a run: every job given to the library released exactly once, none
 * that the library refused; every byte freed.  Returns 1 if an allocation
 * failed in the run. */
static int end_run(void)
{
    int i;

    event_base_loop(base, EVLOOP_NONBLOCK);     /* let-go releases */
    event_base_free(base);
    base = NULL;
    for (i = 0; i < MAX_FJOBS; i++)
        ck_assert_msg(fj[i].released == (fj[i].spawned ? 1 : 0),
                      "n=%ld: job %d spawned=%d released %d times", run_n, i, fj[i].spawned,
                      fj[i].released);
    ck_assert_msg(mem_live == 0, "n=%ld: %ld libaj allocations not freed", run_n, mem_live);
    if (!mem_failed)
        ck_assert_int_eq(enomem_seen, 0);
    return mem_failed;
}

static aj_scheduler *new_sched(void)
{
    aj_scheduler *s = aj_scheduler_new(base);

    if (!s) {
        failed_with_enomem("aj_scheduler_new");
        s = aj_scheduler_new(base);
    }
    ck_assert_ptr_nonnull(s);
    aj_scheduler_set_exception_handler(s, exc_cb, NULL);
    return s;
}

/* aj_spawn; on ENOMEM the job must not exist (never released) and a retry
 * must work. */
static aj_job *spawn(aj_scheduler *s, const struct aj_job_ops *ops, struct fjob *t)
{
    aj_job *job = aj_spawn(s, ops, t);

    if (!job) {
        failed_with_enomem("aj_spawn");
        ck_assert_int_eq(t->released, 0);
        job = aj_spawn(s, ops, t);
    }
    ck_assert_ptr_nonnull(job);
    t->job = job;
    t->spawned = 1;
    return job;
}

static void spawn_async(aj_scheduler *s, struct fjob *t, const struct timeval *tv, struct rec *r)
{
    if (aj_spawn_async(s, &fjob_ops, t, tv, rec_spawn_cb, r) < 0) {
        failed_with_enomem("aj_spawn_async");
        ck_assert_int_eq(aj_spawn_async(s, &fjob_ops, t, tv, rec_spawn_cb, r), 0);
    }
}

static void wait_job(aj_job *job, const struct timeval *tv, struct rec *r)
{
    if (aj_job_wait(job, tv, rec_job_cb, r) < 0) {
        failed_with_enomem("aj_job_wait");
        ck_assert_int_eq(r->calls, 0);
        ck_assert_int_eq(aj_job_wait(job, tv, rec_job_cb, r), 0);
    }
}

static void close_job(aj_job *job, const struct timeval *tv, struct rec *r)
{
    if (aj_job_close(job, tv, r ? rec_job_cb : NULL, r) < 0) {
        failed_with_enomem("aj_job_close");
        ck_assert_int_eq(aj_job_close(job, tv, r ? rec_job_cb : NULL, r), 0);
    }
}

/* The scheduler still works: a job spawned now starts and is released. */
static void canary(aj_scheduler *s, struct fjob *t)
{
    t->ms = 0;
    spawn(s, &fjob_ops, t);
    run();
    ck_assert_msg(t->started == 1 && t->released == 1, "n=%ld: canary did not run", run_n);
}

static void check_stats(aj_scheduler *s)
{
    struct aj_stats st;

    aj_scheduler_get_stats(s, &st);
    ck_assert_uint_eq(st.spawned, st.succeeded + st.failed + st.cancelled + aj_scheduler_size(s));
    ck_assert_uint_le(st.started, st.spawned);
}

/* Runs a scenario through each of its failure points (harness.h) and
 * says how many there were. */
static int points_of(const char *name, int (*scenario)(long n))
{
    int points;

    aj_set_log_callback(log_cb);
    points = failure_points(scenario, 100000);
    aj_set_log_callback(NULL);
    fprintf(stderr, "# alloc %s: %d allocation failure points exercised\n", name, points);
    return points;
}

static const struct timeval ms1 = { 0, 1000 }, ms5 = { 0, 5000 }, s1 = { 1, 0 };

/* ------------------------------------------------------------------ */
/* Scenarios                                                           */
/* ------------------------------------------------------------------ */

/* aj_scheduler_new, then a job, then free. */
static int sc_scheduler_new(long n)
{
    aj_scheduler *s;

    begin_run(n);
    s = new_sched();
    ck_assert_int_eq(aj_scheduler_closed(s), 0);
    canary(s, &fj[0]);
    check_stats(s);
    aj_scheduler_free(s);
    return end_run();
}

/* Jobs admitted at once and pending, started in FIFO order. */
static int sc_spawn(long n)
{
    aj_scheduler *s;
    int i;

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_limit(s, 2);
    for (i = 0; i < 5; i++) {
        fj[i].ms = i < 2 ? 2 : 0;
        spawn(s, i % 2 ? &fjob_ops_noname : &fjob_ops, &fj[i]);
    }
    ck_assert_uint_eq(aj_scheduler_active_count(s), 2);
    ck_assert_uint_eq(aj_scheduler_pending_count(s), 3);
    run();
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(fj[i].started, 1);
        ck_assert_int_eq(order[i], i);
    }
    canary(s, &fj[5]);
    check_stats(s);
    aj_scheduler_free(s);
    return end_run();
}

/* aj_spawn_async: admitted at once, admitted later (with and without a
 * timeout), and timed out while queued. */
static int sc_spawn_async(long n)
{
    aj_scheduler *s;
    const struct timeval zero = { 0, 0 };
    int i;

    begin_run(n);
    s = new_sched();
    spawn_async(s, &fj[0], NULL, &rc[0]);       /* room: admitted at once */
    run();
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, 0);
    aj_scheduler_set_limit(s, 1);
    aj_scheduler_set_pending_limit(s, 1);
    fj[1].ms = 30;                              /* holds the slot */
    fj[2].ms = 1;                               /* fills the queue */
    spawn(s, &fjob_ops, &fj[1]);
    spawn(s, &fjob_ops, &fj[2]);
    spawn_async(s, &fj[3], NULL, &rc[3]);       /* queued, no timeout */
    spawn_async(s, &fj[4], &s1, &rc[4]);        /* queued, 1 s */
    spawn_async(s, &fj[5], &zero, &rc[5]);      /* queued, times out first */
    ck_assert_int_eq(rc[3].calls + rc[4].calls + rc[5].calls, 0);
    run();
    for (i = 3; i <= 5; i++)
        ck_assert_int_eq(rc[i].calls, 1);
    ck_assert_int_eq(rc[3].error, 0);
    ck_assert_int_eq(rc[4].error, 0);
    ck_assert_int_eq(rc[5].error, ETIMEDOUT);
    ck_assert_ptr_null(rc[5].job);
    ck_assert_int_eq(fj[5].started, 0);
    ck_assert_int_eq(fj[3].started + fj[4].started, 2);
    canary(s, &fj[6]);
    check_stats(s);
    aj_scheduler_free(s);
    return end_run();
}

/* aj_job_wait: with the default and an own timeout, on a finished job, and a
 * wait that expires and closes a stubborn job (its close timer is one more
 * allocation, with a fallback: the wait ends at once). */
static int sc_wait(long n)
{
    aj_scheduler *s;
    static int res;
    const struct timeval ms2 = { 0, 2000 };

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_close_timeout(s, &ms5);
    fj[0].ms = 3;
    fj[0].error = EIO;
    fj[0].result = &res;
    fj[1].ms = -1;
    fj[1].stubborn = 1;
    spawn(s, &fjob_ops, &fj[0]);
    spawn(s, &fjob_ops, &fj[1]);
    wait_job(fj[0].job, NULL, &rc[0]);
    wait_job(fj[0].job, &s1, &rc[1]);
    wait_job(fj[1].job, &ms2, &rc[2]);
    run();
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, EIO);
    ck_assert_ptr_eq(rc[0].result, &res);
    ck_assert_int_eq(rc[1].calls, 1);
    ck_assert_int_eq(rc[1].error, EIO);
    ck_assert_int_eq(rc[2].calls, 1);
    ck_assert_int_eq(rc[2].error, ETIMEDOUT);
    ck_assert_int_eq(fj[1].cancelled, 1);
    ck_assert_int_eq(exc.calls, 0);             /* both explicit */
    /* the stubborn job keeps its slot until it finishes */
    ck_assert_uint_eq(aj_scheduler_active_count(s), 1);
    fjob_done(&fj[1], 0);
    run();
    ck_assert_int_eq(fj[0].released + fj[1].released, 2);
    check_stats(s);
    canary(s, &fj[2]);
    aj_scheduler_free(s);
    return end_run();
}

/* A wait on a finished job is answered from the loop with the outcome. */
static int sc_wait_finished(long n)
{
    aj_scheduler *s;

    begin_run(n);
    s = new_sched();
    fj[0].ms = 0;
    fj[0].error = ENOENT;
    spawn(s, &fjob_ops, &fj[0]);
    aj_job_ref(fj[0].job);                      /* keep the handle valid */
    run();
    ck_assert_int_eq(exc.failed, 1);
    wait_job(fj[0].job, NULL, &rc[0]);
    close_job(fj[0].job, NULL, &rc[1]);
    aj_job_unref(fj[0].job);
    ck_assert_int_eq(rc[0].calls + rc[1].calls, 0);
    run();
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, ENOENT);
    ck_assert_int_eq(rc[1].calls, 1);
    ck_assert_int_eq(rc[1].error, ENOENT);
    canary(s, &fj[1]);
    aj_scheduler_free(s);
    return end_run();
}

/* aj_job_close: of a running job that honours it, of a stubborn one (the
 * close times out), of a pending job (never starts), of a finished job. */
static int sc_close(long n)
{
    aj_scheduler *s;
    const struct timeval ms50 = { 0, 50000 };

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_limit(s, 2);
    fj[0].ms = -1;
    fj[1].ms = -1;
    fj[1].stubborn = 1;
    fj[2].ms = 0;
    spawn(s, &fjob_ops, &fj[0]);
    spawn(s, &fjob_ops, &fj[1]);
    spawn(s, &fjob_ops, &fj[2]);                    /* pending */
    event_base_loop(base, EVLOOP_NONBLOCK);     /* 0 and 1 start */
    close_job(fj[0].job, &ms50, &rc[0]);
    close_job(fj[1].job, &ms1, &rc[1]);
    close_job(fj[2].job, NULL, &rc[2]);
    ck_assert_int_eq(aj_job_closed(fj[2].job), 1);
    run();
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, 0);
    ck_assert_int_eq(rc[1].calls, 1);
    ck_assert_int_eq(rc[1].error, ETIMEDOUT);
    ck_assert_int_eq(rc[2].calls, 1);
    ck_assert_int_eq(rc[2].error, 0);
    ck_assert_int_eq(fj[2].started, 0);
    ck_assert_int_eq(fj[2].released, 1);
    aj_job_ref(fj[1].job);
    fjob_done(&fj[1], 0);
    run();
    close_job(fj[1].job, NULL, &rc[3]);         /* a finished job */
    aj_job_unref(fj[1].job);
    run();
    ck_assert_int_eq(rc[3].calls, 1);
    ck_assert_int_eq(rc[3].error, 0);
    ck_assert_int_eq(exc.calls, 0);
    check_stats(s);
    canary(s, &fj[3]);
    aj_scheduler_free(s);
    return end_run();
}

/* A wait or close that failed took nothing: the job is not closed and not
 * explicit, so its failure still reaches the exception handler. */
static int sc_failed_wait_or_close_leaves_the_job_as_it_was(long n)
{
    aj_scheduler *s;
    const struct timeval odd1 = { 0, 777000 }, odd2 = { 0, 778000 };
    int waited, closed;

    begin_run(n);
    s = new_sched();
    fj[0].ms = -1;
    fj[1].ms = -1;
    fj[1].stubborn = 1;
    spawn(s, &fjob_ops, &fj[0]);
    spawn(s, &fjob_ops, &fj[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    /* durations of their own: each needs a new timer queue */
    waited = aj_job_wait(fj[0].job, &odd1, rec_job_cb, &rc[0]) == 0;
    if (!waited)
        failed_with_enomem("aj_job_wait");
    closed = aj_job_close(fj[1].job, &odd2, rec_job_cb, &rc[1]) == 0;
    if (!closed) {
        failed_with_enomem("aj_job_close");
        ck_assert_int_eq(aj_job_closed(fj[1].job), 0);
        ck_assert_int_eq(aj_job_active(fj[1].job), 1);
    }
    ck_assert_int_eq(fj[1].cancelled, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(fj[1].cancelled, closed);
    fjob_done(&fj[0], EIO);
    fjob_done(&fj[1], EPIPE);
    run();
    ck_assert_int_eq(rc[0].calls, waited);
    ck_assert_int_eq(rc[1].calls, closed);
    if (waited)
        ck_assert_int_eq(rc[0].error, EIO);
    if (closed)
        ck_assert_int_eq(rc[1].error, EPIPE);
    ck_assert_msg(exc.failed == !waited + !closed,
                  "n=%ld: waited %d closed %d, but %d failures reported", run_n, waited, closed,
                  exc.failed);
    canary(s, &fj[2]);
    aj_scheduler_free(s);
    return end_run();
}

/* aj_job_set_name and the generated name (whose fallback is "job"). */
static int sc_set_name(long n)
{
    aj_scheduler *s;
    const char *name;
    int i;

    begin_run(n);
    s = new_sched();
    for (i = 0; i < 2; i++) {
        fj[i].ms = -1;
        spawn(s, &fjob_ops_noname, &fj[i]);
    }
    name = aj_job_name(fj[0].job);
    ck_assert_ptr_nonnull(name);
    ck_assert_msg(strcmp(name, "job") == 0 || strncmp(name, "job-", 4) == 0, "name %s", name);
    if (aj_job_set_name(fj[0].job, "first") < 0) {
        failed_with_enomem("aj_job_set_name");
        ck_assert_str_eq(aj_job_name(fj[0].job), name);   /* unchanged */
        ck_assert_int_eq(aj_job_set_name(fj[0].job, "first"), 0);
    }
    ck_assert_str_eq(aj_job_name(fj[0].job), "first");
    if (aj_job_set_name(fj[1].job, "second") < 0) {     /* no extras yet */
        failed_with_enomem("aj_job_set_name");
        ck_assert_int_eq(aj_job_set_name(fj[1].job, "second"), 0);
    }
    ck_assert_str_eq(aj_job_name(fj[1].job), "second");
    ck_assert_int_eq(aj_job_set_name(fj[0].job, NULL), 0);   /* back to generated */
    name = aj_job_name(fj[0].job);
    ck_assert_msg(strncmp(name, "job-", 4) == 0 || strcmp(name, "job") == 0, "n=%ld: name %s",
                  run_n, name);
    event_base_loop(base, EVLOOP_NONBLOCK);
    fjob_done(&fj[0], 0);
    fjob_done(&fj[1], 0);
    canary(s, &fj[2]);
    aj_scheduler_free(s);
    return end_run();
}

/* Debug mode: the spawn stack is recorded (or, without memory, not: the
 * report then has no traceback), and the failure is reported either way. */
static int sc_debug_stacks(long n)
{
    aj_scheduler *s;

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_debug(s, 1);
    fj[0].ms = 0;
    fj[0].error = EIO;
    spawn(s, &fjob_ops, &fj[0]);
    fj[1].ms = 1;
    fj[1].error = EPIPE;
    spawn(s, &fjob_ops, &fj[1]);
    run();
    ck_assert_int_eq(exc.failed, 2);
    ck_assert_int_eq(exc.calls, 2);
    if (!mem_failed)
        ck_assert_uint_gt(exc.tb_len, 0);
    canary(s, &fj[2]);
    aj_scheduler_free(s);
    return end_run();
}

/* aj_scheduler_call_exception_handler copies info; without memory the
 * report is lost and logged, and the job's reference is not kept. */
static int sc_call_exception_handler(long n)
{
    aj_scheduler *s;
    struct aj_error_info info;
    const char *tb[3] = { "frame one", "frame two", NULL };
    char msg[16];
    int lost;

    begin_run(n);
    s = new_sched();
    fj[0].ms = -1;
    spawn(s, &fjob_ops, &fj[0]);
    strcpy(msg, "custom");
    memset(&info, 0, sizeof info);
    info.message = msg;
    info.job = fj[0].job;
    info.error = EPIPE;
    info.source_traceback = tb;
    info.source_traceback_len = 3;
    aj_scheduler_call_exception_handler(s, &info);
    lost = oom_logs;
    msg[0] = 'X';
    ck_assert_int_eq(exc.calls, 0);
    run();
    ck_assert_int_eq(fj[0].started, 1);
    fjob_done(&fj[0], 0);
    run();
    ck_assert_int_eq(fj[0].released, 1);
    if (lost) {
        ck_assert_int_eq(exc.custom, 0);
    } else {
        ck_assert_int_eq(exc.custom, 1);
        ck_assert_int_eq(exc.error, EPIPE);
        ck_assert_ptr_eq(exc.job, fj[0].job);
        ck_assert_uint_eq(exc.tb_len, 3);
        ck_assert_str_eq(exc.tb0, "frame one");
    }
    canary(s, &fj[1]);
    aj_scheduler_free(s);
    return end_run();
}

/* The test's hand on a stubborn job: finish it later, whatever the close
 * made of it (let go, or waited for when the close timer had no memory). */
static void finish_later_cb(evutil_socket_t fd, short w, void *arg)
{
    (void)fd;
    (void)w;
    fjob_done(arg, 0);
}

/* aj_scheduler_close with running (one stubborn), pending and queued work;
 * the close timer has a fallback (wait without it). */
static int sc_scheduler_close(long n)
{
    aj_scheduler *s;
    const struct timeval ms30 = { 0, 30000 };
    struct event *later;
    int i;

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_close_timeout(s, &ms1);
    aj_scheduler_set_limit(s, 2);
    aj_scheduler_set_pending_limit(s, 1);
    fj[0].ms = -1;
    fj[1].ms = -1;
    fj[1].stubborn = 1;
    spawn(s, &fjob_ops, &fj[0]);
    spawn(s, &fjob_ops, &fj[1]);
    spawn(s, &fjob_ops, &fj[2]);                    /* pending */
    spawn_async(s, &fj[3], NULL, &rc[3]);       /* queued */
    event_base_loop(base, EVLOOP_NONBLOCK);
    wait_job(fj[1].job, NULL, &rc[1]);
    wait_job(fj[2].job, NULL, &rc[2]);
    if (aj_scheduler_close(s, rec_sched_cb, &rc[0]) < 0) {
        failed_with_enomem("aj_scheduler_close");
        ck_assert_int_eq(aj_scheduler_closed(s), 0);
        ck_assert_uint_eq(aj_scheduler_size(s), 3);
        ck_assert_int_eq(aj_scheduler_close(s, rec_sched_cb, &rc[0]), 0);
    }
    ck_assert_int_eq(aj_scheduler_closed(s), 1);
    if (aj_scheduler_close(s, rec_sched_cb, &rc[4]) < 0)     /* again: harmless */
        failed_with_enomem("aj_scheduler_close");
    later = evtimer_new(base, finish_later_cb, &fj[1]);
    evtimer_add(later, &ms30);
    run();
    event_free(later);
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, 0);
    ck_assert_int_le(rc[4].calls, 1);
    ck_assert_int_eq(rc[1].calls, 1);
    /* ETIMEDOUT when let go; 0 if the close had no timer and waited */
    ck_assert_msg(rc[1].error == ETIMEDOUT || rc[1].error == 0, "n=%ld: %d", run_n, rc[1].error);
    ck_assert_int_eq(rc[2].calls, 1);
    ck_assert_int_eq(rc[2].error, ECANCELED);
    ck_assert_int_eq(rc[3].calls, 1);
    ck_assert_int_eq(rc[3].error, ESHUTDOWN);
    ck_assert_int_eq(fj[2].started + fj[3].started, 0);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(fj[i].released, 1);
    check_stats(s);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(s, &fjob_ops, &fj[4]));
    ck_assert_int_eq(errno, ESHUTDOWN);
    aj_scheduler_free(s);
    return end_run();
}

/* wait_and_close: waits for running, pending and meanwhile spawned jobs,
 * then closes; freed from its close callback (the usual pattern). */
static int sc_wait_and_close(long n)
{
    aj_scheduler *s;
    int i;

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_limit(s, 1);
    fj[0].ms = 2;
    fj[1].ms = 1;
    spawn(s, &fjob_ops, &fj[0]);
    spawn(s, &fjob_ops, &fj[1]);
    if (aj_scheduler_wait_and_close(s, &s1, rec_free_in_close_cb, &rc[0]) < 0) {
        failed_with_enomem("aj_scheduler_wait_and_close");
        ck_assert_int_eq(aj_scheduler_closed(s), 0);
        canary(s, &fj[3]);                      /* still open, still works */
        ck_assert_int_eq(aj_scheduler_wait_and_close(s, &s1, rec_free_in_close_cb, &rc[0]), 0);
    }
    fj[2].ms = 1;
    spawn(s, &fjob_ops, &fj[2]);                    /* waited for too */
    run();
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, 0);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(fj[i].started, 1);
        ck_assert_int_eq(fj[i].cancelled, 0);
    }
    return end_run();
}

/* aj_scheduler_free with everything owed: a running stubborn job with a
 * waiter and a close in progress, a pending job with a waiter, a queued
 * spawn request, a report not yet delivered, a close in progress. */
static int sc_scheduler_free(long n)
{
    aj_scheduler *s;
    struct aj_error_info info;
    int i, closed;

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_limit(s, 1);
    aj_scheduler_set_pending_limit(s, 1);
    fj[0].ms = -1;
    fj[0].stubborn = 1;
    spawn(s, &fjob_ops, &fj[0]);
    spawn(s, &fjob_ops, &fj[1]);                    /* pending */
    spawn_async(s, &fj[2], &s1, &rc[2]);        /* queued */
    event_base_loop(base, EVLOOP_NONBLOCK);
    wait_job(fj[0].job, &s1, &rc[0]);
    close_job(fj[0].job, &s1, &rc[4]);
    wait_job(fj[1].job, NULL, &rc[1]);
    memset(&info, 0, sizeof info);
    info.message = "custom";
    info.job = fj[1].job;
    info.error = EIO;
    aj_scheduler_call_exception_handler(s, &info);
    closed = aj_scheduler_close(s, rec_sched_cb, &rc[3]) == 0;
    if (!closed)
        failed_with_enomem("aj_scheduler_close");
    aj_scheduler_free(s);
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, ESHUTDOWN);
    ck_assert_int_eq(rc[4].calls, 1);
    ck_assert_int_eq(rc[4].error, ESHUTDOWN);
    ck_assert_int_eq(rc[1].calls, 1);
    ck_assert_int_eq(rc[1].error, ECANCELED);
    ck_assert_int_eq(rc[2].calls, 1);
    ck_assert_int_eq(rc[2].error, ESHUTDOWN);
    ck_assert_int_eq(rc[3].calls, closed);     /* the close in progress */
    ck_assert_int_eq(exc.calls, 0);
    ck_assert_int_eq(fj[1].released, 1);
    ck_assert_int_eq(fj[0].released, 0);       /* let go: still running */
    fjob_done(&fj[0], 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(fj[0].released, 1);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(fj[i].started, i == 0);
    /* a new scheduler on the same base works */
    s = new_sched();
    canary(s, &fj[5]);
    aj_scheduler_free(s);
    return end_run();
}

/* Job timeouts: the scheduler's and a job's own; without memory for the
 * timer the job runs without its timeout (logged), and a failed
 * aj_job_set_timeout on a running job leaves the timeout it had. */
static int sc_job_timeout(long n)
{
    aj_scheduler *s;
    const struct timeval ms3 = { 0, 3000 }, odd = { 0, 777000 };
    int i, cancelled = 0, reset;

    begin_run(n);
    s = new_sched();
    aj_scheduler_set_job_timeout(s, &ms5);
    aj_scheduler_set_close_timeout(s, &s1);
    for (i = 0; i < 3; i++) {
        fj[i].ms = 40;                          /* honours cancel */
        spawn(s, &fjob_ops, &fj[i]);
    }
    if (aj_job_set_timeout(fj[1].job, &ms3) < 0)    /* before its start */
        failed_with_enomem("aj_job_set_timeout");
    event_base_loop(base, EVLOOP_NONBLOCK);     /* all three start */
    ck_assert_int_eq(fj[2].started, 1);
    reset = aj_job_set_timeout(fj[2].job, &odd) == 0;  /* while it runs */
    if (!reset)
        failed_with_enomem("aj_job_set_timeout");
    run();
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(fj[i].released, 1);
        cancelled += fj[i].cancelled;
    }
    /* each either timed out (cancelled, reported ETIMEDOUT) or, without
     * a timer, ran to its end */
    ck_assert_int_eq(exc.failed, cancelled);
    if (exc.failed)
        ck_assert_int_eq(exc.error, ETIMEDOUT);
    /* 777 ms never passes: fj[2] is cancelled only by the 5 ms it kept */
    ck_assert_msg(fj[2].cancelled == !reset, "n=%ld: set_timeout %s, cancelled %d", run_n,
                  reset ? "worked" : "failed", fj[2].cancelled);
    if (!mem_failed)
        ck_assert_int_eq(exc.failed, 2);
    check_stats(s);
    canary(s, &fj[3]);
    aj_scheduler_free(s);
    return end_run();
}

/* ------------------------------------------------------------------ */
/* Test cases                                                          */
/* ------------------------------------------------------------------ */

#define ALLOC_TEST(test, scenario)                                     \
    START_TEST(test)                                                    \
    {                                                                   \
        int points = points_of(#scenario + 3, scenario);                \
        ck_assert_int_gt(points, 0);                                    \
    }                                                                   \
    END_TEST

ALLOC_TEST(every_allocation_failure_in_scheduler_new_is_clean, sc_scheduler_new)
ALLOC_TEST(every_allocation_failure_in_spawn_is_clean, sc_spawn)
ALLOC_TEST(every_allocation_failure_in_spawn_async_is_clean, sc_spawn_async)
ALLOC_TEST(every_allocation_failure_in_wait_is_clean, sc_wait)
ALLOC_TEST(every_allocation_failure_in_wait_on_a_finished_job_is_clean, sc_wait_finished)
ALLOC_TEST(every_allocation_failure_in_close_is_clean, sc_close)
ALLOC_TEST(a_failed_wait_or_close_leaves_the_job_as_it_was,
           sc_failed_wait_or_close_leaves_the_job_as_it_was)
ALLOC_TEST(every_allocation_failure_in_set_name_is_clean, sc_set_name)
ALLOC_TEST(every_allocation_failure_in_debug_stack_capture_is_clean, sc_debug_stacks)
ALLOC_TEST(every_allocation_failure_in_call_exception_handler_is_clean, sc_call_exception_handler)
ALLOC_TEST(every_allocation_failure_in_scheduler_close_is_clean, sc_scheduler_close)
ALLOC_TEST(every_allocation_failure_in_wait_and_close_is_clean, sc_wait_and_close)
ALLOC_TEST(every_allocation_failure_before_scheduler_free_is_clean, sc_scheduler_free)
ALLOC_TEST(every_allocation_failure_in_job_timeouts_is_clean, sc_job_timeout)

/* ------------------------------------------------------------------ */
/* aj_job_set_cancel (revision 2: -1 with ENOMEM, the old hook stays)   */
/* ------------------------------------------------------------------ */

static int hook_calls[3];

static void hook_cb(aj_job *job, void *cbarg)
{
    int which = (int)(long)cbarg;
    hook_calls[which]++;
    if (which == 2)                 /* the last state honours the close */
        fjob_done(aj_job_arg(job), ECANCELED);
}

/* Sets a hook; on ENOMEM the call took nothing, and a retry works. */
static void set_hook(aj_job *job, int which)
{
    if (aj_job_set_cancel(job, hook_cb, (void *)(long)which) < 0) {
        failed_with_enomem("aj_job_set_cancel");
        ck_assert_int_eq(aj_job_set_cancel(job, hook_cb, (void *)(long)which), 0);
    }
}

/* A job re-arms its hook per state, before and during a close: the first
 * set makes the job's extras, the one after the close was heard needs room
 * to remember a second heard hook. */
static int sc_set_cancel(long n)
{
    aj_scheduler *s;
    aj_job *job;

    begin_run(n);
    memset(hook_calls, 0, sizeof hook_calls);
    s = new_sched();
    fj[0].ms = -1;
    fj[0].stubborn = 1;
    job = spawn(s, &fjob_ops_noname, &fj[0]);
    run();
    set_hook(job, 0);
    set_hook(job, 1);
    close_job(job, NULL, &rc[0]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(hook_calls[1], 1);     /* the hook of the state it was in */
    ck_assert_int_eq(hook_calls[0], 0);
    ck_assert_int_eq(fj[0].cancelled, 0);
    set_hook(job, 2);                       /* a new state: called once */
    set_hook(job, 1);                       /* heard already: nothing */
    set_hook(job, 2);
    run();
    ck_assert_int_eq(hook_calls[1], 1);
    ck_assert_int_eq(hook_calls[2], 1);
    ck_assert_int_eq(rc[0].calls, 1);
    ck_assert_int_eq(rc[0].error, 0);
    canary(s, &fj[1]);
    check_stats(s);
    aj_scheduler_free(s);
    return end_run();
}

ALLOC_TEST(every_allocation_failure_in_set_cancel_is_clean, sc_set_cancel)

int main(void)
{
    Suite *su = suite_create("alloc");
    TCase *tc = tcase_create("enomem");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_allocation_failure_in_scheduler_new_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_spawn_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_spawn_async_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_wait_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_wait_on_a_finished_job_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_close_is_clean);
    tcase_add_test(tc, a_failed_wait_or_close_leaves_the_job_as_it_was);
    tcase_add_test(tc, every_allocation_failure_in_set_name_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_debug_stack_capture_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_call_exception_handler_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_scheduler_close_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_wait_and_close_is_clean);
    tcase_add_test(tc, every_allocation_failure_before_scheduler_free_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_job_timeouts_is_clean);
    tcase_add_test(tc, every_allocation_failure_in_set_cancel_is_clean);
    suite_add_tcase(su, tc);
    return run_suite(su);
}
