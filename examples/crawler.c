/*
 * examples/crawler.c -- fetch jobs under a concurrency limit, with libevent's
 * HTTP client, against a local server the program starts itself.
 *
 * The server (127.0.0.1, ephemeral port) is an evhttp with libaj_evhttp: a
 * scheduler from aj_evhttp_setup() and one aj_atomic_gencb() handler that
 * answers /page/N after a few milliseconds with links to /page/2N and
 * /page/2N+1 (31 pages), plus a link to /slow (10 s to answer) and one to a
 * page that does not exist.
 *
 * The crawler is a second scheduler on the same loop: at most 4 fetches at
 * once, at most 8 queued, each fetch a job that owns one
 * evhttp_connection and one request.  A fetch spawns the pages it links to
 * with aj_spawn_async() (back-pressure: a discovered link waits for room in
 * the queue instead of being dropped).  Each fetch may take 500 ms
 * (aj_scheduler_set_job_timeout); the /slow one is cancelled by that timeout,
 * and its cancel hook cancels the HTTP request.  Nobody waits on the fetches,
 * so the two that fail (the timeout, the 404) reach the exception handler.
 * aj_scheduler_wait_and_close() notices when the crawl is over; then the
 * server is stopped with aj_evhttp_shutdown() and freed.
 *
 * The last lines are TAP ("ok N - ...") so that `make check` reads the
 * verdict.
 *
 *   ./examples/crawler
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

#define NPAGES 31
#define LIMIT 4

/* ------------------------------------------------------------------ */
/* The server: one atomic handler                                      */
/* ------------------------------------------------------------------ */

struct page {
    aj_job *job;
    struct event *timer;        /* "rendering" the page */
    struct evbuffer *body;
};

static void page_free(struct page *p)
{
    event_free(p->timer);
    evbuffer_free(p->body);
    free(p);
}

static void page_ready(evutil_socket_t fd, short what, void *arg)
{
    struct page *p = arg;

    aj_evhttp_reply(p->job, 200, "OK", p->body);  /* -1 ENOTCONN if the client left */
    page_free(p);
}

/* The server's scheduler closes the job (shutdown): stop rendering. */
static void page_cancel(aj_job *job, void *arg)
{
    page_free(arg);
    aj_job_done(job, ECANCELED, NULL);          /* the adapter answers 503 */
}

static void page_handler(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct event_base *base = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct timeval delay = { 0, 0 };
    struct page *p;
    int n = 0;

    if (path && strcmp(path, "/slow") == 0) {
        delay.tv_sec = 10;
    } else if (path && sscanf(path, "/page/%d", &n) == 1 && n >= 1 && n <= NPAGES) {
        delay.tv_usec = (5 + n * 7 % 20) * 1000;
    } else {
        aj_evhttp_reply(job, 404, "Not Found", NULL);
        return;
    }
    p = calloc(1, sizeof *p);
    if (!p || !(p->timer = evtimer_new(base, page_ready, p)) || !(p->body = evbuffer_new())) {
        if (p && p->timer)
            event_free(p->timer);
        free(p);
        aj_job_done(job, ENOMEM, NULL);         /* the client gets 500 */
        return;
    }
    p->job = job;
    evbuffer_add_printf(p->body, "<h1>page %d</h1>\n", n);
    if (2 * n <= NPAGES)
        evbuffer_add_printf(p->body, "<a href=\"/page/%d\">\n<a href=\"/page/%d\">\n", 2 * n,
                            2 * n + 1);
    if (n == 1)
        evbuffer_add_printf(p->body, "<a href=\"/slow\">\n<a href=\"/missing\">\n");
    evtimer_add(p->timer, &delay);
    aj_job_set_cancel(job, page_cancel, p);
}

/* ------------------------------------------------------------------ */
/* The crawler: one job per URL                                        */
/* ------------------------------------------------------------------ */

struct crawler {
    aj_scheduler *s;
    struct event_base *base;
    int port;
    char seen[NPAGES + 8][32];  /* paths already spawned */
    int nseen;
    int fetched, in_flight, max_in_flight;
    int slow_timed_out, missing_failed, refused;
};

struct fetch {
    struct crawler *c;
    char path[32];
    aj_job *job;
    struct evhttp_connection *conn;
    struct evhttp_request *req;   /* in flight; NULL once answered or cancelled */
};

static void crawl(struct crawler *c, const char *path);

/* libevent's client calls this once the response is in (or failed).  The
 * request is freed by libevent when we return. */
static void fetch_response(struct evhttp_request *req, void *arg)
{
    struct fetch *f = arg;
    struct crawler *c = f->c;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    struct evbuffer *in;
    char *text, *at;
    size_t len;

    f->req = NULL;
    c->in_flight--;
    if (code != 200) {
        aj_job_done(f->job, code == 404 ? ENOENT : code == 0 ? ECONNREFUSED : EPROTO, NULL);
        return;
    }
    /* Spawn the pages it links to. */
    in = evhttp_request_get_input_buffer(req);
    len = evbuffer_get_length(in);
    text = malloc(len + 1);
    if (!text) {
        aj_job_done(f->job, ENOMEM, NULL);
        return;
    }
    evbuffer_remove(in, text, len);
    text[len] = '\0';
    for (at = text; (at = strstr(at, "href=\"")) != NULL;) {
        char *end;

        at += 6;
        if (!(end = strchr(at, '"')))
            break;
        *end = '\0';
        crawl(c, at);
        at = end + 1;
    }
    free(text);
    c->fetched++;
    printf("  200 %-9s %d fetching, %zu queued\n", f->path, c->in_flight,
           aj_scheduler_pending_count(c->s));
    aj_job_done(f->job, 0, NULL);
}

static void fetch_start(aj_job *job, void *arg)
{
    struct fetch *f = arg;
    struct crawler *c = f->c;

    f->job = job;
    f->conn = evhttp_connection_base_new(c->base, NULL, "127.0.0.1", (unsigned short)c->port);
    f->req = f->conn ? evhttp_request_new(fetch_response, f) : NULL;
    if (!f->req) {
        aj_job_done(job, ENOMEM, NULL);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(f->req), "Host", "127.0.0.1");
    if (evhttp_make_request(f->conn, f->req, EVHTTP_REQ_GET, f->path) < 0) {
        f->req = NULL;                  /* libevent freed it */
        aj_job_done(job, EIO, NULL);
        return;
    }
    if (++c->in_flight > c->max_in_flight)
        c->max_in_flight = c->in_flight;
}

/* Closed (here: by the job timeout): cancel the HTTP request. */
static void fetch_cancel(aj_job *job, void *arg)
{
    struct fetch *f = arg;

    if (f->req) {
        evhttp_cancel_request(f->req);  /* frees it; its callback never runs */
        f->req = NULL;
        f->c->in_flight--;
    }
    aj_job_done(job, ECANCELED, NULL);
}

/* Last: the library is done with the job.  The connection is freed here,
 * outside libevent's callbacks on it. */
static void fetch_release(void *arg)
{
    struct fetch *f = arg;

    if (f->conn)
        evhttp_connection_free(f->conn);
    free(f);
}

static const struct aj_job_ops fetch_ops = {
    .name = "fetch",
    .start = fetch_start,
    .cancel = fetch_cancel,
    .release = fetch_release,
};

/* aj_spawn_async's answer: the job exists (name it after its URL), or the
 * request could not wait any longer (then the fetch is still ours). */
static void fetch_spawned(aj_scheduler *s, aj_job *job, int error, void *cbarg)
{
    struct fetch *f = cbarg;

    if (error) {
        fprintf(stderr, "crawler: %s dropped: %s\n", f->path, strerror(error));
        f->c->refused++;
        free(f);
        return;
    }
    aj_job_set_name(job, f->path);
}

static void crawl(struct crawler *c, const char *path)
{
    struct timeval queue_wait = { 5, 0 };
    struct fetch *f;
    int i;

    for (i = 0; i < c->nseen; i++)
        if (strcmp(c->seen[i], path) == 0)
            return;
    if (c->nseen == (int)(sizeof c->seen / sizeof c->seen[0]) ||
        !(f = calloc(1, sizeof *f))) {
        c->refused++;
        return;
    }
    snprintf(c->seen[c->nseen++], sizeof c->seen[0], "%s", path);
    f->c = c;
    snprintf(f->path, sizeof f->path, "%s", path);
    if (aj_spawn_async(c->s, &fetch_ops, f, &queue_wait, fetch_spawned, f) < 0) {
        c->refused++;
        free(f);
    }
}

/* Fetches nobody waited for that failed. */
static void crawl_failure(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    struct crawler *c = arg;
    const char *name = aj_job_name(info->job);

    printf("  exception handler: %s: %s: %s\n", info->message, name, strerror(info->error));
    if (strcmp(name, "/slow") == 0 && info->error == ETIMEDOUT)
        c->slow_timed_out++;
    if (strcmp(name, "/missing") == 0 && info->error == ENOENT)
        c->missing_failed++;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static int server_stopped;

static void server_down(struct evhttp *http, void *arg)
{
    evhttp_free(http);                  /* safe now: no job holds a request */
    server_stopped = 1;
}

static void crawl_over(aj_scheduler *s, void *arg)
{
    struct evhttp *http = arg;
    struct timeval grace = { 0, 200000 };

    printf("crawl over; stopping the server\n");
    /* The server still renders /slow for a client that left: the shutdown
     * gives it 0.2 s, then cancels it. */
    if (aj_evhttp_shutdown(http, &grace, server_down, NULL) < 0) {
        perror("crawler: aj_evhttp_shutdown");
        evhttp_free(http);
    }
}

int main(void)
{
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct crawler c;
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    struct timeval fetch_limit = { 0, 500000 }, crawl_limit = { 20, 0 };
    struct aj_stats st;
    int ok, n = 0, failed = 0;

    alarm(60);                  /* a hang fails the run instead of blocking it */
    signal(SIGPIPE, SIG_IGN);   /* a server writes to clients that may be gone */
    memset(&c, 0, sizeof c);
    if (!(base = event_base_new()) || !(http = evhttp_new(base)))
        return 1;

    /* The server. */
    bound = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    if (!bound || getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &len) < 0 ||
        !aj_evhttp_setup(http, base) || aj_atomic_gencb(http, page_handler, base) < 0) {
        perror("crawler: server");
        return 1;
    }
    c.port = ntohs(sin.sin_port);

    /* The crawler. */
    c.base = base;
    if (!(c.s = aj_scheduler_new(base)))
        return 1;
    aj_scheduler_set_limit(c.s, LIMIT);
    aj_scheduler_set_pending_limit(c.s, 8);
    aj_scheduler_set_job_timeout(c.s, &fetch_limit);
    aj_scheduler_set_exception_handler(c.s, crawl_failure, &c);

    printf("crawling http://127.0.0.1:%d/page/1, %d fetches at once\n", c.port, LIMIT);
    crawl(&c, "/page/1");
    aj_scheduler_wait_and_close(c.s, &crawl_limit, crawl_over, http);
    event_base_dispatch(base);

    aj_scheduler_get_stats(c.s, &st);
    aj_scheduler_free(c.s);
    event_base_free(base);

    printf("%llu fetches: %llu succeeded, %llu failed; at most %d at once, %zu queued at most\n",
           (unsigned long long)st.spawned, (unsigned long long)st.succeeded,
           (unsigned long long)st.failed, c.max_in_flight, st.pending_peak);
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        ok = (cond);                                                           \
        failed += !ok;                                                         \
        printf("%s %d - ", ok ? "ok" : "not ok", ++n);                         \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
    } while (0)
    CHECK(c.fetched == NPAGES && c.refused == 0, "every page fetched (%d of %d)", c.fetched, NPAGES);
    CHECK(c.max_in_flight >= 2 && c.max_in_flight <= LIMIT, "never more than %d fetches at once (%d)",
          LIMIT, c.max_in_flight);
    CHECK(c.slow_timed_out == 1, "the /slow fetch was cancelled by its job timeout (ETIMEDOUT)");
    CHECK(c.missing_failed == 1, "the broken link failed with ENOENT, reported to the handler");
    CHECK(st.spawned == NPAGES + 2 && st.failed == 2, "spawned %llu, failed %llu",
          (unsigned long long)st.spawned, (unsigned long long)st.failed);
    CHECK(server_stopped, "the server shut down gracefully, then evhttp_free()");
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
