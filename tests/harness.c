/*
 * harness.c -- the shared test harness declared in harness.h.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include <aj/aj.h>

#include "harness.h"

struct event_base *base;
aj_scheduler *sched;
char run_note[64];
int in_call, in_done, reentered;
int releases, done_calls, closed_calls;
size_t closed_size;
char trace[2048];
char last_log[1024];
int last_sev, nlogs, bad_severities;
long mem_live;
int mem_failed, mem_refuse_all;

static int start_seq;               /* tjob starts so far in this test */
static long mem_count, mem_fail_at;

/* ---- the fixture and the loop ---- */

void harness_setup(void)
{
    unsetenv("AJ_DEBUG");
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    sched = aj_scheduler_new(base);
    ck_assert_ptr_nonnull(sched);
    in_call = in_done = reentered = 0;
    nlogs = bad_severities = 0;
    last_log[0] = trace[0] = '\0';
    last_sev = -1;
    start_seq = 0;
    releases = done_calls = closed_calls = 0;
    closed_size = 0;
    mem_reset(0);
    aj_set_log_callback(capture_log);
}

void harness_teardown(void)
{
    aj_scheduler_free(sched);
    sched = NULL;
    event_base_free(base);
    base = NULL;
    aj_set_log_callback(NULL);
    aj_set_mem_functions(NULL, NULL, NULL);
    unsetenv("AJ_DEBUG");
    ck_assert_int_eq(reentered, 0);
    ck_assert_int_eq(bad_severities, 0);
}

static void safety_cb(evutil_socket_t fd, short w, void *arg)
{
    (void)fd; (void)w; (void)arg;
    ck_abort_msg("%ssafety timer: the loop did not finish", run_note);
}

struct event *safety_timer_start(void)
{
    struct timeval tv = { 10, 0 };
    struct event *ev = evtimer_new(base, safety_cb, NULL);
    evtimer_add(ev, &tv);
    return ev;
}

void run(void)
{
    struct event *safety = safety_timer_start();
    /* one pass at a time, until the safety timer is all that is left */
    while (event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE) > 1)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(safety);
}

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    return tv;
}

void tr(const char *fmt, ...)
{
    size_t used = strlen(trace);
    va_list ap;
    if (used && used + 1 < sizeof trace)
        trace[used++] = ' ';
    va_start(ap, fmt);
    vsnprintf(trace + used, sizeof trace - used, fmt, ap);
    va_end(ap);
}

/* ---- jobs ---- */

/* aj_job_done from a tjob's own callback, with the guard up. */
static void tjob_finish(aj_job *job, int error, void *result)
{
    in_done++;
    aj_job_done(job, error, result);
    in_done--;
}

static void tjob_fire(evutil_socket_t fd, short w, void *arg)
{
    struct tjob *t = arg;
    (void)fd; (void)w;
    tjob_finish(t->job, t->error, t->result);
}

static void tjob_cancel_fire(evutil_socket_t fd, short w, void *arg)
{
    struct tjob *t = arg;
    (void)fd; (void)w;
    tjob_finish(t->job, t->cancel_error ? t->cancel_error : ECANCELED, t->result);
}

static void tjob_start(aj_job *job, void *arg)
{
    struct tjob *t = arg;
    CB_ENTER();
    t->job = job;
    t->started++;
    t->order = ++start_seq;
    if (t->tag)
        tr("start:%s", t->tag);
    if (t->ms == 0) {
        tjob_finish(job, t->error, t->result);
    } else if (t->ms > 0) {
        struct timeval tv = ms_tv(t->ms);
        t->ev = evtimer_new(base, tjob_fire, t);
        evtimer_add(t->ev, &tv);
    }
}

static void tjob_cancel(aj_job *job, void *arg)
{
    struct tjob *t = arg;
    CB_ENTER();
    t->cancelled++;
    if (t->tag)
        tr("cancel:%s", t->tag);
    if (t->stubborn)
        return;
    if (t->ev)
        evtimer_del(t->ev);
    if (t->cancel_ms > 0) {
        struct timeval tv = ms_tv(t->cancel_ms);
        t->cev = evtimer_new(base, tjob_cancel_fire, t);
        evtimer_add(t->cev, &tv);
    } else {
        tjob_finish(job, t->cancel_error ? t->cancel_error : ECANCELED, t->result);
    }
}

void tjob_release(void *arg)
{
    struct tjob *t = arg;
    CB_ENTER();
    t->released++;
    releases++;
    if (t->tag)
        tr("rel:%s", t->tag);
    if (t->ev) {
        event_free(t->ev);
        t->ev = NULL;
    }
    if (t->cev) {
        event_free(t->cev);
        t->cev = NULL;
    }
}

const struct aj_job_ops tops = { "tjob", tjob_start, tjob_cancel, tjob_release };
const struct aj_job_ops tops_noname = { NULL, tjob_start, tjob_cancel, tjob_release };
const struct aj_job_ops tops_nocancel = { "nocancel", tjob_start, NULL, tjob_release };

void other_cancel(aj_job *job, void *cbarg)
{
    int *n = cbarg;
    CB_ENTER();
    (*n)++;
    aj_job_done(job, ECANCELED, NULL);
}

/* ---- callback records ---- */

void wrec_cb(aj_job *job, int error, void *result, void *cbarg)
{
    struct wrec *w = cbarg;
    CB_ENTER();
    w->calls++;
    w->error = error;
    w->result = result;
    w->job = job;
    w->closed = aj_job_closed(job);
    w->active = aj_job_active(job);
    w->size = sched ? aj_scheduler_size(sched) : 0;
    w->at = now_ms();
    if (w->tag)
        tr("w:%s", w->tag);
}

void erec_cb(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    struct erec *e = arg;
    size_t i;
    (void)s;
    CB_ENTER();
    if (e->calls < 8) {
        snprintf(e->messages[e->calls], sizeof e->messages[0], "%s", info->message);
        e->errors[e->calls] = info->error;
    }
    e->calls++;
    snprintf(e->message, sizeof e->message, "%s", info->message);
    e->error = info->error;
    e->job = info->job;
    e->tb_len = info->source_traceback_len;
    if (info->source_traceback_len >= 2) {
        snprintf(e->tb[0], sizeof e->tb[0], "%s", info->source_traceback[0]);
        snprintf(e->tb[1], sizeof e->tb[1], "%s", info->source_traceback[1]);
    }
    e->tb_spawn_frame = -1;
    for (i = 0; i < info->source_traceback_len && e->tb_spawn_frame < 0; i++)
        if (strstr(info->source_traceback[i], "aj_spawn"))
            e->tb_spawn_frame = (int)i;
    if (info->job) {
        struct tjob *t = aj_job_arg(info->job);
        e->released_at_call = t->released;
        if (t->tag)
            tr("exc:%s", t->tag);
    }
}

void sreq_cb(aj_scheduler *s, aj_job *job, int error, void *cbarg)
{
    struct sreq *r = cbarg;
    (void)s;
    CB_ENTER();
    r->calls++;
    r->error = error;
    r->job = job;
    r->started_at_cb = r->t ? r->t->started : 0;
    tr("spawned:%d", error);
}

void done_cb(aj_scheduler *s, aj_job *job, int error, void *result, void *arg)
{
    struct tjob *t = aj_job_arg(job);
    (void)s; (void)arg;
    CB_ENTER();
    done_calls++;
    t->done_calls++;
    t->done_error = error;
    t->done_result = result;
    if (t->tag)
        tr("done:%s", t->tag);
}

void closed_cb(aj_scheduler *s, void *arg)
{
    (void)arg;
    CB_ENTER();
    closed_calls++;
    closed_size = aj_scheduler_size(s);
    tr("closed");
}

void free_in_close_cb(aj_scheduler *s, void *arg)
{
    (void)arg;
    CB_ENTER();
    closed_calls++;
    tr("closed");
    aj_scheduler_free(s);
    if (s == sched)
        sched = NULL;
}

struct aj_stats stats(void)
{
    struct aj_stats st;
    aj_scheduler_get_stats(sched, &st);
    return st;
}

/* ---- log capture ---- */

void capture_log(int severity, const char *msg)
{
    if (severity != EVENT_LOG_DEBUG && severity != EVENT_LOG_MSG &&
        severity != EVENT_LOG_WARN && severity != EVENT_LOG_ERR)
        bad_severities++;
    last_sev = severity;
    snprintf(last_log, sizeof last_log, "%s", msg);
    nlogs++;
}

/* ---- a counting allocator that can fail ---- */

static int mem_refuse(void)
{
    if (++mem_count == mem_fail_at || mem_refuse_all) {
        mem_failed = 1;
        return 1;
    }
    return 0;
}

void *mem_malloc(size_t n)
{
    void *p = mem_refuse() ? NULL : malloc(n);
    if (p)
        mem_live++;
    return p;
}

void *mem_realloc(void *p, size_t n)
{
    void *q = mem_refuse() ? NULL : realloc(p, n);
    if (q && !p)
        mem_live++;
    return q;
}

void mem_free(void *p)
{
    if (p)
        mem_live--;
    free(p);
}

void mem_reset(long fail_at)
{
    mem_count = 0;
    mem_fail_at = fail_at;
    mem_failed = 0;
    mem_refuse_all = 0;
    mem_live = 0;
}

int failure_points(int (*scenario)(long n), long max)
{
    long n;
    int points = 0;

    aj_set_mem_functions(mem_malloc, mem_realloc, mem_free);
    for (n = 1; n < max; n++) {
        mem_reset(n);
        if (!scenario(n))
            break;
        points++;
    }
    aj_set_mem_functions(NULL, NULL, NULL);
    return points;
}

/* ---- main ---- */

int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
