/* The one private header of the runtime: shared types and the internal
 * interface between subsystems. Internal names start with ff__. */
#ifndef FF_INTERNAL_H
#define FF_INTERNAL_H

#include "forkfarm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define FF__UNUSED(x) ((void)(x))
#define FF__CONTAINER_OF(ptr, type, field)                                   \
  ((type *)((char *)(ptr) - offsetof(type, field)))

/* ---- list.h-style intrusive doubly linked list ------------------------ */

typedef struct ff__link_s {
  struct ff__link_s *next;
  struct ff__link_s *prev;
} ff__link_t;

static inline void ff__list_init(ff__link_t *head) {
  head->next = head;
  head->prev = head;
}
static inline bool ff__list_empty(const ff__link_t *head) {
  return head->next == head;
}
static inline void ff__list_push_back(ff__link_t *head, ff__link_t *link) {
  link->prev = head->prev;
  link->next = head;
  head->prev->next = link;
  head->prev = link;
}
static inline void ff__list_push_front(ff__link_t *head, ff__link_t *link) {
  link->next = head->next;
  link->prev = head;
  head->next->prev = link;
  head->next = link;
}
static inline void ff__list_remove(ff__link_t *link) {
  link->prev->next = link->next;
  link->next->prev = link->prev;
  link->next = link;
  link->prev = link;
}
static inline ff__link_t *ff__list_pop_front(ff__link_t *head) {
  ff__link_t *link = head->next;
  if (link == head) return NULL;
  ff__list_remove(link);
  return link;
}
/* Moves every element of from to the end of to, leaving from empty. */
static inline void ff__list_splice(ff__link_t *to, ff__link_t *from) {
  if (ff__list_empty(from)) return;
  from->next->prev = to->prev;
  to->prev->next = from->next;
  from->prev->next = to;
  to->prev = from->prev;
  ff__list_init(from);
}

/* ---- time and futex (futex.c) ----------------------------------------- */

/* Monotonic clock in nanoseconds. */
uint64_t ff__now_ns(void);
/* Converts a timeout in seconds (negative: none) to an absolute deadline in
 * ns, or UINT64_MAX for none. */
uint64_t ff__deadline(double timeout);
/* Waits while *word == expected, until the deadline. Returns 0 when woken or
 * the value changed, -ETIMEDOUT, or -EINTR. Private (not process-shared). */
int ff__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                   uint64_t deadline_ns);
void ff__futex_wake_all(_Atomic uint32_t *word);

/* ---- wire.c: framing of messages between the parent and a worker ------- */

#define FF__WIRE_MAGIC 0x31574646u /* "FFW1" little endian */
#define FF__WIRE_HEADER_SIZE 24u
/* The largest payload a frame may carry. The bound keeps a corrupt length
 * from turning into a huge allocation. */
#define FF__WIRE_MAX_PAYLOAD ((uint64_t)1 << 40)

enum ff__frame_type {
  FF__FRAME_TASK = 1,   /* parent -> worker: run this message */
  FF__FRAME_RESULT = 2, /* worker -> parent: the result of the task id */
  FF__FRAME_READY = 3,  /* worker -> parent: initialized (or failed to) */
  FF__FRAME_STOP = 4,   /* parent -> worker: exit now */
};
#define FF__FRAME_FLAG_FAILED 1u

typedef struct ff__frame_header_s {
  uint32_t magic;
  uint16_t type;
  uint16_t flags;
  uint64_t id;
  uint64_t length;
} ff__frame_header_t;

void ff__wire_encode_header(void *out, uint16_t type, uint16_t flags,
                            uint64_t id, uint64_t length);
/* Decodes and validates a header: 0 or FF_EPROTOCOL. */
int ff__wire_decode_header(const void *in, ff__frame_header_t *header);

/* An incremental reader of frames from a byte stream. Bytes go in through
 * ff__wire_reader_space / ff__wire_reader_commit (or ff__wire_reader_fill
 * from a descriptor); whole frames come out of ff__wire_reader_next. */
typedef struct ff__wire_reader_s {
  char *staging;
  size_t staging_capacity;
  size_t start; /* first unparsed byte in staging */
  size_t end;   /* one past the last byte in staging */
  /* A frame too large for staging is read straight into its own buffer. */
  ff__frame_header_t large_header;
  char *large_payload;
  size_t large_filled;
  bool large_active;
} ff__wire_reader_t;

typedef struct ff__frame_s {
  ff__frame_header_t header;
  char *payload; /* malloc'd, owned by the receiver of the frame; may be
                    NULL when the length is 0 */
} ff__frame_t;

int ff__wire_reader_init(ff__wire_reader_t *reader);
void ff__wire_reader_free(ff__wire_reader_t *reader);
/* Where the next bytes of the stream go: up to *length bytes at the result. */
char *ff__wire_reader_space(ff__wire_reader_t *reader, size_t *length);
void ff__wire_reader_commit(ff__wire_reader_t *reader, size_t length);
/* One read(2) into the reader: bytes read, 0 at end of stream, or a negative
 * errno (-EAGAIN on a non-blocking descriptor with nothing to read). */
ssize_t ff__wire_reader_fill(ff__wire_reader_t *reader, int fd);
/* Takes the next whole frame: 1 and *frame, 0 when more bytes are needed,
 * FF_EPROTOCOL on a corrupt stream, -ENOMEM. */
int ff__wire_reader_next(ff__wire_reader_t *reader, ff__frame_t *frame);
/* 1 when the reader holds part of a frame (so an end of stream now means a
 * truncated frame). */
int ff__wire_reader_partial(const ff__wire_reader_t *reader);

/* Writes a whole frame to a blocking descriptor: 0 or a negative errno. */
int ff__wire_write_frame(int fd, uint16_t type, uint16_t flags, uint64_t id,
                         const void *payload, size_t length);

/* ---- channel.c: the parent's end of a worker's transport ----------------
 * The pool only sees this interface, so the transport (a socketpair today,
 * shared-memory rings later) can change without touching the pool. */

typedef struct ff__channel_s ff__channel_t;

typedef struct ff__channel_callbacks_s {
  /* A whole frame arrived; the callee owns frame->payload. */
  void (*on_frame)(ff__channel_t *channel, ff__frame_t *frame);
  /* The stream ended (cleanly or not: error is 0, FF_EPROTOCOL or -errno). */
  void (*on_end)(ff__channel_t *channel, int error);
} ff__channel_callbacks_t;

/* Opens a channel over fd, which it takes over. Runs in the loop thread. */
int ff__channel_open(ff__channel_t **channel, uv_loop_t *loop, int fd,
                     const ff__channel_callbacks_t *callbacks, void *data);
void *ff__channel_data(const ff__channel_t *channel);
/* Queues a frame made of a header and a payload that stays valid until done
 * runs (done may be NULL). */
int ff__channel_send(ff__channel_t *channel, uint16_t type, uint16_t flags,
                     uint64_t id, const void *payload, size_t length,
                     void (*done)(void *context, int status), void *context);
/* Reads whatever is left in the stream right now, delivering frames, until
 * it would block or the stream ends. */
void ff__channel_drain(ff__channel_t *channel);
/* Closes the channel; pending sends complete with FF_ECANCELED. The memory is
 * freed once libuv has released the handle. */
void ff__channel_close(ff__channel_t *channel);

/* ---- loop.c: the runtime and its loop thread ----------------------------- */

typedef struct ff__runtime_s ff__runtime_t;

/* The runtime of this process, started on first use. */
int ff__runtime_acquire(ff__runtime_t **runtime);
uv_loop_t *ff__runtime_loop(ff__runtime_t *runtime);
int ff__runtime_on_loop_thread(ff__runtime_t *runtime);
/* Runs fn(arg) in the loop thread and waits for it to return (runs it
 * directly when called from the loop thread). */
int ff__runtime_call(ff__runtime_t *runtime, void (*fn)(void *arg), void *arg);
/* Stops the loop thread at a point where it holds no lock, so that the
 * calling thread can fork. Serializes concurrent callers. */
void ff__runtime_park(ff__runtime_t *runtime);
void ff__runtime_unpark(ff__runtime_t *runtime);

/* The registry of descriptors the runtime owns, so that a forked zygote can
 * close the ones it must not hold (another pool's worker sockets, say). */
void ff__fd_track(int fd);
void ff__fd_untrack(int fd);
/* Closes every tracked descriptor but keep; in a fresh child only. */
void ff__fd_close_tracked_in_child(int keep);

/* ---- zygote.c: the process that forks a pool's workers ------------------ */

enum ff__ctl_type {
  FF__CTL_SPAWN = 1,   /* parent -> zygote, with the worker's socket */
  FF__CTL_SPAWNED = 2, /* zygote -> parent, with a pidfd of the worker */
  FF__CTL_EXITED = 3,  /* zygote -> parent: a worker exited */
};

typedef struct ff__ctl_msg_s {
  uint32_t type;
  uint32_t slot;
  int32_t pid;
  int32_t status; /* wait status for EXITED; -errno for a failed SPAWNED */
} ff__ctl_msg_t;

/* Sends a control message, with fd attached when fd >= 0. */
int ff__ctl_send(int socket, const ff__ctl_msg_t *msg, int fd);
/* Receives one: 1 and the message (*fd is the attached descriptor or -1), 0
 * at end of stream, or a negative errno. */
int ff__ctl_recv(int socket, ff__ctl_msg_t *msg, int *fd);

/* Forks the zygote of a pool from the calling thread. On success sets *pid,
 * *pidfd and *ctl (the parent's end of the control socket). */
int ff__zygote_fork(ff__runtime_t *runtime, const ff_pool_options_t *options,
                    pid_t *pid, int *pidfd, int *ctl);

/* ---- worker.c: the worker process ---------------------------------------- */

/* The exit codes a worker uses for its own reasons. */
#define FF__EXIT_INIT_FAILED 70
#define FF__EXIT_PROTOCOL 71

/* The body of a worker process: never returns. */
_Noreturn void ff__worker_main(const ff_pool_options_t *options, int fd);

/* ---- process helpers (zygote.c) ------------------------------------------ */

int ff__pidfd_open(pid_t pid);
int ff__pidfd_send_signal(int pidfd, int sig);
/* Describes a wait status in exit: exit code or signal. */
void ff__exit_from_status(ff_exit_t *exit, pid_t pid, int status);

/* ---- task.c: tasks and completion queues --------------------------------- */

enum ff__task_stage {
  FF__TASK_QUEUED = 0,     /* waiting in the pool */
  FF__TASK_CANCELLING = 1, /* cancel() won: the loop will finish it */
  FF__TASK_DISPATCHED = 2, /* sent to a worker */
  FF__TASK_FINISHED = 3,   /* has its outcome; waiters are being woken */
};

struct ff_task_s {
  ff__link_t link; /* in the pool's incoming/pending list or a worker's */
  ff__link_t queue_link; /* in a completion queue */
  _Atomic uint32_t refs;
  _Atomic uint32_t stage;
  _Atomic uint32_t done; /* the futex word waiters sleep on */
  uint64_t id;
  unsigned flags;
  ff_pool_t *pool; /* holds a reference to the pool while the task lives */
  ff_queue_t *queue;
  void *user_data;
  /* Until it finishes: the caller's message (kept after dispatch, so that
   * a task queued behind a worker that died can be sent again). */
  char *message;
  size_t message_length;
  /* Once finished: */
  int status;
  char *result;
  size_t result_length;
  ff_exit_t exit;
};

ff_task_t *ff__task_new(ff_pool_t *pool, const void *message, size_t length,
                        unsigned flags, ff_queue_t *queue, void *user_data);
/* Records the outcome (taking ownership of result). Waiters are not woken
 * yet: ff__task_publish does that, after any completion callback ran. */
void ff__task_settle(ff_task_t *task, int status, char *result,
                     size_t result_length, const ff_exit_t *exit);
/* Marks a settled task finished, wakes its waiters, pushes it onto its
 * completion queue and drops the runtime's reference. */
void ff__task_publish(ff_task_t *task);
void ff__queue_push(ff_queue_t *queue, ff_task_t *task);

/* ---- pool.c -------------------------------------------------------------- */

void ff__pool_retain(ff_pool_t *pool);
void ff__pool_release(ff_pool_t *pool);
/* Called by ff_task_cancel once the task is marked cancelling. */
void ff__pool_wake(ff_pool_t *pool);
int ff__pool_loop_thread_is_current(ff_pool_t *pool);
/* 1 in a forked child that holds a copy of its parent's pool. */
int ff__pool_is_foreign(ff_pool_t *pool);

#endif /* FF_INTERNAL_H */
