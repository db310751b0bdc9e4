/*
 * test_core_threads.c -- the pattern the guide presents as supported: one
 * scheduler per thread, each on its own event_base, all at once.  Every
 * thread spawns jobs that arm libevent timers, waits on each with a
 * timeout (so every thread stamps timer deadlines: the clock, timer.c),
 * lets some time out, closes its scheduler and frees it from its close
 * callback (SPEC 3.6).  Nothing is shared between the threads but the
 * library's own process-wide state, which must be thread-clean: this
 * program is what the ThreadSanitizer build and helgrind run (.ci/run).
 * Revision 1 made ThreadSanitizer report the timer clock's tick (a plain
 * static written by whichever thread came first).
 *
 * TAP output; exit status 0 when every check passed.  AJ_THREADS_JOBS
 * sets the jobs per thread (default 300).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <aj/aj.h>

#define NTHREADS 2

struct worker;

struct tj {
    struct worker *w;
    struct event *ev;
    aj_job *job;
    int started, released, waited, wait_error;
};

struct worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    aj_scheduler *s;
    struct tj *jobs;
    int njobs;
    int released, waited, timed_out, succeeded, closed, spawn_failures;
};

static void tj_fire(evutil_socket_t fd, short what, void *arg)
{
    struct tj *t = arg;
    (void)fd;
    (void)what;
    aj_job_done(t->job, 0, t);
}

static void tj_start(aj_job *job, void *arg)
{
    struct tj *t = arg;
    /* Most finish in 0-2 ms; one in ten takes 200 ms and outlives its
     * wait (50 ms): the wait closes it, and its cancel finishes it. */
    struct timeval tv = { 0, (t - t->w->jobs) % 10 == 0 ? 200000 : ((t - t->w->jobs) % 3) * 1000 };
    t->job = job;
    t->started = 1;
    t->ev = evtimer_new(t->w->base, tj_fire, t);
    if (!t->ev || evtimer_add(t->ev, &tv) < 0)
        aj_job_done(job, ENOMEM, NULL);
}

static void tj_cancel(aj_job *job, void *arg)
{
    struct tj *t = arg;
    if (t->ev)
        evtimer_del(t->ev);
    aj_job_done(job, ECANCELED, NULL);
}

static void tj_release(void *arg)
{
    struct tj *t = arg;
    if (t->ev)
        event_free(t->ev);
    t->ev = NULL;
    t->released++;
    t->w->released++;
}

static const struct aj_job_ops tj_ops = {
    .name = "mt", .start = tj_start, .cancel = tj_cancel, .release = tj_release
};

static void waited(aj_job *job, int error, void *result, void *cbarg)
{
    struct tj *t = cbarg;
    (void)job;
    (void)result;
    t->waited++;
    t->wait_error = error;
    t->w->waited++;
    if (error == ETIMEDOUT)
        t->w->timed_out++;
    else if (error == 0)
        t->w->succeeded++;
}

static void closed(aj_scheduler *s, void *arg)
{
    struct worker *w = arg;
    w->closed++;
    aj_scheduler_free(s);           /* from its own callback (SPEC 3.6) */
    w->s = NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct timeval wait_tv = { 0, 50000 }, close_tv = { 1, 0 };
    int i;

    aj_scheduler_set_limit(w->s, 0);
    aj_scheduler_set_pending_limit(w->s, 0);
    aj_scheduler_set_close_timeout(w->s, &close_tv);
    for (i = 0; i < w->njobs; i++) {
        struct tj *t = &w->jobs[i];
        aj_job *job;
        t->w = w;
        job = aj_spawn(w->s, &tj_ops, t);
        if (!job || aj_job_wait(job, &wait_tv, waited, t) < 0) {
            w->spawn_failures++;
            continue;
        }
    }
    aj_scheduler_wait_and_close(w->s, NULL, closed, w);
    event_base_dispatch(w->base);
    return NULL;
}

static int failed, checks;

static void check(int ok, const char *what, int id)
{
    checks++;
    if (!ok)
        failed++;
    printf("%sok %d - thread %d: %s\n", ok ? "" : "not ", checks, id, what);
}

int main(void)
{
    struct worker w[NTHREADS];
    const char *env = getenv("AJ_THREADS_JOBS");
    int njobs = env ? atoi(env) : 300, i, j;

    if (njobs <= 0)
        njobs = 300;
    memset(w, 0, sizeof w);
    /* Created here, used by one thread each, freed after the join:
     * pthread_create and pthread_join order those accesses. */
    for (i = 0; i < NTHREADS; i++) {
        w[i].id = i;
        w[i].njobs = njobs;
        w[i].jobs = calloc((size_t)njobs, sizeof *w[i].jobs);
        w[i].base = event_base_new();
        w[i].s = w[i].base ? aj_scheduler_new(w[i].base) : NULL;
        if (!w[i].jobs || !w[i].s) {
            printf("Bail out! setup: %s\n", strerror(errno));
            return 1;
        }
    }
    for (i = 0; i < NTHREADS; i++)
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            printf("Bail out! pthread_create\n");
            return 1;
        }
    for (i = 0; i < NTHREADS; i++)
        pthread_join(w[i].thread, NULL);

    printf("1..%d\n", NTHREADS * 5);
    for (i = 0; i < NTHREADS; i++) {
        int once = 1, slow_timed_out = 1;
        for (j = 0; j < njobs; j++) {
            once &= w[i].jobs[j].released == 1 && w[i].jobs[j].waited == 1;
            if (j % 10 == 0)        /* its timer is due long after its wait */
                slow_timed_out &= w[i].jobs[j].wait_error == ETIMEDOUT;
        }
        check(w[i].spawn_failures == 0, "every spawn and wait accepted", i);
        check(once, "every job released once and its waiter called once", i);
        check(slow_timed_out, "the slow tenth timed out", i);
        /* The fast ones succeed, unless the machine is so slow that their
         * wait ran out first: no timing is asserted. */
        check(w[i].succeeded + w[i].timed_out == njobs, "every outcome 0 or ETIMEDOUT", i);
        check(w[i].closed == 1 && w[i].s == NULL, "closed, and freed in its close callback", i);
        event_base_free(w[i].base);
        free(w[i].jobs);
    }
    return failed ? 1 : 0;
}
