/*
 * <aj/evhttp.h> -- libaj_evhttp: managed jobs for libevent's HTTP server.
 *
 * aiojobs.aiohttp for evhttp: a scheduler per server (setup), jobs spawned
 * from requests (spawn), lookup through nested virtual hosts
 * (get_scheduler), whole handlers run as jobs (atomic), load shedding with
 * 503 + Retry-After, and a graceful shutdown after which evhttp_free() is
 * safe.  Built on the public <aj/aj.h> API only.
 *
 * Threading: the registry of servers is safe to use from several threads,
 * each running its own event_base and servers.  Each scheduler belongs to
 * the thread running its base.
 *
 * SIGPIPE: libevent writes to sockets with plain write(), and the adapter
 * may answer (503 on shutdown) a client that has just left.  Like any
 * evhttp server, ignore SIGPIPE: signal(SIGPIPE, SIG_IGN).
 */
#ifndef AJ_EVHTTP_H
#define AJ_EVHTTP_H

#include <aj/aj.h>

#ifdef __cplusplus
extern "C" {
#endif

struct evhttp;
struct evhttp_request;
struct evbuffer;

/*
 * Creates the scheduler of `http` on `base` (configure it with the
 * aj_scheduler_set_* calls).  The adapter owns it: aj_evhttp_shutdown(),
 * aj_evhttp_free() or aj_evhttp_forget() frees it.  Returns NULL with
 * EINVAL, EEXIST (http has one already) or ENOMEM.
 */
AJ_EXPORT aj_scheduler *aj_evhttp_setup(struct evhttp *http, struct event_base *base);

/*
 * Adds `vhost` to `parent` exactly as evhttp_add_virtual_host() does and
 * records the relation, so that requests served by vhost resolve to its
 * scheduler, else its nearest parent's.  Returns 0, or -1 with EINVAL
 * (NULL, a cycle, or vhost has bound sockets), EEXIST (vhost is a vhost
 * already), EBUSY (a shutdown covers either) or ENOMEM (the adapter's or
 * libevent's allocation failed; nothing recorded).
 */
AJ_EXPORT int aj_evhttp_add_virtual_host(struct evhttp *parent, const char *pattern,
                                         struct evhttp *vhost);

/*
 * As evhttp_add_server_alias(), and recorded: requests whose Host matches
 * `alias` (ignoring case) resolve to http's scheduler, as libevent routes
 * them to http.  Aliases added to libevent directly are not seen by the
 * lookups.  Returns 0, or -1 with EINVAL, EEXIST (recorded already) or
 * ENOMEM.
 */
AJ_EXPORT int aj_evhttp_add_server_alias(struct evhttp *http, const char *alias);
/* As evhttp_remove_server_alias() for an alias added with
 * aj_evhttp_add_server_alias().  Returns 0, or -1 with EINVAL or ENOENT. */
AJ_EXPORT int aj_evhttp_remove_server_alias(struct evhttp *http, const char *alias);

/*
 * As evhttp_remove_virtual_host(), and recorded: `vhost` leaves parent's
 * tree and keeps its own scheduler, routes and flags; it is a server of its
 * own from then on, and aj_evhttp_free(vhost) frees both.  Calling
 * evhttp_remove_virtual_host() directly on a vhost added through the
 * adapter is a usage error.  Returns 0, or -1 with EINVAL, ENOENT (not a
 * vhost of parent) or EBUSY (a shutdown covers it).
 */
AJ_EXPORT int aj_evhttp_remove_virtual_host(struct evhttp *parent, struct evhttp *vhost);

/*
 * A hard stop: forgets `http` and its registered vhosts, lets go of their
 * running jobs (each runs to its end; its reply is dropped, ENOTCONN),
 * drops the requests they held safely, frees their schedulers and then
 * evhttp_free(http) (a registered vhost is first removed from its parent).
 * Calling evhttp_free() directly on a registered server is a usage error
 * (use this, aj_evhttp_shutdown() or aj_evhttp_forget()): its record would
 * outlive it.  Called from a shutdown's callback it frees the server and
 * leaves the rest to the shutdown; called while a shutdown of http (or a
 * parent) is still draining, that shutdown is abandoned and its callback
 * never runs.  NULL is ignored.  After it a new evhttp, even one at the
 * same address, is a stranger to the adapter.
 */
AJ_EXPORT void aj_evhttp_free(struct evhttp *http);

/*
 * The scheduler serving `req`: that of the most specific registered server
 * whose alias or pattern matches the request's host (as libevent 2.1's
 * evhttp_find_vhost chooses, over the vhosts and aliases added through the
 * adapter), else its nearest parent's.  Reads only the adapter's records:
 * never calls libevent on a server, takes no lock every thread shares.  Returns NULL with
 * errno ENOENT, and logs that aj_evhttp_setup() was not called, when none.
 */
AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler(struct evhttp_request *req);
/* The server's own scheduler, or NULL (no parents consulted). */
AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler_from_server(struct evhttp *http);
/* As aj_evhttp_get_scheduler() but silent: NULL if none in the chain. */
AJ_EXPORT aj_scheduler *aj_evhttp_get_scheduler_from_request(struct evhttp_request *req);

/*
 * aj_spawn() on the request's scheduler.  The job is not tied to the request
 * (it may outlive it).  NULL with errno as aj_spawn(), or ENOENT.
 */
AJ_EXPORT aj_job *aj_evhttp_spawn(struct evhttp_request *req, const struct aj_job_ops *ops,
                                  void *arg);

/*
 * An atomic handler: the job's start.  `req` is valid for this call; in
 * later steps of the job get it again with aj_evhttp_request(job), which
 * turns NULL once the client went away (libevent then freed it) -- never
 * keep `req` across steps.  `arg` is the one given to aj_atomic(); note that
 * aj_job_arg(job) of an atomic job is the adapter's own record, not `arg`.
 */
typedef void (*aj_atomic_handler)(aj_job *job, struct evhttp_request *req, void *arg);

/*
 * Registers `handler` for `path` (as evhttp_set_cb) and runs each request as
 * a job of the serving scheduler.  The handler is the job's start: it answers
 * with aj_evhttp_reply() (the job then succeeds), or calls
 * aj_job_done(job, error, NULL) without replying: the client gets 500 (503
 * if error is ECANCELED).  It may arm aj_job_set_cancel().  The outcome goes
 * to the client and is never reported to the exception handler.  The
 * scheduler's wait timeout bounds the handler: when it passes the job is
 * cancelled and the client gets 503.  If the client goes away first the job
 * still runs to its end and its reply is dropped.  Queue full or scheduler
 * closed: 503 with Retry-After, no job made; no scheduler: 500 and a log.
 * Every reply the adapter makes itself is a fresh response: what the
 * handler put into the response (headers, part of a body) is discarded
 * first; it carries Content-Type: text/plain, a short body naming the
 * status, Retry-After on 503.  See aj_evhttp_set_flags() for clients that
 * leave or half-close, aj_evhttp_set_data() for per-request state.
 * Returns 0, or -1 with EINVAL, EEXIST (path taken) or ENOMEM; a failed
 * call leaves nothing behind.
 */
AJ_EXPORT int aj_atomic(struct evhttp *http, const char *path, aj_atomic_handler handler,
                        void *arg);
/* As aj_atomic() for every request no other callback matched
 * (evhttp_set_gencb).  Returns 0, or -1 with EINVAL or ENOMEM. */
AJ_EXPORT int aj_atomic_gencb(struct evhttp *http, aj_atomic_handler handler, void *arg);

/* The request an atomic job serves, or NULL once the client went away or
 * the reply was sent (or for a job that is not atomic).  A client that
 * leaves while its job waits in the pending queue is noticed at once (the
 * adapter watches the socket for EOF while a job holds the request) and
 * the job is discarded; one that leaves while its job runs is noticed too,
 * and the job runs to its end. */
AJ_EXPORT struct evhttp_request *aj_evhttp_request(const aj_job *job);

/*
 * Sends the reply of an atomic job (body may be NULL; its contents are
 * drained into the reply) and finishes the job with success.  Returns 0, or
 * -1 with ENOTCONN if the client went away (the job still finishes with
 * success), EINVAL if job is not an atomic job or already replied.
 */
AJ_EXPORT int aj_evhttp_reply(aj_job *job, int code, const char *reason, struct evbuffer *body);

#define AJ_EVHTTP_CANCEL_ON_DISCONNECT 0x1  /* a running atomic job is closed when its client leaves */
#define AJ_EVHTTP_ALLOW_HALF_CLOSE     0x2  /* EOF from the client is not "left"; only a reset or failed write is */

/*
 * Per server (a vhost has its own; a request uses the flags of the server
 * its atomic route was registered on, read when the request arrives).
 * Default 0: a client that leaves while its job is pending gets the job
 * discarded; a running job runs to its end and its reply is dropped; EOF
 * from the client means it left (as nginx decides by default).
 * AJ_EVHTTP_CANCEL_ON_DISCONNECT: when the adapter notices the client of a
 * running atomic job left, it closes the job (aj_job_close() with the
 * scheduler's close timeout): its cancel hook runs from the loop, and
 * aj_evhttp_request(job) is NULL from then on.  A job still running after
 * the close timeout is logged ("Job closing timed out"), never reported to
 * the exception handler.
 * AJ_EVHTTP_ALLOW_HALF_CLOSE: a client that sends its request and then
 * shuts down its sending side still gets its reply, and its pending job is
 * not discarded; a reset or a failed write still means it left.
 * Returns 0, or -1 with EINVAL (http NULL, unknown bits) or ENOMEM.
 */
AJ_EXPORT int aj_evhttp_set_flags(struct evhttp *http, unsigned flags);
/* The flags of `http` (0 if never set, or NULL). */
AJ_EXPORT unsigned aj_evhttp_flags(const struct evhttp *http);

/*
 * Per-request state of an atomic job: release(data) (may be NULL) runs
 * exactly once, from the loop, when the job is released, whichever way it
 * ended (reply, error, cancel, client gone, shutdown, aj_evhttp_free).
 * Setting it again releases nothing: the last data wins and only it is
 * released.  Allocates nothing.  Returns 0, or -1 with EINVAL (job NULL or
 * not atomic).
 */
AJ_EXPORT int aj_evhttp_set_data(aj_job *job, void *data, void (*release)(void *data));
/* The data set on an atomic job, or NULL (none, or not atomic). */
AJ_EXPORT void *aj_evhttp_data(const aj_job *job);

typedef void (*aj_evhttp_cb)(struct evhttp *http, void *arg);

/*
 * Graceful stop of `http` and its registered vhosts: stops accepting new
 * connections (requests on connections already open get 503, Retry-After
 * and Connection: close), wait-and-closes their schedulers (timeout NULL =
 * each scheduler's wait timeout), answers every request still held by a
 * job with 503 and Retry-After, waits (about 2 s at most) until those
 * answers and the replies jobs sent are written or their connections
 * closed, then calls cb(http, arg) from the loop.
 * Requests still queued (pending jobs) when it begins: with a zero
 * `timeout` they are answered 503 at once (the close discards them);
 * otherwise they start as slots free and run if the drain allows, and
 * those still queued when it ends get 503.
 * cb runs while the closed schedulers still exist: inside it
 * aj_evhttp_get_scheduler_from_server() returns each, so their final
 * counters (aj_scheduler_get_stats) can be read.  After cb returns the
 * adapter forgets the servers and frees the schedulers without touching
 * any server, so cb may evhttp_free(http) or aj_evhttp_free(http) (or the
 * caller may, later).  Answers still being written when the 2 s ran out (a
 * slow client, a large body) are logged as a warning, and evhttp_free()
 * cuts them.  The server's own callbacks stay as the user left them; an
 * atomic route still registered answers 503 once its records are gone.
 * Returns 0, or -1 with ENOENT (no server in the tree has a scheduler),
 * EINVAL, EALREADY (a shutdown covers part of the tree) or ENOMEM; then cb
 * is never called.
 */
AJ_EXPORT int aj_evhttp_shutdown(struct evhttp *http, const struct timeval *timeout,
                                 aj_evhttp_cb cb, void *arg);

/*
 * (Extra beyond SPEC.)  For code that must call evhttp_free() itself
 * (prefer aj_evhttp_free()): after evhttp_free(http), drops the adapter's record of `http` and its
 * registered vhosts without touching them, and frees their schedulers
 * (aj_scheduler_free: jobs still running are let go).  Requests jobs held
 * were already dropped safely by evhttp_free().  Without it the record
 * stays, and a new evhttp at the same address would be refused by
 * aj_evhttp_setup() with EEXIST.  Call it only after evhttp_free(http).
 * Returns 0, or -1 with EINVAL, ENOENT (not known) or EALREADY (a shutdown
 * covers part of the tree: wait for its callback instead).
 */
AJ_EXPORT int aj_evhttp_forget(struct evhttp *http);

#ifdef __cplusplus
}
#endif

#endif /* AJ_EVHTTP_H */
