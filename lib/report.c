/*
 * report.c -- failures nobody waited for.
 *
 * A job that nobody waited on (not explicit) and that failed, or that a
 * close its owner did not ask for had to give up on, is reported to the
 * scheduler's exception handler; the default handler writes one log line.
 * In debug mode each spawn records its stack so that the report can say
 * where the job came from.
 */
#include "aj-internal.h"

#include <stdlib.h>
#include <string.h>
#ifdef HAVE_EXECINFO_H
#include <execinfo.h>
#endif

#define AJ__MAX_FRAMES 32
/* Room for libaj's own frames above the spawn call (aj__capture_stack). */
#define AJ__OWN_FRAMES_MAX 8

int aj__debug_default(void)
{
    const char *v = getenv("AJ_DEBUG");
    /* The contract's words: set (even to "") and not "0". */
    return v && strcmp(v, "0") != 0;
}

/*
 * Records the spawn stack from the aj_spawn or aj_spawn_async frame down to
 * main: libaj's own frames above it are left out, as aiojobs leaves out
 * its own.  `caller` is where that spawn call returns to, so the spawn
 * frame is the one before it, however many frames (inlined or not, or a
 * sanitizer's backtrace interceptor) come first; without it the stack is
 * kept whole.  Without memory or backtrace() the job simply has none (a
 * report then carries no traceback).
 */
void aj__capture_stack(aj_job *job, void *caller)
{
#if defined(HAVE_EXECINFO_H) && defined(HAVE_BACKTRACE)
    void *frames[AJ__MAX_FRAMES + AJ__OWN_FRAMES_MAX];
    int n = backtrace(frames, AJ__MAX_FRAMES + AJ__OWN_FRAMES_MAX), from = 0, i;
    struct aj__job_ext *ext;

    for (i = 1; caller && i < n; i++) {
        if (frames[i] == caller) {
            from = i - 1;
            break;
        }
    }
    n -= from;
    if (n > AJ__MAX_FRAMES)
        n = AJ__MAX_FRAMES;
    if (n <= 0)
        return;
    ext = aj__job_ext(job);
    if (!ext || !(ext->frames = aj__malloc((size_t)n * sizeof(void *)))) {
        aj_log(EVENT_LOG_DEBUG, "debug mode: out of memory, spawn stack not recorded");
        return;
    }
    memcpy(ext->frames, frames + from, (size_t)n * sizeof(void *));
    ext->nframes = n;
#else
    AJ__UNUSED(job);
    AJ__UNUSED(caller);
#endif
}

static void default_handler(const struct aj_error_info *info)
{
    char stack[768];
    size_t used = 0, i;

    stack[0] = '\0';
    for (i = 0; i < info->source_traceback_len && used + 8 < sizeof stack; i++) {
        int k = snprintf(stack + used, sizeof stack - used, "%s%s",
                         i ? " <- " : "; spawned at: ", info->source_traceback[i]);
        if (k < 0)
            break;
        used += (size_t)k;
    }
    aj_log(EVENT_LOG_ERR, "%s: job %s: %s%s", info->message,
           info->job ? aj_job_name(info->job) : "(none)", strerror(info->error), stack);
}

static void call_handler(aj_scheduler *s, const struct aj_error_info *info)
{
    if (s->exc)
        s->exc(s, info, s->exc_arg);
    else
        default_handler(info);
}

/* Reports a job now (the caller runs from the loop).  The handler may free
 * s: callers check s->freeing before they touch job or s again. */
void aj__report_job(aj_scheduler *s, aj_job *job, const char *message, int error)
{
    struct aj_error_info info;
    char **symbols = NULL;

    info.message = message;
    info.job = job;
    info.error = error;
    info.source_traceback = NULL;
    info.source_traceback_len = 0;
#if defined(HAVE_EXECINFO_H) && defined(HAVE_BACKTRACE)
    if (job->ext && job->ext->nframes > 0) {
        symbols = backtrace_symbols(job->ext->frames, job->ext->nframes);
        if (symbols) {
            info.source_traceback = (const char *const *)symbols;
            info.source_traceback_len = (size_t)job->ext->nframes;
        }
    }
#endif
    job->refs++;                    /* the handler may free s: the job stays */
    call_handler(s, &info);
    free(symbols);
    aj__job_unhold(job);                  /* backtrace_symbols uses malloc */
}

void aj__report_drop(struct aj__report *r)
{
    size_t i;

    /* The scheduler is being freed.  A plain unref: a let-go job that has
     * finished may hold no other reference, and is then released from the
     * loop; a finished one is released by aj_scheduler_free itself. */
    if (r->info.job)
        aj_job_unref(r->info.job);
    for (i = 0; r->traceback && i < r->info.source_traceback_len; i++)
        aj__free(r->traceback[i]);
    aj__free(r->traceback);
    aj__free(r->message);
    aj__free(r);
}

void aj__report_run(aj_scheduler *s, struct aj__report *r)
{
    aj_job *job = r->info.job;

    call_handler(s, &r->info);
    r->info.job = NULL;
    aj__report_drop(r);
    if (job)
        aj_job_unref(job);
}

AJ_EXPORT void aj_scheduler_call_exception_handler(aj_scheduler *s, const struct aj_error_info *info)
{
    struct aj__report *r;
    size_t i, n;

    if (!s || !info) {
        aj_log(EVENT_LOG_WARN, "aj_scheduler_call_exception_handler: NULL %s",
               s ? "info" : "scheduler");
        return;
    }
    if (s->freeing)
        return;
    r = aj__calloc(1, sizeof *r);
    if (!r)
        goto oom;
    r->call.kind = AJ__CALL_REPORT;
    aj__q_init(&r->call.link);
    r->info = *info;
    r->info.job = NULL;
    r->info.source_traceback = NULL;
    r->info.source_traceback_len = 0;
    r->message = aj__strdup(info->message ? info->message : "");
    if (!r->message)
        goto oom_free;
    r->info.message = r->message;
    n = info->source_traceback ? info->source_traceback_len : 0;
    if (n) {
        r->traceback = aj__calloc(n, sizeof(char *));
        if (!r->traceback)
            goto oom_free;
        for (i = 0; i < n; i++) {
            r->traceback[i] = aj__strdup(info->source_traceback[i] ? info->source_traceback[i] : "");
            if (!r->traceback[i]) {
                r->info.source_traceback_len = i;
                goto oom_free;
            }
        }
        r->info.source_traceback = (const char *const *)r->traceback;
        r->info.source_traceback_len = n;
    }
    r->info.job = info->job ? aj_job_ref(info->job) : NULL;
    aj__runq_push(s, &r->call);
    return;
oom_free:
    aj__report_drop(r);
oom:
    aj_log(EVENT_LOG_ERR, "out of memory: exception report \"%s\" lost",
           info->message ? info->message : "");
}

AJ_EXPORT int aj_scheduler_set_exception_handler(aj_scheduler *s, aj_exception_handler h, void *arg)
{
    if (!s) {
        errno = EINVAL;
        return -1;
    }
    s->exc = h;
    s->exc_arg = h ? arg : NULL;
    return 0;
}

AJ_EXPORT aj_exception_handler aj_scheduler_exception_handler(const aj_scheduler *s)
{
    return s ? s->exc : NULL;
}

AJ_EXPORT int aj_scheduler_set_debug(aj_scheduler *s, int on)
{
    if (!s) {
        errno = EINVAL;
        return -1;
    }
    s->debug = on ? 1 : 0;
#if !(defined(HAVE_EXECINFO_H) && defined(HAVE_BACKTRACE))
    if (on) {
        errno = ENOTSUP;
        return -1;
    }
#endif
    return 0;
}
