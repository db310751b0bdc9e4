/*
 * examples/cancel-states.c -- a job written as a continuation, with a
 * cancel hook per state.  doc/guide.md ("Writing a job") walks through it.
 *
 * The job asks a small line server a question: it connects, sends a
 * request (a line and a 256 KB upload, written 16 KB per loop pass as
 * libevent's bufferevents do), and waits, with its own reply timeout, for
 * the answer line.
 * Each state stops differently, so the job re-arms aj_job_set_cancel() each
 * time it moves:
 *
 *   CONNECT     drop the half-open connection
 *   SEND        drop the request that was not written yet
 *   WAIT_REPLY  the server is working for us: tell it to stop ("CANCEL"),
 *               and finish only once that line is written (a cancel may end
 *               later than the hook returns)
 *
 * main() starts the server in the same loop (127.0.0.1, ephemeral port) and
 * runs four exchanges at once: one left alone, one closed while connecting,
 * one closed while sending, and one whose aj_job_wait() times out while the
 * server is still thinking.  The last lines are TAP ("ok N - ...") so that
 * `make check` can read the verdict.
 *
 *   ./examples/cancel-states
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <aj/aj.h>

/* ------------------------------------------------------------------ */
/* The job                                                             */
/* ------------------------------------------------------------------ */

enum ex_state { EX_CONNECT, EX_SEND, EX_WAIT_REPLY, EX_CANCELLING };

static const char *const state_names[] = { "CONNECT", "SEND", "WAIT_REPLY", "CANCELLING" };

struct exchange {
    /* what to ask */
    struct sockaddr_in addr;
    const char *question;
    int think_ms;               /* how long the server takes to answer */
    size_t upload;              /* bytes sent after the request line */
    /* the continuation: where the job is and what it holds */
    enum ex_state state;
    aj_job *job;
    struct bufferevent *bev;    /* the connection, NULL once finished */
    struct event *reply_timer;  /* the job's own reply timeout */
    char reply[64];             /* the result, valid until release */
    /* for the demo: which cancel hook ran, and a hook main() uses to close
     * the job the moment it enters a state */
    int cancelled_in;
    void (*entered)(struct exchange *ex);
};

static void ex_finish(struct exchange *ex, int error)
{
    if (ex->reply_timer)
        event_del(ex->reply_timer);
    if (ex->bev) {
        bufferevent_free(ex->bev);      /* closes the socket; safe in its callbacks */
        ex->bev = NULL;
    }
    aj_job_done(ex->job, error, error ? NULL : ex->reply);
}

/* One cancel hook per state. */
static void cancel_connect(aj_job *job, void *arg)
{
    struct exchange *ex = arg;

    ex->cancelled_in = EX_CONNECT;
    ex_finish(ex, ECANCELED);          /* freeing the socket aborts the connect */
}

static void cancel_send(aj_job *job, void *arg)
{
    struct exchange *ex = arg;
    struct evbuffer *out = bufferevent_get_output(ex->bev);

    ex->cancelled_in = EX_SEND;
    evbuffer_drain(out, evbuffer_get_length(out));   /* the unsent request */
    ex_finish(ex, ECANCELED);
}

static void cancel_wait_reply(aj_job *job, void *arg)
{
    struct exchange *ex = arg;

    ex->cancelled_in = EX_WAIT_REPLY;
    event_del(ex->reply_timer);
    ex->state = EX_CANCELLING;
    aj_job_set_cancel(job, NULL, NULL);   /* already stopping */
    bufferevent_disable(ex->bev, EV_READ);
    evbuffer_add_printf(bufferevent_get_output(ex->bev), "CANCEL\n");
    /* ex_sent() finishes the job once the line is written. */
}

/* Every state change goes through here: it re-arms the cancel hook. */
static void ex_enter(struct exchange *ex, enum ex_state state)
{
    static void (*const hooks[])(aj_job *, void *) = {
        cancel_connect, cancel_send, cancel_wait_reply,
    };

    ex->state = state;
    aj_job_set_cancel(ex->job, hooks[state], ex);
    if (ex->entered)
        ex->entered(ex);
}

/* The output buffer drained: the request (or the CANCEL line) is written. */
static void ex_sent(struct bufferevent *bev, void *arg)
{
    struct exchange *ex = arg;
    struct timeval reply_timeout = { 2, 0 };

    if (ex->state == EX_CANCELLING) {
        ex_finish(ex, ECANCELED);
        return;
    }
    if (ex->state != EX_SEND)
        return;
    ex_enter(ex, EX_WAIT_REPLY);
    event_add(ex->reply_timer, &reply_timeout);
    bufferevent_enable(bev, EV_READ);
}

static void ex_read(struct bufferevent *bev, void *arg)
{
    struct exchange *ex = arg;
    char *line = evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_LF);

    if (!line)
        return;                         /* not a whole line yet */
    snprintf(ex->reply, sizeof ex->reply, "%s", line);
    free(line);
    ex_finish(ex, 0);
}

static void ex_event(struct bufferevent *bev, short what, void *arg)
{
    struct exchange *ex = arg;

    if (what & BEV_EVENT_CONNECTED) {
        static const char chunk[4096];
        struct evbuffer *out = bufferevent_get_output(bev);
        size_t n;

        ex_enter(ex, EX_SEND);
        evbuffer_add_printf(out, "%d %s %zu\n", ex->think_ms, ex->question, ex->upload);
        for (n = 0; n < ex->upload; n += sizeof chunk)
            evbuffer_add(out, chunk, sizeof chunk);
        return;
    }
    /* EOF or an error: the server went away. */
    ex_finish(ex, ex->state == EX_CANCELLING ? ECANCELED : ECONNRESET);
}

static void ex_reply_timeout(evutil_socket_t fd, short what, void *arg)
{
    ex_finish(arg, ETIMEDOUT);
}

static void ex_start(aj_job *job, void *arg)
{
    struct exchange *ex = arg;
    struct event_base *base = aj_scheduler_base(aj_job_scheduler(job));

    ex->job = job;
    ex->reply_timer = evtimer_new(base, ex_reply_timeout, ex);
    ex->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!ex->reply_timer || !ex->bev) {
        ex_finish(ex, ENOMEM);
        return;
    }
    bufferevent_setcb(ex->bev, ex_read, ex_sent, ex_event, ex);
    ex_enter(ex, EX_CONNECT);
    if (bufferevent_socket_connect(ex->bev, (struct sockaddr *)&ex->addr, sizeof ex->addr) < 0)
        ex_finish(ex, ECONNREFUSED);
}

static void ex_release(void *arg)
{
    struct exchange *ex = arg;

    if (ex->reply_timer)
        event_free(ex->reply_timer);
    free(ex);
}

static const struct aj_job_ops exchange_ops = {
    .name = "exchange",
    .start = ex_start,
    .cancel = NULL,            /* armed per state with aj_job_set_cancel() */
    .release = ex_release,
};

/* ------------------------------------------------------------------ */
/* The server: "<think_ms> <question> <n>\n" + n bytes -> "OK <question>\n" */
/* ------------------------------------------------------------------ */

#define MAX_CONNS 16

struct server {
    struct evconnlistener *listener;
    struct conn *conns[MAX_CONNS];
    int nconns;
    int cancels;                /* CANCEL lines received */
    int stop_when_idle;         /* the clients are done: end the loop */
};

struct conn {
    struct server *srv;
    int slot;
    struct bufferevent *bev;
    struct event *think;        /* the answer being worked on */
    size_t upload_left;         /* bytes of the upload still to read */
    int think_ms;
    char answer[64];
};

static void server_maybe_stop(struct server *srv)
{
    if (srv->stop_when_idle && srv->nconns == 0)
        event_base_loopexit(evconnlistener_get_base(srv->listener), NULL);
}

static void conn_free(struct conn *c)
{
    struct server *srv = c->srv;

    srv->conns[c->slot] = NULL;
    srv->nconns--;
    event_free(c->think);
    bufferevent_free(c->bev);
    free(c);
    server_maybe_stop(srv);
}

static void conn_answer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    evbuffer_add_printf(bufferevent_get_output(c->bev), "OK %s\n", c->answer);
}

static void conn_think(struct conn *c)
{
    struct timeval tv = { c->think_ms / 1000, (c->think_ms % 1000) * 1000 };

    event_add(c->think, &tv);
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char *line, q[48];

    for (;;) {
        if (c->upload_left > 0) {           /* discard the upload */
            size_t n = evbuffer_get_length(in);
            if (n == 0)
                return;
            if (n > c->upload_left)
                n = c->upload_left;
            evbuffer_drain(in, n);
            if ((c->upload_left -= n) == 0)
                conn_think(c);              /* the whole request is in */
            continue;
        }
        if (!(line = evbuffer_readln(in, NULL, EVBUFFER_EOL_LF)))
            return;
        if (strcmp(line, "CANCEL") == 0) {
            c->srv->cancels++;
            event_del(c->think);
        } else if (sscanf(line, "%d %47s %zu", &c->think_ms, q, &c->upload_left) == 3) {
            snprintf(c->answer, sizeof c->answer, "%s", q);
            if (c->upload_left == 0)
                conn_think(c);
        }
        free(line);
    }
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg);                     /* the client closed */
}

static void server_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct server *srv = arg;
    struct event_base *base = evconnlistener_get_base(l);
    struct conn *c = calloc(1, sizeof *c);
    int i;

    for (i = 0; i < MAX_CONNS && srv->conns[i]; i++)
        ;
    if (!c || i == MAX_CONNS) {
        free(c);
        evutil_closesocket(fd);
        return;
    }
    c->srv = srv;
    c->slot = i;
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->think = evtimer_new(base, conn_answer, c);
    srv->conns[i] = c;
    srv->nconns++;
    bufferevent_setcb(c->bev, conn_read, NULL, conn_event, c);
    bufferevent_enable(c->bev, EV_READ);
}

/* ------------------------------------------------------------------ */
/* main: four exchanges                                                */
/* ------------------------------------------------------------------ */

struct outcome {
    const char *what;
    int error;                  /* what the caller's callback received */
    int hook;                   /* which cancel hook ran, -1 none */
    char reply[64];
};

static struct outcome outcomes[4];
static int finished;

/* Copies what release would free, and counts the exchange as over. */
static void record(aj_job *job, int error, void *result, void *arg)
{
    struct outcome *o = arg;
    struct exchange *ex = aj_job_arg(job);

    o->error = error;
    o->hook = ex->cancelled_in;
    snprintf(o->reply, sizeof o->reply, "%s", result ? (const char *)result : "");
    printf("  %-24s -> %-22s cancel hook: %s\n", o->what,
           error ? strerror(error) : result ? o->reply : "0 (it stopped)",
           o->hook < 0 ? "none" : state_names[o->hook]);
    finished++;
}

/* main() closes exchange 2 while it connects and exchange 3 while it
 * sends, as any caller holding the job could. */
static void close_when_connecting(struct exchange *ex)
{
    if (ex->state == EX_CONNECT)
        aj_job_close(ex->job, NULL, record, &outcomes[1]);
}

static void close_when_sending(struct exchange *ex)
{
    if (ex->state == EX_SEND)
        aj_job_close(ex->job, NULL, record, &outcomes[2]);
}

/* Every exchange is over; stop once the server has seen its clients go
 * (so that it has read every CANCEL line). */
static void all_done(aj_scheduler *s, void *arg)
{
    struct server *srv = arg;

    evconnlistener_disable(srv->listener);
    srv->stop_when_idle = 1;
    server_maybe_stop(srv);
}

int main(void)
{
    struct event_base *base = event_base_new();
    struct server srv;
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    aj_scheduler *s;
    int i, ok, n = 0, failed = 0;
    struct timeval wait_limit = { 0, 200000 }, drain_limit = { 5, 0 };

    alarm(30);                  /* a hang fails the run instead of blocking it */
    signal(SIGPIPE, SIG_IGN);   /* a server writes to clients that may be gone */
    memset(&srv, 0, sizeof srv);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!base || !(s = aj_scheduler_new(base)))
        return 1;
    srv.listener = evconnlistener_new_bind(base, server_accept, &srv,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                           (struct sockaddr *)&sin, sizeof sin);
    if (!srv.listener ||
        getsockname(evconnlistener_get_fd(srv.listener), (struct sockaddr *)&sin, &len) < 0) {
        perror("cancel-states: listen");
        return 1;
    }
    printf("line server on 127.0.0.1:%d; four exchanges:\n", ntohs(sin.sin_port));

    outcomes[0].what = "left alone";
    outcomes[1].what = "closed while connecting";
    outcomes[2].what = "closed while sending";
    outcomes[3].what = "wait timed out (0.2 s)";
    for (i = 0; i < 4; i++) {
        struct exchange *ex = calloc(1, sizeof *ex);
        aj_job *job;

        if (!ex)
            return 1;
        ex->addr = sin;
        ex->question = i == 0 ? "hello" : "question";
        ex->think_ms = i == 3 ? 10000 : 20;     /* the last one thinks long */
        ex->upload = 256 * 1024;
        ex->cancelled_in = -1;
        ex->entered = i == 1 ? close_when_connecting : i == 2 ? close_when_sending : NULL;
        job = aj_spawn(s, &exchange_ops, ex);
        if (!job) {
            free(ex);                           /* refused: still ours */
            return 1;
        }
        if (i == 0)
            aj_job_wait(job, NULL, record, &outcomes[0]);
        else if (i == 3)
            aj_job_wait(job, &wait_limit, record, &outcomes[3]);
    }
    aj_scheduler_wait_and_close(s, &drain_limit, all_done, &srv);
    event_base_dispatch(base);

    aj_scheduler_free(s);
    srv.stop_when_idle = 0;
    for (i = 0; i < MAX_CONNS; i++)
        if (srv.conns[i])
            conn_free(srv.conns[i]);
    evconnlistener_free(srv.listener);
    event_base_free(base);

    /* The verdict, as TAP. */
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        ok = (cond);                                                           \
        failed += !ok;                                                         \
        printf("%s %d - ", ok ? "ok" : "not ok", ++n);                         \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
    } while (0)
    CHECK(finished == 4, "every caller's callback ran (%d of 4)", finished);
    CHECK(outcomes[0].error == 0 && strcmp(outcomes[0].reply, "OK hello") == 0 &&
          outcomes[0].hook == -1, "left alone: the reply, no cancel hook");
    CHECK(outcomes[1].error == 0 && outcomes[1].hook == EX_CONNECT,
          "closed while connecting: the CONNECT hook ran, the close reports 0 (stopped)");
    CHECK(outcomes[2].error == 0 && outcomes[2].hook == EX_SEND,
          "closed while sending: the SEND hook ran");
    CHECK(outcomes[3].error == ETIMEDOUT && outcomes[3].hook == EX_WAIT_REPLY && srv.cancels == 1,
          "wait timed out: the job was closed, the WAIT_REPLY hook told the server (%d CANCEL)",
          srv.cancels);
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
