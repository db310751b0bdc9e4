/*
 * test_core.c -- SPEC sections 2 and 3, sentence by sentence: what
 * test_contract.c leaves unpinned or pins only weakly.  Same discipline:
 * real loops, a guard around aj_* calls (and around aj_job_done called by
 * a job) so that a callback run inside one fails the test (the teardown
 * checks it), each test sets up, acts, and checks real values.  The
 * harness (jobs, records, the loop) is tests/harness.h.
 *
 * COVERAGE MAP.  Each SPEC sentence or bullet of sections 2 and 3, and the
 * tests that would fail if it were false.  C: = tests/test_contract.c,
 * K: = this file, E: = tests/test_evhttp.c.  "-" marks what is not tested,
 * with the reason.
 *
 * 2 Conventions
 *  int 0 / -1+errno; pointer NULL+errno
 *      K: int_functions_fail_with_minus_one_and_einval_on_bad_arguments,
 *         spawn_and_spawn_async_fail_with_enomem_and_take_nothing
 *      C: timeouts_can_be_set_to_none_and_bad_values_fail,
 *         scheduler_new_without_base_fails_with_einval, spawn_errors_take_nothing
 *  outcomes: 0 success, ECANCELED cancelled, ETIMEDOUT timeout
 *      C: wait_gets_the_outcome_and_result, close_outcomes_zero_error_or_timeout
 *      K: close_gets_the_error_a_job_reports_from_inside_cancel
 *  timeouts are timevals; NULL = none
 *      K: timeout_values_are_copied, no_close_timeout_waits_for_a_job_past_the_default,
 *         with_no_close_timeout_a_timed_out_wait_answers_when_the_job_ends
 *      C: per_job_timeout_overrides_the_scheduler (job timeout NULL),
 *         spawn_async_admits_fifo_and_calls_back_before_start (spawn_async NULL)
 *  ... unless a function says NULL = the scheduler's default
 *      K: wait_with_no_timeout_uses_the_scheduler_wait_timeout,
 *         close_with_no_timeout_uses_the_scheduler_close_timeout,
 *         wait_and_close_with_no_timeout_uses_the_wait_timeout
 *  a limit of 0 means unlimited
 *      K: limit_zero_means_unlimited, pending_limit_zero_means_unlimited
 *  no aj_* call runs a user callback before it returns; callbacks run from
 *  the loop (every CALL()/CALLV() in both suites, and every aj_job_done a
 *  tjob makes, is guarded; these act on each call that could run one)
 *      K: scheduler_close_runs_no_callback_inside_the_call,
 *         job_close_runs_no_callback_inside_the_call,
 *         raising_the_limit_admits_spawn_async_requests_from_the_loop,
 *         raising_the_pending_limit_admits_spawn_async_requests_from_the_loop,
 *         job_done_from_outside_a_callback_defers_everything_to_the_loop,
 *         spawn_async_with_room_calls_back_from_the_loop_before_start,
 *         wait_and_close_of_an_empty_scheduler_calls_back_from_the_loop,
 *         a_zero_wait_timeout_closes_the_job_from_the_loop,
 *         a_zero_job_timeout_set_on_a_running_job_fires_from_the_loop,
 *         set_cancel_on_a_closing_job_calls_the_new_hook_from_the_loop,
 *         closing_after_the_close_completed_calls_back_from_the_loop,
 *         closing_a_finished_job_reports_what_a_close_would_have,
 *         any_number_of_waiters_are_each_called_once (wait on a finished job),
 *         a_job_let_go_finishing_before_free_is_still_released_from_the_loop
 *         (aj_job_done), free_leaves_a_referenced_finished_job_until_the_unref
 *      C: spawn_never_runs_start_inside_the_call, raising_the_limit_starts_pending_jobs,
 *         wait_on_a_finished_job_answers_from_the_loop,
 *         call_exception_handler_copies_and_runs_from_the_loop,
 *         refs_delay_release_until_the_last_unref
 *  the one exception is aj_scheduler_free()         (see 3.6 below)
 *  one log sink: aj_set_log_callback sets it, aj_log writes to it
 *      K: aj_log_formats_printf_style_to_the_sink,
 *         with_no_log_callback_each_message_is_one_line_on_stderr
 *      C: job_done_twice_is_ignored_and_logged
 *  the adapter logs through it too
 *      E: no_setup_gives_null_enoent_and_500
 *  severities are libevent's EVENT_LOG_*
 *      K: the_core_logs_through_the_sink_with_libevent_severities, and the
 *         teardown fails any test that logged another severity
 *  a scheduler belongs to one base and its thread
 *      C: new_scheduler_has_the_documented_defaults (aj_scheduler_base)
 *      K: a_job_that_left_is_neither_contained_nor_has_a_scheduler (two
 *         schedulers on one base)
 *      K: schedulers_on_two_threads_run_apart_and_number_jobs_process_wide
 *         (two threads, each with its own base and scheduler; "job-N" is
 *         process-wide)
 *  the evhttp registry is safe from several threads
 *      E: two_threads_each_with_its_own_base_and_server
 *
 * 3.1 Types
 *  start is required
 *      C: spawn_errors_take_nothing
 *      K: spawn_async_rejects_bad_arguments_and_never_calls_back
 *  start begins the work and returns; the job's callbacks finish it
 *      every tjob test; K: job_done_inside_start_delivers_outcome_and_result
 *  cancel: a job that honours it calls aj_job_done(ECANCELED) now ...
 *      C: close_outcomes_zero_error_or_timeout
 *  ... or later
 *      K: cancel_may_finish_the_job_later
 *  no cancel: cannot be interrupted, closing waits like for a stubborn job
 *      C: a_job_without_cancel_is_waited_for
 *      K: a_job_without_cancel_times_out_its_close_like_one_ignoring_it
 *  release exactly once per spawned job, last
 *      K: release_runs_once_and_after_every_other_callback (and every test
 *         counts releases)
 *
 * 3.2 Scheduler
 *  defaults: limit 100, pending limit 10000, close 0.1 s, wait 60 s
 *      C: new_scheduler_has_the_documented_defaults (getters)
 *      K: defaults_admit_100_active_and_10000_pending_then_refuse,
 *         the_default_close_timeout_gives_up_after_a_tenth_of_a_second
 *      - the 60 s wait timeout as behaviour: a test would take 60 s; the
 *        getter is checked, and that the value is used:
 *        K: wait_with_no_timeout_uses_the_scheduler_wait_timeout
 *  setters: 0 = unlimited, NULL = none           (see section 2 above)
 *  size (pending + active), active_count, pending_count
 *      C: spawn_beyond_limit_queues_fifo_and_starts_as_slots_free
 *      K: size_counts_a_job_until_it_finishes_is_discarded_or_let_go
 *  closed: close has been called
 *      C: close_discards_pending_cancels_active_and_calls_every_cb,
 *         wait_and_close_waits_for_jobs_spawned_meanwhile (0 while draining)
 *      K: free_during_wait_and_close_runs_its_callback (0 while draining)
 *  base
 *      C: new_scheduler_has_the_documented_defaults
 *      K: a_job_that_left_is_neither_contained_nor_has_a_scheduler
 *  first/next in spawn order, contains
 *      C: iteration_walks_jobs_in_spawn_order
 *      K: a_job_that_left_is_neither_contained_nor_has_a_scheduler (next and
 *         contains on a job that left or belongs to another scheduler)
 *  raising the limit starts pending jobs at once (from the loop)
 *      C: raising_the_limit_starts_pending_jobs
 *      K: raising_the_limit_admits_spawn_async_requests_from_the_loop
 *  lowering it stops nothing that runs
 *      C: lowering_the_limit_stops_nothing_that_runs
 *      K: lowering_the_limit_holds_pending_jobs_until_active_drop_below_it
 *  lowering the pending limit drops nothing already queued
 *      C: lowering_the_pending_limit_drops_nothing_queued
 *      K: lowering_the_pending_limit_keeps_queued_spawn_async_requests
 *  size counts a job until it finished, was discarded, or was let go
 *      K: size_counts_a_job_until_it_finishes_is_discarded_or_let_go
 *      C: close_timeout_reports_and_lets_go_of_stubborn_jobs
 *  a job closed before its start ran is discarded: it never starts
 *      C: closing_a_job_before_its_start_ran_means_it_never_starts
 *      K: a_spawn_async_admitted_before_a_close_gets_its_job_before_the_release
 *
 * 3.3 Spawning
 *  aj_spawn admits now: active below the limit, else pending (FIFO)
 *      C: spawn_beyond_limit_queues_fifo_and_starts_as_slots_free
 *      K: job_states_follow_aiojobs_through_a_whole_life
 *  never ahead of queued aj_spawn_async requests: EAGAIN
 *      C: spawn_async_admits_fifo_and_calls_back_before_start
 *  start runs from the loop, never inside aj_spawn
 *      C: spawn_never_runs_start_inside_the_call
 *  EINVAL, ESHUTDOWN, EAGAIN, ENOMEM; on failure nothing was taken
 *      C: spawn_errors_take_nothing, spawn_fails_eagain_when_the_pending_queue_is_full
 *      K: spawn_and_spawn_async_fail_with_enomem_and_take_nothing
 *  aj_spawn_async admits FIFO as soon as there is room, cb before start
 *      C: spawn_async_admits_fifo_and_calls_back_before_start
 *      K: spawn_async_with_room_calls_back_from_the_loop_before_start,
 *         raising_the_pending_limit_admits_spawn_async_requests_from_the_loop,
 *         lowering_the_pending_limit_keeps_queued_spawn_async_requests
 *  timeout first: ETIMEDOUT; scheduler closes first: ESHUTDOWN
 *      C: spawn_async_times_out_and_the_job_never_exists,
 *         spawn_async_waiting_when_the_scheduler_closes_gets_eshutdown
 *      K: scheduler_close_runs_no_callback_inside_the_call
 *  cb gets an error: the job never existed, the caller keeps arg
 *      C: (the two above)
 *      K: free_answers_an_admitted_spawn_async_whose_callback_has_not_run
 *  -1 (EINVAL, ESHUTDOWN, ENOMEM) only if the request was not queued
 *      K: spawn_async_rejects_bad_arguments_and_never_calls_back,
 *         spawn_and_spawn_async_fail_with_enomem_and_take_nothing
 *      C: spawn_async_waiting_when_the_scheduler_closes_gets_eshutdown
 *
 * 3.4 Jobs
 *  states pending / active (1 right after a spawn with a free slot) / closed
 *      K: job_states_follow_aiojobs_through_a_whole_life
 *      C: spawn_never_runs_start_inside_the_call
 *  a closed job may still run while its cancellation takes effect
 *      K: job_states_follow_aiojobs_through_a_whole_life,
 *         cancel_may_finish_the_job_later
 *  active_count counts slots of jobs not finished, closed or not
 *      C: close_outcomes_zero_error_or_timeout
 *      K: job_states_follow_aiojobs_through_a_whole_life,
 *         a_job_timeout_close_that_gives_up_is_reported_as_closing_timed_out
 *  aj_job_done once, from any callback, also inside start or cancel
 *      K: job_done_inside_start_delivers_outcome_and_result,
 *         close_gets_the_error_a_job_reports_from_inside_cancel
 *  result is the job's, handed to waiters and the done callback
 *      C: wait_gets_the_outcome_and_result
 *      K: job_done_inside_start_delivers_outcome_and_result,
 *         free_gives_owed_waiters_the_outcome_but_calls_no_handler_or_done_callback
 *  a second call is ignored and logged
 *      C: job_done_twice_is_ignored_and_logged
 *      K: job_done_on_a_job_that_has_not_started_is_ignored_and_logged (aj.h)
 *  wait: cb once finished, with outcome and result
 *      C: wait_gets_the_outcome_and_result
 *      K: wait_on_a_pending_job_gets_its_outcome_once_it_ran
 *  wait timeout (NULL = the wait timeout): closes, ETIMEDOUT once the close ended
 *      C: wait_timeout_closes_the_job_and_gives_etimedout
 *      K: a_wait_timeout_answers_once_the_close_that_follows_ended,
 *         with_no_close_timeout_a_timed_out_wait_answers_when_the_job_ends,
 *         a_wait_timeout_on_a_pending_job_discards_it_with_etimedout,
 *         wait_with_no_timeout_uses_the_scheduler_wait_timeout
 *  on a finished job: the recorded outcome, from the loop
 *      C: wait_on_a_finished_job_answers_from_the_loop
 *      K: any_number_of_waiters_are_each_called_once
 *  any number of waiters
 *      K: any_number_of_waiters_are_each_called_once
 *  explicit: failures never reported ...
 *      C: explicit_jobs_are_never_reported
 *  ... nor close timeouts
 *      K: close_timeouts_of_explicit_jobs_are_never_reported,
 *         an_explicit_job_whose_job_timeout_close_gives_up_is_not_reported,
 *         a_wait_timeout_answers_once_the_close_that_follows_ended
 *  close: cancels; a pending job is discarded and never starts; cb may be NULL
 *      C: close_of_a_pending_job_discards_it_and_never_exceeds_the_limit
 *      K: job_close_runs_no_callback_inside_the_call
 *  close outcome: 0 stopped, the job's error, ETIMEDOUT after the timeout
 *      C: close_outcomes_zero_error_or_timeout
 *      K: close_gets_the_error_a_job_reports_from_inside_cancel,
 *         a_job_without_cancel_times_out_its_close_like_one_ignoring_it
 *  close timeout NULL = the scheduler's close timeout
 *      K: close_with_no_timeout_uses_the_scheduler_close_timeout,
 *         the_default_close_timeout_gives_up_after_a_tenth_of_a_second
 *  closing a closed job: what a close would report (0 success/cancel, error)
 *      C: close_outcomes_zero_error_or_timeout (EIO)
 *      K: closing_a_finished_job_reports_what_a_close_would_have,
 *         closing_a_closing_job_again_calls_both_callbacks
 *  set_cancel replaces the hook of a running job (re-armed per state)
 *      C: set_cancel_replaces_the_hook
 *      K: set_cancel_on_a_closing_job_calls_the_new_hook_from_the_loop,
 *         set_cancel_null_makes_a_job_uninterruptible
 *  name: set, else ops->name, else "job-N"; never NULL
 *      C: names_are_set_ops_or_generated
 *      K: set_name_null_restores_the_default_name
 *  arg; scheduler NULL once the job left
 *      C: names_are_set_ops_or_generated
 *      K: a_job_that_left_is_neither_contained_nor_has_a_scheduler
 *  ref / unref
 *      C: refs_delay_release_until_the_last_unref
 *      K: a_let_go_job_holding_a_reference_is_released_after_the_unref,
 *         free_leaves_a_referenced_finished_job_until_the_unref
 *  lifetime: release after closed/finished/never started, every wait/close
 *  callback returned, every ref dropped
 *      K: release_runs_once_and_after_every_other_callback,
 *         closing_a_finished_job_reports_what_a_close_would_have,
 *         any_number_of_waiters_are_each_called_once
 *
 * 3.5 Failures nobody waited for
 *  the aj_error_info fields
 *      C: failure_nobody_waited_for_reaches_the_handler,
 *         debug_mode_reports_the_spawn_stack
 *  set_exception_handler(NULL) = default; exception_handler() NULL then
 *      K: a_null_exception_handler_restores_the_default
 *      C: failure_nobody_waited_for_reaches_the_handler (returns the set one)
 *  "Job processing failed": not explicit, error other than ECANCELED
 *      C: failure_nobody_waited_for_reaches_the_handler,
 *         cancelled_jobs_are_not_failures
 *      K: a_scheduler_close_reports_failures_meanwhile_before_its_callback
 *  "Job closing timed out": a close the owner did not ask for gave up ...
 *      C: close_timeout_reports_and_lets_go_of_stubborn_jobs (scheduler close)
 *      K: a_job_timeout_close_that_gives_up_is_reported_as_closing_timed_out
 *      - "or free": free never waits for a close timeout and calls no
 *        handler (3.6), so it never reports; pinned by
 *        K: nothing_of_the_scheduler_runs_after_free_returns
 *  call_exception_handler: from the loop, copies info and its strings,
 *  holds a reference on the job until then
 *      C: call_exception_handler_copies_and_runs_from_the_loop
 *      K: call_exception_handler_keeps_the_job_until_the_handler_ran,
 *         call_exception_handler_copies_the_traceback_strings,
 *         a_finished_let_go_job_named_by_a_report_dropped_by_free_is_released
 *  debug mode from AJ_DEBUG at creation; each spawn records its stack
 *      K: debug_mode_comes_from_aj_debug_when_the_scheduler_is_created,
 *         set_debug_switches_spawn_stacks_for_later_spawns,
 *         a_spawn_async_job_admitted_later_reports_where_it_was_requested
 *      C: debug_mode_reports_the_spawn_stack
 *  the default handler: one line, message, name, strerror, spawn stack
 *      C: default_handler_logs_one_line_with_name_and_strerror
 *      K: the_default_handler_line_carries_the_spawn_stack_in_debug_mode
 *  log callback NULL = one line to stderr; aj_log printf-style
 *      K: with_no_log_callback_each_message_is_one_line_on_stderr,
 *         aj_log_formats_printf_style_to_the_sink
 *
 * 3.6 Closing
 *  close: closed, spawns ESHUTDOWN, queued spawn_async requests ESHUTDOWN
 *      C: spawn_errors_take_nothing,
 *         spawn_async_waiting_when_the_scheduler_closes_gets_eshutdown
 *      K: stats_rejected_counts_queue_full_closed_and_spawn_async_timeouts
 *  discards pending jobs (never started, waiters ECANCELED)
 *      C: close_discards_pending_cancels_active_and_calls_every_cb
 *      K: scheduler_close_runs_no_callback_inside_the_call
 *  cancels active ones and waits up to the close timeout
 *      C: close_discards_pending_cancels_active_and_calls_every_cb
 *      K: no_close_timeout_waits_for_a_job_past_the_default
 *  reports each still running as "Job closing timed out", lets go of it
 *      C: close_timeout_reports_and_lets_go_of_stubborn_jobs
 *      K: close_timeouts_of_explicit_jobs_are_never_reported
 *  then calls cb (may be NULL); afterwards the size is 0
 *      C: close_discards_pending_cancels_active_and_calls_every_cb
 *      K: size_counts_a_job_until_it_finishes_is_discarded_or_let_go
 *  jobs failing meanwhile are reported (unless explicit)
 *      K: a_scheduler_close_reports_failures_meanwhile_before_its_callback
 *  waiters of a job let go get ETIMEDOUT when it is let go
 *      K: waiters_of_a_job_let_go_by_close_get_etimedout_when_let_go
 *  calling it again is harmless; every cb runs once the close completes
 *      C: close_discards_pending_cancels_active_and_calls_every_cb
 *      K: closing_after_the_close_completed_calls_back_from_the_loop,
 *         freeing_in_the_first_close_callback_still_runs_the_second_once
 *  wait_and_close: waits up to timeout (NULL = the wait timeout)
 *      C: wait_and_close_timeout_then_closes
 *      K: wait_and_close_with_no_timeout_uses_the_wait_timeout
 *  pending ones start as slots free
 *      K: wait_and_close_starts_pending_jobs_as_slots_free
 *  jobs spawned meanwhile are waited for too, then it closes
 *      C: wait_and_close_waits_for_jobs_spawned_meanwhile
 *  a job given up on keeps its memory until aj_job_done, then goes away
 *  without touching the scheduler (which may be freed)
 *      C: close_timeout_reports_and_lets_go_of_stubborn_jobs
 *      K: a_job_let_go_finishing_after_free_is_released_once_from_the_loop,
 *         a_job_let_go_finishing_before_free_is_still_released_from_the_loop,
 *         a_let_go_job_holding_a_reference_is_released_after_the_unref,
 *         wait_and_close_on_a_job_let_go_fail_with_eshutdown
 *         (checked for memory errors under ASan and valgrind)
 *  wait/close on a job let go: ESHUTDOWN (aj.h)
 *      K: wait_and_close_on_a_job_let_go_fail_with_eshutdown
 *  free: ends a close not completed at once, without waiting
 *      C: free_runs_every_owed_callback_synchronously
 *      K: free_during_wait_and_close_runs_its_callback
 *  free runs synchronously: cancel of active jobs (and owed ones, once)
 *      C: free_runs_every_owed_callback_synchronously
 *      K: free_during_wait_and_close_runs_its_callback,
 *         free_cancels_active_jobs_and_owed_cancels_but_no_job_twice
 *  queued aj_spawn_async requests get ESHUTDOWN
 *      C: free_runs_every_owed_callback_synchronously
 *      K: free_answers_an_admitted_spawn_async_whose_callback_has_not_run,
 *         nothing_of_the_scheduler_runs_after_free_returns
 *  waiters and close callbacks: ECANCELED for discarded, ESHUTDOWN let go
 *      C: free_runs_every_owed_callback_synchronously (waiters)
 *      K: free_answers_close_callbacks_of_discarded_and_let_go_jobs
 *  the cb of a close in progress runs
 *      C: free_runs_every_owed_callback_synchronously
 *      K: free_during_wait_and_close_runs_its_callback
 *  release of every finished or never started job
 *      C: free_runs_every_owed_callback_synchronously
 *      K: free_gives_owed_waiters_the_outcome_but_calls_no_handler_or_done_callback,
 *         free_leaves_a_referenced_finished_job_until_the_unref (a job still
 *         referenced waits for the unref)
 *  free calls neither the exception handler nor the done callback
 *      K: free_gives_owed_waiters_the_outcome_but_calls_no_handler_or_done_callback,
 *         nothing_of_the_scheduler_runs_after_free_returns
 *  no scheduler-level callback runs after free returns
 *      K: nothing_of_the_scheduler_runs_after_free_returns
 *  a job still running is let go; on aj_job_done its release runs from the loop
 *      C: free_runs_every_owed_callback_synchronously
 *      K: wait_and_close_on_a_job_let_go_fail_with_eshutdown
 *  free from outside callbacks or inside its own close callback
 *      C: free_from_inside_the_close_callback
 *      K: a_job_let_go_finishing_after_free_is_released_once_from_the_loop,
 *         freeing_in_the_first_close_callback_still_runs_the_second_once
 *      - free from another callback of the scheduler: a usage error, undefined
 *
 * 3.7 Beyond aiojobs
 *  stats from creation: spawned, started, succeeded, failed, cancelled
 *  (discarded jobs included), pending_peak
 *      C: stats_count_every_outcome_and_the_pending_peak
 *      K: the_stats_identity_holds_at_every_step,
 *         stats_rejected_counts_queue_full_closed_and_spawn_async_timeouts
 *  failed includes job timeouts
 *      C: job_timeout_cancels_and_reports_etimedout
 *      K: a_job_timeout_close_that_gives_up_is_reported_as_closing_timed_out
 *  close_timeouts: closes of any kind that gave up; job_timeouts
 *      K: stats_close_timeouts_count_every_kind_of_close_that_gave_up
 *      C: close_timeout_reports_and_lets_go_of_stubborn_jobs
 *  rejected: queue full, closed, spawn_async timed out
 *      K: stats_rejected_counts_queue_full_closed_and_spawn_async_timeouts
 *      C: spawn_fails_eagain_when_the_pending_queue_is_full,
 *         spawn_async_times_out_and_the_job_never_exists
 *  a let-go job counts as cancelled when let go; spawned == succeeded +
 *  failed + cancelled + size at all times
 *      K: the_stats_identity_holds_at_every_step,
 *         size_counts_a_job_until_it_finishes_is_discarded_or_let_go
 *  job timeout: the longest a job stays active, counted from its start
 *      K: the_job_timeout_counts_from_start_not_from_spawn
 *  closed as a wait timeout closes it (cancel, then the close timeout)
 *      C: job_timeout_cancels_and_reports_etimedout
 *      K: a_job_timeout_close_that_gives_up_is_reported_as_closing_timed_out
 *  outcome ETIMEDOUT for waiters; unwaited: "Job processing failed" ETIMEDOUT
 *      C: job_timeout_cancels_and_reports_etimedout
 *      K: an_explicit_job_whose_job_timeout_close_gives_up_is_not_reported,
 *         a_zero_job_timeout_set_on_a_running_job_fires_from_the_loop
 *  aj_job_set_timeout overrides, from the start or from the call
 *      C: per_job_timeout_overrides_the_scheduler
 *      K: a_job_timeout_set_on_a_started_job_counts_from_the_call,
 *         the_job_timeout_counts_from_start_not_from_spawn,
 *         stats_close_timeouts_count_every_kind_of_close_that_gave_up
 *  done callback: from the loop, once per finished job, after its waiters,
 *  with its outcome; discarded jobs ECANCELED (and not for jobs let go, aj.h)
 *      C: done_callback_runs_after_waiters_and_for_discarded_jobs
 *      K: the_done_callback_runs_once_per_finished_job_but_not_for_jobs_let_go,
 *         release_runs_once_and_after_every_other_callback
 *
 * seed/ (aiojobs' API) cases that apply beyond the above
 *  "The job is in closed state after finishing" wait() / close()
 *      K: a_job_is_closed_when_its_wait_or_close_callback_runs
 *  pending_limit 0 = infinite queue; limit disabled
 *      K: pending_limit_zero_means_unlimited, limit_zero_means_unlimited
 *  spawn suspends while the pending queue is full (aj_spawn_async)
 *      K: lowering_the_pending_limit_keeps_queued_spawn_async_requests
 *  wait on a pending job; a wait timeout on it
 *      K: wait_on_a_pending_job_gets_its_outcome_once_it_ran,
 *         a_wait_timeout_on_a_pending_job_discards_it_with_etimedout
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include <aj/aj.h>

#include "harness.h"

/* ---- this file's helpers ---- */

/* expr returns -1 and sets errno to EINVAL. */
#define EXPECT_EINVAL(expr) do { errno = 0; ck_assert_int_eq((expr), -1); \
                                 ck_assert_int_eq(errno, EINVAL); } while (0)

/* Spawns t with ops and runs one loop pass, so that its start has run. */
static aj_job *spawn_started(const struct aj_job_ops *ops, struct tjob *t)
{
    aj_job *job = aj_spawn(sched, ops, t);
    ck_assert_ptr_nonnull(job);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t->started, 1);
    return job;
}

/* Fills the scheduler -- limit 1 and pending limit 1, t[0] active, t[1]
 * pending -- and queues an aj_spawn_async request for t[2] behind them,
 * answered into r.  Returns t[0]'s job. */
static aj_job *fill_and_request(struct tjob *t, struct sreq *r)
{
    aj_job *active;
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    active = aj_spawn(sched, &tops, &t[0]);
    ck_assert_ptr_nonnull(active);
    ck_assert_ptr_nonnull(aj_spawn(sched, &tops, &t[1]));
    r->t = &t[2];
    ck_assert_int_eq(aj_spawn_async(sched, &tops, &t[2], NULL, sreq_cb, r), 0);
    return active;
}

/* Closes the scheduler with a 10 ms close timeout and runs the loop until
 * the close is complete: job, running and ignoring cancel, is let go. */
static void close_letting_go(aj_job *job)
{
    struct timeval ctv = { 0, 10000 };
    aj_scheduler_set_close_timeout(sched, &ctv);
    aj_scheduler_close(sched, NULL, NULL);
    run();
    ck_assert_ptr_null(aj_job_scheduler(job));
}

/* ================================================================== */
/* 2. Conventions                                                      */
/* ================================================================== */

START_TEST(int_functions_fail_with_minus_one_and_einval_on_bad_arguments)
{
    struct tjob t;
    struct wrec w;
    struct timeval bad_us = { 0, 1000000 }, bad_neg = { -1, 0 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    t.ms = 1;
    job = aj_spawn(sched, &tops, &t);
    EXPECT_EINVAL(aj_scheduler_set_limit(NULL, 1));
    EXPECT_EINVAL(aj_scheduler_set_pending_limit(NULL, 1));
    EXPECT_EINVAL(aj_scheduler_set_close_timeout(NULL, NULL));
    EXPECT_EINVAL(aj_scheduler_set_close_timeout(sched, &bad_neg));
    EXPECT_EINVAL(aj_scheduler_set_wait_timeout(sched, &bad_us));
    EXPECT_EINVAL(aj_scheduler_set_job_timeout(sched, &bad_neg));
    EXPECT_EINVAL(aj_scheduler_set_debug(NULL, 1));
    EXPECT_EINVAL(aj_scheduler_close(NULL, closed_cb, NULL));
    EXPECT_EINVAL(aj_scheduler_wait_and_close(NULL, NULL, closed_cb, NULL));
    EXPECT_EINVAL(aj_scheduler_wait_and_close(sched, &bad_us, closed_cb, NULL));
    EXPECT_EINVAL(aj_job_wait(NULL, NULL, wrec_cb, &w));
    EXPECT_EINVAL(aj_job_wait(job, NULL, NULL, &w));
    EXPECT_EINVAL(aj_job_wait(job, &bad_us, wrec_cb, &w));
    EXPECT_EINVAL(aj_job_close(NULL, NULL, wrec_cb, &w));
    EXPECT_EINVAL(aj_job_close(job, &bad_neg, wrec_cb, &w));
    EXPECT_EINVAL(aj_job_set_name(NULL, "x"));
    EXPECT_EINVAL(aj_job_set_timeout(NULL, NULL));
    EXPECT_EINVAL(aj_job_set_timeout(job, &bad_us));
    /* none of them took effect */
    ck_assert_uint_eq(aj_scheduler_limit(sched), 100);
    ck_assert_int_eq(aj_scheduler_close_timeout(sched)->tv_usec, 100000);
    ck_assert_int_eq(aj_scheduler_wait_timeout(sched)->tv_sec, 60);
    ck_assert_int_eq(aj_scheduler_closed(sched), 0);
    ck_assert_int_eq(aj_job_closed(job), 0);
    run();
    ck_assert_int_eq(w.calls, 0);
    ck_assert_int_eq(closed_calls, 0);
    ck_assert_int_eq(t.cancelled, 0);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(timeout_values_are_copied)
{
    struct tjob t;
    struct wrec w;
    struct timeval tv = { 0, 250000 }, wtv = { 0, 10000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, &tv), 0);
    tv.tv_usec = 7;
    ck_assert_int_eq(aj_scheduler_close_timeout(sched)->tv_usec, 250000);
    t.ms = 5000;
    job = aj_spawn(sched, &tops, &t);
    ck_assert_int_eq(aj_job_wait(job, &wtv, wrec_cb, &w), 0);
    wtv.tv_sec = 30;                    /* too late to matter */
    run();
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert_int_eq(t.cancelled, 1);
}
END_TEST

START_TEST(no_close_timeout_waits_for_a_job_past_the_default)
{
    struct tjob t;
    struct wrec c;
    struct erec e;
    double t0;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    ck_assert_int_eq(aj_scheduler_set_close_timeout(sched, NULL), 0);
    t.ms = 150;                         /* ignores cancel, ends at 150 ms */
    t.stubborn = 1;
    job = spawn_started(&tops, &t);
    t0 = now_ms();
    aj_job_close(job, NULL, wrec_cb, &c);
    aj_scheduler_close(sched, closed_cb, NULL);
    run();
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.error, 0);
    ck_assert(c.at - t0 >= 120);            /* past the 0.1 s default */
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(e.calls, 0);
    ck_assert_uint_eq(stats().close_timeouts, 0);
    ck_assert_uint_eq(stats().succeeded, 1);
}
END_TEST

START_TEST(limit_zero_means_unlimited)
{
    enum { N = 300 };
    struct tjob *t = calloc(N, sizeof *t);
    int i;
    ck_assert_int_eq(aj_scheduler_set_limit(sched, 0), 0);
    ck_assert_uint_eq(aj_scheduler_limit(sched), 0);
    for (i = 0; i < N; i++) {
        t[i].ms = 1;
        ck_assert_ptr_nonnull(aj_spawn(sched, &tops, &t[i]));
    }
    ck_assert_uint_eq(aj_scheduler_active_count(sched), N);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    for (i = 0; i < N; i++)
        ck_assert_int_eq(t[i].started, 1);      /* all in one pass */
    run();
    ck_assert_uint_eq(stats().succeeded, N);
    free(t);
}
END_TEST

/* A job that finishes in its start and counts its releases in *arg. */
static void count_start(aj_job *job, void *arg)
{
    (void)arg;
    aj_job_done(job, 0, NULL);
}
static void count_release(void *arg)
{
    (*(int *)arg)++;
}
static const struct aj_job_ops count_ops = { "count", count_start, NULL, count_release };

START_TEST(pending_limit_zero_means_unlimited)
{
    enum { N = 10050 };                 /* beyond the default 10000 */
    int released = 0, i;
    aj_scheduler_set_limit(sched, 1);
    ck_assert_int_eq(aj_scheduler_set_pending_limit(sched, 0), 0);
    ck_assert_uint_eq(aj_scheduler_pending_limit(sched), 0);
    for (i = 0; i < N; i++)
        ck_assert_ptr_nonnull(aj_spawn(sched, &count_ops, &released));
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), N - 1);
    run();
    ck_assert_int_eq(released, N);
    ck_assert_uint_eq(stats().pending_peak, N - 1);
}
END_TEST

START_TEST(defaults_admit_100_active_and_10000_pending_then_refuse)
{
    enum { N = 100 + 10000 };
    int released = 0, i;
    for (i = 0; i < N; i++)
        ck_assert_ptr_nonnull(aj_spawn(sched, &count_ops, &released));
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 100);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 10000);
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, &count_ops, &released));
    ck_assert_int_eq(errno, EAGAIN);
    run();
    ck_assert_int_eq(released, N);
}
END_TEST

/* -- no re-entrancy: each call that could run a callback defers it -- */

START_TEST(scheduler_close_runs_no_callback_inside_the_call)
{
    struct tjob t[3];
    struct wrec wa, wp;
    struct sreq r;
    aj_job *j[2];
    memset(t, 0, sizeof t);
    memset(&wa, 0, sizeof wa);
    memset(&wp, 0, sizeof wp);
    memset(&r, 0, sizeof r);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = 5000;
    t[1].ms = 5000;
    j[0] = aj_spawn(sched, &tops, &t[0]);
    j[1] = aj_spawn(sched, &tops, &t[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    r.t = &t[2];
    aj_spawn_async(sched, &tops, &t[2], NULL, sreq_cb, &r);
    aj_job_wait(j[0], NULL, wrec_cb, &wa);
    aj_job_wait(j[1], NULL, wrec_cb, &wp);
    ck_assert_int_eq(CALL(aj_scheduler_close(sched, closed_cb, NULL)), 0);
    ck_assert_int_eq(t[0].cancelled + wa.calls + wp.calls + r.calls + closed_calls, 0);
    ck_assert_int_eq(t[1].released, 0);
    run();
    ck_assert_int_eq(t[0].cancelled, 1);
    ck_assert_int_eq(wa.error, ECANCELED);
    ck_assert_int_eq(wp.error, ECANCELED);
    ck_assert_int_eq(r.error, ESHUTDOWN);
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t[0].released + t[1].released, 2);
}
END_TEST

START_TEST(job_close_runs_no_callback_inside_the_call)
{
    struct tjob t[2];
    struct wrec ca, cp, wp;
    aj_job *j[2];
    memset(t, 0, sizeof t);
    memset(&ca, 0, sizeof ca);
    memset(&cp, 0, sizeof cp);
    memset(&wp, 0, sizeof wp);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = 5000;
    t[1].ms = 5000;
    j[0] = aj_spawn(sched, &tops, &t[0]);
    j[1] = aj_spawn(sched, &tops, &t[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_wait(j[1], NULL, wrec_cb, &wp);
    ck_assert_int_eq(CALL(aj_job_close(j[1], NULL, wrec_cb, &cp)), 0);   /* pending */
    ck_assert_int_eq(CALL(aj_job_close(j[0], NULL, wrec_cb, &ca)), 0);   /* running */
    ck_assert_int_eq(t[0].cancelled + cp.calls + wp.calls + ca.calls + done_calls, 0);
    ck_assert_int_eq(t[1].released, 0);
    run();
    ck_assert_int_eq(t[0].cancelled, 1);
    ck_assert_int_eq(ca.error, 0);
    ck_assert_int_eq(cp.error, 0);
    ck_assert_int_eq(wp.error, ECANCELED);
    ck_assert_int_eq(done_calls, 2);
    ck_assert_int_eq(t[1].started, 0);
}
END_TEST

START_TEST(raising_the_limit_admits_spawn_async_requests_from_the_loop)
{
    struct tjob t[3];
    struct sreq r;
    memset(t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    t[0].ms = t[1].ms = t[2].ms = 2;
    fill_and_request(t, &r);
    ck_assert_int_eq(CALL(aj_scheduler_set_limit(sched, 2)), 0);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 2);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 1);   /* the request's job */
    ck_assert_int_eq(r.calls + t[0].started + t[1].started, 0);
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(r.started_at_cb, 0);
    ck_assert_int_eq(t[2].started, 1);
}
END_TEST

START_TEST(raising_the_pending_limit_admits_spawn_async_requests_from_the_loop)
{
    struct tjob t[3];
    struct sreq r;
    memset(t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    t[0].ms = t[1].ms = t[2].ms = 2;
    fill_and_request(t, &r);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 1);
    ck_assert_int_eq(CALL(aj_scheduler_set_pending_limit(sched, 2)), 0);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 2);
    ck_assert_int_eq(r.calls, 0);
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, 0);
    ck_assert_ptr_nonnull(r.job);
    ck_assert_int_eq(t[2].started, 1);
}
END_TEST

START_TEST(job_done_from_outside_a_callback_defers_everything_to_the_loop)
{
    struct tjob t[3];
    struct wrec w;
    struct erec e;
    aj_job *j0, *j1;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_limit(sched, 2);
    t[0].ms = t[1].ms = -1;
    t[2].ms = 1;
    j0 = aj_spawn(sched, &tops, &t[0]);
    j1 = aj_spawn(sched, &tops, &t[1]);
    aj_spawn(sched, &tops, &t[2]);      /* pending behind them */
    aj_job_wait(j0, NULL, wrec_cb, &w);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CALLV(aj_job_done(j0, EIO, NULL));  /* waited */
    CALLV(aj_job_done(j1, EIO, NULL));  /* nobody waits: reported */
    ck_assert_int_eq(w.calls + e.calls + done_calls + t[2].started, 0);
    ck_assert_int_eq(t[0].released + t[1].released, 0);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);    /* t[2] took a slot */
    run();
    ck_assert_int_eq(w.error, EIO);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(done_calls, 3);
    ck_assert_int_eq(t[2].started, 1);
    ck_assert_int_eq(t[0].released + t[1].released + t[2].released, 3);
}
END_TEST

START_TEST(spawn_async_with_room_calls_back_from_the_loop_before_start)
{
    struct tjob t;
    struct sreq r;
    memset(&t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    r.t = &t;
    t.tag = "a";
    ck_assert_int_eq(CALL(aj_spawn_async(sched, &tops, &t, NULL, sreq_cb, &r)), 0);
    ck_assert_int_eq(r.calls, 0);
    ck_assert_uint_eq(aj_scheduler_size(sched), 1);     /* admitted already */
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, 0);
    ck_assert_str_eq(trace, "spawned:0 start:a rel:a");
}
END_TEST

START_TEST(wait_and_close_of_an_empty_scheduler_calls_back_from_the_loop)
{
    ck_assert_int_eq(CALL(aj_scheduler_wait_and_close(sched, NULL, closed_cb, NULL)), 0);
    ck_assert_int_eq(closed_calls, 0);
    run();
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(aj_scheduler_closed(sched), 1);
}
END_TEST

START_TEST(a_zero_wait_timeout_closes_the_job_from_the_loop)
{
    struct tjob t;
    struct wrec w;
    struct timeval zero = { 0, 0 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    t.ms = 5000;
    job = spawn_started(&tops, &t);
    ck_assert_int_eq(CALL(aj_job_wait(job, &zero, wrec_cb, &w)), 0);
    ck_assert_int_eq(t.cancelled + w.calls, 0);
    run();
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(w.error, ETIMEDOUT);
}
END_TEST

/* -- the log sink -- */

START_TEST(aj_log_formats_printf_style_to_the_sink)
{
    CALLV(aj_log(EVENT_LOG_WARN, "%s-%d-%05.1f-%c%%", "x", 42, 3.14159, 'z'));
    ck_assert_int_eq(nlogs, 1);
    ck_assert_int_eq(last_sev, EVENT_LOG_WARN);
    ck_assert_str_eq(last_log, "x-42-003.1-z%");
    aj_log(EVENT_LOG_DEBUG, "%lu", 123456789UL);
    ck_assert_int_eq(last_sev, EVENT_LOG_DEBUG);
    ck_assert_str_eq(last_log, "123456789");
}
END_TEST

/* Captures what fn writes to fd 2. */
static size_t capture_stderr(void (*fn)(void), char *buf, size_t size)
{
    int p[2], saved;
    ssize_t n;
    size_t got = 0;
    ck_assert_int_eq(pipe(p), 0);
    fflush(stderr);
    saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(p[1], 2), 0);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(p[1]);
    while (got + 1 < size && (n = read(p[0], buf + got, size - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    close(p[0]);
    return got;
}

static void log_two_messages(void)
{
    aj_log(EVENT_LOG_ERR, "hello %d from %s", 7, "aj_log");
    aj_log(EVENT_LOG_MSG, "second");
}

START_TEST(with_no_log_callback_each_message_is_one_line_on_stderr)
{
    char buf[512];
    char *nl;
    size_t n;
    aj_set_log_callback(NULL);
    n = capture_stderr(log_two_messages, buf, sizeof buf);
    aj_set_log_callback(capture_log);
    ck_assert_int_eq(nlogs, 0);                 /* not to the old callback */
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(buf[n - 1], '\n');         /* whole lines */
    nl = strchr(buf, '\n');
    *nl = '\0';
    ck_assert_ptr_nonnull(strstr(buf, "hello 7 from aj_log"));
    ck_assert_ptr_nonnull(strstr(nl + 1, "second"));
    ck_assert_ptr_eq(strchr(nl + 1, '\n'), buf + n - 1);   /* two lines, no more */
}
END_TEST

START_TEST(the_core_logs_through_the_sink_with_libevent_severities)
{
    struct tjob t[2];
    aj_job *j;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = -1;
    j = aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_done(j, EIO, NULL);           /* default handler: a report line */
    aj_job_done(j, 0, NULL);             /* twice: a warning */
    run();
    ck_assert_int_ge(nlogs, 2);
    /* bad_severities is checked by the teardown */
}
END_TEST

/* Schedulers on two threads at once, each on its own base: a job records
 * the N of its generated "job-N" name and the thread that started it. */
enum { THREAD_JOBS = 10000 };
struct thread_run {
    unsigned long n[THREAD_JOBS];
    int started, released, wrong_thread;
    pthread_t self;
};

static void thread_start(aj_job *job, void *arg)
{
    struct thread_run *tr = arg;
    if (!pthread_equal(pthread_self(), tr->self))
        tr->wrong_thread++;
    tr->n[tr->started++] = strtoul(aj_job_name(job) + 4, NULL, 10);
    aj_job_done(job, 0, NULL);
}

static void thread_release(void *arg)
{
    struct thread_run *tr = arg;
    if (!pthread_equal(pthread_self(), tr->self))
        tr->wrong_thread++;
    tr->released++;
}

static const struct aj_job_ops thread_ops = { NULL, thread_start, NULL, thread_release };
static pthread_barrier_t thread_barrier;    /* both threads spawn at once */

static void *thread_main(void *arg)
{
    struct thread_run *tr = arg;
    struct event_base *b = event_base_new();
    aj_scheduler *s = aj_scheduler_new(b);
    int i;
    tr->self = pthread_self();
    aj_scheduler_set_limit(s, 7);
    pthread_barrier_wait(&thread_barrier);
    for (i = 0; i < THREAD_JOBS; i++)
        if (!aj_spawn(s, &thread_ops, tr))
            break;
    event_base_dispatch(b);
    aj_scheduler_free(s);
    event_base_free(b);
    return NULL;
}

static int cmp_ulong(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

START_TEST(schedulers_on_two_threads_run_apart_and_number_jobs_process_wide)
{
    static struct thread_run tr[2];
    static unsigned long all[2 * THREAD_JOBS];
    pthread_t th[2];
    int i;
    memset(tr, 0, sizeof tr);
    ck_assert_int_eq(pthread_barrier_init(&thread_barrier, NULL, 2), 0);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_main, &tr[i]), 0);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&thread_barrier);
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(tr[i].started, THREAD_JOBS);
        ck_assert_int_eq(tr[i].released, THREAD_JOBS);
        ck_assert_int_eq(tr[i].wrong_thread, 0);
        memcpy(all + i * THREAD_JOBS, tr[i].n, sizeof tr[i].n);
    }
    qsort(all, 2 * THREAD_JOBS, sizeof all[0], cmp_ulong);
    ck_assert_uint_gt(all[0], 0);                   /* counted from 1 */
    for (i = 1; i < 2 * THREAD_JOBS; i++)
        ck_assert_uint_gt(all[i], all[i - 1]);      /* no N given twice */
}
END_TEST

/* ================================================================== */
/* 3.1 Types: the job_ops contract                                     */
/* ================================================================== */

START_TEST(cancel_may_finish_the_job_later)
{
    struct tjob t;
    struct wrec c;
    struct timeval ctv = { 2, 0 };
    double t0;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    t.ms = -1;
    t.cancel_ms = 30;
    job = spawn_started(&tops, &t);
    t0 = now_ms();
    aj_job_close(job, &ctv, wrec_cb, &c);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(c.calls, 0);        /* still stopping */
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);
    run();
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.error, 0);
    ck_assert(c.at - t0 >= 25);
    ck_assert_uint_eq(stats().cancelled, 1);
    ck_assert_uint_eq(stats().close_timeouts, 0);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(a_job_without_cancel_times_out_its_close_like_one_ignoring_it)
{
    struct tjob t;
    struct wrec c;
    struct timeval ctv = { 0, 10000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    t.ms = 60;
    job = spawn_started(&tops_nocancel, &t);
    aj_job_close(job, &ctv, wrec_cb, &c);
    RUN_UNTIL(c.calls);
    ck_assert_int_eq(c.error, ETIMEDOUT);
    ck_assert_int_eq(aj_job_closed(job), 1);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);   /* still runs */
    ck_assert_int_eq(t.released, 0);
    run();
    ck_assert_int_eq(t.done_calls, 1);
    ck_assert_int_eq(t.done_error, 0);   /* it finished on its own */
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(release_runs_once_and_after_every_other_callback)
{
    struct tjob t[2];
    struct wrec w;
    struct erec e;
    aj_job *j0;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_limit(sched, 1);
    t[0].tag = "a"; t[0].ms = 1; t[0].error = EIO;
    t[1].tag = "b"; t[1].ms = 1; t[1].error = EIO;
    w.tag = "a";
    j0 = aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    aj_job_wait(j0, NULL, wrec_cb, &w);
    run();
    ck_assert_str_eq(trace, "start:a w:a done:a rel:a start:b exc:b done:b rel:b");
    ck_assert_int_eq(e.released_at_call, 0);
    run();
    ck_assert_int_eq(t[0].released, 1);
    ck_assert_int_eq(t[1].released, 1);
}
END_TEST

/* ================================================================== */
/* 3.2 Scheduler                                                       */
/* ================================================================== */

START_TEST(the_default_close_timeout_gives_up_after_a_tenth_of_a_second)
{
    struct tjob t;
    struct wrec c;
    double t0;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    t.ms = -1;
    t.stubborn = 1;
    job = spawn_started(&tops, &t);
    t0 = now_ms();
    aj_job_close(job, NULL, wrec_cb, &c);
    run();
    ck_assert_int_eq(c.error, ETIMEDOUT);
    ck_assert(c.at - t0 >= 99);
    ck_assert(c.at - t0 < 5000);
    aj_job_done(job, ECANCELED, NULL);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(lowering_the_limit_holds_pending_jobs_until_active_drop_below_it)
{
    struct tjob t[5];
    aj_job *j[5];
    int i;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 3);
    for (i = 0; i < 5; i++) {
        t[i].ms = -1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_scheduler_set_limit(sched, 1);
    aj_job_done(j[0], 0, NULL);
    run();
    ck_assert_int_eq(t[3].started, 0);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 2);
    aj_job_done(j[1], 0, NULL);
    run();
    ck_assert_int_eq(t[3].started, 0);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);
    aj_job_done(j[2], 0, NULL);
    run();
    ck_assert_int_eq(t[3].started, 1);
    ck_assert_int_eq(t[4].started, 0);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 1);
    aj_job_done(j[3], 0, NULL);
    run();
    ck_assert_int_eq(t[4].started, 1);
    aj_job_done(j[4], 0, NULL);
    run();
    ck_assert_int_eq(releases, 5);
}
END_TEST

START_TEST(lowering_the_pending_limit_keeps_queued_spawn_async_requests)
{
    struct tjob t[4];
    struct sreq r;
    aj_job *j[3];
    int i;
    memset(t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 2);
    for (i = 0; i < 3; i++) {
        t[i].ms = -1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    r.t = &t[3];
    t[3].ms = 1;
    aj_spawn_async(sched, &tops, &t[3], NULL, sreq_cb, &r);
    aj_scheduler_set_pending_limit(sched, 1);
    ck_assert_uint_eq(aj_scheduler_pending_count(sched), 2);
    run();
    ck_assert_int_eq(r.calls, 0);       /* still queued, not refused */
    aj_job_done(j[0], 0, NULL);         /* j[1] starts; 1 pending: no room yet */
    run();
    ck_assert_int_eq(r.calls, 0);
    aj_job_done(j[1], 0, NULL);         /* j[2] starts; pending empty: room */
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, 0);
    aj_job_done(j[2], 0, NULL);
    run();
    ck_assert_int_eq(t[3].released, 1);
    ck_assert_uint_eq(stats().rejected, 0);
}
END_TEST

START_TEST(size_counts_a_job_until_it_finishes_is_discarded_or_let_go)
{
    struct tjob t[3];
    struct wrec w;
    struct timeval ctv = { 0, 10000 };
    aj_job *j[3];
    int i;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_close_timeout(sched, &ctv);
    for (i = 0; i < 3; i++) {
        t[i].ms = -1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    t[2].stubborn = 1;
    ck_assert_uint_eq(aj_scheduler_size(sched), 3);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_uint_eq(aj_scheduler_size(sched), 3);    /* started: still counted */
    check_invariant();
    aj_job_close(j[1], NULL, NULL, NULL);               /* discarded */
    ck_assert_uint_eq(aj_scheduler_size(sched), 2);
    check_invariant();
    aj_job_done(j[0], 0, NULL);                         /* finished */
    ck_assert_uint_eq(aj_scheduler_size(sched), 1);
    check_invariant();
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[2].started, 1);
    aj_job_wait(j[2], NULL, wrec_cb, &w);
    aj_scheduler_close(sched, closed_cb, NULL);
    ck_assert_uint_eq(aj_scheduler_size(sched), 1);     /* closing, not let go */
    run();
    ck_assert_int_eq(w.calls, 1);
    ck_assert_uint_eq(w.size, 0);                       /* let go */
    ck_assert_uint_eq(closed_size, 0);
    check_invariant();
    aj_job_done(j[2], 0, NULL);
    run();
    ck_assert_int_eq(releases, 3);
    check_invariant();
}
END_TEST

START_TEST(a_job_that_left_is_neither_contained_nor_has_a_scheduler)
{
    struct tjob t[4];
    struct timeval ctv = { 0, 10000 };
    aj_scheduler *s2 = aj_scheduler_new(base);
    aj_job *let, *disc, *fin, *foreign;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t[0].ms = -1; t[0].stubborn = 1;
    t[1].ms = -1;
    t[2].ms = 0;
    t[3].ms = -1;
    let = aj_job_ref(aj_spawn(sched, &tops, &t[0]));
    disc = aj_job_ref(aj_spawn(sched, &tops, &t[1]));
    fin = aj_job_ref(aj_spawn(s2, &tops, &t[2]));
    foreign = aj_spawn(s2, &tops, &t[3]);
    ck_assert_ptr_eq(aj_scheduler_base(s2), base);
    ck_assert(aj_scheduler_contains(sched, disc));
    ck_assert_ptr_eq(aj_scheduler_next(sched, let), disc);
    ck_assert(!aj_scheduler_contains(sched, foreign));
    ck_assert_ptr_null(aj_scheduler_next(sched, foreign));
    ck_assert(aj_scheduler_contains(s2, foreign));

    aj_job_close(disc, NULL, NULL, NULL);
    ck_assert(!aj_scheduler_contains(sched, disc));
    ck_assert_ptr_null(aj_job_scheduler(disc));
    ck_assert_ptr_null(aj_scheduler_next(sched, disc));
    ck_assert_ptr_null(aj_scheduler_next(sched, let));  /* disc is gone */

    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[2].started, 1);
    ck_assert(!aj_scheduler_contains(s2, fin));
    ck_assert_ptr_null(aj_job_scheduler(fin));
    ck_assert_ptr_eq(aj_scheduler_first(s2), foreign);

    aj_scheduler_close(sched, NULL, NULL);
    ck_assert_ptr_eq(aj_job_scheduler(let), sched);     /* closing, still in */
    run();
    ck_assert(!aj_scheduler_contains(sched, let));
    ck_assert_ptr_null(aj_job_scheduler(let));
    ck_assert_ptr_null(aj_scheduler_first(sched));
    ck_assert_ptr_null(aj_scheduler_next(sched, let));

    aj_job_done(let, 0, NULL);
    aj_job_done(foreign, 0, NULL);
    aj_job_unref(let);
    aj_job_unref(disc);
    aj_job_unref(fin);
    run();
    ck_assert_int_eq(releases, 4);
    aj_scheduler_free(s2);
}
END_TEST

START_TEST(job_states_follow_aiojobs_through_a_whole_life)
{
    struct tjob t[2];
    struct wrec c;
    struct timeval ctv = { 5, 0 };
    aj_job *j0, *j1;
    memset(t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = -1; t[0].stubborn = 1;
    t[1].ms = -1;
    j0 = aj_job_ref(aj_spawn(sched, &tops, &t[0]));
    j1 = aj_job_ref(aj_spawn(sched, &tops, &t[1]));
    /* admitted: j0 active (start queued), j1 pending */
    ck_assert_int_eq(aj_job_active(j0), 1);
    ck_assert_int_eq(aj_job_pending(j0), 0);
    ck_assert_int_eq(aj_job_closed(j0), 0);
    ck_assert_int_eq(aj_job_active(j1), 0);
    ck_assert_int_eq(aj_job_pending(j1), 1);
    ck_assert_int_eq(aj_job_closed(j1), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[0].started, 1);
    ck_assert_int_eq(aj_job_active(j0), 1);
    /* closing: closed, no longer active, but still holds its slot */
    aj_job_close(j0, &ctv, wrec_cb, &c);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[0].cancelled, 1);
    ck_assert_int_eq(aj_job_closed(j0), 1);
    ck_assert_int_eq(aj_job_active(j0), 0);
    ck_assert_int_eq(aj_job_pending(j0), 0);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);
    ck_assert_ptr_eq(aj_job_scheduler(j0), sched);
    ck_assert_int_eq(aj_job_pending(j1), 1);            /* no slot for it yet */
    ck_assert_int_eq(t[1].started, 0);
    /* finished: the slot goes to j1 */
    aj_job_done(j0, ECANCELED, NULL);
    ck_assert_int_eq(aj_job_closed(j0), 1);
    ck_assert_int_eq(aj_job_active(j0), 0);
    ck_assert_int_eq(aj_job_active(j1), 1);
    ck_assert_int_eq(aj_job_pending(j1), 0);
    run();
    ck_assert_int_eq(c.error, 0);
    ck_assert_int_eq(t[1].started, 1);
    aj_job_done(j1, 0, NULL);
    ck_assert_int_eq(aj_job_closed(j1), 1);
    ck_assert_int_eq(aj_job_active(j1), 0);
    ck_assert_int_eq(aj_job_pending(j1), 0);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 0);
    aj_job_unref(j0);
    aj_job_unref(j1);
    run();
    ck_assert_int_eq(releases, 2);
}
END_TEST

/* ================================================================== */
/* 3.3 Spawning                                                        */
/* ================================================================== */

START_TEST(spawn_async_rejects_bad_arguments_and_never_calls_back)
{
    struct tjob t;
    struct sreq r;
    struct timeval bad = { 0, -1 };
    struct aj_job_ops nostart = { "x", NULL, NULL, tjob_release };
    memset(&t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    EXPECT_EINVAL(aj_spawn_async(NULL, &tops, &t, NULL, sreq_cb, &r));
    EXPECT_EINVAL(aj_spawn_async(sched, NULL, &t, NULL, sreq_cb, &r));
    EXPECT_EINVAL(aj_spawn_async(sched, &nostart, &t, NULL, sreq_cb, &r));
    EXPECT_EINVAL(aj_spawn_async(sched, &tops, &t, NULL, NULL, &r));
    EXPECT_EINVAL(aj_spawn_async(sched, &tops, &t, &bad, sreq_cb, &r));
    run();
    ck_assert_int_eq(r.calls, 0);
    ck_assert_int_eq(t.started + t.released, 0);
    ck_assert_uint_eq(stats().spawned, 0);
}
END_TEST

START_TEST(spawn_and_spawn_async_fail_with_enomem_and_take_nothing)
{
    struct tjob t;
    struct sreq r;
    memset(&t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    aj_set_mem_functions(mem_malloc, mem_realloc, mem_free);
    mem_refuse_all = 1;
    errno = 0;
    ck_assert_ptr_null(aj_spawn(sched, &tops, &t));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_int_eq(aj_spawn_async(sched, &tops, &t, NULL, sreq_cb, &r), -1);
    ck_assert_int_eq(errno, ENOMEM);
    mem_refuse_all = 0;
    run();
    ck_assert_int_eq(r.calls, 0);
    ck_assert_int_eq(t.started + t.released, 0);
    ck_assert_uint_eq(stats().spawned, 0);
    ck_assert_uint_eq(aj_scheduler_size(sched), 0);
    ck_assert_ptr_nonnull(aj_spawn(sched, &tops, &t));  /* and it recovers */
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(a_spawn_async_admitted_before_a_close_gets_its_job_before_the_release)
{
    struct tjob t;
    struct sreq r;
    memset(&t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    r.t = &t;
    t.tag = "a";
    aj_spawn_async(sched, &tops, &t, NULL, sreq_cb, &r);   /* admitted at once */
    aj_scheduler_close(sched, closed_cb, NULL);             /* before its cb ran */
    run();
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(t.started, 0);
    ck_assert_int_eq(t.done_error, ECANCELED);
    ck_assert_str_eq(trace, "spawned:0 done:a rel:a closed");
}
END_TEST

/* ================================================================== */
/* 3.4 Jobs                                                            */
/* ================================================================== */

START_TEST(job_done_inside_start_delivers_outcome_and_result)
{
    struct tjob t;
    struct wrec w;
    static int res;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    t.ms = 0;
    t.error = EPROTO;
    t.result = &res;
    job = aj_spawn(sched, &tops, &t);
    aj_job_wait(job, NULL, wrec_cb, &w);
    run();
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, EPROTO);
    ck_assert_ptr_eq(w.result, &res);
    ck_assert_int_eq(t.done_error, EPROTO);
    ck_assert_ptr_eq(t.done_result, &res);
    ck_assert_uint_eq(stats().failed, 1);
}
END_TEST

START_TEST(close_gets_the_error_a_job_reports_from_inside_cancel)
{
    struct tjob t[2];
    struct wrec c[2];
    aj_job *j[2];
    int i;
    memset(t, 0, sizeof t);
    memset(c, 0, sizeof c);
    t[0].cancel_error = EIO;            /* fails while stopping */
    t[1].cancel_error = 0;              /* honours it: ECANCELED */
    for (i = 0; i < 2; i++) {
        t[i].ms = -1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    for (i = 0; i < 2; i++)
        aj_job_close(j[i], NULL, wrec_cb, &c[i]);
    run();
    ck_assert_int_eq(c[0].error, EIO);
    ck_assert_int_eq(c[1].error, 0);
    ck_assert_uint_eq(stats().failed, 1);
    ck_assert_uint_eq(stats().cancelled, 1);
}
END_TEST

START_TEST(job_done_on_a_job_that_has_not_started_is_ignored_and_logged)
{
    struct tjob t[2];
    aj_job *starting, *pending;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = 1;
    t[1].ms = 1;
    starting = aj_spawn(sched, &tops, &t[0]);
    pending = aj_spawn(sched, &tops, &t[1]);
    aj_job_done(pending, EIO, NULL);
    ck_assert_int_eq(nlogs, 1);
    ck_assert_int_eq(aj_job_pending(pending), 1);
    aj_job_done(starting, EIO, NULL);    /* active, but its start has not run */
    ck_assert_int_eq(nlogs, 2);
    ck_assert_int_eq(aj_job_active(starting), 1);
    ck_assert_uint_eq(aj_scheduler_size(sched), 2);
    run();
    ck_assert_int_eq(t[0].started, 1);
    ck_assert_int_eq(t[1].started, 1);
    ck_assert_uint_eq(stats().succeeded, 2);
    ck_assert_uint_eq(stats().failed, 0);
}
END_TEST

START_TEST(any_number_of_waiters_are_each_called_once)
{
    enum { N = 70 };
    struct tjob t;
    struct wrec w[N + 3];
    static int res;
    aj_job *job;
    int i;
    memset(&t, 0, sizeof t);
    memset(w, 0, sizeof w);
    t.ms = 2;
    t.error = EIO;
    t.result = &res;
    job = aj_job_ref(aj_spawn(sched, &tops, &t));
    for (i = 0; i < N; i++)
        ck_assert_int_eq(aj_job_wait(job, NULL, wrec_cb, &w[i]), 0);
    run();
    for (i = N; i < N + 3; i++)         /* on the finished job */
        ck_assert_int_eq(CALL(aj_job_wait(job, NULL, wrec_cb, &w[i])), 0);
    run();
    for (i = 0; i < N + 3; i++) {
        ck_assert_int_eq(w[i].calls, 1);
        ck_assert_int_eq(w[i].error, EIO);
        ck_assert_ptr_eq(w[i].result, &res);
    }
    ck_assert_int_eq(t.released, 0);
    aj_job_unref(job);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

/* Waiters leave a job's list from anywhere when their own timeouts end:
 * the rest keep their order and are each answered once. */
START_TEST(waiters_timing_out_out_of_order_leave_the_rest_in_order)
{
    static const char *const tags[] = { "0", "1", "2", "3", "4", "5" };
    struct tjob t;
    struct wrec w[6];
    struct timeval tv10 = { 0, 10000 }, tv40 = { 0, 40000 }, tv60 = { 0, 60000 };
    struct timeval ctv = { 0, 5000 };
    aj_job *job;
    int i;
    memset(&t, 0, sizeof t);
    memset(w, 0, sizeof w);
    for (i = 0; i < 6; i++)
        w[i].tag = tags[i];
    aj_scheduler_set_close_timeout(sched, &ctv);
    t.ms = 200;                     /* ignores cancel: runs its 200 ms */
    job = aj_job_ref(spawn_started(&tops_nocancel, &t));
    trace[0] = '\0';
    ck_assert_int_eq(aj_job_wait(job, NULL, wrec_cb, &w[0]), 0);
    ck_assert_int_eq(aj_job_wait(job, &tv60, wrec_cb, &w[1]), 0);
    ck_assert_int_eq(aj_job_wait(job, NULL, wrec_cb, &w[2]), 0);
    ck_assert_int_eq(aj_job_wait(job, &tv10, wrec_cb, &w[3]), 0);
    ck_assert_int_eq(aj_job_close(job, &tv40, wrec_cb, &w[4]), 0);
    ck_assert_int_eq(aj_job_wait(job, NULL, wrec_cb, &w[5]), 0);
    run();
    /* 3 leaves from the middle (10 ms + the 5 ms close), the close from
     * the tail (40 ms), 1 from the middle again (60 + 5 ms); then the job
     * finishes and the rest are answered in call order. */
    ck_assert_str_eq(trace, "w:3 w:4 w:1 w:0 w:2 w:5");
    for (i = 0; i < 6; i++)
        ck_assert_int_eq(w[i].calls, 1);
    ck_assert_int_eq(w[1].error, ETIMEDOUT);
    ck_assert_int_eq(w[3].error, ETIMEDOUT);
    ck_assert_int_eq(w[4].error, ETIMEDOUT);
    ck_assert_int_eq(w[0].error, 0);
    ck_assert_int_eq(w[2].error, 0);
    ck_assert_int_eq(w[5].error, 0);
    ck_assert_int_eq(t.released, 0);
    aj_job_unref(job);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

/* Once a scheduler's jobs are waited on, new jobs come with room for their
 * first waiter (one allocation instead of two); a second waiter is
 * allocated on its own.  Nothing leaks either way. */
START_TEST(jobs_of_a_waited_on_scheduler_carry_their_first_waiter)
{
    struct tjob t[2];
    struct wrec w[3];
    aj_job *j0, *j1;
    long live;
    memset(t, 0, sizeof t);
    memset(w, 0, sizeof w);
    aj_set_mem_functions(mem_malloc, mem_realloc, mem_free);
    mem_reset(0);
    t[0].ms = 1;
    t[1].ms = 1;
    j0 = aj_spawn(sched, &tops, &t[0]);
    live = mem_live;
    ck_assert_int_eq(aj_job_wait(j0, NULL, wrec_cb, &w[0]), 0);
    ck_assert_int_eq(mem_live, live + 2);   /* a waiter of its own, and the
                                             * wait timeout's timer queue */
    j1 = aj_spawn(sched, &tops, &t[1]);
    live = mem_live;
    mem_refuse_all = 1;
    ck_assert_int_eq(aj_job_wait(j1, NULL, wrec_cb, &w[1]), 0);    /* in the job */
    errno = 0;
    ck_assert_int_eq(aj_job_wait(j1, NULL, wrec_cb, &w[2]), -1);   /* needs memory */
    ck_assert_int_eq(errno, ENOMEM);
    mem_refuse_all = 0;
    ck_assert_int_eq(mem_live, live);
    ck_assert_int_eq(aj_job_wait(j1, NULL, wrec_cb, &w[2]), 0);
    run();
    ck_assert_int_eq(w[0].calls + w[1].calls + w[2].calls, 3);
    ck_assert_int_eq(w[1].error, 0);
    ck_assert_int_eq(w[2].error, 0);
    ck_assert_int_eq(t[0].released + t[1].released, 2);
    /* Left until the free, for reuse: the timer queue, and one empty slab
     * for each job size (pool.c). */
    ck_assert_int_eq(mem_live, 3);
}
END_TEST

/* ---- job memory (pool.c) ---- */

/* Whether a released job's memory is marked unusable: testable under
 * AddressSanitizer (valgrind would report the probe itself). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISONED(p) __asan_address_is_poisoned(p)
#else
#define POISONED(p) 1
#endif

/* A scheduler of its own, made with the counting allocator installed: after
 * its free, mem_live is 0 again unless something is left. */
static aj_scheduler *counted_scheduler(void)
{
    aj_scheduler *s2;

    aj_set_mem_functions(mem_malloc, mem_realloc, mem_free);
    mem_reset(0);
    s2 = aj_scheduler_new(base);
    ck_assert_ptr_nonnull(s2);
    return s2;
}

/* A burst of jobs takes a few slabs, not an allocation each; when the jobs
 * are gone the slabs go back to the allocator, all but one spare, and the
 * spare goes with the scheduler. */
START_TEST(jobs_come_from_a_few_slabs_that_go_back_when_the_jobs_do)
{
    enum { N = 1000 };
    static struct tjob t[N];
    aj_scheduler *s2;
    long live;
    int i;

    memset(t, 0, sizeof t);
    s2 = counted_scheduler();
    ck_assert_int_eq(aj_scheduler_set_limit(s2, 0), 0);
    live = mem_live;
    for (i = 0; i < N; i++)
        ck_assert_ptr_nonnull(aj_spawn(s2, &tops, &t[i]));
    /* Slabs of 16, 32, ... 256 jobs: 8 hold 1000. */
    ck_assert_int_le(mem_live - live, 8);
    run();
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(t[i].released, 1);
        ck_assert(POISONED(t[i].job));
    }
    ck_assert_int_eq(mem_live - live, 1);
    aj_scheduler_free(s2);
    ck_assert_int_eq(mem_live, 0);
}
END_TEST

/* A job referenced past aj_scheduler_free keeps its slab, which is freed
 * with the job. */
START_TEST(a_job_outliving_its_scheduler_takes_its_slab_with_it)
{
    struct tjob t[2];
    aj_scheduler *s2;
    aj_job *job;

    memset(t, 0, sizeof t);
    s2 = counted_scheduler();
    job = aj_job_ref(aj_spawn(s2, &tops, &t[0]));
    ck_assert_ptr_nonnull(aj_spawn(s2, &tops, &t[1]));
    run();
    ck_assert_int_eq(t[0].released + t[1].released, 1);
    aj_scheduler_free(s2);
    /* The slab, for job, and the scheduler, whose run queue releases it
     * (revision 2: no event_base_once, which can fail). */
    ck_assert_int_eq(mem_live, 2);
    ck_assert_int_eq(aj_job_closed(job), 1);   /* its memory is still good */
    ck_assert_str_eq(aj_job_name(job), "tjob");
    CALLV(aj_job_unref(job));
    run();
    ck_assert_int_eq(t[0].released, 1);
    ck_assert_int_eq(mem_live, 0);
}
END_TEST

/* A spawn allocates only when its pool needs a new slab: then, without
 * memory, it fails with ENOMEM and leaves nothing behind. */
START_TEST(a_spawn_needs_memory_only_for_a_new_slab)
{
    struct tjob t[2];
    aj_scheduler *s2;
    long live;

    memset(t, 0, sizeof t);
    s2 = counted_scheduler();
    live = mem_live;
    mem_refuse_all = 1;
    errno = 0;
    ck_assert_ptr_null(aj_spawn(s2, &tops, &t[0]));
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(mem_live, live);
    mem_refuse_all = 0;
    ck_assert_ptr_nonnull(aj_spawn(s2, &tops, &t[0]));
    mem_refuse_all = 1;
    ck_assert_ptr_nonnull(aj_spawn(s2, &tops, &t[1]));     /* room in the slab */
    mem_refuse_all = 0;
    run();
    ck_assert_int_eq(t[0].released + t[1].released, 2);
    aj_scheduler_free(s2);
    ck_assert_int_eq(mem_live, 0);
}
END_TEST

/* A job that finishes inside its own start is reported right after start
 * returns (from the loop, never inside aj_job_done), before the starts that
 * were queued meanwhile: its memory is still in cache then. */
START_TEST(a_job_done_inside_start_is_reported_before_later_queued_starts)
{
    struct tjob t[2];
    struct wrec w[2];
    aj_job *j[2];
    int i;
    memset(t, 0, sizeof t);
    memset(w, 0, sizeof w);
    t[0].tag = "a";
    t[1].tag = "b";
    w[0].tag = "a";
    w[1].tag = "b";
    trace[0] = '\0';
    for (i = 0; i < 2; i++) {
        j[i] = aj_spawn(sched, &tops, &t[i]);       /* ms 0: done inside start */
        ck_assert_int_eq(aj_job_wait(j[i], NULL, wrec_cb, &w[i]), 0);
    }
    run();
    ck_assert_str_eq(trace, "start:a w:a rel:a start:b w:b rel:b");
}
END_TEST

START_TEST(a_job_is_closed_when_its_wait_or_close_callback_runs)
{
    struct tjob t[2];
    struct wrec w, c;
    aj_job *j[2];
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&c, 0, sizeof c);
    t[0].ms = 2;
    t[1].ms = 5000;
    j[0] = aj_spawn(sched, &tops, &t[0]);
    j[1] = aj_spawn(sched, &tops, &t[1]);
    aj_job_wait(j[0], NULL, wrec_cb, &w);
    aj_job_close(j[1], NULL, wrec_cb, &c);
    run();
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.closed, 1);
    ck_assert_int_eq(w.active, 0);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.closed, 1);
    ck_assert_int_eq(c.active, 0);
}
END_TEST

START_TEST(wait_on_a_pending_job_gets_its_outcome_once_it_ran)
{
    struct tjob t[2];
    struct wrec w;
    static int res;
    aj_job *j1;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = 5;
    t[1].ms = 0;
    t[1].result = &res;
    aj_spawn(sched, &tops, &t[0]);
    j1 = aj_spawn(sched, &tops, &t[1]);
    ck_assert_int_eq(aj_job_wait(j1, NULL, wrec_cb, &w), 0);
    run();
    ck_assert_int_eq(t[1].started, 1);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, 0);
    ck_assert_ptr_eq(w.result, &res);
}
END_TEST

START_TEST(a_wait_timeout_on_a_pending_job_discards_it_with_etimedout)
{
    struct tjob t[2];
    struct wrec w;
    struct timeval tv = { 0, 10000 };
    aj_job *j1;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = 60;
    t[1].ms = 1;
    aj_spawn(sched, &tops, &t[0]);
    j1 = aj_spawn(sched, &tops, &t[1]);
    aj_job_wait(j1, &tv, wrec_cb, &w);
    run();
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert_int_eq(t[1].started, 0);
    ck_assert_int_eq(t[1].released, 1);
    ck_assert_int_eq(t[0].cancelled, 0);
    ck_assert_uint_eq(stats().succeeded, 1);
    ck_assert_uint_eq(stats().cancelled, 1);
}
END_TEST

START_TEST(wait_with_no_timeout_uses_the_scheduler_wait_timeout)
{
    struct tjob t;
    struct wrec w;
    struct timeval wtv = { 0, 10000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_wait_timeout(sched, &wtv);
    t.ms = 5000;
    job = aj_spawn(sched, &tops, &t);
    aj_job_wait(job, NULL, wrec_cb, &w);
    run();
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert_int_eq(t.cancelled, 1);
}
END_TEST

START_TEST(a_wait_timeout_answers_once_the_close_that_follows_ended)
{
    struct tjob t;
    struct wrec w;
    struct erec e;
    struct timeval wtv = { 0, 10000 }, ctv = { 0, 40000 };
    double t0;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t.ms = -1;
    t.stubborn = 1;
    job = spawn_started(&tops, &t);
    t0 = now_ms();
    aj_job_wait(job, &wtv, wrec_cb, &w);
    run();
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert(w.at - t0 >= 49);
    ck_assert_uint_eq(stats().close_timeouts, 1);
    ck_assert_int_eq(e.calls, 0);            /* explicit */
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);
    aj_job_done(job, 0, NULL);
    run();
    ck_assert_int_eq(t.released, 1);
    ck_assert_int_eq(e.calls, 0);
}
END_TEST

START_TEST(with_no_close_timeout_a_timed_out_wait_answers_when_the_job_ends)
{
    struct tjob t;
    struct wrec w;
    struct timeval wtv = { 0, 10000 };
    double t0;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_close_timeout(sched, NULL);
    t.ms = 60;
    t.stubborn = 1;
    job = spawn_started(&tops, &t);
    t0 = now_ms();
    aj_job_wait(job, &wtv, wrec_cb, &w);
    run();
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert(w.at - t0 >= 40);             /* the job's end, not the 10 ms */
    ck_assert_uint_eq(stats().close_timeouts, 0);
    ck_assert_uint_eq(stats().succeeded, 1);
}
END_TEST

START_TEST(close_timeouts_of_explicit_jobs_are_never_reported)
{
    struct tjob t[3];
    struct wrec w, c;
    struct erec e;
    struct timeval ctv = { 0, 10000 }, long_tv = { 5, 0 };
    aj_job *j[3];
    int i;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&c, 0, sizeof c);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_close_timeout(sched, &ctv);
    for (i = 0; i < 3; i++) {
        t[i].ms = -1;
        t[i].stubborn = 1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    aj_job_wait(j[0], &long_tv, wrec_cb, &w);       /* explicit by wait */
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(j[1], &long_tv, wrec_cb, &c);      /* explicit by close */
    aj_scheduler_close(sched, closed_cb, NULL);
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_ptr_eq(e.job, j[2]);
    ck_assert_str_eq(e.message, "Job closing timed out");
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert_int_eq(c.error, ETIMEDOUT);
    ck_assert_uint_eq(stats().close_timeouts, 3);
    for (i = 0; i < 3; i++)
        aj_job_done(j[i], EIO, NULL);
    run();
    ck_assert_int_eq(e.calls, 1);            /* let go: their failures are not reported */
    ck_assert_int_eq(releases, 3);
}
END_TEST

START_TEST(closing_a_finished_job_reports_what_a_close_would_have)
{
    struct tjob t[4];
    struct wrec c[4];
    aj_job *j[4];
    int i;
    memset(t, 0, sizeof t);
    memset(c, 0, sizeof c);
    aj_scheduler_set_limit(sched, 1);
    t[0].error = 0;                     /* succeeded */
    t[1].error = ECANCELED;             /* cancelled itself */
    t[2].error = EIO;                   /* failed */
    for (i = 0; i < 4; i++)
        j[i] = aj_job_ref(aj_spawn(sched, &tops, &t[i]));
    aj_job_close(j[3], NULL, NULL, NULL);           /* discarded */
    run();
    ck_assert_int_eq(t[3].started, 0);
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(aj_job_closed(j[i]), 1);
        ck_assert_int_eq(CALL(aj_job_close(j[i], NULL, wrec_cb, &c[i])), 0);
        ck_assert_int_eq(c[i].calls, 0);
    }
    run();
    ck_assert_int_eq(c[0].error, 0);
    ck_assert_int_eq(c[1].error, 0);
    ck_assert_int_eq(c[2].error, EIO);
    ck_assert_int_eq(c[3].error, 0);
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(c[i].calls, 1);
        ck_assert_int_eq(t[i].released, 0);
        aj_job_unref(j[i]);
    }
    run();
    ck_assert_int_eq(releases, 4);
}
END_TEST

START_TEST(closing_a_closing_job_again_calls_both_callbacks)
{
    struct tjob t;
    struct wrec c1, c2;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    t.ms = -1;
    t.cancel_ms = 20;
    job = spawn_started(&tops, &t);
    ck_assert_int_eq(aj_job_close(job, NULL, wrec_cb, &c1), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(aj_job_closed(job), 1);
    ck_assert_int_eq(aj_job_close(job, NULL, wrec_cb, &c2), 0);
    run();
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(c1.calls, 1);
    ck_assert_int_eq(c2.calls, 1);
    ck_assert_int_eq(c1.error, 0);
    ck_assert_int_eq(c2.error, 0);
}
END_TEST

START_TEST(close_with_no_timeout_uses_the_scheduler_close_timeout)
{
    struct tjob t[2];
    struct wrec c[2];
    struct timeval ctv = { 0, 300000 };     /* longer than the 0.1 s default */
    double t0;
    aj_job *j[2];
    int i;
    memset(t, 0, sizeof t);
    memset(c, 0, sizeof c);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t[0].ms = 150;                          /* ignores cancel, ends in time */
    t[1].ms = -1;                           /* ignores cancel, never ends */
    for (i = 0; i < 2; i++) {
        t[i].stubborn = 1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    t0 = now_ms();
    for (i = 0; i < 2; i++)
        aj_job_close(j[i], NULL, wrec_cb, &c[i]);
    run();
    ck_assert_int_eq(c[0].error, 0);
    ck_assert_int_eq(c[1].error, ETIMEDOUT);
    ck_assert(c[1].at - t0 >= 299);
    ck_assert_uint_eq(stats().close_timeouts, 1);
    aj_job_done(j[1], ECANCELED, NULL);
    run();
    ck_assert_int_eq(releases, 2);
}
END_TEST

START_TEST(set_cancel_on_a_closing_job_calls_the_new_hook_from_the_loop)
{
    struct tjob t;
    struct wrec c;
    struct timeval ctv = { 5, 0 };
    int n = 0;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    t.ms = -1;
    t.stubborn = 1;                     /* this state ignores cancel */
    job = spawn_started(&tops, &t);
    aj_job_close(job, &ctv, wrec_cb, &c);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t.cancelled, 1);
    CALLV(aj_job_set_cancel(job, other_cancel, &n));    /* the next state */
    ck_assert_int_eq(n, 0);
    run();
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.error, 0);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(set_cancel_null_makes_a_job_uninterruptible)
{
    struct tjob t;
    struct wrec c;
    struct timeval ctv = { 0, 10000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    t.ms = 60;
    job = spawn_started(&tops, &t);
    aj_job_set_cancel(job, NULL, NULL);
    aj_job_close(job, &ctv, wrec_cb, &c);
    run();
    ck_assert_int_eq(t.cancelled, 0);
    ck_assert_int_eq(c.error, ETIMEDOUT);
    ck_assert_int_eq(t.released, 1);     /* finished on its own at 60 ms */
}
END_TEST

START_TEST(set_name_null_restores_the_default_name)
{
    struct tjob t[2];
    aj_job *a, *b;
    char gen[32];
    memset(t, 0, sizeof t);
    a = aj_spawn(sched, &tops, &t[0]);
    b = aj_spawn(sched, &tops_noname, &t[1]);
    snprintf(gen, sizeof gen, "%s", aj_job_name(b));
    ck_assert_int_eq(aj_job_set_name(a, "custom"), 0);
    ck_assert_int_eq(aj_job_set_name(b, "custom"), 0);
    ck_assert_str_eq(aj_job_name(b), "custom");
    ck_assert_int_eq(aj_job_set_name(a, NULL), 0);
    ck_assert_int_eq(aj_job_set_name(b, NULL), 0);
    ck_assert_str_eq(aj_job_name(a), "tjob");
    ck_assert_str_eq(aj_job_name(b), gen);
    run();
}
END_TEST

START_TEST(wait_and_close_on_a_job_let_go_fail_with_eshutdown)
{
    struct tjob t[2];
    struct wrec w;
    struct timeval ctv = { 0, 10000 };
    aj_scheduler *s2 = aj_scheduler_new(base);
    aj_job *byclose, *byfree;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t[0].ms = -1; t[0].stubborn = 1;
    t[1].ms = -1; t[1].stubborn = 1;
    byclose = aj_spawn(sched, &tops, &t[0]);
    byfree = aj_spawn(s2, &tops, &t[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_scheduler_close(sched, NULL, NULL);
    run();
    aj_scheduler_free(s2);
    errno = 0;
    ck_assert_int_eq(aj_job_wait(byclose, NULL, wrec_cb, &w), -1);
    ck_assert_int_eq(errno, ESHUTDOWN);
    errno = 0;
    ck_assert_int_eq(aj_job_close(byclose, NULL, wrec_cb, &w), -1);
    ck_assert_int_eq(errno, ESHUTDOWN);
    errno = 0;
    ck_assert_int_eq(aj_job_wait(byfree, NULL, wrec_cb, &w), -1);
    ck_assert_int_eq(errno, ESHUTDOWN);
    errno = 0;
    ck_assert_int_eq(aj_job_close(byfree, NULL, NULL, NULL), -1);
    ck_assert_int_eq(errno, ESHUTDOWN);
    /* a let-go job keeps its memory: its accessors still work */
    ck_assert_str_eq(aj_job_name(byclose), "tjob");
    ck_assert_ptr_eq(aj_job_arg(byfree), &t[1]);
    aj_job_done(byclose, 0, NULL);
    aj_job_done(byfree, 0, NULL);
    run();
    ck_assert_int_eq(w.calls, 0);
    ck_assert_int_eq(releases, 2);
}
END_TEST

/* ================================================================== */
/* 3.5 Failures nobody waited for                                      */
/* ================================================================== */

START_TEST(a_null_exception_handler_restores_the_default)
{
    struct tjob t;
    struct erec e;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_exception_handler(sched, NULL, &e);
    ck_assert_ptr_null((void *)aj_scheduler_exception_handler(sched));
    t.error = EIO;
    aj_spawn(sched, &tops, &t);
    run();
    ck_assert_int_eq(e.calls, 0);
    ck_assert_int_eq(nlogs, 1);
    ck_assert_ptr_nonnull(strstr(last_log, "Job processing failed"));
    ck_assert_ptr_nonnull(strstr(last_log, strerror(EIO)));
}
END_TEST

START_TEST(the_default_handler_line_carries_the_spawn_stack_in_debug_mode)
{
    struct tjob t[2];
    char plain[1024];
    memset(t, 0, sizeof t);
    t[0].error = EIO;
    aj_spawn(sched, &tops, &t[0]);
    run();
    snprintf(plain, sizeof plain, "%s", last_log);
    ck_assert_int_eq(aj_scheduler_set_debug(sched, 1), 0);
    t[1].error = EIO;
    aj_spawn(sched, &tops, &t[1]);
    run();
    ck_assert_ptr_null(strstr(plain, "aj_spawn"));
    ck_assert_ptr_nonnull(strstr(last_log, "Job processing failed"));
    ck_assert_ptr_nonnull(strstr(last_log, "aj_spawn"));
    ck_assert_ptr_null(strchr(last_log, '\n'));
}
END_TEST

/* A job that finishes in its start and then reports itself. */
static void self_report_start(aj_job *job, void *arg)
{
    struct aj_error_info info;
    (void)arg;
    aj_job_done(job, 0, NULL);
    memset(&info, 0, sizeof info);
    info.message = "self";
    info.job = job;
    info.error = EPIPE;
    aj_scheduler_call_exception_handler(sched, &info);
}
static const struct aj_job_ops self_report_ops = { "self", self_report_start, NULL, tjob_release };

START_TEST(call_exception_handler_keeps_the_job_until_the_handler_ran)
{
    struct tjob t;
    struct erec e;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    t.tag = "j";
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_spawn(sched, &self_report_ops, &t);
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.message, "self");
    ck_assert_int_eq(e.error, EPIPE);
    ck_assert_int_eq(e.released_at_call, 0);
    ck_assert_str_eq(trace, "exc:j rel:j");
}
END_TEST

START_TEST(call_exception_handler_copies_the_traceback_strings)
{
    struct erec e;
    struct aj_error_info info;
    char f0[16], f1[16];
    const char *frames[2];
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    strcpy(f0, "frame-zero");
    strcpy(f1, "frame-one");
    frames[0] = f0;
    frames[1] = f1;
    memset(&info, 0, sizeof info);
    info.message = "m";
    info.error = EIO;
    info.source_traceback = frames;
    info.source_traceback_len = 2;
    aj_scheduler_call_exception_handler(sched, &info);
    strcpy(f0, "XXXX");
    frames[1] = "changed";
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_uint_eq(e.tb_len, 2);
    ck_assert_str_eq(e.tb[0], "frame-zero");
    ck_assert_str_eq(e.tb[1], "frame-one");
    ck_assert_ptr_null(e.job);
}
END_TEST

START_TEST(debug_mode_comes_from_aj_debug_when_the_scheduler_is_created)
{
    const char *vals[5] = { NULL, "0", "yes", "", NULL };
    aj_scheduler *s[5];
    struct tjob t[5];
    struct erec e[5];
    int i;
    memset(t, 0, sizeof t);
    memset(e, 0, sizeof e);
    for (i = 0; i < 5; i++) {
        if (vals[i])
            setenv("AJ_DEBUG", vals[i], 1);
        else
            unsetenv("AJ_DEBUG");
        s[i] = aj_scheduler_new(base);
        aj_scheduler_set_exception_handler(s[i], erec_cb, &e[i]);
    }
    setenv("AJ_DEBUG", "1", 1);         /* too late for all of them */
    for (i = 0; i < 5; i++) {
        t[i].error = EIO;
        aj_spawn(s[i], &tops, &t[i]);
    }
    run();
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(e[i].calls, 1);
    ck_assert_uint_eq(e[0].tb_len, 0);  /* unset */
    ck_assert_uint_eq(e[1].tb_len, 0);  /* "0" */
    ck_assert_uint_gt(e[2].tb_len, 0);  /* set, not "0" */
    ck_assert_uint_gt(e[3].tb_len, 0);  /* set to "": set, not "0" */
    ck_assert_uint_eq(e[4].tb_len, 0);  /* set only after creation */
    for (i = 0; i < 5; i++)
        aj_scheduler_free(s[i]);
}
END_TEST

START_TEST(set_debug_switches_spawn_stacks_for_later_spawns)
{
    struct tjob t[2];
    struct erec e;
    memset(t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    ck_assert_int_eq(aj_scheduler_set_debug(sched, 1), 0);
    t[0].error = EIO;
    aj_spawn(sched, &tops, &t[0]);
    run();
    ck_assert_uint_gt(e.tb_len, 0);
    ck_assert_int_eq(aj_scheduler_set_debug(sched, 0), 0);
    t[1].error = EIO;
    aj_spawn(sched, &tops, &t[1]);
    run();
    ck_assert_int_eq(e.calls, 2);
    ck_assert_uint_eq(e.tb_len, 0);
}
END_TEST

/* Records whether a report's spawn stack names aj_spawn_async, and whether
 * it names aj_job_done (the call that happened to make room). */
struct tbrec {
    int calls, names_spawn_async, names_job_done;
};

static void tbrec_cb(aj_scheduler *s, const struct aj_error_info *info, void *arg)
{
    struct tbrec *r = arg;
    size_t i;
    (void)s;
    CB_ENTER();
    r->calls++;
    for (i = 0; i < info->source_traceback_len; i++) {
        if (strstr(info->source_traceback[i], "aj_spawn_async"))
            r->names_spawn_async = 1;
        if (strstr(info->source_traceback[i], "aj_job_done"))
            r->names_job_done = 1;
    }
}

START_TEST(a_spawn_async_job_admitted_later_reports_where_it_was_requested)
{
    struct tjob t[3];
    struct sreq r;
    struct tbrec tb;
    aj_job *j0;
    memset(t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    memset(&tb, 0, sizeof tb);
    aj_scheduler_set_debug(sched, 1);
    aj_scheduler_set_exception_handler(sched, tbrec_cb, &tb);
    t[0].ms = -1;
    t[1].ms = 1;
    t[2].ms = 1;
    t[2].error = EIO;
    j0 = fill_and_request(t, &r);       /* the request waits */
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(r.calls, 0);
    aj_job_done(j0, 0, NULL);           /* makes room: the request is admitted */
    run();
    ck_assert_int_eq(r.error, 0);
    ck_assert_int_eq(tb.calls, 1);
    ck_assert_int_eq(tb.names_spawn_async, 1);
    ck_assert_int_eq(tb.names_job_done, 0);
}
END_TEST

START_TEST(a_job_timeout_close_that_gives_up_is_reported_as_closing_timed_out)
{
    struct tjob t;
    struct erec e;
    struct timeval jtv = { 0, 10000 }, ctv = { 0, 10000 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_job_timeout(sched, &jtv);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t.ms = -1;
    t.stubborn = 1;
    job = aj_spawn(sched, &tops, &t);
    run();
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.messages[0], "Job closing timed out");
    ck_assert_int_eq(e.errors[0], ETIMEDOUT);
    ck_assert_uint_eq(aj_scheduler_active_count(sched), 1);    /* keeps its slot */
    aj_job_done(job, 0, NULL);
    run();
    ck_assert_int_eq(e.calls, 2);
    ck_assert_str_eq(e.messages[1], "Job processing failed");
    ck_assert_int_eq(e.errors[1], ETIMEDOUT);
    ck_assert_uint_eq(stats().job_timeouts, 1);
    ck_assert_uint_eq(stats().close_timeouts, 1);
    ck_assert_uint_eq(stats().failed, 1);
}
END_TEST

START_TEST(an_explicit_job_whose_job_timeout_close_gives_up_is_not_reported)
{
    struct tjob t;
    struct erec e;
    struct wrec w;
    struct timeval jtv = { 0, 10000 }, ctv = { 0, 10000 }, wtv = { 5, 0 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t.ms = -1;
    t.stubborn = 1;
    job = aj_spawn(sched, &tops, &t);
    aj_job_set_timeout(job, &jtv);
    aj_job_wait(job, &wtv, wrec_cb, &w);
    RUN_UNTIL(stats().close_timeouts == 1);
    aj_job_done(job, 0, NULL);
    run();
    ck_assert_int_eq(e.calls, 0);
    ck_assert_int_eq(w.error, ETIMEDOUT);
}
END_TEST

START_TEST(a_scheduler_close_reports_failures_meanwhile_before_its_callback)
{
    struct tjob t[2];
    struct erec e;
    struct wrec w;
    aj_job *j1;
    memset(t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    t[0].tag = "a"; t[0].ms = -1; t[0].cancel_error = EIO;
    t[1].tag = "b"; t[1].ms = -1; t[1].cancel_error = EIO;
    aj_spawn(sched, &tops, &t[0]);
    j1 = aj_spawn(sched, &tops, &t[1]);
    aj_job_wait(j1, NULL, wrec_cb, &w);     /* explicit: not reported */
    event_base_loop(base, EVLOOP_NONBLOCK);
    trace[0] = '\0';
    aj_scheduler_close(sched, closed_cb, NULL);
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.message, "Job processing failed");
    ck_assert_int_eq(e.error, EIO);
    ck_assert_int_eq(w.error, EIO);
    ck_assert_str_eq(trace, "cancel:a cancel:b exc:a rel:a rel:b closed");
}
END_TEST

/* ================================================================== */
/* 3.6 Closing                                                         */
/* ================================================================== */

START_TEST(waiters_of_a_job_let_go_by_close_get_etimedout_when_let_go)
{
    struct tjob t;
    struct wrec w, c;
    struct timeval ctv = { 0, 10000 }, long_tv = { 5, 0 };
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&c, 0, sizeof c);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t.ms = -1;
    t.stubborn = 1;
    w.tag = "w";
    c.tag = "c";
    job = aj_spawn(sched, &tops, &t);
    aj_job_wait(job, &long_tv, wrec_cb, &w);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(job, &long_tv, wrec_cb, &c);
    aj_scheduler_close(sched, closed_cb, NULL);
    run();
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert_int_eq(c.error, ETIMEDOUT);
    ck_assert_uint_eq(w.size, 0);
    ck_assert_str_eq(trace, "w:w w:c closed");
    ck_assert_int_eq(t.released, 0);
    aj_job_done(job, 0, NULL);
    run();
    ck_assert_int_eq(t.released, 1);
    ck_assert_int_eq(w.calls + c.calls, 2);
}
END_TEST

START_TEST(closing_after_the_close_completed_calls_back_from_the_loop)
{
    aj_scheduler_close(sched, closed_cb, NULL);
    run();
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(CALL(aj_scheduler_close(sched, closed_cb, NULL)), 0);
    ck_assert_int_eq(closed_calls, 1);
    run();
    ck_assert_int_eq(closed_calls, 2);
    ck_assert_int_eq(CALL(aj_scheduler_wait_and_close(sched, NULL, closed_cb, NULL)), 0);
    ck_assert_int_eq(closed_calls, 2);
    run();
    ck_assert_int_eq(closed_calls, 3);
    ck_assert_int_eq(aj_scheduler_closed(sched), 1);
}
END_TEST

START_TEST(wait_and_close_starts_pending_jobs_as_slots_free)
{
    struct tjob t[4];
    int i;
    memset(t, 0, sizeof t);
    aj_scheduler_set_limit(sched, 1);
    for (i = 0; i < 4; i++) {
        t[i].ms = 3;
        aj_spawn(sched, &tops, &t[i]);
    }
    aj_scheduler_wait_and_close(sched, NULL, closed_cb, NULL);
    run();
    ck_assert_int_eq(closed_calls, 1);
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(t[i].started, 1);
        ck_assert_int_eq(t[i].cancelled, 0);
    }
    ck_assert_uint_eq(stats().succeeded, 4);
    ck_assert_uint_eq(stats().pending_peak, 3);
}
END_TEST

START_TEST(wait_and_close_with_no_timeout_uses_the_wait_timeout)
{
    struct tjob t;
    struct timeval wtv = { 0, 10000 };
    memset(&t, 0, sizeof t);
    aj_scheduler_set_wait_timeout(sched, &wtv);
    t.ms = 5000;
    aj_spawn(sched, &tops, &t);
    aj_scheduler_wait_and_close(sched, NULL, closed_cb, NULL);
    run();
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(a_job_let_go_finishing_after_free_is_released_once_from_the_loop)
{
    struct tjob t;
    struct timeval ctv = { 0, 10000 };
    memset(&t, 0, sizeof t);
    aj_scheduler_set_close_timeout(sched, &ctv);
    t.ms = 40;                          /* ignores cancel, ends at 40 ms */
    t.stubborn = 1;
    spawn_started(&tops, &t);
    aj_scheduler_close(sched, free_in_close_cb, NULL);   /* the usual pattern */
    run();                              /* tjob_fire checks it is not released inside done */
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t.released, 1);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(a_job_let_go_finishing_before_free_is_still_released_from_the_loop)
{
    struct tjob t;
    aj_job *job;
    memset(&t, 0, sizeof t);
    t.ms = -1;
    t.stubborn = 1;
    job = spawn_started(&tops, &t);
    close_letting_go(job);
    CALLV(aj_job_done(job, 0, NULL));
    ck_assert_int_eq(t.released, 0);
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(t.released, 0);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(a_let_go_job_holding_a_reference_is_released_after_the_unref)
{
    struct tjob t;
    aj_job *job;
    memset(&t, 0, sizeof t);
    t.ms = -1;
    t.stubborn = 1;
    job = aj_job_ref(spawn_started(&tops, &t));
    close_letting_go(job);
    aj_job_done(job, 0, NULL);
    aj_scheduler_free(sched);
    sched = NULL;
    run();
    ck_assert_int_eq(t.released, 0);
    CALLV(aj_job_unref(job));
    ck_assert_int_eq(t.released, 0);
    run();
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(a_finished_let_go_job_named_by_a_report_dropped_by_free_is_released)
{
    struct tjob t;
    struct erec e;
    struct aj_error_info info;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    t.ms = -1;
    t.stubborn = 1;
    job = spawn_started(&tops, &t);
    close_letting_go(job);
    ck_assert_int_eq(e.calls, 1);
    memset(&info, 0, sizeof info);
    info.message = "late";
    info.job = job;
    aj_scheduler_call_exception_handler(sched, &info);  /* holds a reference */
    aj_job_done(job, 0, NULL);
    aj_scheduler_free(sched);               /* drops the report, not the job */
    sched = NULL;
    run();
    ck_assert_int_eq(e.calls, 1);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(free_leaves_a_referenced_finished_job_until_the_unref)
{
    struct tjob t;
    struct wrec w;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    job = aj_job_ref(aj_spawn(sched, &tops, &t));
    aj_job_wait(job, NULL, wrec_cb, &w);
    run();
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(t.released, 0);
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(t.released, 0);        /* the reference holds it */
    ck_assert_str_eq(aj_job_name(job), "tjob");
    run();
    ck_assert_int_eq(t.released, 0);
    CALLV(aj_job_unref(job));
    ck_assert_int_eq(t.released, 0);        /* from the loop */
    run();
    ck_assert_int_eq(t.released, 1);
    ck_assert_int_eq(w.calls, 1);
}
END_TEST

START_TEST(free_cancels_active_jobs_and_owed_cancels_but_no_job_twice)
{
    struct tjob t[3];
    struct wrec c[2];
    struct timeval long_tv = { 5, 0 };
    aj_job *j[3];
    int i;
    memset(t, 0, sizeof t);
    memset(c, 0, sizeof c);
    for (i = 0; i < 3; i++) {
        t[i].ms = -1;
        t[i].stubborn = 1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(j[0], &long_tv, wrec_cb, &c[0]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t[0].cancelled, 1);    /* asked, and it ignored it */
    aj_job_close(j[1], &long_tv, wrec_cb, &c[1]);   /* its cancel is owed */
    ck_assert_int_eq(t[1].cancelled, 0);
    aj_scheduler_free(sched);               /* j[2] is active */
    sched = NULL;
    ck_assert_int_eq(t[0].cancelled, 1);    /* not asked again */
    ck_assert_int_eq(t[1].cancelled, 1);
    ck_assert_int_eq(t[2].cancelled, 1);
    ck_assert_int_eq(c[0].error, ESHUTDOWN);
    ck_assert_int_eq(c[1].error, ESHUTDOWN);
    for (i = 0; i < 3; i++)
        aj_job_done(j[i], 0, NULL);
    run();
    ck_assert_int_eq(releases, 3);
}
END_TEST

START_TEST(free_answers_close_callbacks_of_discarded_and_let_go_jobs)
{
    struct tjob t[2];
    struct wrec cd, cl;
    struct timeval long_tv = { 5, 0 };
    aj_job *j[2];
    memset(t, 0, sizeof t);
    memset(&cd, 0, sizeof cd);
    memset(&cl, 0, sizeof cl);
    aj_scheduler_set_limit(sched, 1);
    t[0].ms = -1; t[0].stubborn = 1;
    t[1].ms = -1;
    j[0] = aj_spawn(sched, &tops, &t[0]);
    j[1] = aj_spawn(sched, &tops, &t[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(j[1], NULL, wrec_cb, &cd);         /* discarded, cb owed */
    aj_job_close(j[0], &long_tv, wrec_cb, &cl);     /* stubborn: let go */
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(cd.calls, 1);
    ck_assert_int_eq(cd.error, ECANCELED);
    ck_assert_int_eq(cl.calls, 1);
    ck_assert_int_eq(cl.error, ESHUTDOWN);
    ck_assert_int_eq(t[1].released, 1);
    ck_assert_int_eq(t[0].released, 0);
    aj_job_done(j[0], 0, NULL);
    run();
    ck_assert_int_eq(t[0].released, 1);
    ck_assert_int_eq(cl.calls, 1);
}
END_TEST

START_TEST(free_gives_owed_waiters_the_outcome_but_calls_no_handler_or_done_callback)
{
    struct tjob t[2];
    struct wrec w;
    struct erec e;
    static int res;
    aj_job *j[2];
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    t[0].ms = t[1].ms = -1;
    j[0] = aj_spawn(sched, &tops, &t[0]);
    j[1] = aj_spawn(sched, &tops, &t[1]);
    aj_job_wait(j[0], NULL, wrec_cb, &w);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_done(j[0], EIO, &res);       /* reports owed, not yet run */
    aj_job_done(j[1], EIO, NULL);       /* would be reported */
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.error, EIO);
    ck_assert_ptr_eq(w.result, &res);
    ck_assert_int_eq(e.calls, 0);
    ck_assert_int_eq(done_calls, 0);
    ck_assert_int_eq(t[0].released + t[1].released, 2);
    run();
    ck_assert_int_eq(e.calls + done_calls, 0);
}
END_TEST

START_TEST(nothing_of_the_scheduler_runs_after_free_returns)
{
    struct tjob t[3];
    struct wrec w;
    struct erec e;
    struct sreq r;
    struct aj_error_info info;
    char snap[sizeof trace];
    aj_job *j0;
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    memset(&e, 0, sizeof e);
    memset(&r, 0, sizeof r);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = -1; t[0].tag = "a"; t[0].error = EIO;
    t[1].ms = -1; t[1].tag = "b";
    j0 = aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    r.t = &t[2];
    aj_spawn_async(sched, &tops, &t[2], NULL, sreq_cb, &r);
    memset(&info, 0, sizeof info);
    info.message = "queued";
    info.job = j0;
    aj_scheduler_call_exception_handler(sched, &info);
    aj_job_wait(j0, NULL, wrec_cb, &w);
    aj_scheduler_close(sched, closed_cb, NULL);
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, ESHUTDOWN);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(t[0].released + t[1].released, 2);
    snprintf(snap, sizeof snap, "%s", trace);
    run();
    ck_assert_str_eq(trace, snap);
    ck_assert_int_eq(e.calls + done_calls, 0);
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(t[2].started + t[2].released, 0);
}
END_TEST

START_TEST(freeing_in_the_first_close_callback_still_runs_the_second_once)
{
    struct tjob t;
    memset(&t, 0, sizeof t);
    t.ms = 2;
    aj_spawn(sched, &tops, &t);
    aj_scheduler_close(sched, free_in_close_cb, NULL);
    aj_scheduler_close(sched, closed_cb, NULL);
    run();
    ck_assert_ptr_null(sched);
    ck_assert_int_eq(closed_calls, 2);
    ck_assert_str_eq(trace, "closed closed");
    ck_assert_int_eq(t.released, 1);
}
END_TEST

START_TEST(free_answers_an_admitted_spawn_async_whose_callback_has_not_run)
{
    struct tjob t;
    struct sreq r;
    memset(&t, 0, sizeof t);
    memset(&r, 0, sizeof r);
    r.t = &t;
    ck_assert_int_eq(aj_spawn_async(sched, &tops, &t, NULL, sreq_cb, &r), 0);
    ck_assert_uint_eq(aj_scheduler_size(sched), 1);
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.error, ESHUTDOWN);
    ck_assert_ptr_null(r.job);
    run();
    ck_assert_int_eq(t.started + t.released, 0);     /* the caller keeps arg */
}
END_TEST

START_TEST(free_during_wait_and_close_runs_its_callback)
{
    struct tjob t;
    memset(&t, 0, sizeof t);
    t.ms = -1;
    spawn_started(&tops, &t);
    aj_scheduler_wait_and_close(sched, NULL, closed_cb, NULL);
    event_base_loop(base, EVLOOP_NONBLOCK);     /* draining: 60 s to go */
    ck_assert_int_eq(closed_calls, 0);
    ck_assert_int_eq(aj_scheduler_closed(sched), 0);
    aj_scheduler_free(sched);
    sched = NULL;
    ck_assert_int_eq(closed_calls, 1);
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(t.released, 1);
}
END_TEST

/* ================================================================== */
/* 3.7 Beyond aiojobs                                                  */
/* ================================================================== */

START_TEST(stats_rejected_counts_queue_full_closed_and_spawn_async_timeouts)
{
    struct tjob t[6];
    struct sreq r1, r2, r3;
    struct timeval tv = { 0, 10000 };
    memset(t, 0, sizeof t);
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    memset(&r3, 0, sizeof r3);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_pending_limit(sched, 1);
    t[0].ms = 5000;
    t[1].ms = 5000;
    aj_spawn(sched, &tops, &t[0]);
    aj_spawn(sched, &tops, &t[1]);
    ck_assert_ptr_null(aj_spawn(sched, &tops, &t[2]));             /* full: 1 */
    ck_assert_uint_eq(stats().rejected, 1);
    aj_spawn_async(sched, &tops, &t[3], &tv, sreq_cb, &r1);
    RUN_UNTIL(r1.calls);
    ck_assert_int_eq(r1.error, ETIMEDOUT);                          /* timed out: 2 */
    ck_assert_uint_eq(stats().rejected, 2);
    aj_spawn_async(sched, &tops, &t[4], NULL, sreq_cb, &r2);
    aj_scheduler_close(sched, NULL, NULL);                          /* queued, closed: 3 */
    ck_assert_ptr_null(aj_spawn(sched, &tops, &t[5]));             /* closed: 4 */
    ck_assert_int_eq(aj_spawn_async(sched, &tops, &t[5], NULL, sreq_cb, &r3), -1);  /* 5 */
    run();
    ck_assert_int_eq(r2.error, ESHUTDOWN);
    ck_assert_int_eq(r3.calls, 0);
    ck_assert_uint_eq(stats().rejected, 5);
    ck_assert_uint_eq(stats().spawned, 2);
    ck_assert_uint_eq(stats().started, 1);
}
END_TEST

START_TEST(stats_close_timeouts_count_every_kind_of_close_that_gave_up)
{
    struct tjob t[4];
    struct wrec c, w;
    struct erec e;
    struct timeval ctv = { 0, 10000 };
    aj_job *j[4];
    int i;
    memset(t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    memset(&w, 0, sizeof w);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    aj_scheduler_set_close_timeout(sched, &ctv);
    for (i = 0; i < 4; i++) {
        t[i].ms = -1;
        t[i].stubborn = 1;
        j[i] = aj_spawn(sched, &tops, &t[i]);
    }
    aj_job_set_timeout(j[2], &ctv);                 /* job timeout */
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(j[0], &ctv, wrec_cb, &c);          /* job close */
    aj_job_wait(j[1], &ctv, wrec_cb, &w);           /* wait timeout's close */
    RUN_UNTIL(stats().close_timeouts == 3);
    ck_assert_int_eq(c.error, ETIMEDOUT);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    for (i = 0; i < 3; i++)
        aj_job_done(j[i], ECANCELED, NULL);
    aj_scheduler_close(sched, NULL, NULL);          /* scheduler close */
    run();
    ck_assert_uint_eq(stats().close_timeouts, 4);
    ck_assert_uint_eq(stats().job_timeouts, 1);
    aj_job_done(j[3], 0, NULL);
    run();
    ck_assert_int_eq(releases, 4);
}
END_TEST

static void invariant_waiter(aj_job *job, int error, void *result, void *cbarg)
{
    (void)job; (void)error; (void)result;
    CB_ENTER();
    (*(int *)cbarg)++;
    check_invariant();
}

static int invariant_checks;
static void invariant_done(aj_scheduler *s, aj_job *job, int error, void *result, void *arg)
{
    (void)job; (void)error; (void)result; (void)arg;
    CB_ENTER();
    invariant_checks++;
    check_invariant_of(s);
}

static void invariant_closed(aj_scheduler *s, void *arg)
{
    (void)arg;
    CB_ENTER();
    invariant_checks++;
    closed_calls++;
    check_invariant_of(s);
}

START_TEST(the_stats_identity_holds_at_every_step)
{
    struct tjob t[7];
    struct timeval ctv = { 0, 10000 };
    aj_job *j[7];
    int i, nw = 0;
    memset(t, 0, sizeof t);
    invariant_checks = 0;
    aj_scheduler_set_done_callback(sched, invariant_done, NULL);
    aj_scheduler_set_close_timeout(sched, &ctv);
    aj_scheduler_set_limit(sched, 2);
    t[0].ms = 3;                            /* succeeds */
    t[1].ms = 3; t[1].error = EIO;          /* fails */
    t[2].ms = 3; t[2].error = ECANCELED;    /* cancels itself */
    t[3].ms = 3;                            /* discarded */
    t[4].ms = -1; t[4].stubborn = 1;        /* let go */
    t[5].ms = 1;                            /* succeeds */
    t[6].ms = -1;                           /* cancelled by the close */
    for (i = 0; i < 7; i++) {
        j[i] = aj_spawn(sched, &tops, &t[i]);
        check_invariant();
        aj_job_wait(j[i], NULL, invariant_waiter, &nw);
    }
    aj_job_close(j[3], NULL, NULL, NULL);
    check_invariant();
    while (!t[5].released) {
        event_base_loop(base, EVLOOP_ONCE);
        check_invariant();
    }
    aj_scheduler_close(sched, invariant_closed, NULL);
    check_invariant();
    while (closed_calls == 0) {
        event_base_loop(base, EVLOOP_ONCE);
        check_invariant();
    }
    ck_assert_uint_eq(stats().cancelled, 4);        /* self, discarded, close, let go */
    aj_job_done(j[4], 0, NULL);
    check_invariant();
    run();
    check_invariant();
    ck_assert_int_eq(nw, 7);
    ck_assert_int_eq(invariant_checks, 7);          /* 6 done callbacks + the close */
    ck_assert_uint_eq(stats().spawned, 7);
    ck_assert_uint_eq(stats().succeeded, 2);
    ck_assert_uint_eq(stats().failed, 1);
    ck_assert_uint_eq(stats().cancelled, 4);
}
END_TEST

START_TEST(the_job_timeout_counts_from_start_not_from_spawn)
{
    struct tjob t[2];
    struct wrec w;
    struct timeval jtv = { 0, 60000 };
    aj_job *j[2];
    memset(t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    aj_scheduler_set_limit(sched, 1);
    aj_scheduler_set_job_timeout(sched, &jtv);
    t[0].ms = 100;
    t[1].ms = 10;
    j[0] = aj_spawn(sched, &tops, &t[0]);
    aj_job_set_timeout(j[0], NULL);         /* the one ahead has none */
    j[1] = aj_spawn(sched, &tops, &t[1]);   /* pending for ~100 ms */
    aj_job_wait(j[1], NULL, wrec_cb, &w);
    run();
    ck_assert_int_eq(t[1].cancelled, 0);
    ck_assert_int_eq(w.error, 0);
    ck_assert_uint_eq(stats().job_timeouts, 0);
}
END_TEST

struct late_timeout {
    aj_job *job;
    double at;
};

static void set_timeout_later(evutil_socket_t fd, short w, void *arg)
{
    struct late_timeout *lt = arg;
    struct timeval tv = { 0, 30000 };
    (void)fd; (void)w;
    lt->at = now_ms();
    ck_assert_int_eq(aj_job_set_timeout(lt->job, &tv), 0);
}

START_TEST(a_job_timeout_set_on_a_started_job_counts_from_the_call)
{
    struct tjob t;
    struct wrec w;
    struct late_timeout lt;
    struct timeval later = { 0, 50000 };
    struct event *ev;
    memset(&t, 0, sizeof t);
    memset(&w, 0, sizeof w);
    t.ms = -1;
    lt.job = aj_spawn(sched, &tops, &t);
    aj_job_wait(lt.job, NULL, wrec_cb, &w);
    event_base_loop(base, EVLOOP_NONBLOCK);
    ck_assert_int_eq(t.started, 1);
    ev = evtimer_new(base, set_timeout_later, &lt);
    evtimer_add(ev, &later);
    run();
    event_free(ev);
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(w.error, ETIMEDOUT);
    ck_assert(w.at - lt.at >= 29);          /* from the call, not from the start */
    ck_assert_uint_eq(stats().job_timeouts, 1);
}
END_TEST

START_TEST(a_zero_job_timeout_set_on_a_running_job_fires_from_the_loop)
{
    struct tjob t;
    struct timeval zero = { 0, 0 };
    struct erec e;
    aj_job *job;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    aj_scheduler_set_exception_handler(sched, erec_cb, &e);
    t.ms = -1;
    job = spawn_started(&tops, &t);
    ck_assert_int_eq(CALL(aj_job_set_timeout(job, &zero)), 0);
    ck_assert_int_eq(t.cancelled, 0);
    run();
    ck_assert_int_eq(t.cancelled, 1);
    ck_assert_int_eq(e.calls, 1);
    ck_assert_str_eq(e.message, "Job processing failed");
    ck_assert_int_eq(e.error, ETIMEDOUT);
}
END_TEST

START_TEST(the_done_callback_runs_once_per_finished_job_but_not_for_jobs_let_go)
{
    struct tjob t[5];
    struct timeval ctv = { 0, 10000 };
    static int res;
    aj_job *j[5];
    int i;
    memset(t, 0, sizeof t);
    aj_scheduler_set_done_callback(sched, done_cb, NULL);
    aj_scheduler_set_close_timeout(sched, &ctv);
    aj_scheduler_set_limit(sched, 4);
    t[0].ms = 1; t[0].result = &res;                /* 0 and its result */
    t[1].ms = 1; t[1].error = EIO;                  /* EIO */
    t[2].ms = -1;                                   /* closed: ECANCELED */
    t[3].ms = -1; t[3].stubborn = 1;                /* let go: no call */
    t[4].ms = 1;                                    /* discarded: ECANCELED */
    for (i = 0; i < 5; i++)
        j[i] = aj_spawn(sched, &tops, &t[i]);
    aj_job_close(j[4], NULL, NULL, NULL);
    event_base_loop(base, EVLOOP_NONBLOCK);
    aj_job_close(j[2], NULL, NULL, NULL);
    RUN_UNTIL(t[0].released && t[1].released && t[2].released && t[4].released);
    aj_scheduler_close(sched, closed_cb, NULL);
    run();
    aj_job_done(j[3], 0, NULL);
    run();
    ck_assert_int_eq(t[0].done_calls, 1);
    ck_assert_int_eq(t[0].done_error, 0);
    ck_assert_ptr_eq(t[0].done_result, &res);
    ck_assert_int_eq(t[1].done_calls, 1);
    ck_assert_int_eq(t[1].done_error, EIO);
    ck_assert_int_eq(t[2].done_calls, 1);
    ck_assert_int_eq(t[2].done_error, ECANCELED);
    ck_assert_int_eq(t[3].done_calls, 0);
    ck_assert_int_eq(t[4].done_calls, 1);
    ck_assert_int_eq(t[4].done_error, ECANCELED);
    ck_assert_int_eq(t[4].started, 0);
    ck_assert_int_eq(done_calls, 4);
    ck_assert_int_eq(releases, 5);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, harness_setup, harness_teardown);
    tcase_set_timeout(tc, 20);
    /* 2 */
    tcase_add_test(tc, int_functions_fail_with_minus_one_and_einval_on_bad_arguments);
    tcase_add_test(tc, timeout_values_are_copied);
    tcase_add_test(tc, no_close_timeout_waits_for_a_job_past_the_default);
    tcase_add_test(tc, limit_zero_means_unlimited);
    tcase_add_test(tc, pending_limit_zero_means_unlimited);
    tcase_add_test(tc, defaults_admit_100_active_and_10000_pending_then_refuse);
    tcase_add_test(tc, scheduler_close_runs_no_callback_inside_the_call);
    tcase_add_test(tc, job_close_runs_no_callback_inside_the_call);
    tcase_add_test(tc, raising_the_limit_admits_spawn_async_requests_from_the_loop);
    tcase_add_test(tc, raising_the_pending_limit_admits_spawn_async_requests_from_the_loop);
    tcase_add_test(tc, job_done_from_outside_a_callback_defers_everything_to_the_loop);
    tcase_add_test(tc, spawn_async_with_room_calls_back_from_the_loop_before_start);
    tcase_add_test(tc, wait_and_close_of_an_empty_scheduler_calls_back_from_the_loop);
    tcase_add_test(tc, a_zero_wait_timeout_closes_the_job_from_the_loop);
    tcase_add_test(tc, aj_log_formats_printf_style_to_the_sink);
    tcase_add_test(tc, with_no_log_callback_each_message_is_one_line_on_stderr);
    tcase_add_test(tc, the_core_logs_through_the_sink_with_libevent_severities);
    tcase_add_test(tc, schedulers_on_two_threads_run_apart_and_number_jobs_process_wide);
    /* 3.1 */
    tcase_add_test(tc, cancel_may_finish_the_job_later);
    tcase_add_test(tc, a_job_without_cancel_times_out_its_close_like_one_ignoring_it);
    tcase_add_test(tc, release_runs_once_and_after_every_other_callback);
    /* 3.2 */
    tcase_add_test(tc, the_default_close_timeout_gives_up_after_a_tenth_of_a_second);
    tcase_add_test(tc, lowering_the_limit_holds_pending_jobs_until_active_drop_below_it);
    tcase_add_test(tc, lowering_the_pending_limit_keeps_queued_spawn_async_requests);
    tcase_add_test(tc, size_counts_a_job_until_it_finishes_is_discarded_or_let_go);
    tcase_add_test(tc, a_job_that_left_is_neither_contained_nor_has_a_scheduler);
    tcase_add_test(tc, job_states_follow_aiojobs_through_a_whole_life);
    /* 3.3 */
    tcase_add_test(tc, spawn_async_rejects_bad_arguments_and_never_calls_back);
    tcase_add_test(tc, spawn_and_spawn_async_fail_with_enomem_and_take_nothing);
    tcase_add_test(tc, a_spawn_async_admitted_before_a_close_gets_its_job_before_the_release);
    /* 3.4 */
    tcase_add_test(tc, job_done_inside_start_delivers_outcome_and_result);
    tcase_add_test(tc, close_gets_the_error_a_job_reports_from_inside_cancel);
    tcase_add_test(tc, job_done_on_a_job_that_has_not_started_is_ignored_and_logged);
    tcase_add_test(tc, any_number_of_waiters_are_each_called_once);
    tcase_add_test(tc, waiters_timing_out_out_of_order_leave_the_rest_in_order);
    tcase_add_test(tc, jobs_of_a_waited_on_scheduler_carry_their_first_waiter);
    tcase_add_test(tc, jobs_come_from_a_few_slabs_that_go_back_when_the_jobs_do);
    tcase_add_test(tc, a_job_outliving_its_scheduler_takes_its_slab_with_it);
    tcase_add_test(tc, a_spawn_needs_memory_only_for_a_new_slab);
    tcase_add_test(tc, a_job_done_inside_start_is_reported_before_later_queued_starts);
    tcase_add_test(tc, a_job_is_closed_when_its_wait_or_close_callback_runs);
    tcase_add_test(tc, wait_on_a_pending_job_gets_its_outcome_once_it_ran);
    tcase_add_test(tc, a_wait_timeout_on_a_pending_job_discards_it_with_etimedout);
    tcase_add_test(tc, wait_with_no_timeout_uses_the_scheduler_wait_timeout);
    tcase_add_test(tc, a_wait_timeout_answers_once_the_close_that_follows_ended);
    tcase_add_test(tc, with_no_close_timeout_a_timed_out_wait_answers_when_the_job_ends);
    tcase_add_test(tc, close_timeouts_of_explicit_jobs_are_never_reported);
    tcase_add_test(tc, closing_a_finished_job_reports_what_a_close_would_have);
    tcase_add_test(tc, closing_a_closing_job_again_calls_both_callbacks);
    tcase_add_test(tc, close_with_no_timeout_uses_the_scheduler_close_timeout);
    tcase_add_test(tc, set_cancel_on_a_closing_job_calls_the_new_hook_from_the_loop);
    tcase_add_test(tc, set_cancel_null_makes_a_job_uninterruptible);
    tcase_add_test(tc, set_name_null_restores_the_default_name);
    tcase_add_test(tc, wait_and_close_on_a_job_let_go_fail_with_eshutdown);
    /* 3.5 */
    tcase_add_test(tc, a_null_exception_handler_restores_the_default);
    tcase_add_test(tc, the_default_handler_line_carries_the_spawn_stack_in_debug_mode);
    tcase_add_test(tc, call_exception_handler_keeps_the_job_until_the_handler_ran);
    tcase_add_test(tc, call_exception_handler_copies_the_traceback_strings);
    tcase_add_test(tc, debug_mode_comes_from_aj_debug_when_the_scheduler_is_created);
    tcase_add_test(tc, set_debug_switches_spawn_stacks_for_later_spawns);
    tcase_add_test(tc, a_spawn_async_job_admitted_later_reports_where_it_was_requested);
    tcase_add_test(tc, a_job_timeout_close_that_gives_up_is_reported_as_closing_timed_out);
    tcase_add_test(tc, an_explicit_job_whose_job_timeout_close_gives_up_is_not_reported);
    tcase_add_test(tc, a_scheduler_close_reports_failures_meanwhile_before_its_callback);
    /* 3.6 */
    tcase_add_test(tc, waiters_of_a_job_let_go_by_close_get_etimedout_when_let_go);
    tcase_add_test(tc, closing_after_the_close_completed_calls_back_from_the_loop);
    tcase_add_test(tc, wait_and_close_starts_pending_jobs_as_slots_free);
    tcase_add_test(tc, wait_and_close_with_no_timeout_uses_the_wait_timeout);
    tcase_add_test(tc, a_job_let_go_finishing_after_free_is_released_once_from_the_loop);
    tcase_add_test(tc, a_job_let_go_finishing_before_free_is_still_released_from_the_loop);
    tcase_add_test(tc, a_let_go_job_holding_a_reference_is_released_after_the_unref);
    tcase_add_test(tc, a_finished_let_go_job_named_by_a_report_dropped_by_free_is_released);
    tcase_add_test(tc, free_leaves_a_referenced_finished_job_until_the_unref);
    tcase_add_test(tc, free_cancels_active_jobs_and_owed_cancels_but_no_job_twice);
    tcase_add_test(tc, free_answers_close_callbacks_of_discarded_and_let_go_jobs);
    tcase_add_test(tc, free_gives_owed_waiters_the_outcome_but_calls_no_handler_or_done_callback);
    tcase_add_test(tc, nothing_of_the_scheduler_runs_after_free_returns);
    tcase_add_test(tc, freeing_in_the_first_close_callback_still_runs_the_second_once);
    tcase_add_test(tc, free_answers_an_admitted_spawn_async_whose_callback_has_not_run);
    tcase_add_test(tc, free_during_wait_and_close_runs_its_callback);
    /* 3.7 */
    tcase_add_test(tc, stats_rejected_counts_queue_full_closed_and_spawn_async_timeouts);
    tcase_add_test(tc, stats_close_timeouts_count_every_kind_of_close_that_gave_up);
    tcase_add_test(tc, the_stats_identity_holds_at_every_step);
    tcase_add_test(tc, the_job_timeout_counts_from_start_not_from_spawn);
    tcase_add_test(tc, a_job_timeout_set_on_a_started_job_counts_from_the_call);
    tcase_add_test(tc, a_zero_job_timeout_set_on_a_running_job_fires_from_the_loop);
    tcase_add_test(tc, the_done_callback_runs_once_per_finished_job_but_not_for_jobs_let_go);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(core_suite());
}
