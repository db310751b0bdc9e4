/*
 * test_evhttp_alloc.c -- libaj_evhttp when an allocation fails (issue 6,
 * part 1, the adapter's share; the core's is test_alloc.c).
 *
 * One scenario -- setup, a vhost, atomic routes, three requests served by a
 * real server to libevent's client (one replied at once, one from a timer,
 * one spawning a background job), then a graceful shutdown -- is run again
 * and again with the n-th libaj allocation failing, for n = 1, 2, ... until
 * a run meets no failure.  Each time: every call that failed said ENOMEM,
 * every client got an answer (200, or 500/503 when the failure hit its
 * request), the server was shut down (or forgotten, if the shutdown itself
 * could not start), and every byte libaj allocated was freed.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

#include "harness.h"

static int outstanding, codes[3], bad_errno;

static void check_enomem(int failed)
{
    if (failed && errno != ENOMEM)
        bad_errno++;
}

static void resp_cb(struct evhttp_request *req, void *arg)
{
    int *code = arg;

    *code = req ? evhttp_request_get_response_code(req) : -1;
    if (--outstanding == 0)
        event_base_loopexit(base, NULL);
}

static int data_set, data_released;

static void release_data(void *data)
{
    (void)data;
    data_released++;
}

static void h_now(aj_job *job, struct evhttp_request *req, void *arg)
{
    (void)req;
    (void)arg;
    if (aj_evhttp_set_data(job, &data_set, release_data) == 0)   /* allocates nothing */
        data_set++;
    aj_evhttp_reply(job, 200, "OK", NULL);
}

static void later_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    aj_evhttp_reply(arg, 200, "OK", NULL);
}

static void h_later(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct timeval tv = { 0, 5000 };

    (void)req;
    (void)arg;
    /* libevent's own allocation: not under test */
    event_base_once(base, -1, EV_TIMEOUT, later_fire, job, &tv);
}

static void bg_start(aj_job *job, void *arg)
{
    (void)arg;
    aj_job_done(job, 0, NULL);
}

static const struct aj_job_ops bg_ops = { "bg", bg_start, NULL, NULL };

static void h_spawn(aj_job *job, struct evhttp_request *req, void *arg)
{
    (void)arg;
    check_enomem(aj_evhttp_spawn(req, &bg_ops, NULL) == NULL);
    aj_evhttp_reply(job, 200, "OK", NULL);
}

static void shut_cb(struct evhttp *http, void *arg)
{
    (void)http;
    *(int *)arg = 1;
    event_base_loopexit(base, NULL);
}

/* One run of the scenario, the n-th allocation refused (harness.h);
 * returns 1 if an allocation failed in it. */
static int scenario(long n)
{
    struct evhttp *http, *vhost;
    struct evhttp_bound_socket *b;
    struct evhttp_connection *evcon[3];
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    static const char *const paths[3] = { "/now", "/later", "/spawn" };
    struct timeval limit = { 10, 0 };
    int i, port, shut = 0;
    aj_scheduler *s;

    base = event_base_new();
    http = evhttp_new(base);
    vhost = evhttp_new(base);
    b = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&sin, &len);
    port = ntohs(sin.sin_port);

    s = aj_evhttp_setup(http, base);
    check_enomem(s == NULL);
    if (s)
        aj_scheduler_set_limit(s, 2);
    check_enomem(aj_evhttp_set_flags(http, AJ_EVHTTP_CANCEL_ON_DISCONNECT |
                                            AJ_EVHTTP_ALLOW_HALF_CLOSE) != 0);
    i = aj_evhttp_add_virtual_host(http, "v.test", vhost);
    check_enomem(i != 0);
    if (i != 0) {
        evhttp_free(vhost);          /* not attached: ours to free */
    } else {
        check_enomem(aj_evhttp_add_server_alias(vhost, "v-alias.test") != 0);
        check_enomem(aj_evhttp_set_flags(vhost, AJ_EVHTTP_CANCEL_ON_DISCONNECT) != 0);
        check_enomem(aj_atomic(vhost, "/now", h_now, NULL) != 0);
    }
    {
        /* a vhost removed and both freed through the adapter */
        struct evhttp *h2 = evhttp_new(base), *v2 = evhttp_new(base);

        check_enomem(aj_evhttp_setup(v2, base) == NULL);
        i = aj_evhttp_add_virtual_host(h2, "x.test", v2);
        check_enomem(i != 0);
        check_enomem(aj_evhttp_add_server_alias(v2, "y.test") != 0);
        if (i == 0)
            ck_assert_int_eq(aj_evhttp_remove_virtual_host(h2, v2), 0);
        aj_evhttp_free(v2);
        aj_evhttp_free(h2);
    }
    check_enomem(aj_atomic(http, "/now", h_now, NULL) != 0);
    check_enomem(aj_atomic(http, "/later", h_later, NULL) != 0);
    check_enomem(aj_atomic(http, "/spawn", h_spawn, NULL) != 0);

    for (i = 0; i < 3; i++) {
        struct evhttp_request *req;
        evcon[i] = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
        req = evhttp_request_new(resp_cb, &codes[i]);
        codes[i] = 0;
        evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
        evhttp_make_request(evcon[i], req, EVHTTP_REQ_GET, paths[i]);
        outstanding++;
    }
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    ck_assert_int_eq(outstanding, 0);
    for (i = 0; i < 3; i++)
        ck_assert_msg(codes[i] == 200 || codes[i] == 500 || codes[i] == 503 || codes[i] == 404,
                      "n=%ld: request %d got %d", n, i, codes[i]);

    if (aj_evhttp_shutdown(http, NULL, shut_cb, &shut) == 0) {
        event_base_loopexit(base, &limit);
        event_base_dispatch(base);
        ck_assert_msg(shut, "n=%ld: shutdown never called back", n);
        for (i = 0; i < 3; i++)
            evhttp_connection_free(evcon[i]);
        evhttp_free(http);
    } else {
        /* ENOENT (setup failed) or ENOMEM: drop the records instead */
        ck_assert_msg(errno == ENOMEM || errno == ENOENT, "n=%ld: shutdown: %s", n,
                      strerror(errno));
        for (i = 0; i < 3; i++)
            evhttp_connection_free(evcon[i]);
        aj_evhttp_free(http);
    }
    /* let orphaned releases run */
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
    ck_assert_msg(mem_live == 0, "n=%ld: %ld libaj allocations not freed", n, mem_live);
    ck_assert_msg(data_set == data_released, "n=%ld: data set %d, released %d", n, data_set,
                  data_released);
    return mem_failed;
}

static void user_cb(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_send_reply(req, 200, "OK", NULL);
}

/* Calls that fail for a reason of their own leave no record either (the
 * revision-1 aj_atomic leaked its registry node here). */
START_TEST(failed_calls_leave_no_record)
{
    struct evhttp *http, *v;
    struct evhttp_bound_socket *b;

    base = event_base_new();
    http = evhttp_new(base);
    v = evhttp_new(base);
    aj_set_mem_functions(mem_malloc, mem_realloc, mem_free);
    mem_reset(0);
    ck_assert_int_eq(evhttp_set_cb(http, "/taken", user_cb, NULL), 0);
    errno = 0;
    ck_assert_int_eq(aj_atomic(http, "/taken", h_now, NULL), -1);
    ck_assert_int_eq(errno, EEXIST);
    ck_assert_int_eq(mem_live, 0);
    b = evhttp_bind_socket_with_handle(v, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(b);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_add_virtual_host(http, "v.test", v), -1);
    ck_assert_int_eq(errno, EINVAL);          /* libevent refused: it has sockets */
    ck_assert_int_eq(mem_live, 0);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_remove_server_alias(http, "none"), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(aj_evhttp_set_flags(http, 0), 0);
    ck_assert_int_eq(aj_evhttp_set_flags(http, 0x100), -1);
    ck_assert_int_eq(mem_live, 0);
    ck_assert_int_eq(aj_evhttp_set_flags(http, AJ_EVHTTP_ALLOW_HALF_CLOSE), 0);
    ck_assert_int_eq(aj_evhttp_set_flags(http, 0), 0);      /* the record goes */
    ck_assert_int_eq(mem_live, 0);
    ck_assert_int_eq(aj_evhttp_add_server_alias(http, "a.test"), 0);
    errno = 0;
    ck_assert_int_eq(aj_evhttp_add_server_alias(http, "A.TEST"), -1);
    ck_assert_int_eq(errno, EEXIST);
    ck_assert_int_eq(aj_evhttp_remove_server_alias(http, "a.test"), 0);
    ck_assert_int_eq(mem_live, 0);
    aj_set_mem_functions(NULL, NULL, NULL);
    aj_evhttp_free(v);
    aj_evhttp_free(http);
    event_base_free(base);
}
END_TEST

START_TEST(every_allocation_failure_in_the_adapter_is_clean)
{
    int points;

    signal(SIGPIPE, SIG_IGN);
    points = failure_points(scenario, 10000);
    fprintf(stderr, "# evhttp alloc: %d allocation failure points exercised\n", points);
    ck_assert_int_gt(points, 10);
    ck_assert_int_eq(bad_errno, 0);
}
END_TEST

/* libevent's own allocator, failing the next allocation on demand (set
 * before libevent allocates anything, in main). */
static int ev_fail_next;

static void *ev_malloc(size_t n)
{
    if (ev_fail_next) {
        ev_fail_next = 0;
        return NULL;
    }
    return malloc(n);
}

static void *ev_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

static void ev_free(void *p)
{
    free(p);
}

/* libevent running out of memory inside evhttp_add_virtual_host (its copy
 * of the pattern) is ENOMEM, not EEXIST (revision 1 said EEXIST), and
 * leaves no record; the same call then succeeds. */
START_TEST(libevent_out_of_memory_in_add_virtual_host_is_enomem)
{
    struct evhttp *http, *v;

    base = event_base_new();
    http = evhttp_new(base);
    v = evhttp_new(base);
    aj_set_mem_functions(mem_malloc, mem_realloc, mem_free);
    mem_reset(0);
    ev_fail_next = 1;
    errno = 0;
    ck_assert_int_eq(aj_evhttp_add_virtual_host(http, "v.test", v), -1);
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(mem_live, 0);
    ck_assert_int_eq(aj_evhttp_add_virtual_host(http, "v.test", v), 0);
    aj_evhttp_free(http);             /* frees v with it */
    ck_assert_int_eq(mem_live, 0);
    aj_set_mem_functions(NULL, NULL, NULL);
    event_base_free(base);
}
END_TEST

static void quiet(int severity, const char *msg)
{
    (void)severity;
    (void)msg;
}

int main(void)
{
    Suite *su = suite_create("evhttp_alloc");
    TCase *tc = tcase_create("enomem");

    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
    aj_set_log_callback(quiet);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, every_allocation_failure_in_the_adapter_is_clean);
    tcase_add_test(tc, failed_calls_leave_no_record);
    tcase_add_test(tc, libevent_out_of_memory_in_add_virtual_host_is_enomem);
    suite_add_tcase(su, tc);
    return run_suite(su);
}
