/*
 * examples/mt-server.c -- a multi-threaded HTTP server: N threads, each
 * with its own event_base, evhttp and scheduler.
 *
 * A scheduler, like any libevent object used without locks, belongs to the
 * thread that runs its base.  So a server that wants several cores runs
 * one loop per thread, and each loop gets its own evhttp and its own
 * scheduler (aj_evhttp_setup() per server); the adapter's registry of
 * servers is shared and locked.  Here every thread accepts on its own dup()
 * of one listening socket (the kernel hands each connection to one of them),
 * and answers every request with an aj_atomic_gencb() handler that waits a
 * few milliseconds for a pretend backend.
 *
 * The main thread talks to the workers through a pipe each: one byte means
 * "shut down".  The worker then calls aj_evhttp_shutdown() on its server,
 * and in its callback evhttp_free(); its loop ends and main joins it.
 * Objects are created by main before the thread starts and freed after it
 * was joined: pthread_create() and pthread_join() order those accesses.
 *
 *   ./examples/mt-server                       self-test (what make check runs):
 *                                              4 threads, 48 requests from a
 *                                              client loop in main, shut down,
 *                                              check the port is closed; TAP
 *   ./examples/mt-server --serve [PORT [N]]    serve on 127.0.0.1:PORT (8080)
 *                                              with N threads (4) until
 *                                              SIGINT or SIGTERM
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

#define MAX_THREADS 16

struct worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;        /* NULL once freed */
    aj_scheduler *s;            /* the adapter's: aj_evhttp_shutdown() frees it */
    int wake[2];                /* main -> worker: a byte means "shut down" */
    struct event *wake_ev;
    unsigned long served;       /* read by main after the join */
    int stopped;                /* the shutdown callback ran */
};

/* ------------------------------------------------------------------ */
/* One request: an atomic job that waits for a pretend backend         */
/* ------------------------------------------------------------------ */

struct hello {
    struct worker *w;
    aj_job *job;
    struct event *backend;      /* the backend's answer, 5 ms from now */
};

static void hello_free(struct hello *h)
{
    event_free(h->backend);
    free(h);
}

static void hello_answer(evutil_socket_t fd, short what, void *arg)
{
    struct hello *h = arg;
    struct evbuffer *body = evbuffer_new();

    if (body)
        evbuffer_add_printf(body, "hello from thread %d\n", h->w->id);
    if (aj_evhttp_reply(h->job, 200, "OK", body) == 0)
        h->w->served++;
    if (body)
        evbuffer_free(body);
    hello_free(h);
}

static void hello_cancel(aj_job *job, void *arg)
{
    hello_free(arg);
    aj_job_done(job, ECANCELED, NULL);          /* the client gets 503 */
}

static void hello_handler(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    struct hello *h = calloc(1, sizeof *h);
    struct timeval backend_time = { 0, 5000 };

    if (!h || !(h->backend = evtimer_new(w->base, hello_answer, h))) {
        free(h);
        aj_job_done(job, ENOMEM, NULL);         /* the client gets 500 */
        return;
    }
    h->w = w;
    h->job = job;
    evtimer_add(h->backend, &backend_time);
    aj_job_set_cancel(job, hello_cancel, h);
}

/* ------------------------------------------------------------------ */
/* A worker thread                                                     */
/* ------------------------------------------------------------------ */

static void worker_stopped(struct evhttp *http, void *arg)
{
    struct worker *w = arg;

    evhttp_free(http);                  /* safe: the adapter let go of every request */
    w->http = NULL;
    w->stopped = 1;
    event_del(w->wake_ev);
    event_base_loopexit(w->base, NULL);
}

/* Runs in the worker's thread, on its loop. */
static void worker_wake(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval drain = { 2, 0 };
    char c;

    if (read(fd, &c, 1) != 1)
        return;
    if (aj_evhttp_shutdown(w->http, &drain, worker_stopped, w) < 0) {
        fprintf(stderr, "mt-server: thread %d: aj_evhttp_shutdown: %s\n", w->id, strerror(errno));
        event_base_loopexit(w->base, NULL);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    event_base_dispatch(w->base);
    return NULL;
}

/* Builds worker w (in the main thread, before its thread starts). */
static int worker_init(struct worker *w, int id, evutil_socket_t listener)
{
    evutil_socket_t fd;

    w->id = id;
    w->wake[0] = w->wake[1] = -1;
    if (!(w->base = event_base_new()) || !(w->http = evhttp_new(w->base)))
        return -1;
    /* Each evhttp closes the socket it accepts on: give each its own dup. */
    if ((fd = dup(listener)) < 0 || !evhttp_accept_socket_with_handle(w->http, fd)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!(w->s = aj_evhttp_setup(w->http, w->base)))
        return -1;
    aj_scheduler_set_limit(w->s, 64);           /* per thread */
    aj_scheduler_set_pending_limit(w->s, 256);  /* beyond that: 503 + Retry-After */
    if (aj_atomic_gencb(w->http, hello_handler, w) < 0 || pipe(w->wake) < 0)
        return -1;
    w->wake_ev = event_new(w->base, w->wake[0], EV_READ | EV_PERSIST, worker_wake, w);
    if (!w->wake_ev || event_add(w->wake_ev, NULL) < 0)
        return -1;
    return 0;
}

/* After the join (or if the thread never started). */
static void worker_free(struct worker *w)
{
    if (w->http) {                      /* no graceful shutdown happened */
        evhttp_free(w->http);
        aj_evhttp_forget(w->http);
    }
    if (w->wake_ev)
        event_free(w->wake_ev);
    if (w->wake[0] >= 0) {
        close(w->wake[0]);
        close(w->wake[1]);
    }
    if (w->base)
        event_base_free(w->base);
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static evutil_socket_t listen_on(int port, int *bound_port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    evutil_socket_t fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    if (fd < 0 || evutil_make_listen_socket_reuseable(fd) < 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 128) < 0 ||
        evutil_make_socket_nonblocking(fd) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *bound_port = ntohs(sin.sin_port);
    return fd;
}

static void log_line(int severity, const char *msg)
{
    fprintf(stderr, "mt-server: libaj: %s\n", msg);     /* any thread may log */
}

/* The self-test client: NREQ requests at once, each on its own connection. */
#define NREQ 48

struct client {
    struct event_base *base;
    int answered, ok;
    int by_thread[MAX_THREADS + 1];
};

struct call {
    struct client *c;
    struct evhttp_connection *conn;
};

static void call_done(struct evhttp_request *req, void *arg)
{
    struct call *call = arg;
    struct client *c = call->c;
    int id;

    if (req && evhttp_request_get_response_code(req) == 200) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        char text[64];
        int n = evbuffer_remove(in, text, sizeof text - 1);

        text[n > 0 ? n : 0] = '\0';
        if (sscanf(text, "hello from thread %d", &id) == 1 && id >= 1 && id <= MAX_THREADS) {
            c->by_thread[id]++;
            c->ok++;
        }
    }
    if (++c->answered == NREQ)
        event_base_loopexit(c->base, NULL);
}

static int self_test_requests(int port, struct client *c)
{
    struct call calls[NREQ];
    int i;

    memset(c, 0, sizeof *c);
    memset(calls, 0, sizeof calls);
    if (!(c->base = event_base_new()))
        return -1;
    for (i = 0; i < NREQ; i++) {
        struct evhttp_request *req;

        calls[i].c = c;
        calls[i].conn = evhttp_connection_base_new(c->base, NULL, "127.0.0.1", (unsigned short)port);
        if (!calls[i].conn || !(req = evhttp_request_new(call_done, &calls[i])))
            return -1;
        evhttp_connection_set_timeout(calls[i].conn, 10);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
        if (evhttp_make_request(calls[i].conn, req, EVHTTP_REQ_GET, "/") < 0)
            return -1;
    }
    event_base_dispatch(c->base);
    for (i = 0; i < NREQ; i++)
        evhttp_connection_free(calls[i].conn);
    event_base_free(c->base);
    return 0;
}

static int port_is_closed(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0), refused;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    refused = connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0 && errno == ECONNREFUSED;
    close(fd);
    return refused;
}

int main(int argc, char **argv)
{
    struct worker workers[MAX_THREADS];
    int serve = argc > 1 && strcmp(argv[1], "--serve") == 0;
    int port = serve && argc > 2 ? atoi(argv[2]) : serve ? 8080 : 0;
    int nthreads = serve && argc > 3 ? atoi(argv[3]) : 4;
    int i, started = 0, stopped = 0, bound_port = 0, ok, n = 0, failed = 0;
    unsigned long served = 0;
    evutil_socket_t listener;
    struct client client = { 0 };
    sigset_t sigs;

    if (nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "usage: %s [--serve [PORT [THREADS 1-%d]]]\n", argv[0], MAX_THREADS);
        return 2;
    }
    if (!serve)
        alarm(60);              /* a hang fails the self-test instead of blocking it */
    /* Process-wide settings first, before any thread runs. */
    aj_set_log_callback(log_line);
    /* Only main handles SIGINT/SIGTERM (sigwait); threads inherit the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);   /* a server writes to clients that may be gone */

    if ((listener = listen_on(port, &bound_port)) < 0) {
        perror("mt-server: listen");
        return 1;
    }
    memset(workers, 0, sizeof workers);
    for (i = 0; i < nthreads; i++) {
        if (worker_init(&workers[i], i + 1, listener) < 0 ||
            pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            perror("mt-server: worker");
            break;
        }
        started++;
    }
    close(listener);            /* the workers hold their own dups */

    if (started == nthreads) {
        printf("http://127.0.0.1:%d/ served by %d threads\n", bound_port, nthreads);
        fflush(stdout);
        if (serve) {
            int sig;
            sigwait(&sigs, &sig);
            printf("signal %d: shutting down\n", sig);
        } else if (self_test_requests(bound_port, &client) < 0) {
            fprintf(stderr, "mt-server: self-test client failed\n");
        }
    }

    /* Shut every worker down and join it. */
    for (i = 0; i < started; i++)
        if (write(workers[i].wake[1], "q", 1) != 1)
            perror("mt-server: wake");
    for (i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        printf("  thread %d served %lu requests%s\n", workers[i].id, workers[i].served,
               workers[i].stopped ? ", shut down gracefully" : "");
        served += workers[i].served;
        stopped += workers[i].stopped;
    }
    for (i = 0; i < nthreads; i++)
        worker_free(&workers[i]);
    if (serve)
        return started == nthreads && stopped == started ? 0 : 1;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        ok = (cond);                                                           \
        failed += !ok;                                                         \
        printf("%s %d - ", ok ? "ok" : "not ok", ++n);                         \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
    } while (0)
    CHECK(started == nthreads, "%d threads started, each with its own base, evhttp and scheduler",
          started);
    CHECK(started == nthreads && client.ok == NREQ && served == NREQ,
          "%d requests answered 200 by the threads", NREQ);
    CHECK(stopped == started, "every thread shut down with aj_evhttp_shutdown, then evhttp_free");
    CHECK(port_is_closed(bound_port), "the port refuses connections afterwards");
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
