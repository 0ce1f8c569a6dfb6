/* The runtime: one libuv loop thread per process that owns every pool.
 *
 * Other threads reach the loop through ff__runtime_call (run a function in
 * the loop thread and wait for it) and through each pool's uv_async. Before
 * a pool forks its zygote, the loop thread is parked inside an async callback,
 * waiting on a condition variable: it holds no lock and is in the middle of
 * nothing, so the child starts from a consistent state; ff_fork (fork.c)
 * does the same for any other fork of the caller's (a Python Process). A
 * forked child (ours or the user's) abandons the parent's runtime and
 * closes its descriptors; it starts a fresh runtime if it creates a pool
 * itself.
 *
 * Layering: loop.c calls only futex.c of lib/. What a fork must do to the
 * other subsystems (the callback thread, the share table) is fork.c's. */
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct ff__call_s {
  ff__link_t link;
  void (*fn)(void *arg);
  void *arg;
  bool done;
  bool posted; /* nobody waits: the loop frees it */
} ff__call_t;

struct ff__runtime_s {
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wakeup;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  ff__link_t calls;
  bool park_requested;
  bool parked;
  pthread_mutex_t park_serial; /* held from park to unpark, across a fork */
};

static pthread_mutex_t runtime_lock = PTHREAD_MUTEX_INITIALIZER;
static ff__runtime_t *runtime_current;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* ---- descriptor registry ------------------------------------------------
 * A bitmap, so that a child forked at any moment (even while the loop thread
 * is tracking a new descriptor) reads a consistent set without a lock. */

#define FF__FD_LIMIT 65536
static _Atomic uint64_t tracked_fds[FF__FD_LIMIT / 64];

void ff__fd_track(int fd) {
  if (fd >= 0 && fd < FF__FD_LIMIT)
    atomic_fetch_or(&tracked_fds[fd / 64], (uint64_t)1 << (fd % 64));
}

void ff__fd_untrack(int fd) {
  if (fd >= 0 && fd < FF__FD_LIMIT)
    atomic_fetch_and(&tracked_fds[fd / 64], ~((uint64_t)1 << (fd % 64)));
}

void ff__fd_close_tracked_in_child(int keep) {
  for (int word = 0; word < FF__FD_LIMIT / 64; word++) {
    uint64_t bits = atomic_exchange(&tracked_fds[word], 0);
    while (bits) {
      int bit = __builtin_ctzll(bits);
      bits &= bits - 1;
      int fd = word * 64 + bit;
      if (fd != keep) close(fd);
    }
  }
}

/* In every forked child: the parent's loop thread does not exist here, so
 * its runtime is abandoned (never freed: its locks may be held) and its
 * descriptors are closed, lest a child keep another process's sockets open
 * and hide their end-of-stream. */
static void runtime_atfork_child(void) {
  pthread_mutex_init(&runtime_lock, NULL);
  runtime_current = NULL;
  ff__fd_close_tracked_in_child(-1);
}

static void runtime_register_atfork(void) {
  pthread_atfork(NULL, NULL, runtime_atfork_child);
}

/* ---- the loop thread ---------------------------------------------------- */

static void runtime_on_wakeup(uv_async_t *handle) {
  ff__runtime_t *rt = FF__CONTAINER_OF(handle, ff__runtime_t, wakeup);
  ff__link_t calls;
  ff__list_init(&calls);
  pthread_mutex_lock(&rt->lock);
  if (rt->park_requested) {
    rt->parked = true;
    pthread_cond_broadcast(&rt->cond);
    while (rt->park_requested) pthread_cond_wait(&rt->cond, &rt->lock);
    rt->parked = false;
  }
  ff__list_splice(&calls, &rt->calls);
  pthread_mutex_unlock(&rt->lock);

  for (ff__link_t *l = calls.next; l != &calls;) {
    ff__call_t *call = FF__CONTAINER_OF(l, ff__call_t, link);
    l = l->next;
    call->fn(call->arg);
    if (call->posted) {
      free(call);
      continue;
    }
    pthread_mutex_lock(&rt->lock);
    call->done = true; /* the caller frees call once it sees done */
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
  }
}

static void runtime_thread_main(void *arg) {
  ff__runtime_t *rt = arg;
  uv_run(&rt->loop, UV_RUN_DEFAULT);
}

/* libuv's own descriptors (epoll, the async eventfd, the signal pipe) are
 * closed in forked children too: the fields are in uv.h's loop struct. */
static void runtime_track_loop_fds(ff__runtime_t *rt, bool track) {
  int fds[] = {uv_backend_fd(&rt->loop), rt->loop.async_io_watcher.fd,
               rt->loop.async_wfd, rt->loop.signal_pipefd[0],
               rt->loop.signal_pipefd[1]};
  for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
    if (track)
      ff__fd_track(fds[i]);
    else
      ff__fd_untrack(fds[i]);
  }
}

/* The descriptors the runtime needs to start (libuv's epoll, eventfd and
 * signal pipe) and to run a first pool (sockets, a pidfd, a segment), with
 * room to spare. */
#define RUNTIME_SPARE_FDS 16

/* Whether RUNTIME_SPARE_FDS descriptors can still be opened: libuv aborts
 * the process when it cannot make its signal pipe, so a process short of
 * descriptors gets -EMFILE here instead. */
static int runtime_check_spare_fds(void) {
  int fds[RUNTIME_SPARE_FDS];
  int rc = 0, n = 0;
  for (; n < RUNTIME_SPARE_FDS; n++) {
    fds[n] = eventfd(0, EFD_CLOEXEC);
    if (fds[n] < 0) {
      rc = -errno;
      break;
    }
  }
  while (n-- > 0) close(fds[n]);
  return rc;
}

static int runtime_start(ff__runtime_t **out) {
  int rc = runtime_check_spare_fds();
  if (rc < 0) return rc;
  ff__runtime_t *rt = calloc(1, sizeof(*rt));
  if (rt == NULL) return -ENOMEM;
  rc = uv_loop_init(&rt->loop);
  if (rc < 0) goto fail_free;
  rc = uv_async_init(&rt->loop, &rt->wakeup, runtime_on_wakeup);
  if (rc < 0) goto fail_loop;
  ff__list_init(&rt->calls);
  pthread_mutex_init(&rt->lock, NULL);
  pthread_cond_init(&rt->cond, NULL);
  pthread_mutex_init(&rt->park_serial, NULL);
  runtime_track_loop_fds(rt, true);

  /* The loop thread blocks every signal, so that signals meant for the
   * application (SIGINT above all) reach the application's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = uv_thread_create(&rt->thread, runtime_thread_main, rt);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0) goto fail_loop;
  *out = rt;
  return 0;

fail_loop:
  /* The loop has at most the async handle; close it and run the loop once
   * so libuv releases it before the loop is closed. */
  if (uv_is_active((uv_handle_t *)&rt->wakeup))
    uv_close((uv_handle_t *)&rt->wakeup, NULL);
  uv_run(&rt->loop, UV_RUN_NOWAIT);
  runtime_track_loop_fds(rt, false);
  uv_loop_close(&rt->loop);
fail_free:
  free(rt);
  return rc;
}

int ff__runtime_acquire(ff__runtime_t **runtime) {
  pthread_once(&atfork_once, runtime_register_atfork);
  pthread_mutex_lock(&runtime_lock);
  int rc = 0;
  if (runtime_current == NULL) rc = runtime_start(&runtime_current);
  *runtime = runtime_current;
  pthread_mutex_unlock(&runtime_lock);
  return rc;
}

uv_loop_t *ff__runtime_loop(ff__runtime_t *runtime) { return &runtime->loop; }

ff__runtime_t *ff__runtime_running(void) {
  pthread_mutex_lock(&runtime_lock);
  ff__runtime_t *rt = runtime_current;
  pthread_mutex_unlock(&runtime_lock);
  return rt;
}

void ff__runtime_kick(void) {
  pthread_mutex_lock(&runtime_lock);
  if (runtime_current != NULL) uv_async_send(&runtime_current->wakeup);
  pthread_mutex_unlock(&runtime_lock);
}

int ff__runtime_on_loop_thread(ff__runtime_t *runtime) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &runtime->thread);
}

int ff__runtime_call(ff__runtime_t *rt, void (*fn)(void *arg), void *arg) {
  if (ff__runtime_on_loop_thread(rt)) {
    fn(arg);
    return 0;
  }
  ff__call_t call = {.fn = fn, .arg = arg, .done = false};
  pthread_mutex_lock(&rt->lock);
  ff__list_push_back(&rt->calls, &call.link);
  pthread_mutex_unlock(&rt->lock);
  int rc = uv_async_send(&rt->wakeup);
  if (rc < 0) {
    pthread_mutex_lock(&rt->lock);
    ff__list_remove(&call.link);
    pthread_mutex_unlock(&rt->lock);
    return rc;
  }
  pthread_mutex_lock(&rt->lock);
  while (!call.done) pthread_cond_wait(&rt->cond, &rt->lock);
  pthread_mutex_unlock(&rt->lock);
  return 0;
}

int ff__runtime_post(ff__runtime_t *rt, void (*fn)(void *arg), void *arg) {
  if (ff__runtime_on_loop_thread(rt)) {
    fn(arg);
    return 0;
  }
  ff__call_t *call = calloc(1, sizeof(*call));
  if (call == NULL) return -ENOMEM;
  call->fn = fn;
  call->arg = arg;
  call->posted = true;
  pthread_mutex_lock(&rt->lock);
  ff__list_push_back(&rt->calls, &call->link);
  pthread_mutex_unlock(&rt->lock);
  /* uv_async_send only fails on a closing handle, which the runtime's never
   * is while it lives. */
  uv_async_send(&rt->wakeup);
  return 0;
}

void ff__runtime_park(ff__runtime_t *rt) {
  pthread_mutex_lock(&rt->park_serial);
  if (ff__runtime_on_loop_thread(rt)) return; /* already at a safe point */
  pthread_mutex_lock(&rt->lock);
  rt->park_requested = true;
  uv_async_send(&rt->wakeup);
  while (!rt->parked) pthread_cond_wait(&rt->cond, &rt->lock);
  pthread_mutex_unlock(&rt->lock);
}

void ff__runtime_unpark(ff__runtime_t *rt) {
  if (!ff__runtime_on_loop_thread(rt)) {
    pthread_mutex_lock(&rt->lock);
    assert(rt->park_requested && rt->parked);
    rt->park_requested = false;
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
  }
  pthread_mutex_unlock(&rt->park_serial);
}
