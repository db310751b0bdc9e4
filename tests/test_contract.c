/*
 * test_contract.c -- the core's contract (SPEC sections 2 and 3) checked end
 * to end on real event loops: each test sets up, acts once, and checks real
 * values.  A "guard" flag is raised around every aj_* call a test makes, so
 * any callback that runs inside such a call (re-entrancy) fails the test
 * (the harness, tests/harness.h, checks it at teardown).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <aj/aj.h>

#include "harness.h"

/* ---- 3.2 scheduler ---- */

START_TEST(new_scheduler_has_the_documented_defaults)
{
    ck_assert_uint_eq(aj_scheduler_limit(sched), 100);
    ck_assert_uint_eq(aj_scheduler_pending_limit(sched), 10000);
    ck_assert_ptr_nonnull(aj_scheduler_close_timeout(sched));
    ck_assert_int_eq(aj_scheduler_close_timeout(sched)->tv_sec, 0);
    ck_assert_int_eq(aj_scheduler_close_timeout(sched)->tv_usec, 100000);
    ck_assert_int_eq(aj_scheduler_wait_timeout(sched)->tv_sec, 60);
    ck_assert_uint_eq(aj_scheduler_size(sched), 0);
    ck_assert_int_eq(aj_scheduler_closed(sched), 0);
    ck_assert_ptr_eq(aj_scheduler_base(sched), base);
    ck_assert_ptr_null(aj_scheduler_exception_handler(sched));
}
END_TEST

START_TEST(scheduler_new_without_base_fails_with_einval)
{
    errno = 0;
    ck_assert_ptr_null(aj_scheduler_new(NULL));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(timeouts_can_be_set_to_none_and_bad_values_fail)
{
    struct timeval bad = { 0, 2000000 };
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, NULL), 0);
    ck_assert_ptr_null(aj_scheduler_close_timeout(sched));
    ck_assert_int_eq(aj_scheduler_set_wait_timeout(sched, NULL), 0);
    ck_assert_ptr_null(aj_scheduler_wait_timeout(sched));
    errno = 0;
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, &bad), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(aj_scheduler_set_limit(NULL, 1), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(spawn_beyond_limit_queues_fifo_and_starts_as_slots_free)
{
    struct tjob t[5];
    int i;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 2);
    for (i = 0; i < 5; i++) {
        t[i].ms = 5;
        ck_assert_ptr_nonnull(CALL(aj_spawn(sched, &tops, &t[i])));
    }
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 2);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 3);
    run();
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(t[i].started, 1);
        ck_assert_int_eq(t[i].order, i + 1);
        ck_assert_int_eq(t[i].released, 1);
    }
    check_invariant();
}
END_TEST

START_TEST(raising_the_limit_starts_pending_jobs)
{
    struct tjob t[4];
    int i;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    for (i = 0; i < 4; i++) {
        t[i].ms = -1;
        aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[0].started + t[1].started + t[2].started + t[3].started, 1);
    CALLV(aj_scheduler_set_limit(sched, 3));
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 3);
    ck_assert_int_eq(t[1].started, 0);   /* from the loop, not inside the call */
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[0].started + t[1].started + t[2].started + t[3].started, 3);
    for (i = 0; i < 4; i++)
        if (t[i].started)
            aj_job_done(t[i].job, 0, NULL);
    run();
    ck_assert_int_eq(t[3].started, 1);
    aj_scheduler_free(sched);           /* t[] lives on this stack */
    sched = NULL;
    ck_assert_int_eq(t[3].released, 1);
}
END_TEST

START_TEST(lowering_the_limit_stops_nothing_that_runs)
{
    struct tjob t[3];
    int i;
    memset(t, 0, sizeof t);
    for (i = 0; i < 3; i++) {
        t[i].ms = -1;
        aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_scheduler_set_limit(sched, 1);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 3);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(t[i].cancelled, 0);
        aj_job_done(t[i].job, 0, NULL);
    }
    run();
}
END_TEST

START_TEST(lowering_the_pending_limit_drops_nothing_queued)
{
    struct tjob t[5];
    int i;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    for (i = 0; i < 5; i++) {
        t[i].ms = 1;
        aj_spawn(sched, &tops, &t[i]);
    }
    aj_scheduler_set_pending_limit(sched, 1);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 4);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, &tops, &t[0]));
    ck_assert_int_eq(errno, EAGAIN);
    run();
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(t[i].started, 1);
}
END_TEST

START_TEST(iteration_walks_jobs_in_spawn_order)
{
    struct tjob t[4];
    aj_job *j[4], *it;
    int i = 0;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 2);
    for (i = 0; i < 4; i++) {
        t[i].ms = -1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    i = 0;
    for (it = aj_scheduler_first(sched); it; it = aj_scheduler_next(sched, it))
        ck_assert_ptr_eq(it, j[i++]);
    ck_assert_int_eq(i, 4);
    ck_assert(aj_scheduler_contains(sched, j[3]));
    aj_scheduler_free(sched);           /* t[] lives on this stack */
    sched = NULL;
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(t[i].released, 1);
}
END_TEST

/* ---- 3.3 spawning ---- */

START_TEST(spawn_never_runs_start_inside_the_call)
{
    struct tjob t;
    aj_job *job;
    memset(&t, 0, sizeof t);
    job = CALL(aj_spawn(sched, &tops, &t));
    ck_assert_ptr_nonnull(job);
    ck_assert_int_eq(t.started, 0);
    ck_assert_int_eq(aj_job_active(job), 1);     /* active before its start ran */
    run();
    ck_assert_int_eq(t.started, 1);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(spawn_errors_take_nothing)
{
    struct tjob t;
    struct aj_job_ops bad = { "bad", NULL, NULL, tjob_release };
    memset(&t, 0, sizeof t);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(NULL, &tops, &t));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, NULL, &t));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, &bad, &t));
    ck_assert_int_eq(errno, EINVAL);
    aj_scheduler_close(sched, NULL, NULL);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, &tops, &t));
    ck_assert_int_eq(errno, ESHUTDOWN);
    run();
    ck_assert_int_eq(t.released, 0);
}
END_TEST

START_TEST(spawn_fails_eagain_when_the_pending_queue_is_full)
{
    struct tjob t[3];
    struct aj_stats st;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = t[1].ms = 1;
    ck_assert_ptr_nonnull(aj_spawn(sched, &tops, &t[0]));
    ck_assert_ptr_nonnull(aj_spawn(sched, &tops, &t[1]));
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, &tops, &t[2]));
    ck_assert_int_eq(errno, EAGAIN);
    aj_scheduler_get_stats(sched, &st);
    ck_assert_uint_eq(st.rejected, 1);
    run();
    ck_assert_int_eq(t[2].released, 0);
}
END_TEST

START_TEST(spawn_async_admits_fifo_and_calls_back_before_start)
{
    struct tjob t[4];
    struct sreq r[2];
    int i;
    memset(t, 0, sizeof t);
    memset(r, 0, sizeof r);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = t[1].ms = t[2].ms = t[3].ms = 2;
    aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    for (i = 0; i < 2; i++) {
        r[i].t = &t[2 + i];
        ck_assert_int_eq(CALL(aj_spawn_async(sched, &tops, &t[2 + i], NULL, sreq_cb, &r[i])), 0);
    }
    ck_assert_int_eq(r[0].calls, 0);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, &tops, &t[0]));   /* requests are queued ahead */
    ck_assert_int_eq(errno, EAGAIN);
    run();
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(r[i].calls, 1);
        ck_assert_int_eq(r[i].error, 0);
        ck_assert_int_eq(r[i].started_at_cb, 0);
        ck_assert_int_eq(t[2 + i].started, 1);
    }
    ck_assert_int_lt(t[2].order, t[3].order);
}
END_TEST

START_TEST(spawn_async_times_out_and_the_job_never_exists)
{
    struct tjob t[3];
    struct sreq r;
    struct timeval tv = { 0, 20000 };
    struct aj_stats st;
    memset(t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = t[1].ms = 200;
    aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    r.t = &t[2];
    aj_spawn_async(sched, &tops, &t[2], &tv, sreq_cb, &r);
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, ETIMEDOUT);
    ck_assert_ptr_null(r.job);
    ck_assert_int_eq(t[2].started, 0);
    ck_assert_int_eq(t[2].released, 0);
    aj_scheduler_get_stats(sched, &st);
    ck_assert_uint_eq(st.rejected, 1);
    ck_assert_uint_eq(st.spawned, 2);
}
END_TEST

START_TEST(spawn_async_waiting_when_the_scheduler_closes_gets_eshutdown)
{
    struct tjob t[3];
    struct sreq r;
    memset(t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = t[1].ms = 50;
    aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    r.t = &t[2];
    aj_spawn_async(sched, &tops, &t[2], NULL, sreq_cb, &r);
    CALLV(aj_scheduler_close(sched, NULL, NULL));
    ck_assert_int_eq(r.calls, 0);
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, ESHUTDOWN);
    ck_assert_int_eq(t[2].started, 0);
    ck_assert_int_eq(t[2].released, 0);
    errno = 0;
    ck_assert_int_eq(aj_spawn_async(sched, &tops, &t[2], NULL, sreq_cb, &r), -1);
    ck_assert_int_eq(errno, ESHUTDOWN);
}
END_TEST

/* ---- 3.4 jobs ---- */

START_TEST(wait_gets_the_outcome_and_result)
{
    struct tjob t;
    struct wrec w1, w2;
    static int res;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w1, 0, sizeof w1);
    memset(&w2, 0, sizeof w2);
    t.ms = 2;
    t.error = EIO;
    t.result = &res;
    job = aj_spawn(sched, &tops, &t);
    ck_assert_int_eq(CALL(aj_job_wait(job, NULL, wrec_cb, &w1)), 0);
    ck_assert_int_eq(CALL(aj_job_wait(job, NULL, wrec_cb, &w2)), 0);
    run();
    ck_assert_int_eq(w1.calls, 1);
    ck_assert_int_eq(w1.error, EIO);
    ck_assert_ptr_eq(w1.result, &res);
    ck_assert_int_eq(w2.calls, 1);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(wait_on_a_finished_job_answers_from_the_loop)
{
    struct tjob t;
    struct wrec w;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    job = aj_spawn(sched, &tops, &t);
    aj_job_ref(job);
    run();
    ck_assert_int_eq(t.released, 0);            /* the ref keeps it */
    ck_assert_int_eq(CALL(aj_job_wait(job, NULL, wrec_cb, &w)), 0);
    ck_assert_int_eq(w.calls, 0);
    run();
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, 0);
    aj_job_unref(job);
    ck_assert_int_eq(t.released, 0);            /* released from the loop */
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(wait_timeout_closes_the_job_and_gives_etimedout)
{
    struct tjob t;
    struct wrec w;
    struct timeval tv = { 0, 10000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    t.ms = 5000;
    t.result = &t;                  /* the cancelled job still hands a result */
    job = aj_spawn(sched, &tops, &t);
    aj_job_wait(job, &tv, wrec_cb, &w);
    w.result = &w;
    run();
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert_ptr_null(w.result);   /* a timed-out wait has no result */
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(explicit_jobs_are_never_reported)
{
    struct tjob t;
    struct wrec w;
    struct erec e;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    t.ms = 1;
    t.error = EIO;
    aj_job_wait(aj_spawn(sched, &tops, &t), NULL, wrec_cb, &w);
    run();
    ck_assert_int_eq(e.calls, 0);
    ck_assert_int_eq(w.error, EIO);
}
END_TEST

START_TEST(failure_nobody_waited_for_reaches_the_handler)
{
    struct tjob t;
    struct erec e;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    ck_assert_ptr_eq((void *)aj_scheduler_exception_handler(sched), (void *)erec_cb);
    t.ms = 1;
    t.error = EIO;
    job = aj_spawn(sched, &tops, &t);
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.message, "Job processing failed");
    ck_assert_int_eq(e.error, EIO);
    ck_assert_ptr_eq(e.job, job);
}
END_TEST

START_TEST(cancelled_jobs_are_not_failures)
{
    struct tjob t;
    struct erec e;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    t.ms = 0;
    t.error = ECANCELED;
    aj_spawn(sched, &tops, &t);
    run();
    ck_assert_int_eq(e.calls, 0);
}
END_TEST

START_TEST(default_handler_logs_one_line_with_name_and_strerror)
{
    struct tjob t;
    aj_job *job;
    memset(&t, 0, sizeof t);
    t.error = EIO;
    job = aj_spawn(sched, &tops, &t);
    aj_job_set_name(job, "fetcher");
    run();
    ck_assert_ptr_nonnull(strstr(last_log, "Job processing failed"));
    ck_assert_ptr_nonnull(strstr(last_log, "fetcher"));
    ck_assert_ptr_nonnull(strstr(last_log, strerror(EIO)));
    ck_assert_ptr_null(strchr(last_log, '\n'));
}
END_TEST

START_TEST(close_of_a_pending_job_discards_it_and_never_exceeds_the_limit)
{
    struct tjob t[4];
    struct wrec w, c;
    aj_job *j[4];
    int i;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&c, 0, sizeof c);
    aj_scheduler_set_limit(sched, 1);
    for (i = 0; i < 4; i++) {
        t[i].ms = 2;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    aj_job_wait(j[1], NULL, wrec_cb, &w);
    ck_assert_int_eq(CALL(aj_job_close(j[1], NULL, wrec_cb, &c)), 0);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);   /* aiojobs bug: 2 */
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 2);
    ck_assert_int_eq(aj_job_closed(j[1]), 1);
    run();
    ck_assert_int_eq(t[1].started, 0);
    ck_assert_int_eq(t[1].released, 1);
    ck_assert_int_eq(w.error, ECANCELED);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.error, 0);
    ck_assert_int_eq(t[3].started, 1);
}
END_TEST

START_TEST(closing_a_job_before_its_start_ran_means_it_never_starts)
{
    struct tjob t;
    aj_job *job;
    memset(&t, 0, sizeof t);
    job = aj_spawn(sched, &tops, &t);
    ck_assert_int_eq(aj_job_active(job), 1);
    aj_job_close(job, NULL, NULL, NULL);
    run();
    ck_assert_int_eq(t.started, 0);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(close_outcomes_zero_error_or_timeout)
{
    struct tjob t[3];
    struct wrec c[3];
    aj_job *j[3];
    struct timeval tv = { 0, 20000 };
    int i;
    memset(t, 0, sizeof t);
    memset(c, 0, sizeof c);
    t[0].ms = 5000;                     /* cancels cleanly: 0 */
    t[1].ms = -1; t[1].stubborn = 1;    /* ignores cancel: ETIMEDOUT */
    t[2].ms = 5000;
    for (i = 0; i < 3; i++)
        j[i] = aj_spawn(sched, &tops, &t[i]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(j[0], NULL, wrec_cb, &c[0]);
    aj_job_close(j[1], &tv, wrec_cb, &c[1]);
    aj_job_done(j[2], EIO, NULL);
    aj_job_close(j[2], NULL, wrec_cb, &c[2]);  /* closing a finished job */
    run();
    ck_assert_int_eq(c[0].error, 0);
    ck_assert_int_eq(c[1].error, ETIMEDOUT);
    ck_assert_int_eq(c[2].error, EIO);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);  /* keeps its slot */
    aj_job_done(j[1], ECANCELED, NULL);
    run();
    ck_assert_int_eq(t[1].released, 1);
}
END_TEST

START_TEST(job_done_twice_is_ignored_and_logged)
{
    struct tjob t;
    aj_job *job;
    memset(&t, 0, sizeof t);
    t.ms = -1;
    job = aj_spawn(sched, &tops, &t);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_ref(job);
    aj_job_done(job, 0, NULL);
    nlogs = 0;
    aj_job_done(job, EIO, NULL);
    ck_assert_int_eq(nlogs, 1);
    ck_assert_ptr_nonnull(strstr(last_log, "twice"));
    run();
    {
        struct aj_stats st;
        aj_scheduler_get_stats(sched, &st);
        ck_assert_uint_eq(st.succeeded, 1);
        ck_assert_uint_eq(st.failed, 0);
    }
    aj_job_unref(job);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(names_are_set_ops_or_generated)
{
    struct tjob t[2];
    aj_job *a, *b;
    char buf[64];
    memset(t, 0, sizeof t);
    a = aj_spawn(sched, &tops, &t[0]);
    b = aj_spawn(sched, &tops_noname, &t[1]);
    ck_assert_str_eq(aj_job_name(a), "tjob");
    ck_assert_int_eq(strncmp(aj_job_name(b), "job-", 4), 0);
    strcpy(buf, "mine");
    ck_assert_int_eq(aj_job_set_name(a, buf), 0);
    buf[0] = 'X';                                /* copied */
    ck_assert_str_eq(aj_job_name(a), "mine");
    ck_assert_ptr_eq(aj_job_arg(a), &t[0]);
    ck_assert_ptr_eq(aj_job_scheduler(a), sched);
    {
        unsigned long na = strtoul(aj_job_name(b) + 4, NULL, 10);
        aj_job *c = aj_spawn(sched, &tops_noname, &t[0]);
        ck_assert_uint_eq(strtoul(aj_job_name(c) + 4, NULL, 10), na + 1);
        aj_job_close(c, NULL, NULL, NULL);
    }
    run();
}
END_TEST

START_TEST(set_cancel_replaces_the_hook)
{
    struct tjob t;
    int n = 0;
    aj_job *job;
    memset(&t, 0, sizeof t);
    t.ms = -1;
    job = aj_spawn(sched, &tops, &t);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_set_cancel(job, other_cancel, &n);
    aj_job_close(job, NULL, NULL, NULL);
    run();
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(t.cancelled, 0);
}
END_TEST

START_TEST(a_job_without_cancel_is_waited_for)
{
    struct tjob t;
    struct wrec c;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    t.ms = 30;
    aj_scheduler_set_close_timeout(sched, NULL);
    job = aj_spawn(sched, &tops_nocancel, &t);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(job, NULL, wrec_cb, &c);
    run();
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.error, 0);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

/* ---- 3.5 reports and debug ---- */

START_TEST(call_exception_handler_copies_and_runs_from_the_loop)
{
    struct tjob t;
    struct erec e;
    struct aj_error_info info;
    char msg[32];
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    job = aj_spawn(sched, &tops, &t);
    strcpy(msg, "custom");
    memset(&info, 0, sizeof info);
    info.message = msg;
    info.job = job;
    info.error = EPIPE;
    CALLV(aj_scheduler_call_exception_handler(sched, &info));
    msg[0] = 'X';
    ck_assert_int_eq(e.calls, 0);
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.message, "custom");
    ck_assert_ptr_eq(e.job, job);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(debug_mode_reports_the_spawn_stack)
{
    struct tjob t, t2;
    struct erec e;
    struct sreq r;
    aj_scheduler *s2;
    memset(&t, 0, sizeof t);
    memset(&t2, 0, sizeof t2);
    memset(&e, 0, sizeof e);
    memset(&r, 0, sizeof r);
    setenv("AJ_DEBUG", "1", 1);
    s2 = aj_scheduler_new(base);
    unsetenv("AJ_DEBUG");
    aj_scheduler_set_exception_handler(s2, erec_cb, &e);
    t.error = EIO;
    aj_spawn(s2, &tops, &t);
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_uint_ge(e.tb_len, 2);
    /* It starts at the spawn call: libaj's own frames are left out. */
    ck_assert_int_eq(e.tb_spawn_frame, 0);
    /* The same from aj_spawn_async ("aj_spawn_async" names aj_spawn too). */
    t2.error = EIO;
    ck_assert_int_eq(aj_spawn_async(s2, &tops, &t2, NULL, sreq_cb, &r), 0);
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(e.calls, 2);
    ck_assert_int_eq(e.tb_spawn_frame, 0);
    aj_scheduler_free(s2);
}
END_TEST

/* ---- 3.6 closing ---- */

/* A close callback that also checks the scheduler is empty by then. */
static void closed_empty_cb(aj_scheduler *s, void *arg)
{
    closed_cb(s, arg);
    ck_assert_uint_eq(aj_scheduler_size(s), 0);
}

START_TEST(close_discards_pending_cancels_active_and_calls_every_cb)
{
    struct tjob t[3];
    struct wrec w;
    int i;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_limit(sched, 2);
    for (i = 0; i < 3; i++) {
        t[i].ms = 5000;
        aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_wait(aj_scheduler_next(sched, aj_scheduler_next(sched, aj_scheduler_first(sched))),
                NULL, wrec_cb, &w);
    ck_assert_int_eq(CALL(aj_scheduler_close(sched, closed_empty_cb, NULL)), 0);
    ck_assert_int_eq(CALL(aj_scheduler_close(sched, closed_empty_cb, NULL)), 0);
    ck_assert_int_eq(aj_scheduler_closed(sched), 1);
    run();
    ck_assert_int_eq(closed_calls, 2);
    ck_assert_int_eq(t[0].cancelled + t[1].cancelled, 2);
    ck_assert_int_eq(t[2].started, 0);
    ck_assert_int_eq(w.error, ECANCELED);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(t[i].released, 1);
    check_invariant();
}
END_TEST

START_TEST(close_timeout_reports_and_lets_go_of_stubborn_jobs)
{
    struct tjob t;
    struct erec e;
    struct aj_stats st;
    aj_job *job;
    struct timeval tv = { 0, 10000 };
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_close_timeout(sched, &tv);
    t.ms = -1;
    t.stubborn = 1;
    job = aj_spawn(sched, &tops, &t);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_scheduler_close(sched, closed_empty_cb, NULL);
    run();
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.message, "Job closing timed out");
    ck_assert_int_eq(e.error, ETIMEDOUT);
    aj_scheduler_get_stats(sched, &st);
    ck_assert_uint_eq(st.close_timeouts, 1);
    ck_assert_uint_eq(st.cancelled, 1);
    ck_assert_uint_eq(aj_scheduler_size(sched), 0);
    ck_assert_ptr_null(aj_job_scheduler(job));
    ck_assert_int_eq(t.released, 0);
    /* the let-go job finishes after the scheduler is gone */
    aj_scheduler_free(sched);
    sched = NULL;
    aj_job_done(job, 0, NULL);
    ck_assert_int_eq(t.released, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(wait_and_close_waits_for_jobs_spawned_meanwhile)
{
    struct tjob t[2];
    memset(t, 0, sizeof t);
    t[0].ms = 10;
    t[1].ms = 10;
    aj_spawn(sched, &tops, &t[0]);
    ck_assert_int_eq(aj_scheduler_wait_and_close(sched, NULL, closed_empty_cb, NULL), 0);
    ck_assert_int_eq(aj_scheduler_closed(sched), 0);
    ck_assert_ptr_nonnull(aj_spawn(sched, &tops, &t[1]));
    run();
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t[0].cancelled + t[1].cancelled, 0);
    ck_assert_int_eq(t[0].released + t[1].released, 2);
    ck_assert_int_eq(aj_scheduler_closed(sched), 1);
}
END_TEST

START_TEST(wait_and_close_timeout_then_closes)
{
    struct tjob t;
    struct timeval tv = { 0, 10000 };
    memset(&t, 0, sizeof t);
    t.ms = 5000;
    aj_spawn(sched, &tops, &t);
    aj_scheduler_wait_and_close(sched, &tv, closed_empty_cb, NULL);
    run();
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(free_from_inside_the_close_callback)
{
    struct tjob t[2];
    memset(t, 0, sizeof t);
    t[0].ms = 5;
    aj_scheduler_set_limit(sched, 1);
    aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    aj_scheduler_close(sched, free_in_close_cb, NULL);
    sched = NULL;
    run();
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t[0].released + t[1].released, 2);
}
END_TEST

START_TEST(free_runs_every_owed_callback_synchronously)
{
    struct tjob t[3];
    struct wrec wp, wr;
    struct sreq r;
    aj_job *j[3];
    int i;
    memset(t, 0, sizeof t);
    memset(&wp, 0, sizeof wp);
    memset(&wr, 0, sizeof wr);
    memset(&r, 0, sizeof r);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = -1; t[0].stubborn = 1;     /* running, ignores cancel: let go */
    t[1].ms = -1;                        /* pending: discarded */
    for (i = 0; i < 2; i++)
        j[i] = aj_spawn(sched, &tops, &t[i]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    r.t = &t[2];
    aj_spawn_async(sched, &tops, &t[2], NULL, sreq_cb, &r);
    aj_job_wait(j[0], NULL, wrec_cb, &wr);
    aj_job_wait(j[1], NULL, wrec_cb, &wp);
    aj_scheduler_close(sched, free_in_close_cb, NULL);   /* never completes: stubborn */
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(t[0].cancelled, 1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, ESHUTDOWN);
    ck_assert_int_eq(wp.error, ECANCELED);
    ck_assert_int_eq(wr.error, ESHUTDOWN);
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t[1].released, 1);
    ck_assert_int_eq(t[2].released, 0);
    ck_assert_int_eq(t[0].released, 0);
    aj_job_done(j[0], 0, NULL);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[0].released, 1);
}
END_TEST

/* ---- 3.7 beyond aiojobs ---- */

START_TEST(stats_count_every_outcome_and_the_pending_peak)
{
    struct tjob t[5];
    struct aj_stats st;
    int i;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    t[1].error = EIO;
    t[2].error = ECANCELED;
    for (i = 0; i < 4; i++) {
        t[i].ms = 1;
        aj_spawn(sched, &tops, &t[i]);
    }
    aj_job_close(aj_scheduler_next(sched, aj_scheduler_next(sched,
                 aj_scheduler_next(sched, aj_scheduler_first(sched)))), NULL, NULL, NULL);
    run();
    aj_scheduler_get_stats(sched, &st);
    ck_assert_uint_eq(st.spawned, 4);
    ck_assert_uint_eq(st.started, 3);
    ck_assert_uint_eq(st.succeeded, 1);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.cancelled, 2);
    ck_assert_uint_eq(st.pending_peak, 3);
    check_invariant();
}
END_TEST

START_TEST(job_timeout_cancels_and_reports_etimedout)
{
    struct tjob t[2];
    struct erec e;
    struct wrec w;
    struct aj_stats st;
    struct timeval tv = { 0, 10000 }, none_tv = { 0, 0 };
    aj_job *j1;
    memset(t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    memset(&w, 0, sizeof w);
    (void)none_tv;
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    ck_assert_int_eq(aj_scheduler_set_job_timeout(sched, &tv), 0);
    t[0].ms = 5000;
    t[1].ms = 5000;
    aj_spawn(sched, &tops, &t[0]);
    j1 = aj_spawn(sched, &tops, &t[1]);
    aj_job_wait(j1, NULL, wrec_cb, &w);
    run();
    ck_assert_int_eq(t[0].cancelled, 1);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.message, "Job processing failed");
    ck_assert_int_eq(e.error, ETIMEDOUT);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    aj_scheduler_get_stats(sched, &st);
    ck_assert_uint_eq(st.job_timeouts, 2);
    ck_assert_uint_eq(st.failed, 2);
}
END_TEST

START_TEST(per_job_timeout_overrides_the_scheduler)
{
    struct tjob t;
    struct wrec w;
    struct timeval tv = { 0, 10000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_job_timeout(sched, &tv);
    t.ms = 30;
    job = aj_spawn(sched, &tops, &t);
    ck_assert_int_eq(aj_job_set_timeout(job, NULL), 0);   /* none for this one */
    aj_job_wait(job, NULL, wrec_cb, &w);
    run();
    ck_assert_int_eq(t.cancelled, 0);
    ck_assert_int_eq(w.error, 0);
}
END_TEST

struct drec {
    int calls, waiter_before, error;
    struct wrec *w;
};

static void drec_cb(aj_scheduler *s, aj_job *job, int error, void *result, void *arg)
{
    struct drec *d = arg;
    (void)s; (void)job; (void)result;
    CB_ENTER();
    d->calls++;
    d->error = error;
    d->waiter_before = d->w->calls;
}

START_TEST(done_callback_runs_after_waiters_and_for_discarded_jobs)
{
    struct tjob t[2];
    struct wrec w;
    struct drec d;
    aj_job *j[2];
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&d, 0, sizeof d);
    d.w = &w;
    aj_scheduler_set_done_callback(sched, drec_cb, &d);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = 2;
    j[0] = aj_spawn(sched, &tops, &t[0]);
    j[1] = aj_spawn(sched, &tops, &t[1]);
    aj_job_wait(j[0], NULL, wrec_cb, &w);
    aj_job_close(j[1], NULL, NULL, NULL);
    run();
    ck_assert_int_eq(d.calls, 2);
    ck_assert_int_eq(d.waiter_before, 1);
}
END_TEST

START_TEST(refs_delay_release_until_the_last_unref)
{
    struct tjob t;
    aj_job *job;
    memset(&t, 0, sizeof t);
    job = aj_spawn(sched, &tops, &t);
    aj_job_ref(job);
    aj_job_ref(job);
    run();
    aj_job_unref(job);
    run();
    ck_assert_int_eq(t.released, 0);
    CALLV(aj_job_unref(job));
    ck_assert_int_eq(t.released, 0);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

/* ---- revision 2: aj_scheduler_free from any callback (3.6) ---- */

/*
 * Which callback frees the scheduler, and of which job.  Every callback
 * below frees it at its point and then goes on using what it was handed
 * (the job above all), which must still be valid until it returns; then
 * the loop runs to its end and every job must have been released exactly
 * once (ASan and valgrind see any access to freed memory).
 */
enum free_at { FREE_NONE, FREE_START, FREE_CANCEL, FREE_RELEASE };
static enum free_at free_at;
static struct tjob *freer;
static const char *name_after_free;

static void free_sched_now(void)
{
    aj_scheduler *s = sched;
    sched = NULL;
    aj_scheduler_free(s);
}

static void f_start(aj_job *job, void *arg)
{
    tops.start(job, arg);
    if (free_at == FREE_START && arg == freer) {
        free_sched_now();
        name_after_free = aj_job_name(job);     /* the job outlives its start */
    }
}

static void f_cancel(aj_job *job, void *arg)
{
    tops.cancel(job, arg);
    if (free_at == FREE_CANCEL && arg == freer) {
        free_sched_now();
        name_after_free = aj_job_name(job);
    }
}

static void f_release(void *arg)
{
    tops.release(arg);
    if (free_at == FREE_RELEASE && arg == freer && sched)
        free_sched_now();
}

static const struct aj_job_ops fops = {
    .name = "fjob", .start = f_start, .cancel = f_cancel, .release = f_release
};

static void free_wcb(aj_job *job, int error, void *result, void *cbarg)
{
    wrec_cb(job, error, result, cbarg);
    if (sched)
        free_sched_now();
    name_after_free = aj_job_name(job);
}

static void free_scb(aj_scheduler *s, aj_job *job, int error, void *cbarg)
{
    sreq_cb(s, job, error, cbarg);
    free_sched_now();
    if (job)
        name_after_free = aj_job_name(job);
}

static void free_ecb(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    erec_cb(s, info, arg);
    if (sched)
        free_sched_now();
    if (info->job)
        name_after_free = aj_job_name(info->job);
}

static void free_dcb(aj_scheduler *s, aj_job *job, int error, void *result, void *arg)
{
    done_cb(s, job, error, result, arg);
    if (sched)
        free_sched_now();
    name_after_free = aj_job_name(job);
}

/* Three jobs under limit 2: t[0] and t[1] run, t[2] waits. */
static void spawn_three(struct tjob t[3], aj_job *j[3])
{
    int i;
    memset(t, 0, 3 * sizeof *t);
    free_at = FREE_NONE;
    freer = &t[0];
    name_after_free = NULL;
    ck_assert_int_eq(aj_scheduler_set_limit(sched, 2), 0);
    for (i = 0; i < 3; i++) {
        t[i].ms = -1;
        j[i] = aj_spawn(sched, &fops, &t[i]);
        ck_assert_ptr_nonnull(j[i]);
    }
}

static void assert_each_released_once(struct tjob *t, int n)
{
    int i;
    for (i = 0; i < n; i++)
        ck_assert_msg(t[i].released == 1, "job %d released %d times", i, t[i].released);
    ck_assert_ptr_nonnull(name_after_free);
    ck_assert_str_eq(name_after_free, "fjob");
}

START_TEST(free_inside_start)
{
    struct tjob t[3];
    aj_job *j[3];
    spawn_three(t, j);
    free_at = FREE_START;
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(t[0].cancelled, 1);
    ck_assert_int_eq(t[2].started, 0);
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_cancel)
{
    struct tjob t[3];
    aj_job *j[3];
    spawn_three(t, j);
    free_at = FREE_CANCEL;
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(aj_job_close(j[0], NULL, NULL, NULL), 0);
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(t[0].cancelled, 1);   /* not asked twice by the free */
    ck_assert_int_eq(t[1].cancelled, 1);
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_a_wait_callback)
{
    struct tjob t[3];
    aj_job *j[3];
    struct wrec w;
    spawn_three(t, j);
    memset(&w, 0, sizeof w);
    t[0].ms = 1;
    ck_assert_int_eq(aj_job_wait(j[0], NULL, free_wcb, &w), 0);
    ck_assert_int_eq(aj_scheduler_set_done_callback(sched, done_cb, NULL), 0);
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, 0);
    ck_assert_int_eq(done_calls, 0);        /* not after the free */
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_a_close_callback_whose_close_timed_out)
{
    struct tjob t[3];
    aj_job *j[3];
    struct wrec w;
    struct timeval ms5 = { 0, 5000 };
    spawn_three(t, j);
    memset(&w, 0, sizeof w);
    t[0].stubborn = 1;
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(aj_job_close(j[0], &ms5, free_wcb, &w), 0);
    run();                              /* from a timer this time */
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert_int_eq(t[0].released, 0); /* let go: still running */
    CALLV(aj_job_done(j[0], 0, NULL));
    ck_assert_int_eq(t[0].released, 0); /* never inside aj_job_done */
    run();
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_a_spawn_callback)
{
    struct tjob t[4];
    aj_job *j[3];
    struct sreq r;
    spawn_three(t, j);
    memset(&t[3], 0, sizeof t[3]);
    memset(&r, 0, sizeof r);
    t[3].ms = -1;
    ck_assert_int_eq(aj_scheduler_set_pending_limit(sched, 2), 0);
    ck_assert_int_eq(aj_spawn_async(sched, &fops, &t[3], NULL, free_scb, &r), 0);
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(t[3].started, 0);
    assert_each_released_once(t, 4);
}
END_TEST

START_TEST(free_inside_the_exception_handler)
{
    struct tjob t[3];
    aj_job *j[3];
    struct erec e;
    spawn_three(t, j);
    memset(&e, 0, sizeof e);
    t[0].ms = 1;
    t[0].error = EIO;                   /* nobody waits: reported */
    ck_assert_int_eq(aj_scheduler_set_exception_handler(sched, free_ecb, &e), 0);
    ck_assert_int_eq(aj_scheduler_set_done_callback(sched, done_cb, NULL), 0);
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(done_calls, 0);
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_the_exception_handler_of_a_close_timeout)
{
    struct tjob t[3];
    aj_job *j[3];
    struct erec e;
    struct timeval ms5 = { 0, 5000 };
    spawn_three(t, j);
    memset(&e, 0, sizeof e);
    t[0].stubborn = t[1].stubborn = 1;
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, &ms5), 0);
    ck_assert_int_eq(aj_scheduler_set_exception_handler(sched, free_ecb, &e), 0);
    ck_assert_int_eq(aj_scheduler_close(sched, closed_cb, NULL), 0);
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(e.calls, 1);       /* the first report frees */
    ck_assert_int_eq(closed_calls, 1);  /* run by the free */
    CALLV(aj_job_done(j[0], 0, NULL));
    CALLV(aj_job_done(j[1], 0, NULL));
    run();
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_the_done_callback)
{
    struct tjob t[3];
    aj_job *j[3];
    spawn_three(t, j);
    t[0].ms = 1;
    ck_assert_int_eq(aj_scheduler_set_done_callback(sched, free_dcb, NULL), 0);
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(done_calls, 1);
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_a_release)
{
    struct tjob t[3];
    aj_job *j[3];
    spawn_three(t, j);
    t[0].ms = 1;
    free_at = FREE_RELEASE;
    run();
    ck_assert_ptr_null(sched);
    name_after_free = "fjob";           /* a release has no job to use */
    assert_each_released_once(t, 3);
}
END_TEST

START_TEST(free_inside_the_job_timeout_report)
{
    struct tjob t[3];
    aj_job *j[3];
    struct erec e;
    struct timeval ms2 = { 0, 2000 };
    spawn_three(t, j);
    memset(&e, 0, sizeof e);
    t[0].stubborn = 1;
    ck_assert_int_eq(aj_job_set_timeout(j[0], &ms2), 0);
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, &ms2), 0);
    ck_assert_int_eq(aj_scheduler_set_exception_handler(sched, free_ecb, &e), 0);
    run();                              /* job timeout, close timeout, report */
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(e.error, ETIMEDOUT);
    CALLV(aj_job_done(j[0], 0, NULL));
    run();
    assert_each_released_once(t, 3);
}
END_TEST

/* ---- revision 2: a let-go job's release when libevent cannot allocate ---- */

static int lev_refuse;
static void *lev_malloc(size_t n) { return lev_refuse ? NULL : malloc(n); }
static void *lev_realloc(void *p, size_t n) { return lev_refuse ? NULL : realloc(p, n); }
static void lev_free(void *p) { free(p); }

START_TEST(release_of_a_let_go_job_never_runs_inside_job_done_even_without_memory)
{
    struct tjob t[2];
    aj_job *j[2];
    struct timeval ms2 = { 0, 2000 };
    int i;
    memset(t, 0, sizeof t);
    for (i = 0; i < 2; i++) {
        t[i].ms = -1;
        t[i].stubborn = 1;
        t[i].tag = i ? "b" : "a";
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);     /* both start */
    aj_job_ref(j[1]);
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, &ms2), 0);
    ck_assert_int_eq(aj_scheduler_close(sched, closed_cb, NULL), 0);
    run();                              /* both let go */
    ck_assert_int_eq(closed_calls, 1);
    /* libevent's allocator (event_base_once's) refuses from here on. */
    event_set_mem_functions(lev_malloc, lev_realloc, lev_free);
    lev_refuse = 1;
    CALLV(aj_job_done(j[0], 0, NULL));
    CALLV(aj_job_done(j[1], 0, NULL));
    CALLV(aj_job_unref(j[1]));
    lev_refuse = 0;
    ck_assert_msg(t[0].released + t[1].released == 0, "released inside: %s", trace);
    run();
    event_set_mem_functions(NULL, NULL, NULL);
    ck_assert_int_eq(t[0].released, 1);
    ck_assert_int_eq(t[1].released, 1);
}
END_TEST

/* ---- revision 2: cancel hooks called once per close (3.4) ---- */

struct hookrec {
    int a, b;
    aj_job *job;
};

static void rearm_self(aj_job *job, void *cbarg)
{
    struct hookrec *h = cbarg;
    CB_ENTER();
    h->a++;
    ck_assert_int_eq(aj_job_set_cancel(job, rearm_self, h), 0);
    if (h->a >= 50)                     /* revision 1 spun: stop it here */
        aj_job_done(job, ECANCELED, NULL);
}

START_TEST(cancel_hook_rearmed_inside_itself_is_called_once)
{
    struct tjob t;
    struct hookrec h;
    struct wrec w;
    struct timeval ms5 = { 0, 5000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&h, 0, sizeof h);
    memset(&w, 0, sizeof w);
    t.ms = -1;
    job = aj_spawn(sched, &tops, &t);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(CALL(aj_job_set_cancel(job, rearm_self, &h)), 0);
    ck_assert_int_eq(CALL(aj_job_close(job, &ms5, wrec_cb, &w)), 0);
    run();
    ck_assert_int_eq(h.a, 1);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    CALLV(aj_job_done(job, ECANCELED, NULL));
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

static void hook_b(aj_job *job, void *cbarg);
static void hook_a(aj_job *job, void *cbarg)
{
    struct hookrec *h = cbarg;
    CB_ENTER();
    h->a++;
    ck_assert_int_eq(aj_job_set_cancel(job, hook_b, h), 0);     /* next state */
}

static void hook_b(aj_job *job, void *cbarg)
{
    struct hookrec *h = cbarg;
    CB_ENTER();
    h->b++;
    ck_assert_int_eq(aj_job_set_cancel(job, hook_a, h), 0);     /* back: heard */
    if (h->b == 1)
        h->job = job;                   /* the test finishes it */
}

START_TEST(each_hook_pair_is_called_at_most_once_per_close)
{
    struct tjob t;
    struct hookrec h, h2;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&h, 0, sizeof h);
    memset(&h2, 0, sizeof h2);
    t.ms = -1;
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, NULL), 0);
    job = aj_spawn(sched, &tops, &t);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(aj_job_set_cancel(job, hook_a, &h), 0);
    ck_assert_int_eq(aj_job_close(job, NULL, NULL, NULL), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(h.a, 1);
    ck_assert_int_eq(h.b, 1);
    /* The same function with another cbarg is another hook: called once. */
    ck_assert_int_eq(CALL(aj_job_set_cancel(job, hook_b, &h2)), 0);
    ck_assert_int_eq(h2.b, 0);          /* from the loop, not inside */
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(h2.b, 1);
    ck_assert_int_eq(h.a + h.b, 2);
    event_base_loop(base, EVLOOP_NONBLOCK);
    /* hook_b(h2) armed hook_a(h2): a new pair, called once; it armed
     * hook_b(h2) again, which was heard. */
    ck_assert_int_eq(h2.a, 1);
    ck_assert_int_eq(h2.b, 1);
    CALLV(aj_job_done(job, ECANCELED, NULL));
    run();
    ck_assert_int_eq(h.a, 1);
    ck_assert_int_eq(h.b, 1);
    ck_assert_int_eq(h2.a + h2.b, 2);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(a_job_done_before_its_queued_hook_never_gets_it)
{
    struct tjob t;
    struct hookrec h;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&h, 0, sizeof h);
    t.ms = -1;
    t.stubborn = 1;
    job = aj_spawn(sched, &tops, &t);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(aj_job_close(job, NULL, NULL, NULL), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(CALL(aj_job_set_cancel(job, hook_a, &h)), 0);   /* queued */
    CALLV(aj_job_done(job, ECANCELED, NULL));
    run();
    ck_assert_int_eq(h.a, 0);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(setters_return_int_and_fail_with_einval)
{
    errno = 0;
    ck_assert_int_eq(aj_job_set_cancel(NULL, other_cancel, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(aj_scheduler_set_exception_handler(NULL, erec_cb, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(aj_scheduler_set_done_callback(NULL, done_cb, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(aj_scheduler_set_exception_handler(sched, NULL, NULL), 0);
    ck_assert_int_eq(aj_scheduler_set_done_callback(sched, NULL, NULL), 0);
}
END_TEST

static Suite *contract_suite(void)
{
    Suite *s = suite_create("contract");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, harness_setup, harness_teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, new_scheduler_has_the_documented_defaults);
    tcase_add_test(tc, scheduler_new_without_base_fails_with_einval);
    tcase_add_test(tc, timeouts_can_be_set_to_none_and_bad_values_fail);
    tcase_add_test(tc, spawn_beyond_limit_queues_fifo_and_starts_as_slots_free);
    tcase_add_test(tc, raising_the_limit_starts_pending_jobs);
    tcase_add_test(tc, lowering_the_limit_stops_nothing_that_runs);
    tcase_add_test(tc, lowering_the_pending_limit_drops_nothing_queued);
    tcase_add_test(tc, iteration_walks_jobs_in_spawn_order);
    tcase_add_test(tc, spawn_never_runs_start_inside_the_call);
    tcase_add_test(tc, spawn_errors_take_nothing);
    tcase_add_test(tc, spawn_fails_eagain_when_the_pending_queue_is_full);
    tcase_add_test(tc, spawn_async_admits_fifo_and_calls_back_before_start);
    tcase_add_test(tc, spawn_async_times_out_and_the_job_never_exists);
    tcase_add_test(tc, spawn_async_waiting_when_the_scheduler_closes_gets_eshutdown);
    tcase_add_test(tc, wait_gets_the_outcome_and_result);
    tcase_add_test(tc, wait_on_a_finished_job_answers_from_the_loop);
    tcase_add_test(tc, wait_timeout_closes_the_job_and_gives_etimedout);
    tcase_add_test(tc, explicit_jobs_are_never_reported);
    tcase_add_test(tc, failure_nobody_waited_for_reaches_the_handler);
    tcase_add_test(tc, cancelled_jobs_are_not_failures);
    tcase_add_test(tc, default_handler_logs_one_line_with_name_and_strerror);
    tcase_add_test(tc, close_of_a_pending_job_discards_it_and_never_exceeds_the_limit);
    tcase_add_test(tc, closing_a_job_before_its_start_ran_means_it_never_starts);
    tcase_add_test(tc, close_outcomes_zero_error_or_timeout);
    tcase_add_test(tc, job_done_twice_is_ignored_and_logged);
    tcase_add_test(tc, names_are_set_ops_or_generated);
    tcase_add_test(tc, set_cancel_replaces_the_hook);
    tcase_add_test(tc, a_job_without_cancel_is_waited_for);
    tcase_add_test(tc, call_exception_handler_copies_and_runs_from_the_loop);
    tcase_add_test(tc, debug_mode_reports_the_spawn_stack);
    tcase_add_test(tc, close_discards_pending_cancels_active_and_calls_every_cb);
    tcase_add_test(tc, close_timeout_reports_and_lets_go_of_stubborn_jobs);
    tcase_add_test(tc, wait_and_close_waits_for_jobs_spawned_meanwhile);
    tcase_add_test(tc, wait_and_close_timeout_then_closes);
    tcase_add_test(tc, free_from_inside_the_close_callback);
    tcase_add_test(tc, free_runs_every_owed_callback_synchronously);
    tcase_add_test(tc, stats_count_every_outcome_and_the_pending_peak);
    tcase_add_test(tc, job_timeout_cancels_and_reports_etimedout);
    tcase_add_test(tc, per_job_timeout_overrides_the_scheduler);
    tcase_add_test(tc, done_callback_runs_after_waiters_and_for_discarded_jobs);
    tcase_add_test(tc, refs_delay_release_until_the_last_unref);
    suite_add_tcase(s, tc);

    tc = tcase_create("revision2");
    tcase_add_checked_fixture(tc, harness_setup, harness_teardown);
    tcase_add_test(tc, free_inside_start);
    tcase_add_test(tc, free_inside_cancel);
    tcase_add_test(tc, free_inside_a_wait_callback);
    tcase_add_test(tc, free_inside_a_close_callback_whose_close_timed_out);
    tcase_add_test(tc, free_inside_a_spawn_callback);
    tcase_add_test(tc, free_inside_the_exception_handler);
    tcase_add_test(tc, free_inside_the_exception_handler_of_a_close_timeout);
    tcase_add_test(tc, free_inside_the_done_callback);
    tcase_add_test(tc, free_inside_a_release);
    tcase_add_test(tc, free_inside_the_job_timeout_report);
    tcase_add_test(tc, release_of_a_let_go_job_never_runs_inside_job_done_even_without_memory);
    tcase_add_test(tc, cancel_hook_rearmed_inside_itself_is_called_once);
    tcase_add_test(tc, each_hook_pair_is_called_at_most_once_per_close);
    tcase_add_test(tc, a_job_done_before_its_queued_hook_never_gets_it);
    tcase_add_test(tc, setters_return_int_and_fail_with_einval);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(contract_suite());
}
