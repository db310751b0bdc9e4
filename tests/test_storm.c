/*
 * test_storm.c -- HTTP fault storm (issue 6, part 4).
 *
 * A server with a small limit and pending queue serves atomic routes (an
 * immediate reply, a reply from a timer that honours cancel, a 1 MiB reply)
 * while raw-socket clients on the same loop misbehave at random points:
 *
 *   HEADERS   leave before the request headers end
 *   SENT      leave right after sending the request
 *   RUNNING   leave 0-10 ms later, while the job runs or waits
 *   WRITING   ask for 1 MiB, read a little of it, leave while it is written
 *   GOOD      read the whole answer and check it is well formed
 *
 * Two thirds of the way through, aj_evhttp_shutdown() is called in the
 * middle of the storm; clients that come after it are refused or shed.
 * Then evhttp_free().  Checked: the loop ran to the end (no crash, no
 * hang: a 120 s safety timer), every GOOD client got a well-formed answer
 * (200, or 503 with Retry-After) -- or, only if the shutdown's 2 s for
 * writing ran out and it logged so (a loaded machine: the clients read on
 * the server's own loop), an answer that stops short when evhttp_free()
 * closes its connection -- every job started finished, and every
 * byte libaj allocated was freed (counted through aj_set_mem_functions),
 * so every job was released; valgrind / ASan runs of this test check
 * libevent's side.
 *
 * The storm runs twice: with the server's flags at 0, and with
 * AJ_EVHTTP_CANCEL_ON_DISCONNECT | AJ_EVHTTP_ALLOW_HALF_CLOSE, where the
 * slow jobs also carry per-request data (aj_evhttp_set_data) that must be
 * released exactly once each, and the shutdown callback frees the server
 * with aj_evhttp_free().  The books must balance both times.
 *
 *   AJ_STORM_REQUESTS (default 3000)  AJ_STORM_SEED (default 1)
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

#include "harness.h"

enum kind { HEADERS, SENT, RUNNING, WRITING, GOOD, NKINDS };
static const char *const kind_names[NKINDS] = { "headers", "sent", "running", "writing", "good" };

#define MAX_INFLIGHT 24
#define BIG (1 << 20)

static struct evhttp *http;
static int port;
static unsigned seed, seed0;
static int total, started_clients, finished_clients, inflight;
static int shutdown_at, shutdown_called, shutdown_done_called, http_freed;
static int per_kind[NKINDS];
static int refused, answers_200, answers_503, malformed, good_no_answer;
static int cut_logged, cut_by_free;  /* the shutdown's grace ran out */
static int jobs_started, jobs_finished;
static int data_set, data_released;
static unsigned storm_flags;
static char *big_body;

static unsigned rnd(void)
{
    seed = seed * 1103515245u + 12345u;
    return (seed >> 16) & 0x7fff;
}

/* ------------------------------------------------------------------ */
/* Server side                                                          */
/* ------------------------------------------------------------------ */

struct slow {
    aj_job *job;
    struct event *timer;
};

static void slow_fire(evutil_socket_t fd, short what, void *arg)
{
    struct slow *sl = arg;
    struct evbuffer *b = evbuffer_new();

    (void)fd;
    (void)what;
    evbuffer_add(b, "slow", 4);
    aj_evhttp_reply(sl->job, 200, "OK", b);   /* -1 ENOTCONN if the client left */
    evbuffer_free(b);
    event_free(sl->timer);
    free(sl);
    jobs_finished++;
}

static void slow_cancel(aj_job *job, void *arg)
{
    struct slow *sl = arg;

    event_free(sl->timer);
    free(sl);
    jobs_finished++;
    aj_job_done(job, ECANCELED, NULL);
}

static void release_data(void *data)
{
    free(data);
    data_released++;
}

static void h_slow(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct slow *sl = malloc(sizeof *sl);
    struct timeval tv = { 0, (long)(1 + rnd() % 20) * 1000 };

    (void)req;
    (void)arg;
    jobs_started++;
    if (storm_flags) {
        ck_assert_int_eq(aj_evhttp_set_data(job, malloc(16), release_data), 0);
        data_set++;
    }
    sl->job = job;
    sl->timer = evtimer_new(base, slow_fire, sl);
    evtimer_add(sl->timer, &tv);
    aj_job_set_cancel(job, slow_cancel, sl);
}

static void h_fast(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();

    (void)req;
    (void)arg;
    jobs_started++;
    evbuffer_add(b, "fast", 4);
    aj_evhttp_reply(job, 200, "OK", b);
    evbuffer_free(b);
    jobs_finished++;
}

static void h_big(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();

    (void)req;
    (void)arg;
    jobs_started++;
    evbuffer_add_reference(b, big_body, BIG, NULL, NULL);
    aj_evhttp_reply(job, 200, "OK", b);
    evbuffer_free(b);
    jobs_finished++;
}

/* libaj's log: the shutdown's warning that evhttp_free will cut answers
 * still being written is expected under load; the rest is printed. */
static void storm_log(int severity, const char *msg)
{
    if (strstr(msg, "still being written")) {
        cut_logged = 1;
        fprintf(stderr, "# %s\n", msg);
    } else if (severity >= EVENT_LOG_WARN) {
        fprintf(stderr, "# libaj: %s\n", msg);
    }
}

static void on_shutdown(struct evhttp *h, void *arg)
{
    (void)h;
    (void)arg;
    shutdown_done_called = 1;
    /* the final counters are still there (SPEC 4.4) */
    ck_assert_ptr_nonnull(aj_evhttp_get_scheduler_from_server(http));
    if (storm_flags)
        aj_evhttp_free(http);
    else
        evhttp_free(http);
    http_freed = 1;
    if (finished_clients == total)
        event_base_loopexit(base, NULL);
}

/* ------------------------------------------------------------------ */
/* Clients                                                              */
/* ------------------------------------------------------------------ */

struct client {
    enum kind kind;
    const char *path;
    int fd;
    struct event *ev;
    struct event *timer;
    char *buf;
    size_t len, cap;
};

static void next_clients(void);
static struct client *live[MAX_INFLIGHT + 1];
static int nlive;

static void client_end(struct client *c)
{
    int i;
    for (i = 0; i < nlive; i++) if (live[i] == c) { live[i] = live[--nlive]; break; }
    if (c->ev)
        event_free(c->ev);
    if (c->timer)
        event_free(c->timer);
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    free(c);
    finished_clients++;
    inflight--;
    next_clients();
}

/* Says what a GOOD client got that was not a well-formed answer. */
static void report_malformed(const struct client *c, const char *how)
{
    char head[64];
    size_t i, n = c->len < sizeof head - 1 ? c->len : sizeof head - 1;

    if (malformed > 10)
        return;
    for (i = 0; i < n; i++)
        head[i] = c->buf[i] == '\r' || c->buf[i] == '\n' ? '|' : c->buf[i];
    head[n] = '\0';
    fprintf(stderr, "# malformed: GET %s, %s after %zu bytes (%s the shutdown%s): %s\n", c->path,
            how, c->len, shutdown_called ? "after" : "before",
            http_freed ? ", server freed" : shutdown_done_called ? ", done" : "", head);
}

/* A complete, well-formed answer?  1 yes, 0 not complete yet, -1 broken. */
static int check_answer(struct client *c)
{
    char *end, *cl;
    int code;
    long clen;
    size_t head;

    c->buf[c->len] = '\0';
    end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return 0;
    head = (size_t)(end - c->buf) + 4;
    if (sscanf(c->buf, "HTTP/1.%*d %d ", &code) != 1)
        return -1;
    cl = strstr(c->buf, "Content-Length: ");
    if (!cl || cl > end)
        return -1;
    clen = strtol(cl + 16, NULL, 10);
    if (c->len < head + (size_t)clen)
        return 0;
    if (c->len != head + (size_t)clen)
        return -1;
    if (code == 200) {
        answers_200++;
    } else if (code == 503) {
        if (!strstr(c->buf, "Retry-After: 1\r\n"))
            return -1;
        answers_503++;
    } else {
        return -1;
    }
    return 1;
}

static void client_read(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    ssize_t n;

    (void)what;
    if (c->len + 65536 + 1 > c->cap) {
        c->cap = c->len + 65536 + 1;
        c->buf = realloc(c->buf, c->cap);
    }
    n = read(fd, c->buf + c->len, c->cap - 1 - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        c->len += (size_t)n;
        if (c->kind == WRITING) {        /* a taste of it, then leave */
            client_end(c);
            return;
        }
        if (c->kind == GOOD) {
            int r = check_answer(c);
            if (r == 0)
                return;
            if (r < 0) {
                malformed++;
                report_malformed(c, "a broken answer");
            }
        }
        client_end(c);
        return;
    }
    /* EOF or error: the server closed (after an answer, or dropping us) */
    if (c->kind == GOOD && c->len == 0)
        good_no_answer++;
    else if (c->kind == GOOD) {
        int r = check_answer(c);
        if (r == 0 && http_freed && cut_logged) {
            cut_by_free++;          /* short, as the shutdown warned */
        } else if (r != 1) {
            malformed++;
            report_malformed(c, n < 0 ? strerror(errno) : "EOF");
        }
    }
    client_end(c);
}

static void client_leave(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    client_end(arg);
}

static void client_start(void)
{
    static const char *const paths[] = { "/fast", "/slow", "/slow", "/big" };
    struct client *c = calloc(1, sizeof *c);
    struct sockaddr_in sin;
    const char *path;
    char req[256];
    int n;

    started_clients++;
    inflight++;
    live[nlive++] = c;
    c->kind = (enum kind)(rnd() % NKINDS);
    per_kind[c->kind]++;
    path = c->kind == WRITING ? "/big" : paths[rnd() % 4];
    c->path = path;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        refused++;                        /* after the shutdown: not accepting */
        client_end(c);
        return;
    }
    evutil_make_socket_nonblocking(c->fd);
    n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: storm\r\nConnection: close\r\n\r\n", path);
    if (c->kind == HEADERS) {
        (void)!write(c->fd, req, (size_t)(rnd() % (unsigned)(n - 4)) + 1);
        client_end(c);
        return;
    }
    if (write(c->fd, req, (size_t)n) != n) {
        client_end(c);
        return;
    }
    if (c->kind == SENT) {
        client_end(c);
        return;
    }
    c->ev = event_new(base, c->fd, EV_READ | EV_PERSIST, client_read, c);
    event_add(c->ev, NULL);
    if (c->kind == RUNNING) {
        struct timeval tv = { 0, (long)(rnd() % 10) * 1000 };
        c->timer = evtimer_new(base, client_leave, c);
        evtimer_add(c->timer, &tv);
    }
}

static void next_clients(void)
{
    while (inflight < MAX_INFLIGHT && started_clients < total) {
        if (started_clients == shutdown_at && !shutdown_called) {
            shutdown_called = 1;
            ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, on_shutdown, NULL), 0);
        }
        client_start();
    }
    if (finished_clients == total && http_freed)
        event_base_loopexit(base, NULL);
}

static void kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    next_clients();
}

static int timed_out;

static void safety(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    timed_out = 1;
    event_base_loopbreak(base);
}

static void storm(unsigned flags)
{
    const char *env;
    struct evhttp_bound_socket *b;
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    struct timeval limit = { 120, 0 }, wt = { 0, 50000 }, ct = { 0, 50000 }, now = { 0, 0 };
    struct event *safety_ev, *kick_ev;
    aj_scheduler *s;
    int k;

    signal(SIGPIPE, SIG_IGN);
    storm_flags = flags;
    started_clients = finished_clients = inflight = 0;
    shutdown_called = shutdown_done_called = http_freed = 0;
    memset(per_kind, 0, sizeof per_kind);
    refused = answers_200 = answers_503 = malformed = good_no_answer = 0;
    cut_logged = cut_by_free = 0;
    jobs_started = jobs_finished = data_set = data_released = 0;
    nlive = 0;
    timed_out = 0;
    aj_set_log_callback(storm_log);
    mem_reset(0);                       /* count, refuse nothing */
    aj_set_mem_functions(mem_malloc, mem_realloc, mem_free);
    env = getenv("AJ_STORM_REQUESTS");
    total = env && atoi(env) > 0 ? atoi(env) : 3000;
    env = getenv("AJ_STORM_SEED");
    seed = env ? (unsigned)strtoul(env, NULL, 10) : 1u;
    seed0 = seed;
    shutdown_at = total * 2 / 3;
    big_body = calloc(1, BIG);

    base = event_base_new();
    http = evhttp_new(base);
    b = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(b);
    getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&sin, &len);
    port = ntohs(sin.sin_port);
    s = aj_evhttp_setup(http, base);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(aj_evhttp_set_flags(http, flags), 0);
    aj_scheduler_set_limit(s, 4);
    aj_scheduler_set_pending_limit(s, 12);
    aj_scheduler_set_wait_timeout(s, &wt);
    aj_scheduler_set_close_timeout(s, &ct);
    ck_assert_int_eq(aj_atomic(http, "/fast", h_fast, NULL), 0);
    ck_assert_int_eq(aj_atomic(http, "/slow", h_slow, NULL), 0);
    ck_assert_int_eq(aj_atomic(http, "/big", h_big, NULL), 0);

    safety_ev = evtimer_new(base, safety, NULL);
    evtimer_add(safety_ev, &limit);
    kick_ev = evtimer_new(base, kick, NULL);
    evtimer_add(kick_ev, &now);
    event_base_dispatch(base);
    event_free(safety_ev);
    event_free(kick_ev);

    fprintf(stderr, "# storm: %d requests (seed %u, flags %#x): ", total, seed0, flags);
    for (k = 0; k < NKINDS; k++)
        fprintf(stderr, "%s %d, ", kind_names[k], per_kind[k]);
    fprintf(stderr, "\n# storm: answers 200 %d, 503 %d; malformed %d; cut by evhttp_free %d; "
            "good clients dropped %d; refused after shutdown %d; jobs started %d, finished %d\n",
            answers_200, answers_503, malformed, cut_by_free, good_no_answer, refused,
            jobs_started, jobs_finished);
    if (flags)
        fprintf(stderr, "# storm: per-request data set %d, released %d\n", data_set, data_released);

    if (timed_out) {
        int i;
        for (i = 0; i < nlive; i++)
            fprintf(stderr, "# live client kind %s len %zu\n", kind_names[live[i]->kind], live[i]->len);
    }
    ck_assert_msg(!timed_out, "storm hung: %d of %d clients finished", finished_clients, total);
    ck_assert_int_eq(shutdown_done_called, 1);
    ck_assert_int_eq(finished_clients, total);
    ck_assert_int_eq(malformed, 0);
    /* only answers on connections open when the server stopped */
    ck_assert_int_le(cut_by_free, MAX_INFLIGHT);
    ck_assert_int_gt(answers_200, 0);
    ck_assert_int_gt(answers_503, 0);
    ck_assert_int_eq(jobs_started, jobs_finished);
    ck_assert_int_eq(data_set, data_released);
    /* every GOOD client before the shutdown got an answer: those dropped
     * can only be ones whose connection was open when the server stopped */
    ck_assert_int_le(good_no_answer, MAX_INFLIGHT);
    event_base_free(base);
    free(big_body);
    /* every job released, every adapter record freed */
    ck_assert_int_eq(mem_live, 0);
    aj_set_mem_functions(NULL, NULL, NULL);
    aj_set_log_callback(NULL);
}

START_TEST(storm_of_disconnects_with_a_shutdown_in_the_middle)
{
    storm(0);
}
END_TEST

START_TEST(storm_with_cancel_on_disconnect_and_half_close)
{
    storm(AJ_EVHTTP_CANCEL_ON_DISCONNECT | AJ_EVHTTP_ALLOW_HALF_CLOSE);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("storm");
    TCase *tc = tcase_create("http");

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, storm_of_disconnects_with_a_shutdown_in_the_middle);
    tcase_add_test(tc, storm_with_cancel_on_disconnect_and_half_close);
    suite_add_tcase(su, tc);
    return run_suite(su);
}
