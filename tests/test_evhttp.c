/*
 * test_evhttp.c -- libaj_evhttp against real clients (SPEC section 4).
 *
 * Every test runs a real evhttp server on 127.0.0.1 with an ephemeral port
 * and talks to it with a real client: libevent's own HTTP client on the same
 * base, curl in a child process, or a raw socket (to disconnect at a chosen
 * moment).  Nothing sleeps: each test runs the loop until the answers it
 * waits for arrived, with a 10 s safety timer that fails it.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

/* ------------------------------------------------------------------ */
/* Fixture: one base, a loop that runs until `outstanding` reaches 0    */
/* ------------------------------------------------------------------ */

static struct event_base *base;
static int outstanding;          /* answers / callbacks the test waits for */
static int timed_out;
static int log_lines;
static char last_log[512];

static void on_log(int severity, const char *msg)
{
    (void)severity;
    log_lines++;
    snprintf(last_log, sizeof last_log, "%s", msg);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    outstanding = 0;
    timed_out = 0;
    log_lines = 0;
    last_log[0] = '\0';
    aj_set_log_callback(on_log);
}

static void teardown(void)
{
    aj_set_log_callback(NULL);
    event_base_free(base);
    base = NULL;
}

static void one_less(void)
{
    if (--outstanding == 0)
        event_base_loopexit(base, NULL);
}

static void safety(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    timed_out = 1;
    event_base_loopbreak(base);
}

/* Runs the loop until every awaited thing happened (or 10 s passed). */
static void run(void)
{
    struct timeval ten = { 10, 0 };
    struct event *t = evtimer_new(base, safety, NULL);

    evtimer_add(t, &ten);
    if (outstanding > 0)
        event_base_dispatch(base);
    event_free(t);
    ck_assert_msg(!timed_out, "timed out with %d answers outstanding", outstanding);
}

/* Runs the loop for `ms` more milliseconds (to let late events happen). */
static void run_for(int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* Runs the loop until cond holds (10 s at most, then fails): for states
 * the test waits for, never a fixed sleep (the machine is noisy). */
#define RUN_UNTIL(cond) do {                                            \
        int waited_ = 0;                                                \
        while (!(cond) && waited_ < 10000) {                            \
            run_for(5);                                                 \
            waited_ += 5;                                               \
        }                                                               \
        ck_assert_msg((cond), "never happened: %s", #cond);             \
    } while (0)

static struct evhttp *server(int *port)
{
    struct evhttp *http = evhttp_new(base);
    struct evhttp_bound_socket *b;
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;

    ck_assert_ptr_nonnull(http);
    b = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return http;
}

/* ------------------------------------------------------------------ */
/* Client 1: libevent's own HTTP client, on the same base               */
/* ------------------------------------------------------------------ */

struct resp {
    int done;
    int code;                    /* -1: no response (connection failed) */
    char body[512];
    char retry_after[32];
    char connection[32];
};

static void resp_cb(struct evhttp_request *req, void *arg)
{
    struct resp *r = arg;

    r->done = 1;
    if (!req || evhttp_request_get_response_code(req) == 0) {
        r->code = -1;
    } else {
        struct evbuffer *b = evhttp_request_get_input_buffer(req);
        const char *h;
        size_t n = evbuffer_get_length(b);

        r->code = evhttp_request_get_response_code(req);
        if (n >= sizeof r->body)
            n = sizeof r->body - 1;
        evbuffer_copyout(b, r->body, n);
        r->body[n] = '\0';
        h = evhttp_find_header(evhttp_request_get_input_headers(req), "Retry-After");
        snprintf(r->retry_after, sizeof r->retry_after, "%s", h ? h : "");
        h = evhttp_find_header(evhttp_request_get_input_headers(req), "Connection");
        snprintf(r->connection, sizeof r->connection, "%s", h ? h : "");
    }
    one_less();
}

#define MAX_CONNS 64
static struct evhttp_connection *conns[MAX_CONNS];
static int nconns;

static void free_conns(void)
{
    while (nconns > 0)
        evhttp_connection_free(conns[--nconns]);
}

/* GET path with Host: host on a new connection; r is filled in later. */
static void get(int port, const char *host, const char *path, struct resp *r)
{
    struct evhttp_connection *evcon = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
    struct evhttp_request *req = evhttp_request_new(resp_cb, r);

    ck_assert_ptr_nonnull(evcon);
    ck_assert_int_lt(nconns, MAX_CONNS);
    conns[nconns++] = evcon;
    memset(r, 0, sizeof *r);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host ? host : "127.0.0.1");
    ck_assert_int_eq(evhttp_make_request(evcon, req, EVHTTP_REQ_GET, path), 0);
    outstanding++;
}

/* ------------------------------------------------------------------ */
/* Client 2: curl in a child process                                     */
/* ------------------------------------------------------------------ */

struct curl_run {
    char out[4096];
    size_t len;
    int status;
    pid_t pid;
    struct event *ev;
};

static void curl_read(evutil_socket_t fd, short what, void *arg)
{
    struct curl_run *c = arg;
    ssize_t n;

    (void)what;
    n = read(fd, c->out + c->len, sizeof c->out - 1 - c->len);
    if (n > 0) {
        c->len += (size_t)n;
        c->out[c->len] = '\0';
        if (c->len < sizeof c->out - 1)
            return;
    }
    event_free(c->ev);
    c->ev = NULL;
    close(fd);
    waitpid(c->pid, &c->status, 0);
    one_less();
}

/* curl -s -i -H "Host: host" http://127.0.0.1:port/path; output in c->out. */
static void curl_get(int port, const char *host, const char *path, struct curl_run *c)
{
    const char *curl = getenv("CURL");
    char url[256], hosthdr[256];
    int p[2];

    if (!curl || !*curl || strcmp(curl, "no") == 0)
        curl = "curl";
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    snprintf(hosthdr, sizeof hosthdr, "Host: %s", host ? host : "127.0.0.1");
    memset(c, 0, sizeof *c);
    ck_assert_int_eq(pipe(p), 0);
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execlp(curl, "curl", "-s", "-i", "--max-time", "10", "-H", hosthdr, url, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    c->ev = event_new(base, p[0], EV_READ | EV_PERSIST, curl_read, c);
    event_add(c->ev, NULL);
    outstanding++;
}

static int curl_code(const struct curl_run *c)
{
    int code = 0;

    if (sscanf(c->out, "HTTP/%*s %d", &code) != 1)
        return -1;
    return code;
}

/* ------------------------------------------------------------------ */
/* Client 3: a raw socket, to leave at a chosen moment                  */
/* ------------------------------------------------------------------ */

static int raw_connect(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

static int raw_get(int port, const char *path)
{
    char buf[256];
    int fd = raw_connect(port), n;

    n = snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    ck_assert_int_eq(write(fd, buf, (size_t)n), n);
    return fd;
}

/* ------------------------------------------------------------------ */
/* Handlers                                                             */
/* ------------------------------------------------------------------ */

static int handler_calls;
static aj_job *last_job;
static int last_reply_rc, last_reply_errno;
static int reply_attempts;

static void reply_text(aj_job *job, const char *text)
{
    struct evbuffer *b = evbuffer_new();

    evbuffer_add_printf(b, "%s", text);
    last_reply_rc = aj_evhttp_reply(job, 200, "OK", b);
    last_reply_errno = errno;
    reply_attempts++;
    evbuffer_free(b);
}

/* Replies with the arg (a string) at once. */
static void h_say(aj_job *job, struct evhttp_request *req, void *arg)
{
    (void)req;
    handler_calls++;
    reply_text(job, arg);
}

/* ------------------------------------------------------------------ */
/* Setup and lookups                                                    */
/* ------------------------------------------------------------------ */

static aj_scheduler *seen_sched, *seen_from_req, *seen_job_sched;
static aj_job *spawned_from_plain;
static int bg_started;

static void bg_start(aj_job *job, void *arg)
{
    (void)arg;
    bg_started++;
    aj_job_done(job, 0, NULL);
}

static const struct aj_job_ops bg_ops = { "background", bg_start, NULL, NULL };

/* A plain evhttp handler (not atomic) using the lookup forms. */
static void plain_lookup(struct evhttp_request *req, void *arg)
{
    (void)arg;
    seen_sched = aj_evhttp_get_scheduler(req);
    seen_from_req = aj_evhttp_get_scheduler_from_request(req);
    spawned_from_plain = aj_evhttp_spawn(req, &bg_ops, NULL);
    evhttp_send_reply(req, 200, "OK", NULL);
}

static void h_lookup(aj_job *job, struct evhttp_request *req, void *arg)
{
    (void)arg;
    seen_job_sched = aj_job_scheduler(job);
    seen_sched = aj_evhttp_get_scheduler(req);
    ck_assert_ptr_eq(aj_evhttp_request(job), req);
    reply_text(job, "ok");
}

static void shutdown_done(struct evhttp *http, void *arg)
{
    int *called = arg;

    (void)http;
    ++*called;
    one_less();
}

/* Shuts http down, runs until the callback, frees it. */
static void shutdown_and_free(struct evhttp *http)
{
    int called = 0;

    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, &called), 0);
    outstanding++;
    run();
    ck_assert_int_eq(called, 1);
    free_conns();
    evhttp_free(http);
}

START_TEST(setup_and_each_lookup_form)
{
    int port;
    struct evhttp *http = server(&port), *other = evhttp_new(base);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct resp r1, r2;

    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_eq(aj_scheduler_base(s), base);
    errno = 0;
    ck_assert_ptr_null(aj_evhttp_setup(http, base));
    ck_assert_int_eq(errno, EEXIST);
    errno = 0;
    ck_assert_ptr_null(aj_evhttp_setup(NULL, base));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_eq(aj_evhttp_get_scheduler_from_server(http), s);
    ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(other));

    ck_assert_int_eq(aj_atomic(http, "/atomic", h_lookup, NULL), 0);
    errno = 0;
    ck_assert_int_eq(aj_atomic(http, "/atomic", h_lookup, NULL), -1);
    ck_assert_int_eq(errno, EEXIST);
    errno = 0;
    ck_assert_int_eq(aj_atomic(http, NULL, h_lookup, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    evhttp_set_cb(http, "/plain", plain_lookup, NULL);

    get(port, NULL, "/atomic", &r1);
    run();
    ck_assert_int_eq(r1.code, 200);
    ck_assert_str_eq(r1.body, "ok");
    ck_assert_ptr_eq(seen_job_sched, s);
    ck_assert_ptr_eq(seen_sched, s);

    seen_sched = seen_from_req = NULL;
    get(port, NULL, "/plain", &r2);
    run();
    ck_assert_int_eq(r2.code, 200);
    ck_assert_ptr_eq(seen_sched, s);
    ck_assert_ptr_eq(seen_from_req, s);
    ck_assert_ptr_nonnull(spawned_from_plain);
    /* the background job is not tied to the request: it runs after it */
    RUN_UNTIL(bg_started == 1);
    ck_assert_int_eq(log_lines, 0);

    shutdown_and_free(http);
    evhttp_free(other);
}
END_TEST

START_TEST(no_setup_gives_null_enoent_and_500)
{
    int port;
    struct evhttp *http = server(&port);
    struct resp r1, r2;

    evhttp_set_cb(http, "/plain", plain_lookup, NULL);
    ck_assert_int_eq(aj_atomic(http, "/atomic", h_say, "never"), 0);
    seen_sched = seen_from_req = (aj_scheduler *)1;
    spawned_from_plain = (aj_job *)1;
    get(port, NULL, "/plain", &r1);
    run();
    ck_assert_int_eq(r1.code, 200);
    ck_assert_ptr_null(seen_sched);
    ck_assert_ptr_null(seen_from_req);
    ck_assert_ptr_null(spawned_from_plain);
    ck_assert_int_ge(log_lines, 1);
    ck_assert_msg(strstr(last_log, "aj_evhttp_setup") != NULL, "log: %s", last_log);
    ck_assert_int_eq(bg_started, 0);

    log_lines = 0;
    get(port, NULL, "/atomic", &r2);
    run();
    ck_assert_int_eq(r2.code, 500);
    ck_assert_int_eq(handler_calls, 0);
    ck_assert_int_eq(log_lines, 1);
    ck_assert_msg(strstr(last_log, "aj_evhttp_setup") != NULL, "log: %s", last_log);

    errno = 0;
    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, NULL), -1);
    ck_assert_int_eq(errno, ENOENT);
    errno = 0;
    ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(http));
    free_conns();
    evhttp_free(http);
    /* the atomic route's record: dropped without touching the freed http */
    ck_assert_int_eq(aj_evhttp_forget(http), 0);
}
END_TEST

/* Whose scheduler served it: the atomic handler answers the name its
 * job's scheduler was given, the plain one what the lookup found. */
static aj_scheduler *sched_root, *sched_a;

static const char *sched_label(aj_scheduler *s)
{
    return s == sched_root ? "root" : s == sched_a ? "a" : s ? "other" : "none";
}

static void h_which(aj_job *job, struct evhttp_request *req, void *arg)
{
    char text[64];

    snprintf(text, sizeof text, "%s:%s:%s", (const char *)arg, sched_label(aj_job_scheduler(job)),
             sched_label(aj_evhttp_get_scheduler_from_request(req)));
    reply_text(job, text);
}

static void plain_which(struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();

    evbuffer_add_printf(b, "%s:%s", (const char *)arg,
                        sched_label(aj_evhttp_get_scheduler_from_request(req)));
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

START_TEST(nested_vhosts_choose_own_parent_or_no_scheduler)
{
    int port;
    struct evhttp *root = server(&port);
    struct evhttp *va = evhttp_new(base), *vb = evhttp_new(base), *vc = evhttp_new(base);
    struct evhttp *vd = evhttp_new(base);
    struct resp r[8];
    struct curl_run c1, c2;

    /*   root (sched root)
     *    +- "a.example"   va (sched a)  alias "alias-of-a.test"
     *    |     +- "*.deep"  vc (none -> a)
     *    +- "b.*.org"     vb (none -> root)
     */
    sched_root = aj_evhttp_setup(root, base);
    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, "a.example", va), 0);
    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, "b.*.org", vb), 0);
    ck_assert_int_eq(aj_evhttp_add_virtual_host(va, "*.deep", vc), 0);
    sched_a = aj_evhttp_setup(va, base);
    ck_assert_ptr_nonnull(sched_root);
    ck_assert_ptr_nonnull(sched_a);
    ck_assert_int_eq(aj_evhttp_add_server_alias(va, "alias-of-a.test"), 0);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_add_server_alias(va, "ALIAS-of-a.test"), -1);
    ck_assert_int_eq(errno, EEXIST);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, "again", vb), -1);
    ck_assert_int_eq(errno, EEXIST);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, NULL, vd), -1);
    ck_assert_int_eq(errno, EINVAL);

    ck_assert_int_eq(aj_atomic(root, "/w", h_which, "root"), 0);
    ck_assert_int_eq(aj_atomic(va, "/w", h_which, "a"), 0);
    ck_assert_int_eq(aj_atomic(vb, "/w", h_which, "b"), 0);
    ck_assert_int_eq(aj_atomic(vc, "/w", h_which, "c"), 0);
    evhttp_set_cb(root, "/p", plain_which, "root");
    evhttp_set_cb(va, "/p", plain_which, "a");
    evhttp_set_cb(vb, "/p", plain_which, "b");
    evhttp_set_cb(vc, "/p", plain_which, "c");

    get(port, "a.example", "/w", &r[0]);
    get(port, "b.anything.org", "/w", &r[1]);
    get(port, "x.deep", "/w", &r[2]);          /* not under root: root's own */
    get(port, "unknown.host", "/w", &r[3]);
    get(port, "alias-of-a.test", "/w", &r[4]);
    get(port, "x.deep", "/p", &r[5]);
    get(port, "B.EXAMPLE.ORG", "/p", &r[6]);
    get(port, "alias-of-a.test", "/p", &r[7]);
    curl_get(port, "a.example", "/p", &c1);
    curl_get(port, "b.x.org", "/w", &c2);
    run();
    ck_assert_str_eq(r[0].body, "a:a:a");
    ck_assert_str_eq(r[1].body, "b:root:root");
    ck_assert_str_eq(r[2].body, "root:root:root");
    ck_assert_str_eq(r[3].body, "root:root:root");
    ck_assert_str_eq(r[4].body, "a:a:a");
    ck_assert_str_eq(r[5].body, "root:root");
    ck_assert_str_eq(r[6].body, "b:root");
    ck_assert_str_eq(r[7].body, "a:a");
    ck_assert_int_eq(curl_code(&c1), 200);
    ck_assert_msg(strstr(c1.out, "\r\n\r\na:a") != NULL, "curl: %s", c1.out);
    ck_assert_msg(strstr(c2.out, "\r\n\r\nb:root:root") != NULL, "curl: %s", c2.out);
    /* removed through the adapter: from libevent and the records */
    ck_assert_int_eq(aj_evhttp_remove_server_alias(va, "alias-of-a.test"), 0);
    ck_assert_int_eq(evhttp_remove_server_alias(va, "alias-of-a.test"), -1);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_remove_server_alias(va, "alias-of-a.test"), -1);
    ck_assert_int_eq(errno, ENOENT);
    get(port, "alias-of-a.test", "/w", &r[4]);
    run();
    ck_assert_str_eq(r[4].body, "root:root:root");

    /* a vhost nested under a vhost, reached through its own alias: no
     * scheduler of its own, so its parent's (a), not the root's */
    {
        struct resp deep[2];

        ck_assert_int_eq(aj_evhttp_add_server_alias(vc, "c-alias.test"), 0);
        ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(vc));
        get(port, "c-alias.test", "/w", &deep[0]);
        get(port, "c-alias.test", "/p", &deep[1]);
        run();
        ck_assert_str_eq(deep[0].body, "c:a:a");
        ck_assert_str_eq(deep[1].body, "c:a");
    }

    shutdown_and_free(root);   /* frees va, vb, vc with it */
    evhttp_free(vd);
    ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(va));
}
END_TEST

START_TEST(vhost_chain_without_any_scheduler_answers_500)
{
    int port;
    struct evhttp *root = server(&port), *v = evhttp_new(base);
    struct resp r;

    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, "v.test", v), 0);
    ck_assert_int_eq(aj_atomic(v, "/w", h_say, "never"), 0);
    get(port, "v.test", "/w", &r);
    run();
    ck_assert_int_eq(r.code, 500);
    ck_assert_int_eq(handler_calls, 0);
    ck_assert_int_eq(log_lines, 1);
    free_conns();
    evhttp_free(root);
    ck_assert_int_eq(aj_evhttp_forget(root), 0);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_forget(root), -1);
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Atomic outcomes                                                      */
/* ------------------------------------------------------------------ */

struct later {
    aj_job *job;
    struct event *timer;
    const char *text;
    int cancelled;
};

static void later_fire(evutil_socket_t fd, short what, void *arg)
{
    struct later *l = arg;

    (void)fd;
    (void)what;
    reply_text(l->job, l->text);
    event_free(l->timer);
    l->timer = NULL;
}

static void later_cancel(aj_job *job, void *arg)
{
    struct later *l = arg;

    l->cancelled++;
    if (l->timer) {
        event_free(l->timer);
        l->timer = NULL;
    }
    aj_job_done(job, ECANCELED, NULL);
}

static struct later laters[8];
static int nlaters;

/* Replies "late" after 50 ms, from a timer; honours cancel. */
static void h_later(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct later *l = &laters[nlaters++];
    int ms = arg ? atoi(arg) : 50;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    (void)req;
    handler_calls++;
    l->job = job;
    l->text = "late";
    l->timer = evtimer_new(base, later_fire, l);
    evtimer_add(l->timer, &tv);
    aj_job_set_cancel(job, later_cancel, l);
}

/* Same, but ignores cancel (a stubborn job). */
static void h_stubborn(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct later *l = &laters[nlaters++];
    int ms = atoi(arg);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    (void)req;
    handler_calls++;
    l->job = job;
    l->text = "stubborn";
    l->timer = evtimer_new(base, later_fire, l);
    evtimer_add(l->timer, &tv);
}

static int exceptions;

static void count_exceptions(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    (void)s;
    (void)info;
    (void)arg;
    exceptions++;
}

START_TEST(atomic_handler_replies_later_from_a_timer)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct resp r;
    struct aj_stats st;

    ck_assert_int_eq(aj_atomic(http, "/later", h_later, NULL), 0);
    get(port, NULL, "/later", &r);
    run();
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "late");
    ck_assert_int_eq(last_reply_rc, 0);
    run_for(5);
    aj_scheduler_get_stats(s, &st);
    ck_assert_uint_eq(st.succeeded, 1);
    ck_assert_uint_eq(aj_scheduler_size(s), 0);
    shutdown_and_free(http);
}
END_TEST

static void h_done_with(aj_job *job, struct evhttp_request *req, void *arg)
{
    (void)req;
    handler_calls++;
    aj_job_done(job, (int)(intptr_t)arg, NULL);
}

START_TEST(handler_finishing_without_a_reply_gets_500_or_503)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct resp r[3];
    struct curl_run c;

    aj_scheduler_set_exception_handler(s, count_exceptions, NULL);
    ck_assert_int_eq(aj_atomic(http, "/eio", h_done_with, (void *)(intptr_t)EIO), 0);
    ck_assert_int_eq(aj_atomic(http, "/zero", h_done_with, (void *)(intptr_t)0), 0);
    ck_assert_int_eq(aj_atomic(http, "/cancel", h_done_with, (void *)(intptr_t)ECANCELED), 0);
    get(port, NULL, "/eio", &r[0]);
    get(port, NULL, "/zero", &r[1]);
    get(port, NULL, "/cancel", &r[2]);
    curl_get(port, NULL, "/cancel", &c);
    run();
    ck_assert_int_eq(r[0].code, 500);
    ck_assert_int_eq(r[1].code, 500);
    ck_assert_int_eq(r[2].code, 503);
    ck_assert_str_eq(r[2].retry_after, "1");
    ck_assert_int_eq(curl_code(&c), 503);
    ck_assert_msg(strstr(c.out, "Retry-After: 1") != NULL, "curl: %s", c.out);
    run_for(5);
    /* outcomes went to the clients, never to the exception handler */
    ck_assert_int_eq(exceptions, 0);
    ck_assert_int_eq(handler_calls, 4);
    shutdown_and_free(http);
}
END_TEST

START_TEST(wait_timeout_cancels_the_handler_and_answers_503)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct timeval wt = { 0, 50000 };
    struct resp r;
    struct aj_stats st;

    aj_scheduler_set_wait_timeout(s, &wt);
    ck_assert_int_eq(aj_atomic(http, "/slow", h_later, "5000"), 0);
    get(port, NULL, "/slow", &r);
    run();
    ck_assert_int_eq(r.code, 503);
    ck_assert_str_eq(r.retry_after, "1");
    ck_assert_int_eq(laters[0].cancelled, 1);
    ck_assert_int_eq(reply_attempts, 0);
    run_for(5);
    aj_scheduler_get_stats(s, &st);
    ck_assert_uint_eq(st.cancelled, 1);
    shutdown_and_free(http);
}
END_TEST

START_TEST(full_pending_queue_sheds_with_503_and_makes_no_job)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct resp r[3];
    struct curl_run c;
    struct aj_stats st;
    int i, ok = 0, shed = 0;

    aj_scheduler_set_limit(s, 1);
    aj_scheduler_set_pending_limit(s, 1);
    ck_assert_int_eq(aj_atomic(http, "/hold", h_later, "1500"), 0);
    for (i = 0; i < 3; i++)
        get(port, NULL, "/hold", &r[i]);
    /* the fourth, from curl, comes once the first three are in */
    run_for(100);
    ck_assert_uint_eq(aj_scheduler_active_count(s), 1);
    ck_assert_uint_eq(aj_scheduler_pending_count(s), 1);
    curl_get(port, NULL, "/hold", &c);
    run();
    for (i = 0; i < 3; i++) {
        if (r[i].code == 200)
            ok++;
        if (r[i].code == 503) {
            shed++;
            ck_assert_str_eq(r[i].retry_after, "1");
        }
    }
    ck_assert_int_eq(ok, 2);
    ck_assert_int_eq(shed, 1);
    ck_assert_int_eq(curl_code(&c), 503);
    ck_assert_msg(strstr(c.out, "Retry-After: 1") != NULL, "curl: %s", c.out);
    aj_scheduler_get_stats(s, &st);
    ck_assert_uint_eq(st.spawned, 2);
    ck_assert_uint_eq(st.rejected, 2);
    ck_assert_int_eq(handler_calls, 2);
    shutdown_and_free(http);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Clients that go away                                                 */
/* ------------------------------------------------------------------ */

static int client_fd = -1;

/* Starts a 100 ms reply and closes the client's socket under it. */
static void h_later_client_leaves(aj_job *job, struct evhttp_request *req, void *arg)
{
    h_later(job, req, arg);
    close(client_fd);
    client_fd = -1;
}

static int released_seen;

static void count_done(aj_scheduler *s, aj_job *job, int error, void *result, void *arg)
{
    (void)s;
    (void)job;
    (void)result;
    (void)arg;
    /* the first job to succeed is the one the test waits for */
    if (error == 0 && ++released_seen == 1)
        one_less();
}

START_TEST(client_leaving_before_the_reply_lets_the_job_run_to_its_end)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct aj_stats st;
    struct resp r;

    aj_scheduler_set_done_callback(s, count_done, NULL);
    ck_assert_int_eq(aj_atomic(http, "/leave", h_later_client_leaves, "100"), 0);
    ck_assert_int_eq(aj_atomic(http, "/ok", h_say, "still here"), 0);
    client_fd = raw_get(port, "/leave");
    outstanding++;           /* the job's success, via the done callback */
    run();
    ck_assert_int_eq(reply_attempts, 1);
    ck_assert_int_eq(last_reply_rc, -1);
    ck_assert_int_eq(last_reply_errno, ENOTCONN);
    aj_scheduler_get_stats(s, &st);
    ck_assert_uint_eq(st.succeeded, 1);
    /* the server goes on serving */
    get(port, NULL, "/ok", &r);
    run();
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "still here");
    shutdown_and_free(http);
}
END_TEST

START_TEST(client_leaving_while_pending_discards_the_job)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct aj_stats st;
    struct resp r;
    int fd;

    aj_scheduler_set_limit(s, 1);
    ck_assert_int_eq(aj_atomic(http, "/hold", h_later, "1000"), 0);
    get(port, NULL, "/hold", &r);
    RUN_UNTIL(handler_calls == 1);
    fd = raw_get(port, "/hold");
    RUN_UNTIL(aj_scheduler_pending_count(s) == 1);
    close(fd);
    /* seen at once (EOF watch), not when the slot frees */
    RUN_UNTIL(aj_scheduler_pending_count(s) == 0);
    ck_assert_uint_eq(aj_scheduler_active_count(s), 1);
    run();
    ck_assert_int_eq(r.code, 200);
    run_for(5);
    aj_scheduler_get_stats(s, &st);
    ck_assert_int_eq(handler_calls, 1);
    ck_assert_uint_eq(st.started, 1);
    ck_assert_uint_eq(st.cancelled, 1);
    shutdown_and_free(http);
}
END_TEST

START_TEST(evhttp_free_without_shutdown_never_touches_held_requests)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct resp r;

    ck_assert_int_eq(aj_atomic(http, "/later", h_later, "500"), 0);
    get(port, NULL, "/later", &r);
    RUN_UNTIL(handler_calls == 1);
    /* libevent frees the held request now; the job still runs */
    evhttp_free(http);
    run();                      /* the client sees its connection close */
    ck_assert_int_eq(r.code, -1);
    RUN_UNTIL(reply_attempts == 1);
    ck_assert_int_eq(last_reply_rc, -1);
    ck_assert_int_eq(last_reply_errno, ENOTCONN);
    ck_assert_uint_eq(aj_scheduler_size(s), 0);
    free_conns();
    ck_assert_int_eq(aj_evhttp_forget(http), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Shutdown                                                             */
/* ------------------------------------------------------------------ */

START_TEST(shutdown_answers_every_request_in_flight)
{
    int port, called = 0, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct timeval wt = { 0, 300000 }, ct = { 0, 50000 };
    struct resp fast, stubborn, pending, after;
    struct sockaddr_in sin;

    aj_scheduler_set_limit(s, 2);
    aj_scheduler_set_wait_timeout(s, &wt);
    aj_scheduler_set_close_timeout(s, &ct);
    ck_assert_int_eq(aj_atomic(http, "/fast", h_later, "60"), 0);
    ck_assert_int_eq(aj_atomic(http, "/stubborn", h_stubborn, "1000"), 0);
    get(port, NULL, "/fast", &fast);
    get(port, NULL, "/stubborn", &stubborn);
    get(port, NULL, "/fast", &pending);       /* waits for a slot */
    RUN_UNTIL(aj_scheduler_pending_count(s) == 1);

    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, &called), 0);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, &called), -1);
    ck_assert_int_eq(errno, EALREADY);
    ck_assert_int_eq(called, 0);             /* never from inside the call */
    outstanding++;
    run();
    ck_assert_int_eq(called, 1);
    /* drained: the fast one replied, the pending one ran in the drain,
     * the stubborn one was cancelled, ignored it and was let go: 503 */
    ck_assert_int_eq(fast.code, 200);
    ck_assert_int_eq(pending.code, 200);
    ck_assert_int_eq(stubborn.code, 503);
    ck_assert_str_eq(stubborn.retry_after, "1");
    ck_assert_str_eq(stubborn.connection, "close");
    ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(http));

    /* no longer accepting */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), -1);
    close(fd);
    (void)after;

    free_conns();
    evhttp_free(http);
    /* the let-go job finishes later: its reply is dropped */
    RUN_UNTIL(reply_attempts == 3);
    ck_assert_int_eq(last_reply_rc, -1);
    ck_assert_int_eq(last_reply_errno, ENOTCONN);
}
END_TEST

START_TEST(requests_on_open_connections_during_shutdown_get_503)
{
    int port, called = 0;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct evhttp_connection *evcon;
    struct evhttp_request *req;
    struct resp first, second;

    (void)s;
    ck_assert_int_eq(aj_atomic(http, "/later", h_later, "100"), 0);
    /* one keep-alive connection: a request, then another during the drain */
    evcon = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
    conns[nconns++] = evcon;
    memset(&first, 0, sizeof first);
    memset(&second, 0, sizeof second);
    req = evhttp_request_new(resp_cb, &first);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    evhttp_make_request(evcon, req, EVHTTP_REQ_GET, "/later");
    outstanding++;
    run();
    ck_assert_int_eq(first.code, 200);

    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, &called), 0);
    req = evhttp_request_new(resp_cb, &second);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    evhttp_make_request(evcon, req, EVHTTP_REQ_GET, "/later");
    outstanding += 2;
    run();
    ck_assert_int_eq(called, 1);
    ck_assert_int_eq(second.code, 503);
    ck_assert_str_eq(second.retry_after, "1");
    ck_assert_int_eq(handler_calls, 1);
    free_conns();
    evhttp_free(http);
}
END_TEST

/* A reply far larger than the socket buffers: it is still being written
 * while its client does not read. */
#define HUGE_BODY (32 << 20)
static char *huge_body;
static size_t huge_size;

static void h_huge(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();

    (void)req;
    (void)arg;
    handler_calls++;
    evbuffer_add_reference(b, huge_body, huge_size, NULL, NULL);
    last_reply_rc = aj_evhttp_reply(job, 200, "OK", b);
    evbuffer_free(b);
}

/* Runs the loop until h_huge has replied (5 s at most). */
static void until_replied(void)
{
    int i;

    for (i = 0; i < 500 && handler_calls == 0; i++)
        run_for(10);
    ck_assert_int_eq(handler_calls, 1);
    ck_assert_int_eq(last_reply_rc, 0);
}

START_TEST(shutdown_waits_2_s_for_replies_being_written_then_says_it_cuts_them)
{
    int port, called = 0, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    double t0, waited;
    struct timespec ts;
    char buf[65536];
    size_t got = 0;
    ssize_t n;

    (void)s;
    huge_size = HUGE_BODY;
    huge_body = calloc(1, huge_size);
    ck_assert_ptr_nonnull(huge_body);
    ck_assert_int_eq(aj_atomic(http, "/huge", h_huge, NULL), 0);
    fd = raw_get(port, "/huge");             /* and never reads, for now */
    until_replied();
    run_for(50);                             /* the socket buffers fill up */

    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, &called), 0);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    outstanding++;
    run();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    waited = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6 - t0;
    ck_assert_int_eq(called, 1);
    /* it waited for the reply (about 2 s), then said it would be cut */
    ck_assert_msg(waited >= 1900, "shutdown waited only %.0f ms", waited);
    ck_assert_msg(strstr(last_log, "1 answer still being written after 2 s") != NULL,
                  "last log: %s", last_log);
    free_conns();
    evhttp_free(http);
    /* the client gets the start of the answer, then the end of the stream */
    for (;;) {
        n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    ck_assert_uint_gt(got, 0);
    ck_assert_uint_lt(got, huge_size);
    close(fd);
    free(huge_body);
}
END_TEST

START_TEST(shutdown_waits_for_a_reply_being_written_to_a_reading_client)
{
    int port, called = 0, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    char buf[65536];
    size_t got = 0;
    ssize_t n;

    (void)s;
    huge_size = 4 << 20;                     /* more than one write, well within 2 s */
    huge_body = calloc(1, huge_size);
    ck_assert_ptr_nonnull(huge_body);
    ck_assert_int_eq(aj_atomic(http, "/huge", h_huge, NULL), 0);
    fd = raw_get(port, "/huge");
    until_replied();
    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, &called), 0);
    /* read everything on this thread while the loop writes it */
    evutil_make_socket_nonblocking(fd);
    while (!called) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        while ((n = read(fd, buf, sizeof buf)) > 0)
            got += (size_t)n;
    }
    free_conns();
    evhttp_free(http);
    while ((n = read(fd, buf, sizeof buf)) > 0)
        got += (size_t)n;
    /* the whole answer arrived before the callback let the server go */
    ck_assert_uint_gt(got, huge_size);
    ck_assert_msg(strstr(last_log, "still being written") == NULL, "last log: %s", last_log);
    close(fd);
    free(huge_body);
}
END_TEST

/* ------------------------------------------------------------------ */
/* API errors                                                           */
/* ------------------------------------------------------------------ */

static void plain_start(aj_job *job, void *arg)
{
    (void)arg;
    last_job = job;
    errno = 0;
    last_reply_rc = aj_evhttp_reply(job, 200, "OK", NULL);
    last_reply_errno = errno;
    ck_assert_ptr_null(aj_evhttp_request(job));
    aj_job_done(job, 0, NULL);
    one_less();
}

static const struct aj_job_ops plain_ops = { "plain", plain_start, NULL, NULL };

static void h_reply_twice(aj_job *job, struct evhttp_request *req, void *arg)
{
    (void)req;
    (void)arg;
    reply_text(job, "once");
    errno = 0;
    last_reply_rc = aj_evhttp_reply(job, 200, "OK", NULL);
    last_reply_errno = errno;
    ck_assert_ptr_null(aj_evhttp_request(job));
}

START_TEST(reply_rejects_foreign_jobs_and_second_replies)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct resp r;

    errno = 0;
    ck_assert_int_eq(aj_evhttp_reply(NULL, 200, "OK", NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(aj_evhttp_request(NULL));
    ck_assert_ptr_nonnull(aj_spawn(s, &plain_ops, NULL));
    outstanding++;
    run();
    ck_assert_int_eq(last_reply_rc, -1);
    ck_assert_int_eq(last_reply_errno, EINVAL);

    ck_assert_int_eq(aj_atomic(http, "/twice", h_reply_twice, NULL), 0);
    get(port, NULL, "/twice", &r);
    run();
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "once");
    ck_assert_int_eq(last_reply_rc, -1);
    ck_assert_int_eq(last_reply_errno, EINVAL);

    errno = 0;
    ck_assert_int_eq(aj_evhttp_shutdown(NULL, NULL, NULL, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_add_virtual_host(http, "self", http), -1);
    ck_assert_int_eq(errno, EINVAL);
    shutdown_and_free(http);
}
END_TEST

START_TEST(gencb_runs_unmatched_requests_as_jobs)
{
    int port;
    struct evhttp *http = server(&port);
    struct resp r1, r2;

    ck_assert_ptr_nonnull(aj_evhttp_setup(http, base));
    ck_assert_int_eq(aj_atomic_gencb(http, h_say, "first"), 0);
    ck_assert_int_eq(aj_atomic_gencb(http, h_say, "generic"), 0);   /* replaces */
    ck_assert_int_eq(aj_atomic(http, "/exact", h_say, "exact"), 0);
    get(port, NULL, "/anything/else", &r1);
    get(port, NULL, "/exact", &r2);
    run();
    ck_assert_str_eq(r1.body, "generic");
    ck_assert_str_eq(r2.body, "exact");
    shutdown_and_free(http);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Replies the adapter makes are fresh responses (SPEC 4.2)              */
/* ------------------------------------------------------------------ */

struct raw_reader {
    int fd;
    char buf[4096];
    size_t len;
    int eof;
    struct event *ev;
};

/* Length of the first complete response in buf, 0 if not complete. */
static size_t response_length(const char *buf, size_t len)
{
    const char *end = NULL, *cl;
    size_t i, hdr, body = 0;

    for (i = 0; i + 3 < len; i++)
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
            end = buf + i;
            break;
        }
    if (!end)
        return 0;
    hdr = (size_t)(end - buf) + 4;
    for (cl = buf; cl && cl < end; cl = strstr(cl + 1, "\r\n"))
        if (strncasecmp(cl, "\r\nContent-Length:", 17) == 0) {
            body = strtoul(cl + 17, NULL, 10);
            break;
        }
    return len >= hdr + body ? hdr + body : 0;
}

static void raw_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct raw_reader *rr = arg;
    ssize_t n;

    (void)what;
    n = recv(fd, rr->buf + rr->len, sizeof rr->buf - 1 - rr->len, 0);
    if (n > 0) {
        rr->len += (size_t)n;
        rr->buf[rr->len] = '\0';
        if (!response_length(rr->buf, rr->len))
            return;
    } else {
        rr->eof = 1;
    }
    event_del(rr->ev);
    one_less();
}

/* Writes `request` on fd and reads one whole response (or EOF) into
 * out, with the Date header's value replaced by "X". */
static void raw_exchange(int fd, const char *request, char *out, size_t outsz)
{
    struct raw_reader rr;
    size_t n;
    char *d, *e;

    memset(&rr, 0, sizeof rr);
    rr.fd = fd;
    rr.ev = event_new(base, fd, EV_READ | EV_PERSIST, raw_read_cb, &rr);
    event_add(rr.ev, NULL);
    ck_assert_int_eq(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    outstanding++;
    {
        struct timeval ten = { 10, 0 };
        struct event *t = evtimer_new(base, safety, NULL);

        evtimer_add(t, &ten);
        event_base_dispatch(base);
        event_free(t);
    }
    event_free(rr.ev);
    ck_assert_msg(!timed_out, "no whole response in 10 s, got %zu bytes: %s", rr.len, rr.buf);
    n = response_length(rr.buf, rr.len);
    ck_assert_msg(n == rr.len, "expected exactly one response, got %zu bytes: %s", rr.len, rr.buf);
    d = strstr(rr.buf, "\r\nDate: ");
    if (d && (e = strstr(d + 2, "\r\n")) != NULL)
        memmove(d + 9, e, strlen(e) + 1), d[8] = 'X';
    snprintf(out, outsz, "%s", rr.buf);
}

/* Starts a response the way a handler would (a secret cookie, its own
 * framing, part of a JSON body), then fails (arg "fail") or goes slow
 * past the wait timeout (arg "slow"). */
static void h_half_built(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Set-Cookie", "session=secret");
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Content-Length", "40");
    evbuffer_add_printf(evhttp_request_get_output_buffer(req), "{\"partial\":");
    if (strcmp(arg, "fail") == 0) {
        handler_calls++;
        aj_job_done(job, EIO, NULL);
    } else {
        h_later(job, req, "5000");
    }
}

#define GET_KEEPALIVE(path) "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

START_TEST(error_replies_are_fresh_responses_and_keep_the_connection_usable)
{
    int port, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct timeval wt = { 0, 50000 };
    char out[4096];

    aj_scheduler_set_wait_timeout(s, &wt);
    ck_assert_int_eq(aj_atomic(http, "/fail", h_half_built, "fail"), 0);
    ck_assert_int_eq(aj_atomic(http, "/slow", h_half_built, "slow"), 0);
    ck_assert_int_eq(aj_atomic(http, "/ok", h_say, "fine"), 0);
    fd = raw_connect(port);

    raw_exchange(fd, GET_KEEPALIVE("/fail"), out, sizeof out);
    ck_assert_str_eq(out, "HTTP/1.1 500 Internal Server Error\r\n"
                          "Content-Type: text/plain; charset=utf-8\r\n"
                          "Date: X\r\n"
                          "Content-Length: 26\r\n"
                          "\r\n"
                          "500 Internal Server Error\n");
    /* the same keep-alive connection, framed right: the next answer */
    raw_exchange(fd, GET_KEEPALIVE("/ok"), out, sizeof out);
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", out);
    ck_assert_msg(strstr(out, "\r\n\r\nfine") != NULL, "%s", out);

    /* the wait timeout's 503, after the handler set Content-Length: 40 */
    raw_exchange(fd, GET_KEEPALIVE("/slow"), out, sizeof out);
    ck_assert_str_eq(out, "HTTP/1.1 503 Service Unavailable\r\n"
                          "Retry-After: 1\r\n"
                          "Content-Type: text/plain; charset=utf-8\r\n"
                          "Date: X\r\n"
                          "Content-Length: 24\r\n"
                          "\r\n"
                          "503 Service Unavailable\n");
    raw_exchange(fd, GET_KEEPALIVE("/ok"), out, sizeof out);
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", out);
    close(fd);
    shutdown_and_free(http);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Records that never go stale (SPEC 4.1)                               */
/* ------------------------------------------------------------------ */

START_TEST(removed_vhost_freed_the_libevent_way_is_never_touched)
{
    int port;
    struct evhttp *root = server(&port), *vb = evhttp_new(base);
    struct resp r[2];

    /* issue 14, defect 1: the libevent way (a usage error the man pages
     * name) left the record; the lookup then probed the freed vhost in
     * libevent.  Lookups read only the adapter's own records now. */
    sched_root = aj_evhttp_setup(root, base);
    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, "b.example", vb), 0);
    ck_assert_int_eq(aj_evhttp_add_server_alias(vb, "b-alias.test"), 0);
    ck_assert_int_eq(evhttp_remove_virtual_host(root, vb), 0);
    evhttp_free(vb);
    evhttp_set_cb(root, "/p", plain_which, "root");
    get(port, "elsewhere.test", "/p", &r[0]);   /* every record is walked */
    get(port, "b.example", "/p", &r[1]);
    run();
    ck_assert_str_eq(r[0].body, "root:root");
    ck_assert_str_eq(r[1].body, "root:root");
    shutdown_and_free(root);
}
END_TEST

START_TEST(remove_virtual_host_then_free_keeps_the_records_true)
{
    int port;
    struct evhttp *root = server(&port), *va = evhttp_new(base), *vb = evhttp_new(base);
    aj_scheduler *sa;
    struct resp r[3];

    sched_root = aj_evhttp_setup(root, base);
    sa = aj_evhttp_setup(va, base);
    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, "a.example", va), 0);
    ck_assert_int_eq(aj_evhttp_add_virtual_host(root, "b.example", vb), 0);
    ck_assert_int_eq(aj_evhttp_add_server_alias(va, "a-alias.test"), 0);
    ck_assert_int_eq(aj_atomic(va, "/w", h_which, "a"), 0);
    ck_assert_int_eq(aj_atomic(root, "/w", h_which, "root"), 0);
    evhttp_set_cb(root, "/p", plain_which, "root");
    evhttp_set_cb(vb, "/p", plain_which, "b");

    errno = 0;
    ck_assert_int_eq(aj_evhttp_remove_virtual_host(va, root), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(aj_evhttp_remove_virtual_host(root, va), 0);
    /* va keeps its own scheduler, out of root's tree */
    ck_assert_ptr_eq(aj_evhttp_get_scheduler_from_server(va), sa);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_remove_virtual_host(root, va), -1);
    ck_assert_int_eq(errno, ENOENT);
    aj_evhttp_free(va);
    ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(va));

    get(port, "a.example", "/w", &r[0]);
    get(port, "a-alias.test", "/p", &r[1]);
    get(port, "b.example", "/p", &r[2]);
    run();
    ck_assert_str_eq(r[0].body, "root:root:root");
    ck_assert_str_eq(r[1].body, "root:root");
    ck_assert_str_eq(r[2].body, "b:root");
    shutdown_and_free(root);
}
END_TEST

START_TEST(restart_loop_of_50_servers_with_aj_evhttp_free)
{
    struct evhttp *prev = NULL;
    int i, reused = 0;

    for (i = 0; i < 50; i++) {
        int port;
        struct evhttp *http = server(&port), *v = evhttp_new(base);
        struct resp r[2];

        if (http == prev)
            reused++;
        /* a stranger, even at a dead server's address */
        ck_assert_msg(aj_evhttp_setup(http, base) != NULL, "round %d: %s", i, strerror(errno));
        ck_assert_int_eq(aj_evhttp_add_virtual_host(http, "v.test", v), 0);
        ck_assert_int_eq(aj_evhttp_add_server_alias(v, "v-alias.test"), 0);
        ck_assert_int_eq(aj_evhttp_set_flags(v, AJ_EVHTTP_CANCEL_ON_DISCONNECT), 0);
        ck_assert_int_eq(aj_atomic(http, "/", h_say, "root"), 0);
        ck_assert_int_eq(aj_atomic(v, "/", h_say, "v"), 0);
        ck_assert_int_eq(aj_atomic(v, "/later", h_later, "5000"), 0);
        get(port, "v-alias.test", "/", &r[0]);
        get(port, "v.test", "/later", &r[1]);
        outstanding--;         /* the held one never answers: freed under it */
        run();
        ck_assert_str_eq(r[0].body, "v");
        ck_assert_int_eq(r[1].done, 0);
        aj_evhttp_free(http);
        ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(http));
        ck_assert_uint_eq(aj_evhttp_flags(v), 0);
        free_conns();
        nlaters = 0;
        prev = http;
    }
    fprintf(stderr, "# restart loop: %d of 49 servers at a dead one's address\n", reused);
}
END_TEST

START_TEST(a_server_at_a_reused_address_is_a_stranger)
{
    struct evhttp *a = evhttp_new(base), *b;
    int tries;

    ck_assert_ptr_nonnull(aj_evhttp_setup(a, base));
    ck_assert_int_eq(aj_atomic(a, "/x", h_say, "x"), 0);
    ck_assert_int_eq(aj_evhttp_set_flags(a, AJ_EVHTTP_ALLOW_HALF_CLOSE), 0);
    aj_evhttp_free(a);
    /* malloc hands the same block back for the same size, unless a
     * checker quarantines it; try a few times */
    for (tries = 0; tries < 8; tries++) {
        b = evhttp_new(base);
        ck_assert_uint_eq(aj_evhttp_flags(b), 0);
        ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(b));
        ck_assert_ptr_nonnull(aj_evhttp_setup(b, base));
        ck_assert_int_eq(aj_atomic(b, "/x", h_say, "x"), 0);   /* no EEXIST */
        aj_evhttp_free(b);
        if (b == a)
            break;
    }
}
END_TEST

static int user_calls;

static void user_handler(struct evhttp_request *req, void *arg)
{
    (void)arg;
    user_calls++;
    evhttp_send_reply(req, 200, "OK", NULL);
}

static void status_of(int fd, const char *path, int *code)
{
    char req[128], out[4096];

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    raw_exchange(fd, req, out, sizeof out);
    if (sscanf(out, "HTTP/1.1 %d", code) != 1)
        *code = -1;
}

START_TEST(shutdown_leaves_user_routes_as_the_user_left_them)
{
    int port, i, code[4], fd[4];
    struct evhttp *http = server(&port);

    ck_assert_ptr_nonnull(aj_evhttp_setup(http, base));
    ck_assert_int_eq(aj_atomic(http, "/deleted", h_say, "x"), 0);
    ck_assert_int_eq(aj_atomic(http, "/over", h_say, "x"), 0);
    ck_assert_int_eq(aj_atomic(http, "/kept", h_say, "x"), 0);
    ck_assert_int_eq(evhttp_del_cb(http, "/deleted"), 0);
    ck_assert_int_eq(evhttp_del_cb(http, "/over"), 0);
    ck_assert_int_eq(evhttp_set_cb(http, "/over", user_handler, NULL), 0);
    ck_assert_int_eq(evhttp_set_cb(http, "/user", user_handler, NULL), 0);
    /* keep-alive connections, served once before the shutdown */
    for (i = 0; i < 4; i++) {
        fd[i] = raw_connect(port);
        status_of(fd[i], "/user", &code[i]);
        ck_assert_int_eq(code[i], 200);
    }
    {
        int called = 0;
        ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, shutdown_done, &called), 0);
        outstanding++;
        run();
        ck_assert_int_eq(called, 1);
    }
    status_of(fd[0], "/deleted", &code[0]);
    status_of(fd[1], "/over", &code[1]);
    status_of(fd[2], "/user", &code[2]);
    status_of(fd[3], "/kept", &code[3]);
    ck_assert_int_eq(code[0], 404);     /* stays deleted */
    ck_assert_int_eq(code[1], 200);     /* the user's handler stays */
    ck_assert_int_eq(code[2], 200);
    ck_assert_int_eq(code[3], 503);     /* atomic route, records gone */
    ck_assert_int_eq(user_calls, 6);
    for (i = 0; i < 4; i++)
        close(fd[i]);
    aj_evhttp_free(http);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Departures, half-close, per-request data (SPEC 4.3)                  */
/* ------------------------------------------------------------------ */

static int data_released;
static char data_token[8];

static void release_data(void *data)
{
    ck_assert_ptr_eq(data, data_token + 1);
    data_released++;
}

/* h_later, with per-request data (set twice: only the last is released). */
static void h_later_data(aj_job *job, struct evhttp_request *req, void *arg)
{
    ck_assert_int_eq(aj_evhttp_set_data(job, data_token, release_data), 0);
    ck_assert_int_eq(aj_evhttp_set_data(job, data_token + 1, release_data), 0);
    ck_assert_ptr_eq(aj_evhttp_data(job), data_token + 1);
    h_later(job, req, arg);
}

static void h_fail_data(aj_job *job, struct evhttp_request *req, void *arg)
{
    (void)req;
    (void)arg;
    aj_evhttp_set_data(job, data_token + 1, release_data);
    aj_job_done(job, EIO, NULL);
}

static void h_say_data(aj_job *job, struct evhttp_request *req, void *arg)
{
    aj_evhttp_set_data(job, data_token + 1, release_data);
    h_say(job, req, arg);
}

/* Reads whatever comes until EOF (or 10 s) into out. */
static void read_to_eof(int fd, char *out, size_t outsz)
{
    struct raw_reader rr;
    struct timeval ten = { 10, 0 };
    struct event *t = evtimer_new(base, safety, NULL);

    memset(&rr, 0, sizeof rr);
    rr.fd = fd;
    rr.ev = event_new(base, fd, EV_READ | EV_PERSIST, raw_read_cb, &rr);
    event_add(rr.ev, NULL);
    outstanding++;
    evtimer_add(t, &ten);
    while (!rr.eof && !timed_out) {
        event_base_dispatch(base);
        if (!rr.eof && !timed_out) {
            event_add(rr.ev, NULL);
            outstanding++;
        }
    }
    event_free(t);
    event_free(rr.ev);
    ck_assert_msg(!timed_out, "no EOF in 10 s");
    snprintf(out, outsz, "%s", rr.buf);
}

static void half_closed_client(unsigned flags, char *out, size_t outsz)
{
    int port, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);

    ck_assert_int_eq(aj_evhttp_set_flags(http, flags), 0);
    ck_assert_uint_eq(aj_evhttp_flags(http), flags);
    aj_scheduler_set_limit(s, 1);
    ck_assert_int_eq(aj_atomic(http, "/later", h_later_data, "1000"), 0);
    /* one running, one pending behind it; both half-close */
    fd = raw_get(port, "/later");
    RUN_UNTIL(handler_calls == 1);
    client_fd = raw_get(port, "/later");
    RUN_UNTIL(aj_scheduler_pending_count(s) == 1);
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    ck_assert_int_eq(shutdown(client_fd, SHUT_WR), 0);
    read_to_eof(fd, out, outsz);
    {
        char second[4096];
        read_to_eof(client_fd, second, sizeof second);
        if (flags & AJ_EVHTTP_ALLOW_HALF_CLOSE)
            ck_assert_msg(strstr(second, "\r\n\r\nlate") != NULL, "pending one: %s", second);
        else
            ck_assert_str_eq(second, "");
    }
    close(fd);
    close(client_fd);
    client_fd = -1;
    RUN_UNTIL(aj_scheduler_size(s) == 0);
    RUN_UNTIL(data_released == ((flags & AJ_EVHTTP_ALLOW_HALF_CLOSE) ? 2 : 1));
    aj_evhttp_free(http);
    ck_assert_int_eq(data_released, (flags & AJ_EVHTTP_ALLOW_HALF_CLOSE) ? 2 : 1);
}

START_TEST(half_closed_client_is_gone_by_default)
{
    char out[4096];

    half_closed_client(0, out, sizeof out);
    ck_assert_str_eq(out, "");
    /* the running job ran to its end; its reply was dropped */
    ck_assert_int_eq(reply_attempts, 1);
    ck_assert_int_eq(last_reply_rc, -1);
    ck_assert_int_eq(last_reply_errno, ENOTCONN);
    ck_assert_int_eq(handler_calls, 1);   /* the pending one was discarded */
}
END_TEST

START_TEST(half_closed_client_gets_its_reply_with_allow_half_close)
{
    char out[4096];

    half_closed_client(AJ_EVHTTP_ALLOW_HALF_CLOSE, out, sizeof out);
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", out);
    ck_assert_msg(strstr(out, "\r\n\r\nlate") != NULL, "%s", out);
    ck_assert_int_eq(reply_attempts, 2);
    ck_assert_int_eq(last_reply_rc, 0);
    ck_assert_int_eq(handler_calls, 2);
}
END_TEST

START_TEST(a_reset_client_has_left_even_with_allow_half_close)
{
    int port, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct linger lg = { 1, 0 };

    ck_assert_int_eq(aj_evhttp_set_flags(http, AJ_EVHTTP_ALLOW_HALF_CLOSE |
                                               AJ_EVHTTP_CANCEL_ON_DISCONNECT), 0);
    ck_assert_int_eq(aj_atomic(http, "/later", h_later_data, "5000"), 0);
    fd = raw_get(port, "/later");
    RUN_UNTIL(handler_calls == 1);
    /* close with SO_LINGER 0: an RST, not a FIN */
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
    RUN_UNTIL(laters[0].cancelled == 1);
    RUN_UNTIL(data_released == 1);
    ck_assert_int_eq(reply_attempts, 0);
    ck_assert_uint_eq(aj_scheduler_size(s), 0);
    aj_evhttp_free(http);
}
END_TEST

START_TEST(cancel_on_disconnect_runs_the_cancel_hook_when_the_client_leaves)
{
    int port, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct aj_stats st;

    aj_scheduler_set_exception_handler(s, count_exceptions, NULL);
    ck_assert_int_eq(aj_evhttp_set_flags(http, AJ_EVHTTP_CANCEL_ON_DISCONNECT), 0);
    ck_assert_int_eq(aj_atomic(http, "/later", h_later_data, "5000"), 0);
    ck_assert_int_eq(aj_atomic(http, "/stubborn", h_stubborn, "300"), 0);
    fd = raw_get(port, "/later");
    RUN_UNTIL(handler_calls == 1);
    ck_assert_ptr_nonnull(aj_evhttp_request(laters[0].job));
    close(fd);
    /* told at once (its cancel hook), not after its 5 s */
    RUN_UNTIL(laters[0].cancelled == 1);
    ck_assert_int_eq(reply_attempts, 0);
    RUN_UNTIL(data_released == 1);
    aj_scheduler_get_stats(s, &st);
    ck_assert_uint_eq(st.cancelled, 1);
    ck_assert_uint_eq(aj_scheduler_size(s), 0);

    /* a job that ignores the close: only the log hears of it */
    fd = raw_get(port, "/stubborn");
    RUN_UNTIL(handler_calls == 2);
    close(fd);
    /* the close timeout (0.1 s) passes: only the log hears of it */
    RUN_UNTIL(strstr(last_log, "Job closing timed out") != NULL);
    RUN_UNTIL(reply_attempts == 1);   /* it ends by itself; reply dropped */
    ck_assert_int_eq(last_reply_rc, -1);
    ck_assert_int_eq(last_reply_errno, ENOTCONN);
    ck_assert_int_eq(exceptions, 0);
    aj_evhttp_free(http);
}
END_TEST

START_TEST(without_cancel_on_disconnect_the_job_is_not_told)
{
    int port, fd;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);

    ck_assert_int_eq(aj_atomic(http, "/later", h_later_data, "2000"), 0);
    fd = raw_get(port, "/later");
    RUN_UNTIL(handler_calls == 1);
    close(fd);
    /* noticed (the request is gone), but the job is not told */
    RUN_UNTIL(aj_evhttp_request(laters[0].job) == NULL);
    ck_assert_int_eq(laters[0].cancelled, 0);
    ck_assert_int_eq(data_released, 0);
    RUN_UNTIL(reply_attempts == 1);
    ck_assert_int_eq(last_reply_errno, ENOTCONN);
    RUN_UNTIL(data_released == 1);
    ck_assert_uint_eq(aj_scheduler_size(s), 0);
    aj_evhttp_free(http);
}
END_TEST

START_TEST(data_is_released_exactly_once_on_every_way_out)
{
    int port;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct timeval wt = { 0, 50000 };
    struct resp r[3];

    errno = 0;
    ck_assert_int_eq(aj_evhttp_set_data(NULL, data_token, release_data), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_nonnull(aj_spawn(s, &plain_ops, NULL));
    outstanding++;
    run();
    errno = 0;
    ck_assert_ptr_null(aj_evhttp_data(NULL));

    aj_scheduler_set_wait_timeout(s, &wt);
    ck_assert_int_eq(aj_atomic(http, "/reply", h_say_data, "ok"), 0);
    ck_assert_int_eq(aj_atomic(http, "/fail", h_fail_data, NULL), 0);
    ck_assert_int_eq(aj_atomic(http, "/cancel", h_later_data, "5000"), 0);
    ck_assert_int_eq(aj_atomic(http, "/held", h_later_data, "5000"), 0);
    get(port, NULL, "/reply", &r[0]);
    get(port, NULL, "/fail", &r[1]);
    get(port, NULL, "/cancel", &r[2]);      /* the wait timeout cancels it */
    run();
    run_for(5);
    ck_assert_int_eq(r[0].code, 200);
    ck_assert_int_eq(r[1].code, 500);
    ck_assert_int_eq(r[2].code, 503);
    ck_assert_int_eq(data_released, 3);
    /* held at aj_evhttp_free: the job is let go, the data released when
     * it ends (here: never by itself, so its scheduler's free ends it) */
    wt.tv_sec = 10;
    aj_scheduler_set_wait_timeout(s, &wt);
    get(port, NULL, "/held", &r[0]);
    outstanding--;
    RUN_UNTIL(handler_calls == 3);
    aj_evhttp_free(http);
    ck_assert_int_eq(data_released, 4);
    free_conns();
}
END_TEST

/* ------------------------------------------------------------------ */
/* Shutdown: the final counters (SPEC 4.4)                               */
/* ------------------------------------------------------------------ */

struct final_seen {
    aj_scheduler *root, *v;
    struct aj_stats st_root, st_v;
    int then_free;
};

static void read_final(struct evhttp *http, void *arg)
{
    struct final_seen *f = arg;
    struct evhttp *v = (struct evhttp *)f->v;   /* the vhost, smuggled */

    f->root = aj_evhttp_get_scheduler_from_server(http);
    ck_assert_ptr_nonnull(f->root);
    ck_assert_int_eq(aj_scheduler_closed(f->root), 1);
    aj_scheduler_get_stats(f->root, &f->st_root);
    f->v = aj_evhttp_get_scheduler_from_server(v);
    ck_assert_ptr_nonnull(f->v);
    aj_scheduler_get_stats(f->v, &f->st_v);
    if (f->then_free)
        aj_evhttp_free(http);
    one_less();
}

START_TEST(shutdown_callback_reads_final_counters_and_may_free)
{
    int port, round;

    for (round = 0; round < 2; round++) {
        struct evhttp *http = server(&port), *v = evhttp_new(base);
        struct final_seen f;
        struct resp r[3];

        memset(&f, 0, sizeof f);
        ck_assert_ptr_nonnull(aj_evhttp_setup(http, base));
        ck_assert_ptr_nonnull(aj_evhttp_setup(v, base));
        ck_assert_int_eq(aj_evhttp_add_virtual_host(http, "v.test", v), 0);
        ck_assert_int_eq(aj_atomic(http, "/", h_say, "root"), 0);
        ck_assert_int_eq(aj_atomic(v, "/", h_say, "v"), 0);
        get(port, NULL, "/", &r[0]);
        get(port, "v.test", "/", &r[1]);
        get(port, "v.test", "/", &r[2]);
        run();
        f.v = (aj_scheduler *)v;
        f.then_free = round;
        ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, read_final, &f), 0);
        outstanding++;
        run();
        ck_assert_uint_eq(f.st_root.succeeded, 1);
        ck_assert_uint_eq(f.st_v.succeeded, 2);
        /* forgotten after the callback, without touching the servers */
        ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(http));
        free_conns();
        if (round == 0)
            evhttp_free(http);
    }
}
END_TEST

START_TEST(shutdown_with_zero_timeout_answers_pending_requests_503_at_once)
{
    int port, called = 0;
    struct evhttp *http = server(&port);
    aj_scheduler *s = aj_evhttp_setup(http, base);
    struct timeval zero = { 0, 0 };
    struct resp r[2];

    aj_scheduler_set_limit(s, 1);
    ck_assert_int_eq(aj_atomic(http, "/later", h_later, "5000"), 0);
    get(port, NULL, "/later", &r[0]);
    get(port, NULL, "/later", &r[1]);
    RUN_UNTIL(aj_scheduler_pending_count(s) == 1);
    ck_assert_int_eq(aj_evhttp_shutdown(http, &zero, shutdown_done, &called), 0);
    outstanding++;
    run();
    ck_assert_int_eq(r[0].code, 503);      /* cancelled by the close */
    ck_assert_int_eq(r[1].code, 503);      /* never started */
    ck_assert_int_eq(handler_calls, 1);
    free_conns();
    evhttp_free(http);
}
END_TEST

static int never_called;

static void must_not_run(struct evhttp *http, void *arg)
{
    (void)http;
    (void)arg;
    never_called++;
}

static struct evhttp *free_from_cb;

static void free_parent(struct evhttp *http, void *arg)
{
    int *called = arg;

    ck_assert_ptr_nonnull(aj_evhttp_get_scheduler_from_server(http));
    ++*called;
    aj_evhttp_free(free_from_cb);      /* the parent of the server shut down */
    one_less();
}

START_TEST(aj_evhttp_free_during_a_shutdown_abandons_or_orphans_it)
{
    int port, called = 0;
    struct evhttp *http = server(&port), *v = evhttp_new(base);
    struct resp r;

    /* (a) freed while its shutdown drains: the shutdown is abandoned */
    ck_assert_ptr_nonnull(aj_evhttp_setup(http, base));
    ck_assert_int_eq(aj_atomic(http, "/later", h_later, "300"), 0);
    get(port, NULL, "/later", &r);
    RUN_UNTIL(handler_calls == 1);
    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, must_not_run, NULL), 0);
    run_for(30);
    aj_evhttp_free(http);
    run();                              /* the client sees its connection close */
    ck_assert_int_eq(r.code, -1);
    run_for(350);
    ck_assert_int_eq(never_called, 0);
    /* aj_scheduler_free cancelled the running job: no reply was tried */
    ck_assert_int_eq(laters[0].cancelled, 1);
    ck_assert_int_eq(reply_attempts, 0);
    free_conns();

    /* (b) a vhost's shutdown callback frees the vhost's parent */
    http = server(&port);
    ck_assert_ptr_nonnull(aj_evhttp_setup(http, base));
    ck_assert_ptr_nonnull(aj_evhttp_setup(v, base));
    ck_assert_int_eq(aj_evhttp_add_virtual_host(http, "v.test", v), 0);
    errno = 0;
    free_from_cb = http;
    ck_assert_int_eq(aj_evhttp_shutdown(v, NULL, free_parent, &called), 0);
    ck_assert_int_eq(aj_evhttp_shutdown(http, NULL, must_not_run, NULL), -1);
    ck_assert_int_eq(errno, EALREADY);  /* a shutdown covers part of its tree */
    errno = 0;
    ck_assert_int_eq(aj_evhttp_forget(http), -1);
    ck_assert_int_eq(errno, EALREADY);
    outstanding++;
    run();
    ck_assert_int_eq(called, 1);
    ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(http));
    ck_assert_ptr_null(aj_evhttp_get_scheduler_from_server(v));
    ck_assert_int_eq(never_called, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Threads: each with its own base, server and scheduler                */
/* ------------------------------------------------------------------ */

struct thread_run {
    int served;
    int ok;
    int failed;
};

struct tctx {
    struct event_base *base;
    struct thread_run *tr;
    int outstanding;
};

static void t_reply(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    struct tctx *t = arg;

    (void)req;
    /* the scheduler of this thread's server serves it */
    evbuffer_add_printf(b, "%d", aj_job_scheduler(job) == aj_evhttp_get_scheduler(req));
    t->tr->served++;
    aj_evhttp_reply(job, 200, "OK", b);
    evbuffer_free(b);
}

static void t_resp(struct evhttp_request *req, void *arg)
{
    struct tctx *t = arg;
    char c = 0;

    if (req && evhttp_request_get_response_code(req) == 200 &&
        evbuffer_copyout(evhttp_request_get_input_buffer(req), &c, 1) == 1 && c == '1')
        t->tr->ok++;
    else
        t->tr->failed++;
    if (--t->outstanding == 0)
        event_base_loopexit(t->base, NULL);
}

static void t_shut(struct evhttp *http, void *arg)
{
    struct tctx *t = arg;

    (void)http;
    if (--t->outstanding == 0)
        event_base_loopexit(t->base, NULL);
}

static void *thread_main(void *arg)
{
    struct thread_run *tr = arg;
    struct tctx t = { event_base_new(), tr, 0 };
    struct evhttp *http = evhttp_new(t.base);
    struct evhttp_bound_socket *b = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    struct evhttp_connection *ec[4];
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    int i, round;

    getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&sin, &len);
    aj_scheduler_set_limit(aj_evhttp_setup(http, t.base), 2);
    aj_atomic(http, "/t", t_reply, &t);
    for (i = 0; i < 4; i++)
        ec[i] = evhttp_connection_base_new(t.base, NULL, "127.0.0.1", ntohs(sin.sin_port));
    for (round = 0; round < 25; round++) {
        for (i = 0; i < 4; i++) {
            struct evhttp_request *req = evhttp_request_new(t_resp, &t);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
            evhttp_make_request(ec[i], req, EVHTTP_REQ_GET, "/t");
            t.outstanding++;
        }
        event_base_dispatch(t.base);
    }
    t.outstanding = 1;
    aj_evhttp_shutdown(http, NULL, t_shut, &t);
    event_base_dispatch(t.base);
    for (i = 0; i < 4; i++)
        evhttp_connection_free(ec[i]);
    evhttp_free(http);
    event_base_free(t.base);
    return NULL;
}

START_TEST(two_threads_each_with_its_own_base_and_server)
{
    pthread_t th[2];
    struct thread_run tr[2];
    int i;

    memset(tr, 0, sizeof tr);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_main, &tr[i]), 0);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(tr[i].served, 100);
        ck_assert_int_eq(tr[i].ok, 100);
        ck_assert_int_eq(tr[i].failed, 0);
    }
}
END_TEST

static void reset_globals(void)
{
    handler_calls = 0;
    last_job = NULL;
    last_reply_rc = 0;
    last_reply_errno = 0;
    reply_attempts = 0;
    seen_sched = seen_from_req = seen_job_sched = NULL;
    spawned_from_plain = NULL;
    bg_started = 0;
    nlaters = 0;
    memset(laters, 0, sizeof laters);
    exceptions = 0;
    released_seen = 0;
    client_fd = -1;
    nconns = 0;
    user_calls = 0;
    data_released = 0;
    never_called = 0;
}

static void setup_all(void)
{
    reset_globals();
    setup();
}

static Suite *evhttp_suite(void)
{
    Suite *su = suite_create("evhttp");
    TCase *tc = tcase_create("adapter");

    tcase_add_checked_fixture(tc, setup_all, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, setup_and_each_lookup_form);
    tcase_add_test(tc, no_setup_gives_null_enoent_and_500);
    tcase_add_test(tc, nested_vhosts_choose_own_parent_or_no_scheduler);
    tcase_add_test(tc, vhost_chain_without_any_scheduler_answers_500);
    tcase_add_test(tc, atomic_handler_replies_later_from_a_timer);
    tcase_add_test(tc, handler_finishing_without_a_reply_gets_500_or_503);
    tcase_add_test(tc, wait_timeout_cancels_the_handler_and_answers_503);
    tcase_add_test(tc, full_pending_queue_sheds_with_503_and_makes_no_job);
    tcase_add_test(tc, client_leaving_before_the_reply_lets_the_job_run_to_its_end);
    tcase_add_test(tc, client_leaving_while_pending_discards_the_job);
    tcase_add_test(tc, evhttp_free_without_shutdown_never_touches_held_requests);
    tcase_add_test(tc, shutdown_answers_every_request_in_flight);
    tcase_add_test(tc, requests_on_open_connections_during_shutdown_get_503);
    tcase_add_test(tc, shutdown_waits_2_s_for_replies_being_written_then_says_it_cuts_them);
    tcase_add_test(tc, shutdown_waits_for_a_reply_being_written_to_a_reading_client);
    tcase_add_test(tc, reply_rejects_foreign_jobs_and_second_replies);
    tcase_add_test(tc, gencb_runs_unmatched_requests_as_jobs);
    tcase_add_test(tc, two_threads_each_with_its_own_base_and_server);
    tcase_add_test(tc, error_replies_are_fresh_responses_and_keep_the_connection_usable);
    tcase_add_test(tc, removed_vhost_freed_the_libevent_way_is_never_touched);
    tcase_add_test(tc, remove_virtual_host_then_free_keeps_the_records_true);
    tcase_add_test(tc, restart_loop_of_50_servers_with_aj_evhttp_free);
    tcase_add_test(tc, a_server_at_a_reused_address_is_a_stranger);
    tcase_add_test(tc, shutdown_leaves_user_routes_as_the_user_left_them);
    tcase_add_test(tc, half_closed_client_is_gone_by_default);
    tcase_add_test(tc, half_closed_client_gets_its_reply_with_allow_half_close);
    tcase_add_test(tc, a_reset_client_has_left_even_with_allow_half_close);
    tcase_add_test(tc, cancel_on_disconnect_runs_the_cancel_hook_when_the_client_leaves);
    tcase_add_test(tc, without_cancel_on_disconnect_the_job_is_not_told);
    tcase_add_test(tc, data_is_released_exactly_once_on_every_way_out);
    tcase_add_test(tc, shutdown_callback_reads_final_counters_and_may_free);
    tcase_add_test(tc, shutdown_with_zero_timeout_answers_pending_requests_503_at_once);
    tcase_add_test(tc, aj_evhttp_free_during_a_shutdown_abandons_or_orphans_it);
    suite_add_tcase(su, tc);
    return su;
}

int main(void)
{
    SRunner *sr = srunner_create(evhttp_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
