/*
 * bench_core.c -- what a managed job costs next to the raw libevent callback
 * it is built on (issue 5, figures 1-4).
 *
 *   spawn_ns          aj_spawn -> start -> aj_job_done -> release per job,
 *                     limit off, N jobs spawned up front, then dispatched
 *   once_ns           event_base_once(zero timeout) per callback, N up front
 *   chain_ns          each job's start finishes it and spawns the next
 *   once_chain_ns     each event_base_once callback schedules the next
 *   spawn_limit_ns    as spawn_ns with limit 100: every job queues as pending
 *   wait_ns           what aj_job_wait (default timeout) adds per job
 *   pending_bytes     RSS per pending job (arg NULL), and the bytes libaj
 *                     asked its allocator for (pending_alloc_bytes)
 *   scale_ratio       per-job cost with N pending at once / with 1,000
 *   close_1m_ms       aj_scheduler_close with N pending, until its callback
 *
 * Every timed figure is the median of REPS repetitions.  Every ratio is
 * taken pair by pair: inside one repetition the two sides run back to back
 * on fresh bases (their order swapped every other repetition), the ratio of
 * that pair is recorded, and the figure is the median of those ratios, so
 * machine noise that lasts longer than one pair cancels.
 *
 * Memory is measured first, each sample in a forked child (a fresh heap with
 * nothing freed in it yet, so the RSS delta is the real growth).  The timed
 * groups run in forked children too (measure_group), so that no figure pays
 * for the heap an unrelated workload left behind.
 */
#include "config.h"

#include <errno.h>
#ifdef HAVE_MALLOC_H
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include <aj/aj.h>

#include "bench.h"

static size_t N = 1000000;       /* jobs per measurement */
static size_t SMALL = 1000;      /* the small side of scale_ratio */
static int REPS = 9;             /* repetitions per figure (median) */

static const struct timeval zero_tv = { 0, 0 };

static void die(const char *what)
{
    fprintf(stderr, "bench_core: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A fresh base of the default kind, as a user gets it. */
static struct event_base *new_base(void)
{
    struct event_base *base = event_base_new();
    if (!base)
        die("event_base_new");
    return base;
}

/* A scheduler with the given limits, debug mode off. */
static aj_scheduler *new_sched(struct event_base *base, size_t limit, size_t pending_limit)
{
    aj_scheduler *s = aj_scheduler_new(base);
    if (!s)
        die("aj_scheduler_new");
    if (aj_scheduler_set_limit(s, limit) < 0 || aj_scheduler_set_pending_limit(s, pending_limit) < 0)
        die("aj_scheduler_set_*limit");
    aj_scheduler_set_debug(s, 0);
    return s;
}

/* Every side counts what ran, and the bench stops if the count is wrong:
 * a benchmark of work that did not happen would be worthless. */
static void expect(const char *what, size_t got, size_t want)
{
    if (got != want) {
        fprintf(stderr, "bench_core: %s: %zu of %zu ran\n", what, got, want);
        exit(1);
    }
}

/* ------------------------------------------------------------------ */
/* The raw side: event_base_once                                       */
/* ------------------------------------------------------------------ */

static size_t once_count;

static void once_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    once_count++;
}

/* n callbacks scheduled up front, then dispatched: ns per callback.  With
 * `batches` > 1, n is split into that many rounds (the small side of the
 * scale figure). */
static double run_once_upfront(size_t n, size_t batches)
{
    struct event_base *base = new_base();
    size_t per = n / batches, b, i;
    double t0, t1;

    once_count = 0;
    t0 = bench_now_ns();
    for (b = 0; b < batches; b++) {
        for (i = 0; i < per; i++)
            if (event_base_once(base, -1, EV_TIMEOUT, once_cb, NULL, &zero_tv) < 0)
                die("event_base_once");
        event_base_dispatch(base);
    }
    t1 = bench_now_ns();
    expect("event_base_once", once_count, per * batches);
    event_base_free(base);
    return (t1 - t0) / (double)(per * batches);
}

static struct event_base *chain_base;
static size_t chain_target;

static void once_chain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (++once_count < chain_target)
        if (event_base_once(chain_base, -1, EV_TIMEOUT, once_chain_cb, arg, &zero_tv) < 0)
            die("event_base_once");
}

/* n callbacks in a row, each scheduling the next: ns per callback. */
static double run_once_chain(size_t n)
{
    double t0, t1;

    chain_base = new_base();
    chain_target = n;
    once_count = 0;
    t0 = bench_now_ns();
    if (event_base_once(chain_base, -1, EV_TIMEOUT, once_chain_cb, NULL, &zero_tv) < 0)
        die("event_base_once");
    event_base_dispatch(chain_base);
    t1 = bench_now_ns();
    expect("event_base_once chain", once_count, n);
    event_base_free(chain_base);
    return (t1 - t0) / (double)n;
}

/* ------------------------------------------------------------------ */
/* The managed side: aj_spawn                                          */
/* ------------------------------------------------------------------ */

static size_t started, released, waited;

/* The trivial job: starts and finishes at once.  arg is NULL for all. */
static void trivial_start(aj_job *job, void *arg)
{
    (void)arg;
    started++;
    aj_job_done(job, 0, NULL);
}

static void count_release(void *arg)
{
    (void)arg;
    released++;
}

static const struct aj_job_ops trivial_ops = { "bench", trivial_start, NULL, count_release };

static void wait_cb(aj_job *job, int error, void *result, void *cbarg)
{
    (void)job;
    (void)result;
    (void)cbarg;
    if (error)
        die("aj_job_wait reported an error");
    waited++;
}

/*
 * n trivial jobs spawned up front under `limit` (0 = off; pending limit off),
 * then dispatched: ns per job, spawn to release.  `wait` adds an aj_job_wait
 * (default timeout) on each job.  `batches` as run_once_upfront.
 */
static double run_spawn_upfront(size_t n, size_t limit, int wait, size_t batches)
{
    struct event_base *base = new_base();
    aj_scheduler *s = new_sched(base, limit, 0);
    size_t per = n / batches, b, i;
    double t0, t1;

    started = released = waited = 0;
    t0 = bench_now_ns();
    for (b = 0; b < batches; b++) {
        for (i = 0; i < per; i++) {
            aj_job *job = aj_spawn(s, &trivial_ops, NULL);
            if (!job)
                die("aj_spawn");
            if (wait && aj_job_wait(job, NULL, wait_cb, NULL) < 0)
                die("aj_job_wait");
        }
        event_base_dispatch(base);
    }
    t1 = bench_now_ns();
    expect("aj_spawn: start", started, per * batches);
    expect("aj_spawn: release", released, per * batches);
    if (wait)
        expect("aj_job_wait", waited, per * batches);
    aj_scheduler_free(s);
    event_base_free(base);
    return (t1 - t0) / (double)(per * batches);
}

static size_t chain_jobs_target;

/* A chain link: finishes itself and spawns the next. */
static void chain_start(aj_job *job, void *arg);
static const struct aj_job_ops chain_ops = { "chain", chain_start, NULL, count_release };

static void chain_start(aj_job *job, void *arg)
{
    aj_scheduler *s = aj_job_scheduler(job);
    aj_job_done(job, 0, NULL);
    if (++started < chain_jobs_target && !aj_spawn(s, &chain_ops, arg))
        die("aj_spawn (chain)");
}

/* n jobs in a row, each spawned by the previous one's start: ns per job. */
static double run_spawn_chain(size_t n)
{
    struct event_base *base = new_base();
    aj_scheduler *s = new_sched(base, 0, 0);
    double t0, t1;

    started = released = 0;
    chain_jobs_target = n;
    t0 = bench_now_ns();
    if (!aj_spawn(s, &chain_ops, NULL))
        die("aj_spawn");
    event_base_dispatch(base);
    t1 = bench_now_ns();
    expect("chain: start", started, n);
    expect("chain: release", released, n);
    aj_scheduler_free(s);
    event_base_free(base);
    return (t1 - t0) / (double)n;
}

static int close_done;

static void close_cb(aj_scheduler *s, void *arg)
{
    (void)s;
    (void)arg;
    close_done = 1;
}

/* aj_scheduler_close with n jobs pending (limit 100, none started yet),
 * until its callback ran and the loop is idle: milliseconds. */
static double run_close(size_t n)
{
    struct event_base *base = new_base();
    aj_scheduler *s = new_sched(base, 100, 0);
    double t0, t1;
    size_t i;

    started = released = 0;
    close_done = 0;
    for (i = 0; i < n; i++)
        if (!aj_spawn(s, &trivial_ops, NULL))
            die("aj_spawn");
    t0 = bench_now_ns();
    if (aj_scheduler_close(s, close_cb, NULL) < 0)
        die("aj_scheduler_close");
    event_base_dispatch(base);
    t1 = bench_now_ns();
    if (!close_done || started != 0 || aj_scheduler_size(s) != 0) {
        fprintf(stderr, "bench_core: close: done %d, started %zu, size %zu\n", close_done,
                started, aj_scheduler_size(s));
        exit(1);
    }
    aj_scheduler_free(s);
    expect("close: release", released, n);
    event_base_free(base);
    return (t1 - t0) / 1e6;
}

/* ------------------------------------------------------------------ */
/* Memory per pending job, each sample in a fresh forked child         */
/* ------------------------------------------------------------------ */

/* The counting allocator hook: bytes libaj asked for (the plain allocator
 * underneath, so memory may cross the hook being set). */
static size_t alloc_requested;

static void *count_malloc(size_t sz)
{
    alloc_requested += sz;
    return malloc(sz);
}

static void *count_realloc(void *p, size_t sz)
{
    alloc_requested += sz;
    return realloc(p, sz);
}

/* The same for libevent (event_set_mem_functions), for the raw side. */
static size_t ev_alloc_requested;

static void *ev_count_malloc(size_t sz)
{
    ev_alloc_requested += sz;
    return malloc(sz);
}

static void *ev_count_realloc(void *p, size_t sz)
{
    ev_alloc_requested += sz;
    return realloc(p, sz);
}

/*
 * Runs fn(arg) in a forked child of this process, which sends back the
 * `len` bytes at `res` that fn filled; dies if the child fails.  Each sample
 * so starts from this small process's heap, not from what the previous one
 * left behind.
 */
static void run_in_child(void (*fn)(void *), void *arg, void *res, size_t len)
{
    int fd[2], status;
    pid_t pid;

    if (pipe(fd) < 0)
        die("pipe");
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(fd[0]);
        fn(arg);
        if (write(fd[1], res, len) != (ssize_t)len)
            _exit(1);
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], res, len) != (ssize_t)len)
        die("child failed");
    close(fd[0]);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("child failed");
}

struct mem_sample {
    double rss_per;            /* RSS delta / n */
    double alloc_per;          /* bytes requested from the hooked allocator / n */
};

/* The child's work: n pending jobs (limit 1, so all but one wait in the
 * pending queue) or n pending event_base_once callbacks. */
static struct mem_sample measure_pending(size_t n, int managed)
{
    struct mem_sample m;
    struct event_base *base;
    double rss0;
    size_t a0, i;

    if (managed) {
        aj_scheduler *s;
        aj_set_mem_functions(count_malloc, count_realloc, free);
        base = new_base();
        s = new_sched(base, 1, 0);
        rss0 = bench_rss_bytes();
        a0 = alloc_requested;
        for (i = 0; i < n; i++)
            if (!aj_spawn(s, &trivial_ops, NULL))
                die("aj_spawn");
        m.rss_per = (bench_rss_bytes() - rss0) / (double)n;
        m.alloc_per = (double)(alloc_requested - a0) / (double)n;
        if (aj_scheduler_pending_count(s) != n - 1)
            die("pending count");
    } else {
        event_set_mem_functions(ev_count_malloc, ev_count_realloc, free);
        base = new_base();
        rss0 = bench_rss_bytes();
        a0 = ev_alloc_requested;
        for (i = 0; i < n; i++)
            if (event_base_once(base, -1, EV_TIMEOUT, once_cb, NULL, &zero_tv) < 0)
                die("event_base_once");
        m.rss_per = (bench_rss_bytes() - rss0) / (double)n;
        m.alloc_per = (double)(ev_alloc_requested - a0) / (double)n;
    }
    return m;   /* the child exits without freeing: the OS takes it all */
}

struct pending_arg {
    size_t n;
    int managed;
    struct mem_sample m;
};

static void pending_in_child(void *arg)
{
    struct pending_arg *a = arg;
    a->m = measure_pending(a->n, a->managed);
}

static struct mem_sample sample_pending(size_t n, int managed)
{
    struct pending_arg a;
    a.n = n;
    a.managed = managed;
    run_in_child(pending_in_child, &a, &a.m, sizeof a.m);
    return a.m;
}

/* ------------------------------------------------------------------ */
/* Isolation: each group of paired workloads in a fresh child          */
/* ------------------------------------------------------------------ */

/*
 * What a million allocations cost depends less on the code than on the
 * heap they come from.  Measured in one process one after the other, a
 * workload ran up to 1.6x slower or faster depending on what ran before it
 * (fresh pages to fault in after glibc trimmed the heap, or a million
 * scattered free chunks of another size), on the raw libevent side as much
 * as on libaj's, and a change to one workload's allocations moved the
 * figures of the others.  So figures are taken in the steady state of a
 * long-running process:
 *   - each group of workloads compared with each other (the up-front ones,
 *     the chains, the scale runs, the close) runs in a forked child of this
 *     small process, so that no group pays for the heap another one left;
 *   - the child runs its group once untimed, so the heap has grown to the
 *     group's size and its pages are mapped, then once timed;
 *   - main() raises glibc's trim threshold, so free() keeps those pages.
 * Inside a child both sides of each pair run back to back, in an order that
 * alternates with the repetition, so machine noise that lasts longer than a
 * pair cancels.  Since libaj's jobs come from slabs (lib/pool.c) the two
 * sides hardly share heap chunks any more; before that, the raw callbacks
 * paid about 15 ns each for consolidating the chunks a million freed jobs
 * left (once_ns 80 here, 65 alone).  --alone runs each workload in a child
 * of its own, warmed up by itself, to check that: it now gives the same
 * figures within noise.  Not the default, as the two sides of a ratio then
 * no longer share a process.
 */
enum { G_ONCE, G_SPAWN, G_WAIT, G_LIMIT, G_CHAIN, G_ONCE_CHAIN, G_MANY, G_FEW, G_ONCE_MANY,
       G_ONCE_FEW, G_CLOSE, G_NFIG };

/* Workload w once: ns per job (close: ms for all N). */
static double run_workload(int w)
{
    switch (w) {
    case G_ONCE: return run_once_upfront(N, 1);
    case G_SPAWN: return run_spawn_upfront(N, 0, 0, 1);
    case G_WAIT: return run_spawn_upfront(N, 0, 1, 1);
    case G_LIMIT: return run_spawn_upfront(N, 100, 0, 1);
    case G_CHAIN: return run_spawn_chain(N);
    case G_ONCE_CHAIN: return run_once_chain(N);
    /* Scale: N pending at once against SMALL at once (N/SMALL rounds), both
     * under limit 100; the raw callback's own ratio for reference. */
    case G_MANY: return run_spawn_upfront(N, 100, 0, 1);
    case G_FEW: return run_spawn_upfront(N, 100, 0, N / SMALL);
    case G_ONCE_MANY: return run_once_upfront(N, 1);
    case G_ONCE_FEW: return run_once_upfront(N, N / SMALL);
    case G_CLOSE: return run_close(N);
    }
    return 0;
}

/* The workloads ws[0..nw) into v[w], in order, or in reverse order on odd
 * repetitions. */
static void run_group(const int *ws, int nw, int rep, double *v)
{
    int i;
    for (i = 0; i < nw; i++) {
        int w = ws[rep % 2 == 0 ? i : nw - 1 - i];
        v[w] = run_workload(w);
    }
}

struct group_arg {
    const int *ws;
    int nw, rep;
    double v[G_NFIG];
};

static void group_in_child(void *arg)
{
    struct group_arg *a = arg;
    run_group(a->ws, a->nw, a->rep, a->v);      /* warm-up: the heap grows, pages map */
    run_group(a->ws, a->nw, a->rep, a->v);
}

/* run_group in a fresh child, once to warm up and once timed; the timed
 * figures land in v[w]. */
static void measure_group(const int *ws, int nw, int rep, double *v)
{
    struct group_arg a;
    a.ws = ws;
    a.nw = nw;
    a.rep = rep;
    memcpy(a.v, v, sizeof a.v);
    run_in_child(group_in_child, &a, a.v, sizeof a.v);
    memcpy(v, a.v, sizeof a.v);
}

/* One repetition: the groups in turn, or with `alone` every workload as a
 * group of its own (in the same alternating order). */
static void measure_rep(int rep, int alone, double *v)
{
    static const int upfront[] = { G_ONCE, G_SPAWN, G_WAIT, G_LIMIT };
    static const int chain[] = { G_CHAIN, G_ONCE_CHAIN };
    static const int scale[] = { G_MANY, G_FEW, G_ONCE_MANY, G_ONCE_FEW };
    static const int close1[] = { G_CLOSE };
    static const struct { const int *ws; int nw; } groups[] = {
        { upfront, 4 }, { chain, 2 }, { scale, 4 }, { close1, 1 },
    };
    int g, i;

    for (g = 0; g < 4; g++) {
        if (!alone) {
            measure_group(groups[g].ws, groups[g].nw, rep, v);
            continue;
        }
        for (i = 0; i < groups[g].nw; i++) {
            int k = rep % 2 == 0 ? i : groups[g].nw - 1 - i;
            measure_group(&groups[g].ws[k], 1, rep, v);
        }
    }
}

/* ------------------------------------------------------------------ */

/*
 * --profile WORKLOAD: runs one workload REPS times and prints ns per job, so
 * that a profiler sees nothing else:
 *   perf record -g bench/bench_core --profile wait
 *   valgrind --tool=callgrind bench/bench_core --quick --profile spawn
 */
static int profile(const char *what)
{
    static const struct { const char *name; int w; } names[] = {
        { "once", G_ONCE }, { "spawn", G_SPAWN }, { "wait", G_WAIT }, { "limit", G_LIMIT },
        { "chain", G_CHAIN }, { "once_chain", G_ONCE_CHAIN }, { "close", G_CLOSE },
    };
    int rep, k, nnames = (int)(sizeof names / sizeof names[0]);

    for (k = 0; k < nnames && strcmp(what, names[k].name) != 0; k++)
        ;
    if (k == nnames) {
        fprintf(stderr, "bench_core: --profile once|spawn|wait|limit|chain|once_chain|close\n");
        return 2;
    }
    for (rep = 0; rep < REPS; rep++) {
        double x = run_workload(names[k].w);
        if (names[k].w == G_CLOSE)
            x = x * 1e6 / (double)N;
        printf("%s: %.1f ns per job\n", what, x);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    double la[3];
    double v[G_NFIG][64];
    double r_spawn[64], r_limit[64], r_wait[64], w_extra[64], r_chain[64], r_scale[64],
        r_oscale[64];
    double mem_aj[64], mem_aj_alloc[64], mem_once[64], mem_once_alloc[64];
    int rep, judge;

    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_parse_opts(&o, argc, argv);
    if (o.quick) {
        N = 10000;
        SMALL = 1000;
        REPS = 5;
    }
    judge = !o.quick;
#ifdef M_TRIM_THRESHOLD
    /* Freed memory stays mapped (see measure_group), for both sides. */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    /* The numbers are for the production mode: no spawn stacks. */
    unsetenv("AJ_DEBUG");
    if (o.profile)
        return profile(o.profile);
    bench_open_out(o.out);
    bench_loadavg(la);
    bench_record("core_loadavg_before", la[0]);

    printf("libaj core benchmarks: %zu jobs per run, median of %d runs, %s%s\n", N, REPS,
           o.alone ? "each workload in a child of its own (--alone)"
                   : "each group of paired workloads in a child of its own",
           o.quick ? " (QUICK mode: counts too small to judge)" : "");
    bench_record("core_alone", o.alone);
    printf("libevent %s, backend %s, load average %.2f %.2f %.2f\n", event_get_version(),
           event_base_get_method(chain_base = new_base()), la[0], la[1], la[2]);
    event_base_free(chain_base);
    chain_base = NULL;
    fflush(stdout);

    /* Memory first, while this process's heap holds nothing freed. */
    for (rep = 0; rep < REPS; rep++) {
        struct mem_sample a, b;
        if (rep % 2 == 0) {
            a = sample_pending(N, 1);
            b = sample_pending(N, 0);
        } else {
            b = sample_pending(N, 0);
            a = sample_pending(N, 1);
        }
        mem_aj[rep] = a.rss_per;
        mem_aj_alloc[rep] = a.alloc_per;
        mem_once[rep] = b.rss_per;
        mem_once_alloc[rep] = b.alloc_per;
    }

    for (rep = 0; rep < REPS; rep++) {
        double g[G_NFIG];
        int k;
        memset(g, 0, sizeof g);
        measure_rep(rep, o.alone, g);
        for (k = 0; k < G_NFIG; k++)
            v[k][rep] = g[k];

        r_spawn[rep] = v[G_SPAWN][rep] / v[G_ONCE][rep];
        r_limit[rep] = v[G_LIMIT][rep] / v[G_ONCE][rep];
        w_extra[rep] = v[G_WAIT][rep] - v[G_SPAWN][rep];
        r_wait[rep] = w_extra[rep] / v[G_ONCE][rep];
        r_chain[rep] = v[G_CHAIN][rep] / v[G_ONCE_CHAIN][rep];
        r_scale[rep] = v[G_MANY][rep] / v[G_FEW][rep];
        r_oscale[rep] = v[G_ONCE_MANY][rep] / v[G_ONCE_FEW][rep];
        fprintf(stderr, "  run %d/%d: spawn %.0f once %.0f wait +%.0f ns, chain %.0f/%.0f ns, "
                "scale %.0f/%.0f ns\n", rep + 1, REPS, v[G_SPAWN][rep], v[G_ONCE][rep],
                w_extra[rep], v[G_CHAIN][rep], v[G_ONCE_CHAIN][rep], v[G_MANY][rep],
                v[G_FEW][rep]);
    }

    bench_section("Spawn -> start -> done -> release, against event_base_once (ns per job)");
    bench_figure("spawn_ns", bench_median(v[G_SPAWN], REPS), "ns", 0, judge);
    bench_figure("once_ns", bench_median(v[G_ONCE], REPS), "ns", 0, judge);
    bench_figure("spawn_ratio", bench_median(r_spawn, REPS), "x", 1.0, judge);
    bench_figure("chain_ns", bench_median(v[G_CHAIN], REPS), "ns", 0, judge);
    bench_figure("once_chain_ns", bench_median(v[G_ONCE_CHAIN], REPS), "ns", 0, judge);
    bench_figure("chain_ratio", bench_median(r_chain, REPS), "x", 1.0, judge);
    bench_figure("spawn_limit_ns", bench_median(v[G_LIMIT], REPS), "ns", 0, judge);
    bench_figure("spawn_limit_ratio", bench_median(r_limit, REPS), "x", 1.3, judge);

    bench_section("aj_job_wait on every job, on top of spawn");
    bench_figure("wait_ns", bench_median(w_extra, REPS), "ns", 0, judge);
    bench_figure("wait_ratio", bench_median(r_wait, REPS), "x", 0.5, judge);

    bench_section("Memory per pending job (arg NULL), against a pending event_base_once");
    bench_figure("pending_bytes", bench_median(mem_aj, REPS), "B", 128, judge);
    bench_figure("pending_alloc_bytes", bench_median(mem_aj_alloc, REPS), "B", 0, judge);
    bench_figure("once_pending_bytes", bench_median(mem_once, REPS), "B", 0, judge);
    bench_figure("once_pending_alloc_bytes", bench_median(mem_once_alloc, REPS), "B", 0, judge);

    bench_section("Scale: per-job cost with many pending / with 1,000 pending");
    bench_figure("scale_many_ns", bench_median(v[G_MANY], REPS), "ns", 0, judge);
    bench_figure("scale_few_ns", bench_median(v[G_FEW], REPS), "ns", 0, judge);
    bench_figure("scale_ratio", bench_median(r_scale, REPS), "x", 1.2, judge);
    bench_figure("once_scale_ratio", bench_median(r_oscale, REPS), "x", 0, judge);
    bench_figure("close_1m_ms", bench_median(v[G_CLOSE], REPS), "ms", 0, judge);

    bench_loadavg(la);
    printf("\nload average after: %.2f %.2f %.2f\n", la[0], la[1], la[2]);
    bench_record("core_loadavg_after", la[0]);
    bench_close_out();
    if (judge && bench_missed)
        printf("bench_core: %d target(s) missed\n", bench_missed);
    return 0;
}
