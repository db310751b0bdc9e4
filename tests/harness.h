/*
 * harness.h -- what the Check programs in tests/ share (harness.c is
 * compiled into each program that includes this):
 *
 *  - a fixture: one event base and one scheduler per test
 *    (harness_setup/harness_teardown), and run() / RUN_UNTIL(), which drive
 *    the loop under a 10 s safety timer that fails the test;
 *  - the re-entrancy guard: CALL()/CALLV() raise it around an aj_* call a
 *    test makes, a tjob raises it around its own aj_job_done, and every job
 *    and record callback below starts with CB_ENTER(); the teardown fails a
 *    test in which a callback ran inside either;
 *  - tjob, a job that follows a small script, and records of what each kind
 *    of callback got: wrec (waiters, close callbacks), erec (exception
 *    handler), sreq (aj_spawn_async), done_cb, closed_cb; callbacks of
 *    tagged jobs and waiters append to `trace`, in the order they ran;
 *  - log capture: the last line libaj logged and how many;
 *  - a counting allocator for aj_set_mem_functions that can refuse one
 *    chosen allocation (or all), and failure_points(), which runs a
 *    scenario once for each allocation it makes, failing that one;
 *  - run_suite(), the body of main().
 */
#ifndef AJ_TESTS_HARNESS_H
#define AJ_TESTS_HARNESS_H

#include <check.h>
#include <stddef.h>

#include <event2/event.h>

#include <aj/aj.h>

/* ---- the fixture and the loop ---- */

extern struct event_base *base;
extern aj_scheduler *sched;

/* A new base and scheduler, every counter below reset, log capture on,
 * AJ_DEBUG unset. */
void harness_setup(void);
/* Frees them (sched may have been freed and set to NULL by the test),
 * restores libc's allocator and the default log sink, and fails the test
 * if a callback ran inside a guarded call or libaj logged with a severity
 * that is not libevent's. */
void harness_teardown(void);

/* Runs the loop until nothing but the safety timer is left; fails after
 * 10 s, the message prefixed with run_note (empty unless a test sets it). */
void run(void);
extern char run_note[64];

/* Runs the loop, one pass at a time, until cond holds (10 s at most). */
struct event *safety_timer_start(void);
#define RUN_UNTIL(cond) do {                                \
        struct event *safety_ = safety_timer_start();       \
        while (!(cond))                                     \
            event_base_loop(base, EVLOOP_ONCE);             \
        event_free(safety_);                                \
    } while (0)

/* Milliseconds on the monotonic clock. */
double now_ms(void);

/* ---- the re-entrancy guard ---- */

extern int in_call;                 /* inside an aj_* call made by a test */
extern int in_done;                 /* inside aj_job_done called by a tjob */
extern int reentered;               /* a callback ran inside either */

/* Makes an aj_* call with the guard up (GNU statement expressions). */
#define CALL(expr) ({ in_call = 1; __typeof__(expr) r_ = (expr); in_call = 0; r_; })
#define CALLV(expr) do { in_call = 1; (expr); in_call = 0; } while (0)
#define CB_ENTER() do { if (in_call || in_done) reentered++; } while (0)

/* ---- jobs ---- */

/*
 * A job: start finishes it after `ms` (0 = inside start; <0 = never by
 * itself) with `error` and `result`.  cancel finishes it with ECANCELED (or
 * cancel_error) and still hands `result`, at once or after cancel_ms,
 * unless `stubborn` (then its own timer still runs).
 */
struct tjob {
    aj_job *job;                    /* set by start */
    struct event *ev, *cev;
    int ms, error, stubborn, cancel_ms, cancel_error;
    void *result;
    const char *tag;                /* set: its callbacks append to trace */
    int started, cancelled, released;
    int order;                      /* 1 for the test's first start, 2, ... */
    int done_calls, done_error;     /* what done_cb got */
    void *done_result;
};

void tjob_release(void *arg);
extern const struct aj_job_ops tops;            /* named "tjob" */
extern const struct aj_job_ops tops_noname;     /* gets "job-N" */
extern const struct aj_job_ops tops_nocancel;   /* no cancel callback */

/* A cancel hook to swap in: counts its calls in *(int *)cbarg and finishes
 * the job with ECANCELED. */
void other_cancel(aj_job *job, void *cbarg);

extern int releases;                /* tjob releases */

/* ---- callback records ---- */

/* A waiter (aj_job_wait or aj_job_close callback) that records what it got
 * and what the job and scheduler looked like then. */
struct wrec {
    int calls, error;
    void *result;
    aj_job *job;
    int closed, active;
    size_t size;
    double at;                      /* now_ms() */
    const char *tag;                /* set: appends "w:<tag>" to trace */
};
void wrec_cb(aj_job *job, int error, void *result, void *cbarg);

/* Exception handler records (the job, if any, must be a tjob's). */
struct erec {
    int calls;
    char message[64];               /* the last call's */
    char messages[8][64];           /* the first 8 calls' */
    int errors[8];
    int error;
    aj_job *job;
    size_t tb_len;
    char tb[2][32];                 /* the first two frames, if two or more */
    int tb_spawn_frame;             /* index of the first frame naming aj_spawn, or -1 */
    int released_at_call;           /* the job's tjob.released when called */
};
void erec_cb(aj_scheduler *s, const struct aj_error_info *info, void *arg);

/* aj_spawn_async callback records; t, if set, is the tjob asked for. */
struct sreq {
    int calls, error;
    aj_job *job;
    struct tjob *t;
    int started_at_cb;              /* t->started when called */
};
void sreq_cb(aj_scheduler *s, aj_job *job, int error, void *cbarg);

/* Done callback: counts in done_calls and records into the job's tjob. */
void done_cb(aj_scheduler *s, aj_job *job, int error, void *result, void *arg);
extern int done_calls;

/* Scheduler close callbacks: closed_cb counts in closed_calls and records
 * the size it saw; free_in_close_cb counts too, then frees the scheduler
 * (and sets sched to NULL if it was that one). */
void closed_cb(aj_scheduler *s, void *arg);
void free_in_close_cb(aj_scheduler *s, void *arg);
extern int closed_calls;
extern size_t closed_size;

/* Callbacks in the order they ran: "start:a w:a done:a rel:a closed". */
extern char trace[2048];
void tr(const char *fmt, ...) AJ_PRINTF(1, 2);

/* spawned == succeeded + failed + cancelled + size, and size == active +
 * pending (macros, so that a failure names the caller's line). */
#define check_invariant_of(s) do {                                          \
        aj_scheduler *is_ = (s);                                            \
        struct aj_stats st_;                                                \
        aj_scheduler_get_stats(is_, &st_);                                  \
        ck_assert_uint_eq(st_.spawned, st_.succeeded + st_.failed +         \
                          st_.cancelled + aj_scheduler_size(is_));          \
        ck_assert_uint_eq(aj_scheduler_size(is_), aj_scheduler_active_count(is_) + \
                          aj_scheduler_pending_count(is_));                 \
    } while (0)
#define check_invariant() check_invariant_of(sched)

struct aj_stats stats(void);            /* of sched */

/* ---- log capture (the fixture installs capture_log) ---- */

extern char last_log[1024];
extern int last_sev;
extern int nlogs;
extern int bad_severities;          /* lines with a severity not libevent's */
void capture_log(int severity, const char *msg);

/* ---- a counting allocator that can fail ---- */

/*
 * For aj_set_mem_functions(mem_malloc, mem_realloc, mem_free).  mem_reset(n)
 * starts counting again: the n-th allocation from then on (malloc or
 * realloc) is refused, none if n is 0.  While mem_refuse_all is set every
 * allocation is.  mem_live is the number of blocks allocated and not yet
 * freed since the reset; mem_failed says whether one was refused.
 */
void *mem_malloc(size_t n);
void *mem_realloc(void *p, size_t n);
void mem_free(void *p);
void mem_reset(long fail_at);
extern long mem_live;
extern int mem_failed;
extern int mem_refuse_all;

/* Runs scenario(n) with the allocator above installed and the n-th
 * allocation refused, for n = 1, 2, ... until scenario returns 0 (no
 * allocation was refused) or n reaches max; returns how many runs met a
 * refusal.  The allocator is libc's again afterwards. */
int failure_points(int (*scenario)(long n), long max);

/* ---- main ---- */

/* Runs every test of s (CK_ENV: CK_FORK, CK_VERBOSITY... apply) and
 * returns main's exit status. */
int run_suite(Suite *s);

#endif
