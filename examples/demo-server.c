/*
 * examples/demo-server.c -- an HTTP server on libaj_evhttp, start to finish.
 *
 * Read this first if you are new to libaj.  It uses only the public API
 * (<aj/aj.h>, <aj/evhttp.h>) and shows, in one file:
 *
 *   GET /hello        an atomic route: the handler runs as a job of the
 *                     server's scheduler and replies at once.
 *   GET /slow?ms=N    an atomic route doing real asynchronous work: a timer
 *                     stands in for a slow backend and the job replies N ms
 *                     later (0..5000, default 100).  It arms a cancel hook,
 *                     so a shutdown can stop it (the client then gets 503),
 *                     and the server has AJ_EVHTTP_CANCEL_ON_DISCONNECT, so
 *                     the same hook stops it at once when its client
 *                     leaves.  Its state is per-request data
 *                     (aj_evhttp_set_data), released on every way out.
 *   GET /stats        a plain evhttp callback (not a job, so it answers even
 *                     when the scheduler sheds load): the scheduler's
 *                     counters and the demo's own, as JSON.
 *
 *   Every /hello and /slow request also spawns an "audit" job with
 *   aj_evhttp_spawn(): background work that is not tied to the request and
 *   finishes later (it "writes the audit line" after AUDIT_MS).
 *
 *   Back-pressure: at most `limit` jobs run at once (-l, default 16) and at
 *   most `pending` wait (-q, default 32).  Past that the adapter answers
 *   503 + Retry-After itself: no job is made, no memory grows.
 *
 *   Graceful shutdown: SIGINT or SIGTERM calls aj_evhttp_shutdown(): the
 *   listener closes, running jobs get up to the drain timeout (-d, default
 *   2000 ms) to finish, the rest are cancelled and their clients get 503;
 *   then evhttp_free() and event_base_free() are safe.  The program prints
 *   a drain line and the final counters and exits 0.
 *
 *   usage: demo-server [-p PORT] [-l LIMIT] [-q PENDING] [-d DRAIN_MS] [-v]
 *          PORT 0 picks a free port; the "listening on" line says which.
 *
 *   try:   ./examples/demo-server -p 8080 &
 *          curl localhost:8080/hello; curl 'localhost:8080/slow?ms=500'
 *          ab -c 64 -n 2000 'http://127.0.0.1:8080/slow?ms=20'
 *          curl localhost:8080/stats; kill %1
 *
 * Ownership in one sentence: what a /slow job allocates is its per-request
 * data, and the adapter releases it exactly once, whichever way the job
 * ended (aj_evhttp_set_data); the audit job frees its own in its release.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

#define SLOW_MAX_MS 5000      /* /slow refuses longer naps (400) */
#define AUDIT_MS 2            /* how long an audit job takes */

/* The whole program's state: one server, one scheduler, a few counters. */
struct demo {
    struct event_base *base;
    struct evhttp *http;
    struct event *sigint, *sigterm;
    struct timeval drain;          /* how long the shutdown waits for jobs */
    struct timeval stop_t0;        /* when the signal came */
    size_t limit, pending_limit;   /* as configured (for the exit report) */
    int stopping;
    int verbose;

    /* The scheduler's counters, copied at the signal and after every job
     * that finishes.  The adapter frees the scheduler before our shutdown
     * callback runs, so this copy is what we print at exit (on_job_done
     * says why it is final). */
    struct aj_stats final;

    /* The demo's own counters (the scheduler counts jobs, not routes). */
    uint64_t hello, slow, slow_cancelled, bad_requests, replies_dropped;
    uint64_t audit_written, audit_dropped, audit_cancelled;
};

/* ------------------------------------------------------------------ */
/* Replies                                                             */
/* ------------------------------------------------------------------ */

/*
 * Answers an atomic job's request with a text body and finishes the job
 * (aj_evhttp_reply calls aj_job_done(job, 0, NULL) for us).  Never touch
 * the request after an earlier step of the job: ask aj_evhttp_request(job),
 * which is NULL once the client left.
 */
static void reply_text(struct demo *d, aj_job *job, int code, const char *reason,
                       const char *fmt, ...)
{
    struct evhttp_request *req = aj_evhttp_request(job);
    struct evbuffer *body = evbuffer_new();
    va_list ap;

    if (req)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; charset=utf-8");
    if (body) {
        va_start(ap, fmt);
        evbuffer_add_vprintf(body, fmt, ap);
        va_end(ap);
    }
    /* -1 with ENOTCONN: the client went away while we worked.  The reply is
     * dropped safely and the job still succeeds; just count it. */
    if (aj_evhttp_reply(job, code, reason, body) < 0 && errno == ENOTCONN)
        d->replies_dropped++;
    if (body)
        evbuffer_free(body);
}

/* ------------------------------------------------------------------ */
/* The audit job: background work spawned per request                 */
/* ------------------------------------------------------------------ */

/*
 * A job is a continuation: start arms the work and returns, a later
 * callback (here the timer) finishes it with aj_job_done().  The job copies
 * what it needs from the request, because it is not tied to the request
 * and may outlive it.
 */
struct audit {
    struct demo *d;
    aj_job *job;
    struct event *timer;
    char line[128];                /* "GET /slow?ms=20", copied */
};

static void audit_written(evutil_socket_t fd, short what, void *arg)
{
    struct audit *a = arg;

    (void)fd;
    (void)what;
    a->d->audit_written++;
    if (a->d->verbose)
        printf("audit: %s\n", a->line);
    aj_job_done(a->job, 0, NULL);
}

static void audit_start(aj_job *job, void *arg)
{
    struct audit *a = arg;
    struct timeval tv = { 0, AUDIT_MS * 1000 };

    a->job = job;
    a->timer = evtimer_new(a->d->base, audit_written, a);
    if (!a->timer) {
        /* Nobody waits for this job, so the failure goes to the
         * scheduler's exception handler (on_failure below). */
        aj_job_done(job, ENOMEM, NULL);
        return;
    }
    evtimer_add(a->timer, &tv);
}

/* Shutdown ran out of patience: stop now and say so. */
static void audit_cancel(aj_job *job, void *arg)
{
    struct audit *a = arg;

    if (a->timer)
        event_del(a->timer);
    a->d->audit_cancelled++;
    aj_job_done(job, ECANCELED, NULL);
}

/* Called exactly once, last: the library will not touch `a` again. */
static void audit_release(void *arg)
{
    struct audit *a = arg;

    if (a->timer)
        event_free(a->timer);
    free(a);
}

static const struct aj_job_ops audit_ops = {
    .name = "audit",
    .start = audit_start,
    .cancel = audit_cancel,
    .release = audit_release,
};

/* libevent 2.1 has no method-to-string of its own. */
static const char *method_name(const struct evhttp_request *req)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    default: return "OTHER";
    }
}

/*
 * Spawns the audit job on the request's scheduler.  It shares the limit
 * and the pending queue with the requests, so under load it can be refused
 * (EAGAIN: queue full).  On refusal nothing was taken and `a` is still
 * ours: an audit line is worth less than a request, so drop it and count.
 */
static void audit(struct demo *d, struct evhttp_request *req)
{
    struct audit *a = calloc(1, sizeof *a);

    if (!a) {
        d->audit_dropped++;
        return;
    }
    a->d = d;
    snprintf(a->line, sizeof a->line, "%s %s", method_name(req), evhttp_request_get_uri(req));
    if (!aj_evhttp_spawn(req, &audit_ops, a)) {
        free(a);
        d->audit_dropped++;
    }
}

/* ------------------------------------------------------------------ */
/* GET /hello: an atomic handler that answers at once                 */
/* ------------------------------------------------------------------ */

/* An atomic handler is the job's start; `req` is valid during this call. */
static void hello_handler(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct demo *d = arg;

    d->hello++;
    audit(d, req);
    reply_text(d, job, 200, "OK", "hello from libaj\n");
}

/* ------------------------------------------------------------------ */
/* GET /slow?ms=N: an atomic handler waiting on a "backend"           */
/* ------------------------------------------------------------------ */

struct slow {
    struct demo *d;
    aj_job *job;
    struct event *timer;
    long ms;
};

/* Every way out (reply, cancel, client gone, shutdown) ends here, once:
 * the adapter calls it when it releases the job (aj_evhttp_set_data). */
static void slow_release(void *data)
{
    struct slow *sl = data;

    if (sl->timer)
        event_free(sl->timer);
    free(sl);
}

/* The backend answered: reply, which also finishes the job. */
static void slow_answered(evutil_socket_t fd, short what, void *arg)
{
    struct slow *sl = arg;

    (void)fd;
    (void)what;
    reply_text(sl->d, sl->job, 200, "OK", "slept %ld ms\n", sl->ms);
}

/* Asked to stop (shutdown past its drain timeout, the scheduler's wait
 * timeout, or the client left: AJ_EVHTTP_CANCEL_ON_DISCONNECT): stop the
 * backend work and finish with ECANCELED; a client still there gets 503.
 * slow_release frees the state. */
static void slow_cancel(aj_job *job, void *arg)
{
    struct slow *sl = arg;

    sl->d->slow_cancelled++;
    event_del(sl->timer);
    aj_job_done(job, ECANCELED, NULL);
}

/* Reads ?ms=N: 0 and *ms on success, -1 if it is not a number in range. */
static int query_ms(struct evhttp_request *req, long *ms)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params;
    const char *v;
    char *end;
    int rc = 0;

    *ms = 100;
    if (!query)
        return 0;
    /* Initialises params; on error it leaves it empty. */
    if (evhttp_parse_query_str(query, &params) < 0)
        return -1;
    if ((v = evhttp_find_header(&params, "ms")) != NULL) {
        errno = 0;
        *ms = strtol(v, &end, 10);
        if (errno || end == v || *end || *ms < 0 || *ms > SLOW_MAX_MS)
            rc = -1;
    }
    evhttp_clear_headers(&params);
    return rc;
}

static void slow_handler(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct demo *d = arg;
    struct slow *sl;
    struct timeval tv;
    long ms;

    d->slow++;
    if (query_ms(req, &ms) < 0) {
        d->bad_requests++;
        reply_text(d, job, 400, "Bad Request", "ms must be a number from 0 to %d\n",
                   SLOW_MAX_MS);
        return;
    }
    audit(d, req);
    sl = calloc(1, sizeof *sl);
    if (!sl) {
        /* Finishing with an error without replying: the client gets 500. */
        aj_job_done(job, ENOMEM, NULL);
        return;
    }
    /* From here the adapter frees sl when it releases the job. */
    aj_evhttp_set_data(job, sl, slow_release);
    if (!(sl->timer = evtimer_new(d->base, slow_answered, sl))) {
        aj_job_done(job, ENOMEM, NULL);
        return;
    }
    sl->d = d;
    sl->job = job;
    sl->ms = ms;
    /* Arm the cancel hook before the work, so no state misses a cancel. */
    aj_job_set_cancel(job, slow_cancel, sl);
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(sl->timer, &tv);
    /* Return now: the loop serves other clients while we "wait". */
}

/* ------------------------------------------------------------------ */
/* GET /stats: the counters as JSON                                    */
/* ------------------------------------------------------------------ */

/* Formats the scheduler's counters and the demo's into buf as JSON. */
static void format_stats(struct demo *d, aj_scheduler *s, const struct aj_stats *st,
                         char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"limit\": %zu, \"pending_limit\": %zu, \"size\": %zu, \"active\": %zu, "
             "\"pending\": %zu, "
             "\"spawned\": %" PRIu64 ", \"started\": %" PRIu64 ", \"succeeded\": %" PRIu64
             ", \"failed\": %" PRIu64 ", \"cancelled\": %" PRIu64 ", \"close_timeouts\": %" PRIu64
             ", \"job_timeouts\": %" PRIu64 ", \"rejected\": %" PRIu64 ", \"pending_peak\": %zu, "
             "\"demo\": {\"hello\": %" PRIu64 ", \"slow\": %" PRIu64 ", \"slow_cancelled\": %" PRIu64
             ", \"bad_requests\": %" PRIu64 ", \"replies_dropped\": %" PRIu64
             ", \"audit_written\": %" PRIu64 ", \"audit_dropped\": %" PRIu64
             ", \"audit_cancelled\": %" PRIu64 "}}",
             d->limit, d->pending_limit,
             s ? aj_scheduler_size(s) : 0, s ? aj_scheduler_active_count(s) : 0,
             s ? aj_scheduler_pending_count(s) : 0,
             st->spawned, st->started, st->succeeded, st->failed, st->cancelled,
             st->close_timeouts, st->job_timeouts, st->rejected, st->pending_peak,
             d->hello, d->slow, d->slow_cancelled, d->bad_requests, d->replies_dropped,
             d->audit_written, d->audit_dropped, d->audit_cancelled);
}

/* A plain libevent callback: monitoring must answer even while the
 * scheduler is full and every atomic route sheds with 503. */
static void stats_cb(struct evhttp_request *req, void *arg)
{
    struct demo *d = arg;
    aj_scheduler *s = aj_evhttp_get_scheduler_from_server(d->http);
    struct evbuffer *body;
    struct aj_stats st;
    char json[1024];

    if (!s) {                      /* shutting down: the scheduler is gone */
        evhttp_send_error(req, 503, "Shutting down");
        return;
    }
    aj_scheduler_get_stats(s, &st);
    format_stats(d, s, &st, json, sizeof json);
    body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(body, "%s\n", json);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}

/* ------------------------------------------------------------------ */
/* Scheduler hooks                                                     */
/* ------------------------------------------------------------------ */

/* A job nobody waited for failed (here: an audit job out of memory).
 * Atomic jobs never come here: their outcome goes to the client. */
static void on_failure(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    (void)s;
    (void)arg;
    fprintf(stderr, "demo-server: %s: job %s: %s\n", info->message, aj_job_name(info->job),
            strerror(info->error));
}

/* Runs after every job that finishes: keep a copy of the counters for the
 * exit report.  Once the shutdown began, the adapter answers new requests
 * 503 itself without spawning, and the only spawns left (audits) come from
 * jobs that finish afterwards, so the copy taken after the last job is
 * final.  (Jobs a close gives up on are let go without this callback; ours
 * all honour cancel, so none are.) */
static void on_job_done(aj_scheduler *s, aj_job *job, int error, void *result, void *arg)
{
    struct demo *d = arg;

    (void)job;
    (void)error;
    (void)result;
    aj_scheduler_get_stats(s, &d->final);
}

/* ------------------------------------------------------------------ */
/* Graceful shutdown                                                   */
/* ------------------------------------------------------------------ */

static long ms_since(const struct timeval *t0)
{
    struct timeval now;

    gettimeofday(&now, NULL);
    return (now.tv_sec - t0->tv_sec) * 1000L + (now.tv_usec - t0->tv_usec) / 1000L;
}

/* The adapter is done: every job finished or was cancelled, every held
 * request answered, the scheduler freed.  Now evhttp_free() is safe. */
static void on_shutdown(struct evhttp *http, void *arg)
{
    struct demo *d = arg;

    printf("demo-server: drained in %ld ms: %" PRIu64 " in-flight /slow cancelled, "
           "%" PRIu64 " audit jobs cancelled\n",
           ms_since(&d->stop_t0), d->slow_cancelled, d->audit_cancelled);
    evhttp_free(http);
    d->http = NULL;
    /* With the signal events gone nothing is left on the base:
     * event_base_dispatch() returns. */
    event_free(d->sigint);
    event_free(d->sigterm);
    d->sigint = d->sigterm = NULL;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct demo *d = arg;
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    aj_scheduler *s;

    (void)what;
    if (d->stopping) {
        printf("demo-server: %s again: still draining\n", name);
        return;
    }
    d->stopping = 1;
    gettimeofday(&d->stop_t0, NULL);
    s = aj_evhttp_get_scheduler_from_server(d->http);
    aj_scheduler_get_stats(s, &d->final);    /* in case no job runs from here */
    printf("demo-server: %s: graceful shutdown: listener closed, draining %zu job%s "
           "(%zu active, %zu pending) for up to %ld ms\n",
           name, aj_scheduler_size(s), aj_scheduler_size(s) == 1 ? "" : "s",
           aj_scheduler_active_count(s),
           aj_scheduler_pending_count(s),
           (long)(d->drain.tv_sec * 1000 + d->drain.tv_usec / 1000));
    /* Waits for the jobs up to d->drain, then cancels the rest (their
     * clients get 503 + Retry-After), frees the scheduler and calls
     * on_shutdown from the loop. */
    if (aj_evhttp_shutdown(d->http, &d->drain, on_shutdown, d) < 0) {
        perror("demo-server: aj_evhttp_shutdown");
        event_base_loopbreak(d->base);
    }
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: demo-server [-p PORT] [-l LIMIT] [-q PENDING] [-d DRAIN_MS] [-v]\n"
                    "  -p PORT     port on 127.0.0.1 (default 8080, 0 = any free port)\n"
                    "  -l LIMIT    jobs running at once (default 16, 0 = unlimited)\n"
                    "  -q PENDING  jobs waiting for a slot (default 32, 0 = unlimited)\n"
                    "  -d DRAIN_MS how long shutdown waits for jobs (default 2000)\n"
                    "  -v          print every audit line\n");
    exit(2);
}

static long number(const char *s, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > max)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    struct demo d;
    aj_scheduler *s;
    struct evhttp_bound_socket *bound;
    struct sockaddr_in sin;
    socklen_t slen = sizeof sin;
    struct timeval wait_timeout = { 10, 0 };
    long port = 8080, limit = 16, pending = 32, drain_ms = 2000;
    char json[1024];
    int opt, rc = 1;

    memset(&d, 0, sizeof d);
    while ((opt = getopt(argc, argv, "p:l:q:d:v")) != -1) {
        switch (opt) {
        case 'p': port = number(optarg, 65535); break;
        case 'l': limit = number(optarg, 1000000); break;
        case 'q': pending = number(optarg, 1000000); break;
        case 'd': drain_ms = number(optarg, 3600000); break;
        case 'v': d.verbose = 1; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();

    d.drain.tv_sec = drain_ms / 1000;
    d.drain.tv_usec = (drain_ms % 1000) * 1000;

    /* A script reads our stdout through a pipe or a file: one line at a
     * time, not one 4 KiB block at exit. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* A client that leaves mid-reply must not kill the server. */
    signal(SIGPIPE, SIG_IGN);

    /* 1. libevent: a base and an HTTP server on it. */
    if (!(d.base = event_base_new()) || !(d.http = evhttp_new(d.base))) {
        fprintf(stderr, "demo-server: cannot create the event base or the server\n");
        goto out;
    }

    /* 2. libaj: a scheduler for the server, with small limits so that a
     *    modest load shows back-pressure. */
    if (!(s = aj_evhttp_setup(d.http, d.base))) {
        perror("demo-server: aj_evhttp_setup");
        goto out;
    }
    aj_scheduler_set_limit(s, d.limit = (size_t)limit);
    aj_scheduler_set_pending_limit(s, d.pending_limit = (size_t)pending);
    /* The wait timeout bounds every atomic handler (then 503). */
    aj_scheduler_set_wait_timeout(s, &wait_timeout);
    aj_scheduler_set_exception_handler(s, on_failure, &d);
    aj_scheduler_set_done_callback(s, on_job_done, &d);
    /* A /slow whose client left is cancelled at once (its cancel hook
     * stops the backend work) instead of running on for nobody. */
    if (aj_evhttp_set_flags(d.http, AJ_EVHTTP_CANCEL_ON_DISCONNECT) < 0) {
        perror("demo-server: aj_evhttp_set_flags");
        goto out;
    }

    /* 3. Routes: two atomic ones (jobs), one plain libevent callback. */
    if (aj_atomic(d.http, "/hello", hello_handler, &d) < 0 ||
        aj_atomic(d.http, "/slow", slow_handler, &d) < 0 ||
        evhttp_set_cb(d.http, "/stats", stats_cb, &d) != 0) {
        perror("demo-server: registering routes");
        goto out;
    }

    /* 4. Listen, and say where (port 0 = the kernel picks one). */
    bound = evhttp_bind_socket_with_handle(d.http, "127.0.0.1", (unsigned short)port);
    if (!bound ||
        getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &slen) < 0) {
        fprintf(stderr, "demo-server: cannot listen on 127.0.0.1:%ld: %s\n", port,
                strerror(errno));
        goto out;
    }
    printf("demo-server: listening on http://127.0.0.1:%d/ (pid %ld; limit %ld running, "
           "%ld pending; drain %ld ms)\n",
           ntohs(sin.sin_port), (long)getpid(), limit, pending, drain_ms);

    /* 5. Signals arrive through the loop (evsignal), so the shutdown runs
     *    as an ordinary callback, not inside a signal handler. */
    d.sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
    d.sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
    if (!d.sigint || !d.sigterm || evsignal_add(d.sigint, NULL) < 0 ||
        evsignal_add(d.sigterm, NULL) < 0) {
        fprintf(stderr, "demo-server: cannot watch signals\n");
        goto out;
    }

    /* 6. Serve until on_shutdown has freed the server and the signals. */
    event_base_dispatch(d.base);
    if (d.http) {                  /* the loop stopped without a shutdown */
        fprintf(stderr, "demo-server: the loop stopped early\n");
        goto out;
    }

    format_stats(&d, NULL, &d.final, json, sizeof json);
    printf("demo-server: final stats: %s\n", json);
    /* The scheduler's books balance: every job admitted ended one way. */
    if (d.final.spawned == d.final.succeeded + d.final.failed + d.final.cancelled)
        printf("demo-server: every job accounted for: spawned %" PRIu64 " = succeeded %" PRIu64
               " + failed %" PRIu64 " + cancelled %" PRIu64 "\n",
               d.final.spawned, d.final.succeeded, d.final.failed, d.final.cancelled);
    else
        printf("demo-server: counters do not balance: spawned %" PRIu64 " != %" PRIu64 "\n",
               d.final.spawned, d.final.succeeded + d.final.failed + d.final.cancelled);
    printf("demo-server: exit 0\n");
    rc = 0;
out:
    if (d.http) {
        /* Error path: no shutdown ran.  evhttp_free() is still safe with
         * libaj; aj_evhttp_forget() then drops the adapter's record and
         * frees the scheduler. */
        evhttp_free(d.http);
        aj_evhttp_forget(d.http);
    }
    if (d.sigint)
        event_free(d.sigint);
    if (d.sigterm)
        event_free(d.sigterm);
    if (d.base)
        event_base_free(d.base);
    /* Frees libevent's global state too, so valgrind reports nothing. */
    libevent_global_shutdown();
    return rc;
}
