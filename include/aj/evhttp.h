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
 * aj_scheduler_set_* calls).  The adapter owns it: aj_evhttp_shutdown()
 * frees it.  Returns NULL with EINVAL, EEXIST (http has one already) or
 * ENOMEM.
 */
AJ_EXPORT aj_scheduler *aj_evhttp_setup(struct evhttp *http, struct event_base *base);

/*
 * Adds `vhost` to `parent` exactly as evhttp_add_virtual_host() does and
 * records the relation, so that requests served by vhost resolve to its
 * scheduler, else its nearest parent's.  Returns 0, or -1 with EINVAL,
 * EEXIST (libevent refused: vhost already a vhost) or ENOMEM.
 */
AJ_EXPORT int aj_evhttp_add_virtual_host(struct evhttp *parent, const char *pattern,
                                         struct evhttp *vhost);

/*
 * The scheduler serving `req`: that of the most specific registered server
 * whose alias or pattern matches the request's host (as libevent 2.1's
 * evhttp_find_vhost chooses), else its nearest parent's.  Returns NULL with
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
 * Returns 0, or -1 with EINVAL, EEXIST (path taken) or ENOMEM.
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

typedef void (*aj_evhttp_cb)(struct evhttp *http, void *arg);

/*
 * Graceful stop of `http` and its registered vhosts: stops accepting new
 * connections, wait-and-closes their schedulers (timeout NULL = each
 * scheduler's wait timeout), answers every request still held by a job with
 * 503 and Retry-After, waits (about 2 s at most) until those answers and the
 * replies jobs sent are written or their connections closed, frees the
 * schedulers, forgets the servers, then calls cb(http, arg) from the loop.
 * After cb the caller may evhttp_free(http); answers still being written
 * when the 2 s ran out (a slow client, a large body) are logged as a
 * warning, and evhttp_free() cuts them.  The schedulers are gone by then:
 * read their final counters (aj_scheduler_get_stats) before, e.g. from a
 * done callback.
 * Returns 0, or -1 with ENOENT (no server in the tree has a scheduler),
 * EINVAL, EALREADY or ENOMEM.
 */
AJ_EXPORT int aj_evhttp_shutdown(struct evhttp *http, const struct timeval *timeout,
                                 aj_evhttp_cb cb, void *arg);

/*
 * (Extra beyond SPEC.)  For a server freed with evhttp_free() without
 * aj_evhttp_shutdown(): drops the adapter's record of `http` and its
 * registered vhosts without touching them, and frees their schedulers
 * (aj_scheduler_free: jobs still running are let go).  Requests jobs held
 * were already dropped safely by evhttp_free().  Without it the record
 * stays, and a new evhttp at the same address would be refused by
 * aj_evhttp_setup() with EEXIST.  Call it only after evhttp_free(http).
 * Returns 0, or -1 with EINVAL, ENOENT (not known) or EALREADY (a shutdown
 * is running: wait for its callback instead).
 */
AJ_EXPORT int aj_evhttp_forget(struct evhttp *http);

#ifdef __cplusplus
}
#endif

#endif /* AJ_EVHTTP_H */
