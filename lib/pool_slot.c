/* One worker slot, the parent's side: starting its process through the
 * zygote, the two rings of its segment (tasks written, results drained),
 * its process's resources, and its exit (what it left is drained, its
 * tasks go back to the queue or fail).
 *
 * Each worker has a shared-memory segment with two rings: tasks go in
 * through one and results come back through the other. Both ends of the
 * parent's rings are under the pool's lock, and any thread may drive them
 * (a submitting thread, a waiting thread that polls, the loop thread); the
 * handles (doorbell, lender socket) are the loop thread's.
 *
 * Layering (see pool_internal.h): below pool_dispatch.c and pool.c, above
 * pool_core.c. It never fails the pool itself: a failed READY is noted in
 * the done list (fail_code) for the scheduler, a failed start is returned,
 * and the doorbell's handler is the scheduler's, given to ff__slot_spawn. */
#define _GNU_SOURCE
#include "pool_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

struct lender_s {
  uv_poll_t poll;
  int fd;
  uint64_t owner; /* the worker's receiver id */
};

/* The longest run a worker's report is believed: the figure comes from
 * the worker, and a garbage one must not overflow the averages. */
#define FF__RUN_NS_MAX (UINT64_C(1) << 50)

/* What one drain takes from one worker at most, so that a worker that
 * streams results cannot keep the thread that drains (the loop thread,
 * which serves every pool) or the pool's lock to itself: the rest waits
 * for the next round, after the other workers and pools had theirs. */
#define FF__DRAIN_MESSAGES 256u
#define FF__DRAIN_BYTES ((size_t)4 << 20)
/* A reassembly buffer larger than this is freed once its message is
 * taken: a big result's memory is not kept for the next one. */
#define FF__READER_KEEP ((size_t)1 << 20)


static void doorbell_on_closed(uv_handle_t *handle) {
  doorbell_t *d = handle->data;
  ff__fd_untrack(d->fd);
  close(d->fd);
  free(d);
}

static void lender_on_closed(uv_handle_t *handle) {
  lender_t *l = handle->data;
  ff__share_drop_owner(l->owner);
  ff__fd_untrack(l->fd);
  close(l->fd);
  free(l);
}

static void lender_on_request(uv_poll_t *handle, int status, int events) {
  FF__UNUSED(events);
  lender_t *l = handle->data;
  /* A worker that is gone, or that sends nonsense, is not served again. */
  if (status < 0 || ff__share_serve(l->fd, l->owner) < 0)
    uv_poll_stop(handle);
}

/* Watches the parent's end of a new worker's lender socket. */
static int lender_start(ff__worker_t *w, int fd) {
  lender_t *l = calloc(1, sizeof(*l));
  if (l == NULL) return -ENOMEM;
  ff_pool_t *pool = w->pool;
  int rc = ff__share_add_owner(w->receiver, pool->options.lendable,
                               pool->options.lendable_count);
  if (rc == 0) rc = uv_poll_init(ff__runtime_loop(pool->runtime), &l->poll, fd);
  if (rc < 0) {
    ff__share_drop_owner(w->receiver);
    free(l);
    return rc;
  }
  l->fd = fd;
  l->owner = w->receiver;
  l->poll.data = l;
  ff__fd_track(fd);
  uv_poll_start(&l->poll, UV_READABLE, lender_on_request);
  w->lender = l;
  return 0;
}

/* Reads what the worker's streams hold, up to ends (NULL: all of it), into
 * the output of task, or of the pool when no task owns it. */
static void slot_take_output(ff__worker_t *w, ff_task_t *task,
                             const uint64_t *ends) {
  if (!ff__output_captured(&w->output)) return;
  if (task) task->output_slot = (int)w->slot;
  size_t limit = w->pool->options.max_message_size
                     ? w->pool->options.max_message_size
                     : ff__default_max_message();
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    ff_buf_t *into = task ? &task->output[i] : &w->pool->stray_output[i];
    /* Out of memory, the bytes stay in the file for whoever reads next. */
    (void)ff__output_take(&w->output, i, ends ? ends[i] : UINT64_MAX, into,
                          limit);
  }
}

void ff__slot_release_process(ff__worker_t *w) {
  FF__ASSERT_LOCKED(w->pool);
  FF__ASSERT_SLOT(w);
  /* Another thread may be copying its fragments, without the lock, from
   * the ring about to be unmapped. */
  while (w->reading) pthread_cond_wait(&w->pool->reader_done, &w->pool->lock);
  if (w->doorbell) {
    uv_close((uv_handle_t *)&w->doorbell->poll, doorbell_on_closed);
    w->doorbell = NULL;
  }
  if (w->lender) {
    uv_close((uv_handle_t *)&w->lender->poll, lender_on_closed);
    w->lender = NULL;
  }
  if (w->shm.base) {
    /* Whatever the worker left, nobody reads or writes it any more. */
    ff__ring_break(&w->tasks);
    ff__ring_break(&w->results);
    ff__shm_close(&w->shm);
  }
  ff__ring_reader_free(&w->reader);
  /* What it printed that no task owns is the pool's. */
  slot_take_output(w, NULL, NULL);
  ff__output_close(&w->output);
  /* What was given to it and not given back is free again. */
  if (w->receiver) ff__arena_drop_receiver(w->receiver);
  w->receiver = 0;
  if (w->pidfd >= 0) {
    ff__fd_untrack(w->pidfd);
    close(w->pidfd);
    w->pidfd = -1;
  }
  if (w->state != WORKER_EMPTY) {
    assert(w->pool->live_workers > 0);
    w->pool->live_workers--;
  }
  w->state = WORKER_EMPTY;
  w->finished = false;
  w->pid = 0;
  w->sending = NULL;
}

void ff__slot_fail_in_flight(ff__worker_t *w, int code,
                             const ff_exit_t *exit, ff__done_t *done) {
  FF__ASSERT_LOCKED(w->pool);
  ff__link_t *l;
  w->sending = NULL;
  bool head = true;
  while ((l = ff__list_pop_front(&w->in_flight)) != NULL) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    /* The task it was running owns what it printed so far. */
    if (head) slot_take_output(w, task, NULL);
    head = false;
    ff__pool_fail_task(w->pool, task, code, exit, done);
  }
  w->in_flight_count = 0;
}

void ff__slot_kill(ff__worker_t *w) {
  /* The worker's READY and first results can arrive before the zygote's
   * SPAWNED (two channels, no order between them): without a pidfd yet,
   * the kill waits for it. */
  if (w->pidfd >= 0)
    ff__pidfd_send_signal(w->pidfd, SIGKILL);
  else
    w->doomed = true;
}

/* Tells the worker to exit (it has nothing left to run). */
void ff__slot_send_stop(ff__worker_t *w) {
  size_t offset = 0;
  if (ff__ring_write(&w->tasks, FF__RING_STOP, 0, 0, NULL, 0, &offset) != 1)
    ff__slot_kill(w);
  w->wake = true;
  w->stop_when_idle = false;
}

/* A worker runs its tasks in order: the one at the head of its in-flight
 * list, if it was killed (ff_task_kill), takes its worker with it. */
void ff__slot_kill_if_head_killed(ff__worker_t *w) {
  if (ff__list_empty(&w->in_flight)) return;
  ff_task_t *head = FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link);
  if (atomic_load(&head->kill_status) != 0) ff__slot_kill(w);
}

/* Settles the task at the head of the worker's in-flight list with the
 * result in msg: the joined buffer itself when the message came in
 * fragments (no copy), else a copy of the record. */
static void worker_settle_result(ff__worker_t *w, ff_task_t *task,
                                 const ff__ring_msg_t *msg,
                                 ff__done_t *done) {
  ff_pool_t *pool = w->pool;
  uint64_t run_ns;
  memcpy(&run_ns, msg->data, sizeof(run_ns));
  if (run_ns > FF__RUN_NS_MAX) run_ns = FF__RUN_NS_MAX;
  size_t length = msg->length - FF__RESULT_PREFIX;
  assert(w->in_flight_count > 0);
  ff__list_remove(&task->link);
  w->in_flight_count--;
  task->run_ns = run_ns;
  w->tasks_done++;
  w->busy_ns += run_ns;
  w->bytes_received += length;
  /* A moving average over about the last eight tasks. */
  int64_t average = (int64_t)atomic_load_explicit(&pool->run_average_ns,
                                                  memory_order_relaxed);
  average += ((int64_t)run_ns - average) / 8;
  atomic_store_explicit(&pool->run_average_ns,
                        average > 0 ? (uint64_t)average : 1,
                        memory_order_relaxed);
  if (msg->flags & FF__RING_OVERSIZE) {
    /* The worker found its own result too large to send: it sent the
     * size instead. */
    uint64_t size = 0;
    if (length >= sizeof(size))
      memcpy(&size, msg->data + FF__RESULT_PREFIX, sizeof(size));
    uint64_t detail[3] = {size, 1, pool->options.max_message_size};
    ff__pool_settle(done, task, FF_EMSGSIZE,
                    ff__copy_bytes(detail, sizeof(detail)), sizeof(detail),
                    NULL);
    return;
  }
  size_t offset = FF__RESULT_PREFIX;
  char *block = ff__ring_reader_take(&w->reader, msg);
  if (block == NULL) {
    block = ff__copy_bytes(msg->data + FF__RESULT_PREFIX, length);
    offset = 0;
  }
  if (block == NULL) {
    ff__pool_settle(done, task, -ENOMEM, NULL, 0, NULL);
    return;
  }
  int status = (msg->flags & FF__RING_FAILED) ? FF_ETASKFAILED : 0;
  ff__pool_settle_at(done, task, status, block, offset, length, NULL);
}

/* Takes one message off the worker's result ring. */
static void worker_on_message(ff__worker_t *w, const ff__ring_msg_t *msg,
                              ff__done_t *done) {
  ff_pool_t *pool = w->pool;
  if (msg->type == FF__RING_READY && w->state == WORKER_STARTING) {
    if (msg->flags & FF__RING_FAILED) {
      /* Its initializer failed: so does the pool, with the worker's
       * description of why (kept now: msg goes with the ring), as soon as
       * this drain returns to the scheduler. */
      ff_exit_t how = {w->pid, -1, 0};
      ff__pool_set_error(pool, FF_EINITFAILED, msg->data, msg->length, &how);
      if (done->fail_code == 0) {
        done->fail_code = FF_EINITFAILED;
        done->fail_exit = how;
      }
      return;
    }
    w->state = WORKER_READY;
    pool->startup_failures = 0;
    pool->startup_kills = 0;
    return;
  }
  if (msg->type == FF__RING_RESULT && !ff__list_empty(&w->in_flight) &&
      msg->length >= FF__RESULT_PREFIX) {
    ff_task_t *task = FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link);
    if (task->id == msg->id && task != w->sending) {
      worker_settle_result(w, task, msg, done);
      if (!ff__list_empty(&w->in_flight))
        FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link)->started_ns =
            ff__now_ns();
      ff__slot_kill_if_head_killed(w);
      if (w->stop_when_idle && ff__list_empty(&w->in_flight))
        ff__slot_send_stop(w);
      return;
    }
  }
  if (msg->type == FF__RING_OUTPUT &&
      msg->length == FF_OUTPUT_STREAMS * sizeof(uint64_t) &&
      !ff__list_empty(&w->in_flight)) {
    /* The task it just ran owns what its streams gained up to these ends;
     * its RESULT comes next. */
    ff_task_t *task = FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link);
    if (task->id == msg->id && task != w->sending) {
      uint64_t ends[FF_OUTPUT_STREAMS];
      memcpy(ends, msg->data, sizeof(ends));
      slot_take_output(w, task, ends);
      return;
    }
  }
  if (msg->type == FF__RING_RETIRE && w->state == WORKER_READY) {
    /* Over its memory limit: no more tasks, and STOP once it is idle. */
    w->state = WORKER_RETIRING;
    w->stop_when_idle = true;
    if (ff__list_empty(&w->in_flight)) ff__slot_send_stop(w);
    return;
  }
  if (msg->type == FF__RING_EXIT && ff__list_empty(&w->in_flight)) {
    /* Its last code has run; the zygote reports the exit itself. What it
     * printed since its last task is all there will be, and join() need
     * not wait for the reaping to have it. */
    w->finished = true;
    slot_take_output(w, NULL, NULL);
    return;
  }
  if (msg->type == FF__RING_FORGET && msg->length % sizeof(uint64_t) == 0) {
    for (size_t i = 0; i < msg->length / sizeof(uint64_t); i++) {
      uint64_t id;
      memcpy(&id, msg->data + i * sizeof(id), sizeof(id));
      ff__share_forget_owned(id, w->receiver);
    }
    return;
  }
  if (msg->type == FF__RING_RELEASE &&
      msg->length % sizeof(ff__arena_report_t) == 0) {
    ff__arena_reported(w->receiver, msg->data, msg->length);
    return;
  }
  /* Anything else breaks the protocol: the worker cannot be trusted. It is
   * killed, and its exit fails its tasks. */
  ff__slot_kill(w);
}

/* Copies the fragments of a long message into the worker's reader, up to
 * *budget bytes, without the pool's lock: what takes time in a long
 * message is the copy, and the lock is every caller's and the loop's (a
 * stats() call, a submit, the other workers' results would wait for it).
 * Called and returning with the lock held. */
static int worker_read_fragments(ff__worker_t *w, ff__ring_msg_t *msg,
                                 size_t *budget) {
  ff_pool_t *pool = w->pool;
  w->reading = true;
  pthread_mutex_unlock(&pool->lock);
  int rc = ff__ring_read(&w->results, &w->reader, msg, budget);
  pthread_mutex_lock(&pool->lock);
  w->reading = false;
  pthread_cond_broadcast(&pool->reader_done);
  return rc;
}

/* Reads the whole messages the worker has pushed, within the drain's
 * bounds (all of them with unbounded, for a worker that exited: what it
 * left is all there will be). Returns true if some were left. */
bool ff__slot_drain(ff__worker_t *w, ff__done_t *done,
                    bool unbounded) {
  FF__ASSERT_LOCKED(w->pool);
  FF__ASSERT_SLOT(w);
  if (unbounded)
    while (w->reading) pthread_cond_wait(&w->pool->reader_done, &w->pool->lock);
  if (w->shm.base == NULL || w->state == WORKER_EMPTY || w->corrupt ||
      w->oversize)
    return false;
  /* Another thread is copying this worker's fragments: it goes on. */
  if (w->reading) return true;
  bool freed = false, more = false;
  size_t budget = FF__DRAIN_BYTES;
  for (unsigned count = 0;; count++) {
    if (!unbounded && count == FF__DRAIN_MESSAGES) {
      more = ff__ring_readable(&w->results);
      break;
    }
    ff__ring_msg_t msg;
    size_t none = 0;
    /* Whole records are taken under the lock; fragments are copied
     * without it (unless the worker is gone: then there is no hurry). */
    int rc = ff__ring_read(&w->results, &w->reader, &msg,
                           unbounded ? NULL : &none);
    if (rc == FF__RING_FRAGMENT) {
      rc = budget > 0 ? worker_read_fragments(w, &msg, &budget)
                      : FF__RING_FRAGMENT;
      if (w->shm.base == NULL) return false;
    }
    if (rc == 0 || rc == FF__RING_FRAGMENT) {
      more = !unbounded && (rc == FF__RING_FRAGMENT ||
                            ff__ring_readable(&w->results));
      break;
    }
    if (rc == FF_EMSGSIZE) {
      /* A message past the limit: the worker is stopped, and its task
       * fails with how much had come. */
      w->oversize = msg.length > 0 ? msg.length : 1;
      ff__ring_reader_free(&w->reader);
      ff__slot_kill(w);
      break;
    }
    if (rc < 0) {
      /* Nothing more of this ring can be trusted, or read: its task fails
       * with why. */
      w->corrupt = rc;
      ff__slot_kill(w);
      break;
    }
    worker_on_message(w, &msg, done);
    ff__ring_release(&w->results, &msg);
    ff__ring_reader_trim(&w->reader, FF__READER_KEEP);
    freed = true;
    if (w->shm.base == NULL) return false; /* the pool failed and let it go */
  }
  if (freed) ff__ring_wake_producer(&w->results);
  return more;
}

/* Writes the worker's current task (its context's DEFINE first, when the
 * worker lacks the context) into the task ring, as far as it fits. */
static int worker_write(ff__worker_t *w) {
  assert(w->sending != NULL);
  ff_task_t *task = w->sending;
  int rc;
  if (w->send_define) {
    ff_context_t *c = task->context;
    rc = ff__ring_write(&w->tasks, FF__RING_DEFINE, task->ring_flags, c->key,
                        c->data, c->length, &w->send_offset);
    w->wake = true;
    if (rc <= 0) return rc;
    w->send_define = false;
    w->send_offset = 0;
  }
  rc = ff__ring_write(&w->tasks, FF__RING_TASK, task->ring_flags, task->id,
                      task->message, task->message_length, &w->send_offset);
  w->wake = true;
  if (rc <= 0) return rc;
  w->sending = NULL;
  return 1;
}

/* Goes on with a message that did not fit: when the ring is still full,
 * asks the worker to ring the doorbell once it makes room. */
void ff__slot_flush(ff__worker_t *w) {
  while (w->sending) {
    int rc = worker_write(w);
    if (rc < 0) {
      if (rc == FF_EPROTOCOL) w->corrupt = rc;
      ff__slot_kill(w);
      return;
    }
    if (rc == 0) {
      size_t left = w->send_define ? w->sending->context->length
                                   : w->sending->message_length;
      left -= w->send_offset;
      if (!ff__ring_arm_producer(&w->tasks, left)) return;
    }
  }
}

/* Starts sending task to the worker. */
void ff__slot_send_task(ff__worker_t *w, ff_task_t *task) {
  FF__ASSERT_LOCKED(w->pool);
  /* Only a ready (or just retired) worker with nothing half-written gets
   * a task, and the task is already the last of its in-flight list. */
  assert(w->state == WORKER_READY || w->state == WORKER_RETIRING);
  assert(w->sending == NULL && w->in_flight.prev == &task->link);
  task->ring_flags = 0;
  w->send_define = false;
  ff_context_t *c = task->context;
  if (c) {
    unsigned slot = FF__CONTEXT_SLOTS;
    for (unsigned i = 0; i < FF__CONTEXT_SLOTS; i++)
      if (w->context_keys[i] == c->key) slot = i;
    if (slot == FF__CONTEXT_SLOTS) {
      slot = w->context_next++ % FF__CONTEXT_SLOTS;
      assert(slot < FF__CONTEXT_SLOTS);
      w->context_keys[slot] = c->key;
      w->send_define = true;
    }
    task->ring_flags =
        (uint16_t)(FF__RING_CONTEXT | (slot << FF__RING_SLOT_SHIFT));
  }
  w->sending = task;
  w->send_offset = 0;
  ff__slot_flush(w);
}

/* Writes what this process let go of the worker's results (RELEASE
 * records) into its task ring, between tasks: the worker reads them there
 * and reuses the memory. What does not fit waits for the next round. */
void ff__slot_write_reports(ff__worker_t *w) {
  if (w->shm.base == NULL || w->sending || w->state == WORKER_EMPTY) return;
  ff__arena_report_t reports[64];
  size_t n;
  while ((n = ff__arena_take_reports_for(w->receiver, reports, 64)) > 0) {
    size_t offset = 0;
    int rc = ff__ring_write(&w->tasks, FF__RING_RELEASE, 0, 0, reports,
                            n * sizeof(reports[0]), &offset);
    if (rc != 1) {
      ff__arena_put_back_reports(w->receiver, reports, n);
      return;
    }
    w->wake = true;
  }
}

void ff__slot_wake(ff__worker_t *w) {
  if (!w->wake) return;
  w->wake = false;
  if (w->shm.base) ff__ring_wake_consumer(&w->tasks);
}

int ff__slot_spawn(ff__worker_t *w, uv_poll_cb on_doorbell) {
  static _Atomic uint64_t next_receiver = 2; /* 0 and 1 mean none */
  ff_pool_t *pool = w->pool;
  doorbell_t *d = NULL;
  int fd = -1;
  int lender[2] = {-1, -1};
  int rc;
  assert(ff__runtime_on_loop_thread(pool->runtime));
  assert(w->state == WORKER_EMPTY && !w->exiting && w->shm.base == NULL);
  assert(ff__list_empty(&w->in_flight) && w->doorbell == NULL);
  if (w->first_spawn_ns == 0)
    w->first_spawn_ns = ff__now_ns();
  else
    w->restarts++;
  w->receiver = atomic_fetch_add(&next_receiver, 1);
  rc = ff__shm_create(&w->shm, "forkfarm-worker", FF__WORKER_SEGMENT_SIZE);
  if (rc < 0) goto fail;
  /* Other forks of this process (other pools' zygotes, the user's) have no
   * business with this worker's rings. */
  madvise(w->shm.base, w->shm.size, MADV_DONTFORK);
  d = calloc(1, sizeof(*d));
  if (d == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0 ||
      socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, lender) < 0) {
    rc = -errno;
    goto fail;
  }
  rc = ff__worker_rings(w->shm.base, &w->tasks, &w->results, 1);
  if (rc < 0) goto fail;
  if (pool->options.capture_output) {
    rc = ff__output_open(&w->output);
    if (rc < 0) goto fail;
  }
  ff__ctl_msg_t msg = {FF__CTL_SPAWN, w->slot, 0, 0};
  int fds[3 + FF_OUTPUT_STREAMS] = {w->shm.fd, fd, lender[1]};
  unsigned nfds = 3;
  if (ff__output_captured(&w->output))
    for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++)
      fds[nfds++] = w->output.fd[i];
  rc = ff__sock_send(pool->ctl_fd, &msg, sizeof(msg), fds, nfds);
  /* The mapping is all this process needs of the segment, and the worker's
   * end of the lender socket is the zygote's now. */
  close(w->shm.fd);
  w->shm.fd = -1;
  close(lender[1]);
  lender[1] = -1;
  if (rc < 0) goto fail;
  /* The loop thread serves the lender socket; it must never block on it. */
  if (fcntl(lender[0], F_SETFL, O_NONBLOCK) < 0) {
    rc = -errno;
    goto fail;
  }
  rc = lender_start(w, lender[0]);
  if (rc < 0) goto fail;
  lender[0] = -1; /* the lender's: closed with its handle */
  d->fd = fd;
  d->worker = w;
  ff__fd_track(fd);
  rc = uv_poll_init(ff__runtime_loop(pool->runtime), &d->poll, fd);
  if (rc < 0) {
    ff__fd_untrack(fd);
    goto fail;
  }
  d->poll.data = d;
  uv_poll_start(&d->poll, UV_READABLE, on_doorbell);
  w->doorbell = d;
  w->tasks.producer_fd = -1;
  w->results.consumer_fd = -1;
  memset(&w->reader, 0, sizeof(w->reader));
  w->reader.limit = (size_t)pool->options.max_message_size + FF__RESULT_PREFIX;
  memset(w->context_keys, 0, sizeof(w->context_keys));
  w->context_next = 0;
  w->sending = NULL;
  w->state = WORKER_STARTING;
  w->doomed = false;
  w->finished = false;
  w->corrupt = 0;
  w->oversize = 0;
  w->stop_when_idle = false;
  w->pid = 0;
  w->pidfd = -1;
  w->tasks_sent = 0;
  w->in_flight_count = 0;
  pool->live_workers++;
  assert(pool->live_workers <= pool->options.workers);
  /* The loop sleeps until the worker says it is ready. */
  ff__ring_arm_consumer(&w->results);
  return 0;

fail:
  if (fd >= 0) close(fd);
  free(d);
  if (lender[0] >= 0) close(lender[0]);
  if (lender[1] >= 0) close(lender[1]);
  if (w->lender) {
    uv_close((uv_handle_t *)&w->lender->poll, lender_on_closed);
    w->lender = NULL;
  }
  ff__shm_close(&w->shm);
  ff__output_close(&w->output);
  /* An errno says why the start failed (FF_ESPAWN); a code of the
   * runtime's own stays as it is. */
  return rc > -4096 ? FF_ESPAWN(-rc) : rc;
}

void ff__slot_exited(ff__worker_t *w, int wstatus, ff__done_t *done,
                     ff_exit_t *out, bool *was_ready_out) {
  FF__ASSERT_LOCKED(w->pool);
  ff_pool_t *pool = w->pool;
  assert(w->state != WORKER_EMPTY);
  /* What the worker pushed before it exited (results, or how its start
   * went) is still in its ring. */
  w->exiting = true;
  ff__slot_drain(w, done, true);
  bool expected = w->state == WORKER_RETIRING;
  bool was_ready = w->state == WORKER_READY || w->state == WORKER_RETIRING;
  w->exiting = false;
  ff_exit_t how;
  ff__exit_from_status(&how, w->pid, wstatus);
  /* A ring: the oldest of the kept exits gives way (see exits). */
  w->exits[w->exits_next++ % FF_EXITS_KEPT] = how;
  w->sending = NULL;
  if (!ff__list_empty(&w->in_flight)) {
    expected = false;
    /* A worker runs its tasks in order: the first one left is the one it
     * died running. Those behind it never started, so they go back to the
     * front of the queue rather than fail with it. */
    ff_task_t *lost =
        FF__CONTAINER_OF(ff__list_pop_front(&w->in_flight), ff_task_t, link);
    /* What it printed before it died is the lost task's. */
    slot_take_output(w, lost, NULL);
    assert(w->in_flight_count > 0);
    w->in_flight_count--;
    while (!ff__list_empty(&w->in_flight)) {
      ff_task_t *task =
          FF__CONTAINER_OF(w->in_flight.prev, ff_task_t, link);
      ff__list_remove(&task->link);
      int task_killed = atomic_load(&task->kill_status);
      if (task_killed || pool->stopping) {
        /* Killed while it waited its turn, or its pool's workers are being
         * stopped: it never runs. */
        ff__pool_settle(done, task, task_killed ? task_killed : FF_ECANCELED,
                        NULL, 0, NULL);
        continue;
      }
      if (!ff__arena_unassign_message(task->message, task->message_length,
                                      w->receiver)) {
        /* The worker let its bytes go before it died: they may be
         * another message's by now, so the task is not sent again. */
        ff__pool_settle(done, task, FF_EWORKERLOST, NULL, 0, &how);
        continue;
      }
      atomic_store(&task->stage, FF__TASK_QUEUED);
      ff__list_push_front(&pool->pending, &task->link);
      pool->pending_count++;
    }
    w->in_flight_count = 0;
    assert(ff__list_empty(&w->in_flight));
    int killed = atomic_load(&lost->kill_status);
    if (!killed && !w->corrupt && lost->retries > 0 && !pool->stopping &&
        (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) &&
        ff__arena_unassign_message(lost->message, lost->message_length,
                                   w->receiver)) {
      /* Retried: it goes first, to the next worker free. */
      lost->retries--;
      atomic_store(&lost->stage, FF__TASK_QUEUED);
      ff__list_push_front(&pool->pending, &lost->link);
      pool->pending_count++;
    } else if (w->oversize && !killed) {
      uint64_t detail[3] = {w->oversize, 0, pool->options.max_message_size};
      ff__pool_settle(done, lost, FF_EMSGSIZE,
                      ff__copy_bytes(detail, sizeof(detail)), sizeof(detail),
                      &how);
    } else {
      ff__pool_settle(done, lost,
                      killed      ? killed
                      : w->corrupt ? w->corrupt
                                   : FF_EWORKERLOST,
                      NULL, 0, &how);
    }
  }
  ff__slot_release_process(w);
  ff__done_note_exit(done, &how, expected);
  *out = how;
  *was_ready_out = was_ready;
}
