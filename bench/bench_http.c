/*
 * bench_http.c -- an HTTP route through aj_atomic next to a plain evhttp
 * handler, under the same load from wrk (issue 5, figure 5).
 *
 * One server process (forked, pinned to one core) runs two evhttp servers on
 * 127.0.0.1, ephemeral ports, both answering GET /hello with "hello":
 *
 *   atomic   aj_evhttp_setup + aj_atomic: each request is a managed job
 *            whose start replies with aj_evhttp_reply
 *   raw      evhttp_set_cb: the handler replies with evhttp_send_reply
 *
 * The driver (this process) runs wrk pinned to another core (64 keep-alive
 * connections, one thread, a few seconds, bounded), alternating the two
 * servers round after round (order swapped every other round).  Around each
 * run it asks the server, through a pipe, for its CPU time (getrusage) and
 * how many requests each route served: the judged figure is server CPU per
 * request, which does not swing with the machine's load the way requests/s
 * do.  The ratio is taken per round (atomic / raw), the figure is the
 * median.  p99 comes from wrk --latency.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <aj/aj.h>
#include <aj/evhttp.h>

#include "bench.h"

static int ROUNDS = 10;          /* A B pairs */
static int DURATION = 3;         /* seconds per wrk run */
static int CONNS = 64;           /* keep-alive connections */

static void die(const char *what)
{
    fprintf(stderr, "bench_http: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ------------------------------------------------------------------ */
/* CPU pinning                                                         */
/* ------------------------------------------------------------------ */

/* The first two CPUs this process may run on (-1 when unknown). */
static void pick_cpus(int *server_cpu, int *client_cpu)
{
    *server_cpu = *client_cpu = -1;
#ifdef __linux__
    {
        cpu_set_t set;
        int i;
        if (sched_getaffinity(0, sizeof set, &set) == 0) {
            for (i = 0; i < CPU_SETSIZE; i++) {
                if (!CPU_ISSET(i, &set))
                    continue;
                if (*server_cpu < 0)
                    *server_cpu = i;
                else if (*client_cpu < 0)
                    *client_cpu = i;
            }
        }
    }
#endif
    if (*client_cpu < 0)
        *server_cpu = -1;           /* one core: do not pin at all */
}

static void pin_to(int cpu)
{
#ifdef __linux__
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            perror("bench_http: sched_setaffinity");
    }
#else
    (void)cpu;
#endif
}

/* ------------------------------------------------------------------ */
/* The server process                                                  */
/* ------------------------------------------------------------------ */

struct snapshot {
    double cpu_us;                  /* server process CPU, user + system */
    uint64_t served_atomic;         /* requests answered by each route */
    uint64_t served_raw;
    uint64_t served_cod;            /* atomic, AJ_EVHTTP_CANCEL_ON_DISCONNECT */
};

struct server {
    struct event_base *base;
    struct evhttp *atomic, *raw, *cod;
    struct evbuffer *body;          /* "hello", refilled per request */
    struct event *ctl;
    int ctl_in, ctl_out;
    int stopped;                    /* shutdowns done */
    struct snapshot counts;
};

/* The managed route: the request runs as a job; its start replies. */
static void hello_atomic(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct server *srv = arg;
    (void)req;
    srv->counts.served_atomic++;
    evbuffer_add(srv->body, "hello", 5);
    aj_evhttp_reply(job, 200, "OK", srv->body);
}

/* The same on a server with AJ_EVHTTP_CANCEL_ON_DISCONNECT. */
static void hello_cod(aj_job *job, struct evhttp_request *req, void *arg)
{
    struct server *srv = arg;
    (void)req;
    srv->counts.served_cod++;
    evbuffer_add(srv->body, "hello", 5);
    aj_evhttp_reply(job, 200, "OK", srv->body);
}

/* The raw route: the same reply straight from the evhttp callback. */
static void hello_raw(struct evhttp_request *req, void *arg)
{
    struct server *srv = arg;
    srv->counts.served_raw++;
    evbuffer_add(srv->body, "hello", 5);
    evhttp_send_reply(req, 200, "OK", srv->body);
}

static void shutdown_done(struct evhttp *http, void *arg)
{
    struct server *srv = arg;
    (void)http;
    if (++srv->stopped == 2)
        event_base_loopexit(srv->base, NULL);
}

/* The driver's commands: 's' = send a snapshot, 'q' (or EOF) = stop. */
static void ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    char cmd = 'q';
    (void)what;

    if (read(fd, &cmd, 1) != 1)
        cmd = 'q';
    if (cmd == 's') {
        struct snapshot snap;       /* a copy: GCC's -Wstringop-overread
                                     * misjudges &srv->counts under ASan */
        srv->counts.cpu_us = bench_cpu_us();
        snap = srv->counts;
        if (write(srv->ctl_out, &snap, sizeof snap) != (ssize_t)sizeof snap)
            die("server: write snapshot");
        return;
    }
    event_del(srv->ctl);
    if (aj_evhttp_shutdown(srv->atomic, NULL, shutdown_done, srv) < 0 ||
        aj_evhttp_shutdown(srv->cod, NULL, shutdown_done, srv) < 0) {
        perror("bench_http: aj_evhttp_shutdown");
        event_base_loopexit(srv->base, NULL);
    }
}

/* Binds http to 127.0.0.1 on an ephemeral port; returns the port. */
static int bind_ephemeral(struct evhttp *http)
{
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;

    if (!bs)
        die("evhttp_bind_socket_with_handle");
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &len) < 0)
        die("getsockname");
    return ntohs(sin.sin_port);
}

static void server_main(int cpu, int ctl_in, int ctl_out)
{
    struct server srv;
    aj_scheduler *s;
    int ports[3];

    memset(&srv, 0, sizeof srv);
    pin_to(cpu);
    srv.ctl_in = ctl_in;
    srv.ctl_out = ctl_out;
    if (!(srv.base = event_base_new()) || !(srv.body = evbuffer_new()) ||
        !(srv.atomic = evhttp_new(srv.base)) || !(srv.raw = evhttp_new(srv.base)) ||
        !(srv.cod = evhttp_new(srv.base)))
        die("server: setup");

    if (!(s = aj_evhttp_setup(srv.atomic, srv.base)))
        die("aj_evhttp_setup");
    aj_scheduler_set_debug(s, 0);
    if (aj_atomic(srv.atomic, "/hello", hello_atomic, &srv) < 0)
        die("aj_atomic");
    if (evhttp_set_cb(srv.raw, "/hello", hello_raw, &srv) < 0)
        die("evhttp_set_cb");
    if (!(s = aj_evhttp_setup(srv.cod, srv.base)))
        die("aj_evhttp_setup");
    aj_scheduler_set_debug(s, 0);
    if (aj_evhttp_set_flags(srv.cod, AJ_EVHTTP_CANCEL_ON_DISCONNECT) < 0 ||
        aj_atomic(srv.cod, "/hello", hello_cod, &srv) < 0)
        die("aj_atomic (cancel on disconnect)");
    ports[0] = bind_ephemeral(srv.atomic);
    ports[1] = bind_ephemeral(srv.raw);
    ports[2] = bind_ephemeral(srv.cod);

    srv.ctl = event_new(srv.base, ctl_in, EV_READ | EV_PERSIST, ctl_cb, &srv);
    if (!srv.ctl || event_add(srv.ctl, NULL) < 0)
        die("server: control event");
    if (write(ctl_out, ports, sizeof ports) != (ssize_t)sizeof ports)
        die("server: write ports");

    event_base_dispatch(srv.base);

    event_free(srv.ctl);
    evhttp_free(srv.atomic);
    evhttp_free(srv.cod);
    evhttp_free(srv.raw);
    evbuffer_free(srv.body);
    event_base_free(srv.base);
    _exit(0);
}

/* ------------------------------------------------------------------ */
/* The driver                                                          */
/* ------------------------------------------------------------------ */

struct server_handle {
    pid_t pid;
    int cmd, reply;                 /* pipes to and from the server */
    int port_atomic, port_raw, port_cod;
};

static void read_full(int fd, void *buf, size_t len, const char *what)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "bench_http: %s: the server went away\n", what);
            exit(1);
        }
        p += r;
        len -= (size_t)r;
    }
}

static void server_start(struct server_handle *h, int cpu)
{
    int to[2], from[2], ports[3];

    if (pipe(to) < 0 || pipe(from) < 0)
        die("pipe");
    fflush(NULL);
    h->pid = fork();
    if (h->pid < 0)
        die("fork");
    if (h->pid == 0) {
        close(to[1]);
        close(from[0]);
        server_main(cpu, to[0], from[1]);
    }
    close(to[0]);
    close(from[1]);
    h->cmd = to[1];
    h->reply = from[0];
    read_full(h->reply, ports, sizeof ports, "ports");
    h->port_atomic = ports[0];
    h->port_raw = ports[1];
    h->port_cod = ports[2];
}

static struct snapshot server_snapshot(struct server_handle *h)
{
    struct snapshot snap;
    if (write(h->cmd, "s", 1) != 1)
        die("write to server");
    read_full(h->reply, &snap, sizeof snap, "snapshot");
    return snap;
}

static void server_stop(struct server_handle *h)
{
    int status;
    if (write(h->cmd, "q", 1) != 1)
        perror("bench_http: stop server");
    close(h->cmd);
    close(h->reply);
    if (waitpid(h->pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "bench_http: the server did not exit cleanly (status %d)\n", status);
}

/* What one wrk run reported. */
struct wrk_result {
    double rps;
    double p99_us;
    double requests;
    long non2xx;
    long socket_errors;
};

/* "1.23ms" -> microseconds. */
static double parse_duration_us(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (strncmp(end, "us", 2) == 0)
        return v;
    if (strncmp(end, "ms", 2) == 0)
        return v * 1e3;
    if (*end == 's')
        return v * 1e6;
    if (*end == 'm')
        return v * 60e6;
    return -1;
}

static void parse_wrk(const char *out, struct wrk_result *r)
{
    const char *p;
    memset(r, 0, sizeof *r);
    r->p99_us = -1;
    if ((p = strstr(out, "Requests/sec:")))
        r->rps = strtod(p + strlen("Requests/sec:"), NULL);
    if ((p = strstr(out, " 99% ")))
        r->p99_us = parse_duration_us(p + strspn(p + 5, " ") + 5);
    if ((p = strstr(out, " requests in "))) {
        while (p > out && p[-1] != '\n' && p[-1] != ' ')
            p--;
        r->requests = strtod(p, NULL);
    }
    if ((p = strstr(out, "Non-2xx or 3xx responses:")))
        r->non2xx = strtol(p + strlen("Non-2xx or 3xx responses:"), NULL, 10);
    if ((p = strstr(out, "Socket errors:"))) {
        long a = 0, b = 0, c = 0, d = 0;
        if (sscanf(p, "Socket errors: connect %ld, read %ld, write %ld, timeout %ld", &a, &b,
                   &c, &d) == 4)
            r->socket_errors = a + b + c + d;
    }
}

static const char *wrk_path;

/*
 * Runs wrk against 127.0.0.1:port/hello for `seconds`, pinned to `cpu`,
 * and parses its report.  Bounded: killed if it overruns by 30 s.
 */
static void run_wrk(int port, int seconds, int cpu, struct wrk_result *r)
{
    char url[64], dur[16], conns[16], out[65536];
    size_t len = 0;
    int fd[2], status;
    pid_t pid;
    double deadline;

    snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", port);
    snprintf(dur, sizeof dur, "%ds", seconds);
    snprintf(conns, sizeof conns, "%d", CONNS);
    if (pipe(fd) < 0)
        die("pipe");
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        char *argv[] = { (char *)wrk_path, "-t1", "-c", conns, "-d", dur, "--latency",
                         "--timeout", "5s", url, NULL };
        pin_to(cpu);
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execvp(wrk_path, argv);
        perror("bench_http: exec wrk");
        _exit(127);
    }
    close(fd[1]);
    deadline = bench_now_ns() + (seconds + 30) * 1e9;
    for (;;) {
        struct pollfd pfd = { fd[0], POLLIN, 0 };
        ssize_t n;
        int left = (int)((deadline - bench_now_ns()) / 1e6);
        if (left <= 0 || poll(&pfd, 1, left) == 0) {
            fprintf(stderr, "bench_http: wrk overran its time, killed\n");
            kill(pid, SIGKILL);
            break;
        }
        n = read(fd[0], out + len, sizeof out - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (len += (size_t)n) == sizeof out - 1)
            break;
    }
    out[len] = '\0';
    close(fd[0]);
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_http: wrk failed:\n%s\n", out);
        exit(1);
    }
    parse_wrk(out, r);
    if (r->rps <= 0 || r->p99_us < 0) {
        fprintf(stderr, "bench_http: cannot read wrk's report:\n%s\n", out);
        exit(1);
    }
}

/* One measured run against one route. */
struct run {
    double cpu_us_per_req;
    double rps;
    double p99_us;
};

enum route { RAW, ATOMIC, COD };
static const char *const route_names[] = { "raw", "atomic", "atomic+cancel-on-disconnect" };

static uint64_t served_on(const struct snapshot *s, enum route r)
{
    return r == RAW ? s->served_raw : r == ATOMIC ? s->served_atomic : s->served_cod;
}

static struct run measure(struct server_handle *h, enum route route, int seconds, int cpu)
{
    struct snapshot a, b;
    struct wrk_result w;
    struct run run;
    double served, other;

    a = server_snapshot(h);
    run_wrk(route == RAW ? h->port_raw : route == ATOMIC ? h->port_atomic : h->port_cod,
            seconds, cpu, &w);
    b = server_snapshot(h);
    served = (double)(served_on(&b, route) - served_on(&a, route));
    other = (double)(b.served_raw + b.served_atomic + b.served_cod -
                     a.served_raw - a.served_atomic - a.served_cod) - served;
    if (served <= 0 || other != 0 || w.non2xx != 0) {
        fprintf(stderr, "bench_http: %s route: served %.0f (other routes %.0f), %ld non-2xx\n",
                route_names[route], served, other, w.non2xx);
        exit(1);
    }
    if (w.socket_errors)
        fprintf(stderr, "bench_http: %s route: %ld socket errors reported by wrk\n",
                route_names[route], w.socket_errors);
    run.cpu_us_per_req = (b.cpu_us - a.cpu_us) / served;
    run.rps = w.rps;
    run.p99_us = w.p99_us;
    return run;
}

/* ------------------------------------------------------------------ */
/* The lookup's cost with 1 server registered and with 1,000            */
/* ------------------------------------------------------------------ */

#define LOOKUP_SERVERS 1000

/* ns per aj_evhttp_get_scheduler_from_server() of `probe`. */
static double lookup_ns(struct evhttp *probe, long n)
{
    volatile uintptr_t sink = 0;
    double t0 = bench_now_ns();
    long i;

    for (i = 0; i < n; i++)
        sink += (uintptr_t)aj_evhttp_get_scheduler_from_server(probe);
    (void)sink;
    return (bench_now_ns() - t0) / (double)n;
}

/* Rounds of: time the lookup of one server alone, register 999 more,
 * time it again, free them; the median ratio says whether the cost grows
 * with the number of servers registered in the process. */
static void bench_lookup(int quick, int judge)
{
    struct event_base *base = event_base_new();
    struct evhttp *probe, *more[LOOKUP_SERVERS - 1];
    double one[16], many[16], ratio[16];
    long n = quick ? 100000 : 2000000;
    int rounds = quick ? 2 : 7, r, i;

    if (!base || !(probe = evhttp_new(base)) || !aj_evhttp_setup(probe, base))
        die("lookup bench: setup");
    lookup_ns(probe, n / 10);                     /* warm up */
    for (r = 0; r < rounds; r++) {
        one[r] = lookup_ns(probe, n);
        for (i = 0; i < LOOKUP_SERVERS - 1; i++)
            if (!(more[i] = evhttp_new(base)) || !aj_evhttp_setup(more[i], base))
                die("lookup bench: setup");
        many[r] = lookup_ns(probe, n);
        for (i = 0; i < LOOKUP_SERVERS - 1; i++)
            aj_evhttp_free(more[i]);
        ratio[r] = many[r] / one[r];
    }
    aj_evhttp_free(probe);
    event_base_free(base);
    bench_section("Adapter lookup (aj_evhttp_get_scheduler_from_server), 1 server against 1,000");
    bench_figure("http_lookup_1_ns", bench_median(one, rounds), "ns", 0, judge);
    bench_figure("http_lookup_1000_ns", bench_median(many, rounds), "ns", 0, judge);
    bench_figure("http_lookup_ratio_1000_vs_1", bench_median(ratio, rounds), "x", 1.5, judge);
}

/* wrk from $WRK (configure's path) or PATH; NULL if there is none. */
static const char *find_wrk(void)
{
    static char buf[4096];
    const char *env = getenv("WRK");
    const char *path = getenv("PATH");

    if (env && *env && strcmp(env, "no") != 0 && access(env, X_OK) == 0)
        return env;
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof buf, "%.*s/wrk", (int)n, path);
        if (n > 0 && access(buf, X_OK) == 0)
            return buf;
        path += n + (path[n] == ':');
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    struct server_handle h;
    struct run ra, rr;
    struct run rc;
    double acpu[64], rcpu[64], arps[64], rrps[64], ap99[64], rp99[64], rcpu_ratio[64],
        rp99_ratio[64], ccpu[64], ccpu_ratio[64], la[3];
    int server_cpu, client_cpu, r, judge;

    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_parse_opts(&o, argc, argv);
    if (o.quick) {
        ROUNDS = 2;
        DURATION = 1;
    }
    judge = !o.quick;
    unsetenv("AJ_DEBUG");
    signal(SIGPIPE, SIG_IGN);

    bench_open_out(o.out);
    bench_lookup(o.quick, judge);
    wrk_path = find_wrk();
    if (!wrk_path) {
        printf("\nHTTP benchmarks SKIPPED: wrk not found (apt-get install wrk)\n");
        bench_close_out();
        return 0;
    }
    pick_cpus(&server_cpu, &client_cpu);
    bench_loadavg(la);
    bench_record("http_loadavg_before", la[0]);
    printf("\nHTTP: GET /hello, aj_atomic + aj_evhttp_reply (flags 0, and with\n"
           "AJ_EVHTTP_CANCEL_ON_DISCONNECT) against evhttp_set_cb;\n"
           "wrk %d keep-alive connections, %d rounds of %d s per route (order swapped per round);\n"
           "server on CPU %d, wrk on CPU %d; load average %.2f %.2f %.2f\n",
           CONNS, ROUNDS, DURATION, server_cpu, client_cpu, la[0], la[1], la[2]);

    server_start(&h, server_cpu);
    if (!o.quick) {                 /* warm both routes up, not counted */
        measure(&h, ATOMIC, 1, client_cpu);
        measure(&h, RAW, 1, client_cpu);
        measure(&h, COD, 1, client_cpu);
    }
    for (r = 0; r < ROUNDS; r++) {
        if (r % 2 == 0) {
            ra = measure(&h, ATOMIC, DURATION, client_cpu);
            rr = measure(&h, RAW, DURATION, client_cpu);
            rc = measure(&h, COD, DURATION, client_cpu);
        } else {
            rc = measure(&h, COD, DURATION, client_cpu);
            rr = measure(&h, RAW, DURATION, client_cpu);
            ra = measure(&h, ATOMIC, DURATION, client_cpu);
        }
        ccpu[r] = rc.cpu_us_per_req;
        ccpu_ratio[r] = rc.cpu_us_per_req / rr.cpu_us_per_req;
        acpu[r] = ra.cpu_us_per_req;
        rcpu[r] = rr.cpu_us_per_req;
        arps[r] = ra.rps;
        rrps[r] = rr.rps;
        ap99[r] = ra.p99_us;
        rp99[r] = rr.p99_us;
        rcpu_ratio[r] = ra.cpu_us_per_req / rr.cpu_us_per_req;
        rp99_ratio[r] = ra.p99_us / rr.p99_us;
        fprintf(stderr, "  round %d/%d: atomic %.2f us/req %.0f req/s, raw %.2f us/req %.0f req/s, "
                "cancel-on-disconnect %.2f us/req\n",
                r + 1, ROUNDS, ra.cpu_us_per_req, ra.rps, rr.cpu_us_per_req, rr.rps,
                rc.cpu_us_per_req);
    }
    server_stop(&h);

    bench_section("HTTP server CPU per request, aj_atomic against a raw evhttp handler");
    bench_figure("http_atomic_cpu_us", bench_median(acpu, ROUNDS), "us", 0, judge);
    bench_figure("http_raw_cpu_us", bench_median(rcpu, ROUNDS), "us", 0, judge);
    bench_figure("http_cpu_ratio", bench_median(rcpu_ratio, ROUNDS), "x", 1.05, judge);
    bench_figure("http_cod_cpu_us", bench_median(ccpu, ROUNDS), "us", 0, judge);
    bench_figure("http_cpu_ratio_cancel_on_disconnect", bench_median(ccpu_ratio, ROUNDS), "x", 1.05,
                 judge);
    bench_figure("http_atomic_rps", bench_median(arps, ROUNDS), "req/s", 0, judge);
    bench_figure("http_raw_rps", bench_median(rrps, ROUNDS), "req/s", 0, judge);
    bench_figure("http_atomic_p99_us", bench_median(ap99, ROUNDS), "us", 0, judge);
    bench_figure("http_raw_p99_us", bench_median(rp99, ROUNDS), "us", 0, judge);
    bench_figure("http_p99_ratio", bench_median(rp99_ratio, ROUNDS), "x", 0, judge);
    bench_record("http_rounds", ROUNDS);

    bench_loadavg(la);
    bench_record("http_loadavg_after", la[0]);
    printf("\nload average after: %.2f %.2f %.2f\n", la[0], la[1], la[2]);
    bench_close_out();
    if (judge && bench_missed)
        printf("bench_http: %d target(s) missed\n", bench_missed);
    return 0;
}
