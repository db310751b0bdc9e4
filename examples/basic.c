/*
 * examples/basic.c -- libaj in one screen, no HTTP.
 *
 * Twelve "downloads" (timers standing in for slow I/O) are spawned on a
 * scheduler that runs at most 3 at once and queues at most 8: three start,
 * eight wait their turn, the twelfth is refused with EAGAIN (back-pressure:
 * the queue is full).  One download
 * fails and nobody waits for it, so the failure reaches the exception
 * handler.  Then aj_scheduler_wait_and_close() drains: it waits for every
 * job, and the program prints the scheduler's counters.
 *
 * Each job is a continuation struct with a small state machine: start arms
 * a timer, the timer finishes the job, cancel stops the timer.
 *
 *   ./examples/basic
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include <aj/aj.h>

struct download {
    int id;
    int ms;                   /* how long the "transfer" takes */
    int fail;                 /* finish with EIO instead of success */
    struct event *timer;      /* the pending I/O */
    aj_scheduler *s;
};

static struct timeval t0;

static double now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (tv.tv_sec - t0.tv_sec) * 1e3 + (tv.tv_usec - t0.tv_usec) / 1e3;
}

static void show(struct download *d, const char *what)
{
    printf("%7.1f ms  job %-2d %-9s active %zu/%zu  pending %zu\n", now_ms(), d->id, what,
           aj_scheduler_active_count(d->s), aj_scheduler_limit(d->s),
           aj_scheduler_pending_count(d->s));
}

static void transfer_done(evutil_socket_t fd, short what, void *arg)
{
    aj_job *job = arg;
    struct download *d = aj_job_arg(job);

    (void)fd;
    (void)what;
    show(d, d->fail ? "fails" : "finishes");
    aj_job_done(job, d->fail ? EIO : 0, NULL);
}

static void download_start(aj_job *job, void *arg)
{
    struct download *d = arg;
    struct timeval tv = { 0, d->ms * 1000 };

    d->timer = evtimer_new(aj_scheduler_base(d->s), transfer_done, job);
    if (!d->timer) {
        aj_job_done(job, ENOMEM, NULL);
        return;
    }
    evtimer_add(d->timer, &tv);
    show(d, "starts");
}

static void download_cancel(aj_job *job, void *arg)
{
    struct download *d = arg;

    event_del(d->timer);
    aj_job_done(job, ECANCELED, NULL);
}

static void download_release(void *arg)
{
    struct download *d = arg;

    if (d->timer)
        event_free(d->timer);
    free(d);
}

static const struct aj_job_ops download_ops = {
    .name = "download",
    .start = download_start,
    .cancel = download_cancel,
    .release = download_release,
};

static void on_failure(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    int *failures = arg;

    (void)s;
    ++*failures;
    printf("           exception handler: \"%s\": job %s: %s\n", info->message,
           aj_job_name(info->job), strerror(info->error));
}

static void drained(aj_scheduler *s, void *arg)
{
    int *done = arg;

    (void)s;
    printf("%7.1f ms  drained: every job finished, scheduler closed\n",
           now_ms());
    *done = 1;
}

int main(void)
{
    struct event_base *base = event_base_new();
    aj_scheduler *s;
    struct aj_stats st;
    int i, failures = 0, drained_ok = 0, refused = 0;
    char name[32];

    if (!base || !(s = aj_scheduler_new(base))) {
        fprintf(stderr, "basic: cannot create the base or scheduler\n");
        return 1;
    }
    aj_scheduler_set_limit(s, 3);
    aj_scheduler_set_pending_limit(s, 8);
    aj_scheduler_set_exception_handler(s, on_failure, &failures);
    gettimeofday(&t0, NULL);

    printf("limit 3 jobs at once, at most 8 pending; 12 spawns\n");
    for (i = 1; i <= 12; i++) {
        struct download *d = calloc(1, sizeof *d);
        aj_job *job;

        if (!d)
            return 1;
        d->id = i;
        d->ms = 20 + (i * 37) % 60;
        d->fail = (i == 5);
        d->s = s;
        job = aj_spawn(s, &download_ops, d);
        if (!job) {
            /* Refused: nothing was taken, the arg is still ours. */
            printf("           spawn %-2d refused: %s\n", i, strerror(errno));
            free(d);
            refused++;
            continue;
        }
        snprintf(name, sizeof name, "download-%d", i);
        aj_job_set_name(job, name);
    }
    printf("           after spawning: %zu jobs, %zu active, %zu pending\n",
           aj_scheduler_size(s), aj_scheduler_active_count(s), aj_scheduler_pending_count(s));

    /* Graceful drain: wait for every job (at most 5 s), then close. */
    {
        struct timeval limit = { 5, 0 };
        aj_scheduler_wait_and_close(s, &limit, drained, &drained_ok);
    }
    event_base_dispatch(base);

    aj_scheduler_get_stats(s, &st);
    printf("\nstats: spawned %llu, started %llu, succeeded %llu, failed %llu, cancelled %llu, "
           "rejected %llu, pending peak %zu\n",
           (unsigned long long)st.spawned, (unsigned long long)st.started,
           (unsigned long long)st.succeeded, (unsigned long long)st.failed,
           (unsigned long long)st.cancelled, (unsigned long long)st.rejected, st.pending_peak);
    aj_scheduler_free(s);
    event_base_free(base);

    if (!drained_ok || failures != 1 || refused != 1 || st.succeeded != 10 || st.failed != 1) {
        fprintf(stderr, "basic: unexpected outcome\n");
        return 1;
    }
    return 0;
}
