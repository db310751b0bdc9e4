/*
 * bench.h -- small helpers shared by the `make bench` programs: a monotonic
 * clock, medians, the memory probes, the command line, and the one place
 * that prints a figure both as a table row and as a `key value` line of
 * bench/results.txt.  Header-only (static functions) to keep each program a
 * single readable file.
 */
#ifndef AJ_BENCH_H
#define AJ_BENCH_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/time.h>

/* ---- time ---------------------------------------------------------- */

static inline double bench_now_ns(void)
{
#ifdef CLOCK_MONOTONIC
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
        return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
#endif
    {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        return (double)tv.tv_sec * 1e9 + (double)tv.tv_usec * 1e3;
    }
}

/* ---- statistics ---------------------------------------------------- */

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n-1] (v is left untouched). */
static inline double bench_median(const double *v, int n)
{
    double tmp[256];
    if (n <= 0)
        return 0.0;
    if (n > 256)
        n = 256;
    memcpy(tmp, v, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, bench_cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2.0;
}

/* ---- memory -------------------------------------------------------- */

/*
 * Resident set size in bytes: /proc/self/statm where there is one (Linux),
 * else the peak RSS from getrusage (which only grows, and a delta over an
 * allocation-only phase is what we measure).
 */
static inline double bench_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long size = 0, resident = 0;
        int ok = fscanf(f, "%lu %lu", &size, &resident) == 2;
        fclose(f);
        if (ok)
            return (double)resident * (double)sysconf(_SC_PAGESIZE);
    }
    {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
#ifdef __APPLE__
        return (double)ru.ru_maxrss;            /* bytes on macOS */
#else
        return (double)ru.ru_maxrss * 1024.0;   /* kilobytes elsewhere */
#endif
    }
}

/* CPU time (user + system) of this process in microseconds. */
static inline double bench_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* ---- command line -------------------------------------------------- */

struct bench_opts {
    int quick;                 /* --quick or env BENCH_QUICK (not "" or "0") */
    const char *out;           /* --out FILE: append `key value` lines */
    const char *profile;       /* --profile WORKLOAD: run only that, for perf */
    int alone;                 /* --alone: bench_core times each workload in
                                * a child of its own, not each group */
};

static inline void bench_parse_opts(struct bench_opts *o, int argc, char **argv)
{
    const char *env = getenv("BENCH_QUICK");
    int i;

    o->quick = env && *env && strcmp(env, "0") != 0;
    o->out = NULL;
    o->profile = NULL;
    o->alone = 0;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            o->quick = 1;
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            o->out = argv[++i];
        } else if (strcmp(argv[i], "--profile") == 0 && i + 1 < argc) {
            o->profile = argv[++i];
        } else if (strcmp(argv[i], "--alone") == 0) {
            o->alone = 1;
        } else {
            fprintf(stderr,
                    "usage: %s [--quick] [--out results.txt] [--profile WORKLOAD] [--alone]\n",
                    argv[0]);
            exit(2);
        }
    }
}

/* ---- output -------------------------------------------------------- */

static FILE *bench_out;

static inline void bench_open_out(const char *path)
{
    if (!path)
        return;
    bench_out = fopen(path, "a");
    if (!bench_out) {
        fprintf(stderr, "bench: cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static inline void bench_close_out(void)
{
    if (bench_out)
        fclose(bench_out);
    bench_out = NULL;
}

static inline void bench_section(const char *title)
{
    printf("\n%s\n", title);
    printf("  %-24s %14s  %-6s %s\n", "key", "value", "unit", "target");
}

/*
 * One figure: a table row on stdout and a `key value` line in the results
 * file.  `max` > 0 is the target (value <= max); the row then says whether
 * it was reached.  Targets are only judged in a full run.
 */
static int bench_missed;

static inline void bench_figure(const char *key, double value, const char *unit, double max, int judge)
{
    char target[64] = "";

    if (max > 0) {
        int ok = value <= max;
        if (judge) {
            snprintf(target, sizeof target, "<= %g  %s", max, ok ? "reached" : "MISSED");
            if (!ok)
                bench_missed++;
        } else {
            snprintf(target, sizeof target, "<= %g  (quick run: not judged)", max);
        }
    }
    printf("  %-24s %14.3f  %-6s %s\n", key, value, unit, target);
    if (bench_out) {
        fprintf(bench_out, "%s %.3f\n", key, value);
        fflush(bench_out);
    }
}

/* A `key value` line in the results file only (no table row). */
static inline void bench_record(const char *key, double value)
{
    if (bench_out) {
        fprintf(bench_out, "%s %.3f\n", key, value);
        fflush(bench_out);
    }
}

/* The 1, 5 and 15 minute load averages (for the record: a loaded machine
 * moves the absolute figures, much less the ratios). */
static inline void bench_loadavg(double la[3])
{
    FILE *f = fopen("/proc/loadavg", "r");
    la[0] = la[1] = la[2] = -1;
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3)
            la[0] = la[1] = la[2] = -1;
        fclose(f);
    }
}

#endif /* AJ_BENCH_H */
