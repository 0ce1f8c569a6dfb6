/* The private header of the runtime: shared types and the internal
 * interface between subsystems. Internal names start with ff__.
 *
 * The files of lib/ form layers: each calls only files below it, never
 * one above, so that none depends on itself through others. From the top:
 * the pool (pool.c, pool_dispatch.c, pool_slot.c, pool_core.c; its own
 * header is pool_internal.h), zygote.c, fork.c, worker.c, task.c,
 * arena.c, pipe.c, channel.c, segment.c, share.c, ring.c, sync.c, loop.c,
 * and the leaves (process.c, frame.c, shm.c, futex.c, buf.c, error.c,
 * compact.c). Where a lower file must reach a higher one it is given a
 * function to call: the pool's operations for task.c (ff__task_host_t),
 * the arena's "segment gone" hook for share.c (ff__share_on_gone).
 * tools/check-lib-layers.py, run by meson test, fails on any cycle. */
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

/* ---- buf.c ------------------------------------------------------------- */

/* Makes room for one more item in a growable array of count items of the
 * given size: the array (moved perhaps, and *capacity grown), or NULL
 * without memory, the array as it was. */
void *ff__grow(void *array, size_t count, size_t *capacity, size_t size);

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
/* The same for a word in memory shared between processes. */
int ff__futex_wait_shared(_Atomic uint32_t *word, uint32_t expected,
                          uint64_t deadline_ns);
void ff__futex_wake_shared(_Atomic uint32_t *word);
/* A futex word with a count of its sleepers, so that waking costs a system
 * call only when someone sleeps: the sleeper counts itself in before it
 * checks the word, the waker changes the word before it checks the count
 * (both sequentially consistent), so one of them sees the other. */
int ff__futex_sleep(_Atomic uint32_t *word, uint32_t value,
                    _Atomic uint32_t *sleepers, uint64_t deadline_ns);
/* Stores value into word and wakes its sleepers, if any. */
void ff__futex_publish(_Atomic uint32_t *word, uint32_t value,
                       _Atomic uint32_t *sleepers);
/* Adds one to word and wakes its sleepers, if any. */
void ff__futex_bump(_Atomic uint32_t *word, _Atomic uint32_t *sleepers);
/* A hint to the CPU inside a spin loop. */
void ff__cpu_relax(void);
/* One step of a spin-wait: a CPU pause for the first iterations, then a
 * yield, so that a spinner on a busy machine gives its core to threads that
 * have work (on two cores, the very thread it waits for). */
void ff__spin_pause(unsigned iteration);

/* ---- shm.c: shared-memory segments --------------------------------------
 * A segment is an anonymous memfd (0600, no name in /dev/shm) mapped
 * shared; its descriptor is inherited or passed with SCM_RIGHTS, and the
 * kernel frees it when the last holder goes, SIGKILL included. */

typedef struct ff__shm_s {
  void *base;
  size_t size;
  int fd;
} ff__shm_t;

/* A new memfd of size bytes, mode 0600, close-on-exec: its descriptor, or a
 * negative errno. */
int ff__memfd(const char *name, size_t size);
int ff__shm_create(ff__shm_t *shm, const char *name, size_t size);
/* Maps a segment received as fd (taking over fd). */
int ff__shm_attach(ff__shm_t *shm, int fd);
void ff__shm_close(ff__shm_t *shm);
/* Maps length bytes of fd from offset over the pages at `at` (MAP_FIXED),
 * shared, or private (copy on write): 0 or a negative errno. */
int ff__shm_remap(void *at, size_t length, int fd, uint64_t offset,
                  bool private_copy);
/* The pages of [base, base + length) that this process has written into a
 * private mapping (copies of the file's pages, present or swapped out),
 * read from /proc/self/pagemap: calls run(start, length, arg) for each run
 * of them (run may be NULL) and returns how many, or a negative errno. */
long ff__private_pages(char *base, size_t length,
                       void (*run)(char *start, size_t length, void *arg),
                       void *arg);
/* The minor page faults of this process so far (-1 if unknown). Writing a
 * page of a private mapping that is not yet a private copy always faults:
 * if the count has not moved, no page became a private copy, and
 * ff__private_pages has nothing new to find. */
long ff__page_faults(void);

/* ---- ring.c: single-producer single-consumer message rings --------------
 * A ring lives in shared memory: a header with the producer's and the
 * consumer's positions on separate cache lines, then a power-of-two data
 * area of records. A record is a 16-byte header (length, type, flags, id)
 * and its payload, padded to 16 bytes; a record never wraps (a PAD record
 * fills the end instead), so a reader sees each one in place. A message
 * larger than FF__RING_MAX_RECORD of the ring is cut into records flagged
 * FF__RING_MORE, which the reader joins again.
 *
 * Each side sleeps on a futex word in the header after a short spin, and
 * the other side wakes it only when it announced that it sleeps: a batch of
 * records costs one wake-up. A consumer that sleeps in an event loop gives
 * the ring an eventfd to be woken through instead. */

#define FF__RING_HEADER_SIZE 256u
#define FF__RING_ALIGN 16u
#define FF__RING_RECORD_HEADER 16u

enum ff__ring_type {
  FF__RING_PAD = 0,    /* filler up to the end of the data area */
  FF__RING_TASK = 1,   /* parent -> worker: run this message */
  FF__RING_RESULT = 2, /* worker -> parent: the result of task id */
  FF__RING_READY = 3,  /* worker -> parent: initialized (or failed to) */
  FF__RING_STOP = 4,   /* parent -> worker: exit now */
  FF__RING_DEFINE = 5, /* parent -> worker: a context for later tasks */
  FF__RING_FORGET = 6, /* worker -> parent: segment ids (uint64_t) the parent
                          made for it that it let go */
  FF__RING_RETIRE = 7, /* worker -> parent: over its memory limit, it wants
                          a STOP once its tasks are done */
  FF__RING_RELEASE = 8, /* either way: arena references of the other
                           side's that this side let go
                           (ff__arena_report_t) */
  FF__RING_EXIT = 9, /* worker -> parent: it has run its last code and exits
                        with status 0 (join need not wait for the reaping) */
  FF__RING_OUTPUT = 10, /* worker -> parent, before a RESULT: the sizes its
                           captured streams had when the task ended
                           (uint64_t[FF_OUTPUT_STREAMS]) */
  FF__RING_TYPE_MAX = 10,
};
#define FF__RING_MORE 1u   /* the message continues in the next record */
#define FF__RING_FAILED 2u /* a RESULT or READY that reports a failure */
/* A RESULT too large for max_message_size: its payload is the result's
 * size (uint64_t) instead of the result. */
#define FF__RING_OVERSIZE 8u
/* A TASK that runs with the context the worker keeps in slot flags >> 8 (a
 * DEFINE with the same slot in its flags put it there). */
#define FF__RING_CONTEXT 4u
#define FF__RING_SLOT_SHIFT 8

typedef struct ff__ring_shared_s ff__ring_shared_t;

/* One process's view of a ring. The positions this process owns are kept
 * here, in private memory, and only published to the shared header: what
 * the other side writes there is never read back as this side's own. */
typedef struct ff__ring_s {
  ff__ring_shared_t *shared;
  char *data;
  uint64_t capacity;
  uint64_t max_record; /* the largest payload of one record */
  uint64_t tail;       /* the producer's position, when this side writes */
  uint64_t head;       /* the consumer's position, when this side reads */
  int consumer_fd;     /* eventfd that wakes the consumer, or -1: futex */
  int producer_fd;     /* eventfd that wakes the producer, or -1: futex */
} ff__ring_t;

/* The bytes a ring of capacity data bytes occupies. */
size_t ff__ring_size(size_t capacity);
/* Sets up a view of the ring at memory (of ff__ring_size(capacity) bytes);
 * with init, also formats it. capacity is a power of two >= 4096. */
int ff__ring_attach(ff__ring_t *ring, void *memory, size_t capacity,
                    int init);

/* Appends the message (type, flags, id, data) from *offset on, as far as it
 * fits, and publishes what was written. Returns 1 once the whole message is
 * in (*offset == length), 0 when the ring filled first (call again with the
 * same *offset once there is space), -EPIPE if the ring is broken, or
 * FF_EPROTOCOL when the consumer's position is impossible.
 * Nobody is woken: ff__ring_wake_consumer does that, once per batch. */
int ff__ring_write(ff__ring_t *ring, uint16_t type, uint16_t flags,
                   uint64_t id, const void *data, size_t length,
                   size_t *offset);
/* The same for a message made of prefix then data. */
int ff__ring_write2(ff__ring_t *ring, uint16_t type, uint16_t flags,
                    uint64_t id, const void *prefix, size_t prefix_length,
                    const void *data, size_t data_length, size_t *offset);
/* Wakes the consumer if it announced that it sleeps. */
void ff__ring_wake_consumer(ff__ring_t *ring);
/* Wakes the producer if it sleeps waiting for space. */
void ff__ring_wake_producer(ff__ring_t *ring);

/* A message read from a ring: in place (until ff__ring_release) when it was
 * one record, else joined in the reader's buffer. */
typedef struct ff__ring_msg_s {
  uint16_t type;
  uint16_t flags; /* without FF__RING_MORE */
  uint64_t id;
  const char *data;
  size_t length;
  uint64_t end; /* the ring position after the message's last record */
} ff__ring_msg_t;

typedef struct ff__ring_reader_s {
  char *buffer; /* the message being joined from fragments */
  size_t length;
  size_t capacity;
  size_t limit; /* the largest message accepted (0: any) */
  uint16_t type;
  uint64_t id;
  bool joining;
} ff__ring_reader_t;

/* Takes the next whole message: 1 and *msg, 0 when none is complete yet,
 * FF_EPROTOCOL when the ring holds something that is not a valid record
 * (the producer is broken or hostile), FF_EMSGSIZE when a message grows
 * past reader->limit (msg->id and msg->length then tell which and how much
 * had come), -ENOMEM. At most *budget bytes of fragments are copied (it is
 * decreased by what was; NULL: no bound), so that one producer that
 * streams cannot keep the reader to itself: FF__RING_FRAGMENT comes back
 * when the next fragment does not fit what is left of it (a budget of 0
 * copies none: the caller may copy them elsewhere, without its locks). */
#define FF__RING_FRAGMENT 2
int ff__ring_read(ff__ring_t *ring, ff__ring_reader_t *reader,
                  ff__ring_msg_t *msg, size_t *budget);
/* Gives the space of msg back to the producer. */
void ff__ring_release(ff__ring_t *ring, const ff__ring_msg_t *msg);
/* Takes a joined message's buffer from the reader (NULL for an in-place
 * message: the caller copies). */
char *ff__ring_reader_take(ff__ring_reader_t *reader, const ff__ring_msg_t *msg);
void ff__ring_reader_free(ff__ring_reader_t *reader);
/* Frees the reader's buffer if it holds no message being joined and is
 * larger than keep bytes: a big message's buffer is not kept for later. */
void ff__ring_reader_trim(ff__ring_reader_t *reader, size_t keep);

/* Bytes published and not yet released; cheap, for polling. */
int ff__ring_readable(const ff__ring_t *ring);
/* Waits for a record to read: spins for spin_ns, then sleeps. 0, or
 * -ETIMEDOUT, -EINTR, -EPIPE (broken). */
int ff__ring_wait_readable(ff__ring_t *ring, uint64_t spin_ns,
                           uint64_t deadline_ns);
/* Waits for room for bytes of records; the same returns. */
int ff__ring_wait_writable(ff__ring_t *ring, size_t bytes, uint64_t spin_ns,
                           uint64_t deadline_ns);
/* Announces that the consumer is about to sleep elsewhere (an event loop
 * woken through consumer_fd): 1 if there is already something to read, in
 * which case it must not sleep. */
int ff__ring_arm_consumer(ff__ring_t *ring);
/* Withdraws the announcement (a spinning reader polls instead). */
void ff__ring_disarm_consumer(ff__ring_t *ring);
/* The producer announces it waits for space (woken through the consumer
 * side's ff__ring_wake_producer). 1 if there is space already. */
int ff__ring_arm_producer(ff__ring_t *ring, size_t bytes);

/* Marks the ring broken (its other side died) and wakes both sides; every
 * later write fails with -EPIPE and waits return it. */
void ff__ring_break(ff__ring_t *ring);
int ff__ring_broken(const ff__ring_t *ring);
/* Checks the ring's invariants and every record between the positions:
 * 0, or FF_EPROTOCOL if anything is out of place. */
int ff__ring_check(const ff__ring_t *ring);

/* ---- loop.c: the runtime and its loop thread ----------------------------- */

typedef struct ff__runtime_s ff__runtime_t;

/* The runtime of this process, started on first use. */
int ff__runtime_acquire(ff__runtime_t **runtime);
uv_loop_t *ff__runtime_loop(ff__runtime_t *runtime);
/* The runtime of this process if it runs already, else NULL (none is
 * started). */
ff__runtime_t *ff__runtime_running(void);
int ff__runtime_on_loop_thread(ff__runtime_t *runtime);
/* Runs fn(arg) in the loop thread and waits for it to return (runs it
 * directly when called from the loop thread). */
int ff__runtime_call(ff__runtime_t *runtime, void (*fn)(void *arg), void *arg);
/* Runs fn(arg) in the loop thread later, without waiting for it. */
int ff__runtime_post(ff__runtime_t *runtime, void (*fn)(void *arg), void *arg);
/* Wakes this process's loop thread, if it runs, for one more round: its
 * pools then write what waits to be written (reports to workers). */
void ff__runtime_kick(void);
/* Stops the loop thread at a point where it holds no lock, so that the
 * calling thread can fork. Serializes concurrent callers. */
void ff__runtime_park(ff__runtime_t *runtime);
void ff__runtime_unpark(ff__runtime_t *runtime);
/* fork.c, above loop.c, task.c and share.c: forks the caller with the
 * loop thread of runtime (NULL: none runs) parked, the hooks around the
 * fork, and the share table consistent in the child: the child's pid, 0 in the child (which ran hooks->child only with
 * child_hook), or a negative errno. With callbacks_wait >= 0, the callback
 * thread is held too, waiting that many seconds at most for a batch it
 * runs to end (else -EBUSY, and no fork), as ff_fork says. */
pid_t ff__runtime_fork(ff__runtime_t *runtime, const ff_fork_hooks_t *hooks,
                       bool child_hook, double callbacks_wait);

/* The registry of descriptors the runtime owns, so that a forked zygote can
 * close the ones it must not hold (another pool's worker sockets, say). */
void ff__fd_track(int fd);
void ff__fd_untrack(int fd);
/* Closes every tracked descriptor but keep; in a fresh child only. */
void ff__fd_close_tracked_in_child(int keep);

/* ---- process.c: sockets that carry descriptors, pidfds, wait statuses ----
 * A leaf: the zygote's control socket and the lender sockets (share.c)
 * both use it. */

/* The most descriptors one message of the runtime's own protocols
 * carries. */
#define FF__SOCK_MAX_FDS 6
/* The most descriptors one message carries at all: Linux's SCM_MAX_FD. */
#define FF__SCM_MAX_FDS 253

/* Sends a message of length bytes on a SOCK_SEQPACKET socket with nfds
 * descriptors attached (SCM_RIGHTS). 0 or a negative errno. */
int ff__sock_send(int socket, const void *msg, size_t length, const int *fds,
                  unsigned nfds);
/* Receives one message of exactly length bytes: 1 with its descriptors (up
 * to FF__SOCK_MAX_FDS into fds, their number in *nfds), 0 at end of
 * stream, FF_EPROTOCOL for a message of another size, or a negative errno
 * (-EAGAIN with MSG_DONTWAIT in flags). */
int ff__sock_recv(int socket, void *msg, size_t length, int *fds,
                  unsigned *nfds, int flags);
void ff__sock_close_fds(int *fds, unsigned *nfds);
/* What the two above are made of, for stream sockets too (a pipe's).
 * One sendmsg of length bytes with nfds descriptors (at most
 * FF__SCM_MAX_FDS) attached, flags added to MSG_NOSIGNAL (MSG_DONTWAIT,
 * say): 0 once all of it went, -EIO for a part, or a negative errno. */
int ff__sock_sendmsg(int socket, const void *msg, size_t length,
                     const int *fds, unsigned nfds, int flags);
/* One recvmsg of at most length bytes: how many came (0 at end of
 * stream), or a negative errno. Its descriptors go to fds, up to max_fds
 * of them (their number in *nfds; any more are closed); *cut (may be NULL)
 * says whether any were closed or the message did not fit. */
ssize_t ff__sock_recvmsg(int socket, void *msg, size_t length, int *fds,
                         unsigned max_fds, unsigned *nfds, int flags,
                         bool *cut);

int ff__pidfd_open(pid_t pid);
int ff__pidfd_send_signal(int pidfd, int sig);
/* Describes a wait status in exit: exit code or signal. */
void ff__exit_from_status(ff_exit_t *exit, pid_t pid, int status);

/* ---- output.c: a worker's captured output ---------------------------------
 * A leaf. Each captured stream is a memfd in append mode: the worker writes
 * without ever blocking on a reader, what it wrote outlives it, and the
 * file's size says exactly how much it wrote. The worker tells the parent
 * the sizes at the end of each task; the parent reads each task's range
 * and gives the pages it read back. */
typedef struct ff__output_s {
  int fd[FF_OUTPUT_STREAMS]; /* -1: not captured */
  uint64_t taken[FF_OUTPUT_STREAMS]; /* bytes read so far */
  uint64_t freed[FF_OUTPUT_STREAMS]; /* bytes whose pages went back */
} ff__output_t;

void ff__output_init(ff__output_t *output);
/* Creates the streams' files (tracked descriptors): 0 or a negative errno. */
int ff__output_open(ff__output_t *output);
void ff__output_close(ff__output_t *output);
static inline bool ff__output_captured(const ff__output_t *output) {
  return output->fd[0] >= 0;
}
/* Appends to *into what stream holds from what was taken so far up to end
 * (UINT64_MAX: all of it), which a worker says and so is checked against
 * the file; into holds at most limit bytes (the oldest of the rest are
 * skipped, with a note that says how many). 0 or a negative errno. */
int ff__output_take(ff__output_t *output, unsigned stream, uint64_t end,
                    ff_buf_t *into, size_t limit);
/* In a new worker: the streams' files become its descriptors 1 and 2 (the
 * third stays where it is), and stdio forgets what the parent had left in
 * its buffers, which the parent prints itself. fds: FF_OUTPUT_STREAMS
 * descriptors, or NULL when the pool does not capture. */
void ff__output_worker_start(const int *fds);
/* In a worker that captures: flushes stdio and fills end with the
 * streams' sizes; false when it does not capture. */
bool ff__output_worker_ends(uint64_t end[FF_OUTPUT_STREAMS]);

/* ---- zygote.c: the process that forks a pool's workers ------------------
 * Above worker.c (it runs a worker's main in each child) and fork.c. */

enum ff__ctl_type {
  FF__CTL_SPAWN = 1,   /* parent -> zygote, with the worker's segment,
                          doorbell and lender socket */
  FF__CTL_SPAWNED = 2, /* zygote -> parent, with a pidfd of the worker */
  FF__CTL_EXITED = 3,  /* zygote -> parent: a worker exited */
};

typedef struct ff__ctl_msg_s {
  uint32_t type;
  uint32_t slot;
  int32_t pid;
  int32_t status; /* wait status for EXITED; -errno for a failed SPAWNED */
} ff__ctl_msg_t;

/* Forks the zygote of a pool from the calling thread. On success sets *pid,
 * *pidfd and *ctl (the parent's end of the control socket). */
int ff__zygote_fork(ff__runtime_t *runtime, const ff_pool_options_t *options,
                    pid_t *pid, int *pidfd, int *ctl);
/* Takes options->zygote for the pool instead (see ff_zygote_t): the same
 * outputs, and its descriptors are closed on error. */
int ff__zygote_adopt(const ff_zygote_t *zygote, pid_t *pid, int *pidfd,
                     int *ctl);

/* ---- worker.c: the worker process ---------------------------------------- */

/* Workers that die in a row before they are ready (an initializer that
 * crashes or exits) fail the pool with FF_EINITFAILED; fewer are replaced,
 * since one may have been killed from outside while it started. Deaths by
 * SIGKILL, almost always from outside, count against a larger bound. */
#define FF__STARTUP_FAILURES 3u
#define FF__STARTUP_KILLS 100u

/* The exit codes a worker uses for its own reasons. */
#define FF__EXIT_INIT_FAILED 70
#define FF__EXIT_PROTOCOL 71

/* A worker's segment: its task ring, then its result ring. */
#define FF__TASK_RING_CAPACITY ((size_t)1 << 20)
#define FF__RESULT_RING_CAPACITY ((size_t)1 << 20)
#define FF__WORKER_SEGMENT_SIZE                                              \
  (FF__RING_HEADER_SIZE + FF__TASK_RING_CAPACITY + FF__RING_HEADER_SIZE +     \
   FF__RESULT_RING_CAPACITY)
/* Contexts a worker keeps; the parent decides which slot each one takes. */
#define FF__CONTEXT_SLOTS 8u
/* How long a worker spins for its next task before it sleeps: long enough
 * to catch a caller that submits again right after its result came back. */
#define FF__WORKER_SPIN_NS 60000u
/* A RESULT payload starts with the time work() took (uint64_t ns). */
#define FF__RESULT_PREFIX 8u

/* max_message_size when the options leave it 0: a quarter of the memory. */
size_t ff__default_max_message(void);

/* Attaches the two rings of a worker segment (formatting them with init). */
int ff__worker_rings(void *segment, ff__ring_t *tasks, ff__ring_t *results,
                     int init);

/* The body of the worker process of a slot: never returns. It takes over
 * the segment's descriptor, the doorbell (the eventfd that wakes the
 * parent's loop) and its end of the lender socket (share.c). */
_Noreturn void ff__worker_main(const ff_pool_options_t *options, unsigned slot,
                               int shm_fd, int doorbell_fd, int lender_fd);

/* ---- share.c: segments this process lends to its workers (below arena.c)
 * A table of the memfds this process created with ff_segment_create, by
 * id. Each worker has a SOCK_SEQPACKET socket to its pool's creator (the
 * lender socket); the creator's loop thread answers the worker's requests
 * on it: OPEN an id (the reply carries the descriptor, SCM_RIGHTS), or
 * CREATE a segment that both can open (the worker's outgoing arena). */

/* The most segments made for one worker (its shared arrays and arena
 * chunks) that may be alive at once: a worker past it gets FF_EQUOTA. */
#define FF__SHARE_QUOTA 1024u

/* A worker (owner: its receiver id, 2 or more) is lent to: it may open the
 * count segments of lendable (its pool's initializer's), the segments
 * named by messages given to it, and those made for it. */
int ff__share_add_owner(uint64_t owner, const uint64_t *lendable,
                        size_t count);
/* A task message goes to owner: it may open what the message names. */
void ff__share_allow_message(uint64_t owner, const void *message,
                             size_t length);
/* Answers the requests waiting on the lender socket of one worker (a
 * bounded batch of them). 0, or a negative errno / 0-length end of stream
 * as -EPIPE: stop watching. */
int ff__share_serve(int socket, uint64_t owner);
/* Forgets the segments created on behalf of owner (its worker is gone),
 * and what it was allowed to open. */
void ff__share_drop_owner(uint64_t owner);
/* A task holds the segments its message's frame pins from its submission
 * until it finishes. */
void ff__share_pin_message(const void *message, size_t length);
void ff__share_unpin_message(const void *message, size_t length);
/* Parent: the worker owner let segment id go (a FORGET record). */
void ff__share_forget_owned(uint64_t id, uint64_t owner);
/* Worker: the ids of parent-made segments it let go since the last call,
 * up to max of them; their number. */
size_t ff__share_take_forgotten(uint64_t *ids, size_t max);
/* In a worker: its end of the lender socket. */
void ff__share_set_lender(int socket);
/* Worker: 1 once a request to its parent went wrong (timed out, or a reply
 * that did not match): the socket is closed and the worker must be
 * replaced. */
int ff__share_lender_lost(void);
/* The worker a segment was made for (its receiver id), or 0. */
uint64_t ff__share_owner_of(uint64_t id);
/* Sets who is told (with the table's lock released) of each segment that
 * can no longer be opened here, its worker gone: the arena, which unmaps
 * its views of them. share.c is below arena.c and does not call it. */
void ff__share_on_gone(void (*hook)(uint64_t id));
/* ---- arena.c: above share.c, whose segments its chunks are ------------- */

/* The header at the start of each arena chunk: regions start after it. */
#define FF__ARENA_HEADER 8192u
#define FF__ARENA_MAGIC UINT64_C(0x31414e4552414646) /* "FFARENA1" */
/* The most messages and held regions a chunk holds at once. */
#define FF__ARENA_SLOTS 340u

/* The chunk header in shared memory: what receivers check a chunk by. The
 * sender (arena.c) writes it and never reads it back; receivers
 * (arena_view.c) copy it before they look. */
typedef struct ff__arena_header_s {
  uint64_t magic;
  uint64_t id;
  uint64_t size;
  uint32_t slots;
  /* Set by the sender when it lets the chunk go: receivers unmap it once
   * they hold nothing in it. */
  _Atomic uint32_t retired;
} ff__arena_header_t;

_Static_assert(sizeof(ff__arena_header_t) <= FF__ARENA_HEADER,
               "the header fits its space");

/* arena_view.c: drops the reports not yet sent to a worker that is gone. */
void ff__arena_drop_reports_for(uint64_t owner);
/* The receiver id that names a worker's parent in its result arena. */
#define FF__RECEIVER_PARENT 1u

/* What a receiver reports of a reference it let go (a RELEASE record, on
 * either ring, carries these). */
typedef struct ff__arena_report_s {
  uint64_t chunk;
  uint32_t slot;
  uint32_t generation;
} ff__arena_report_t;

/* A task message (sender side) or a result (receiver side) that will not
 * be received: frees the arena references of its frame, if it has one. */
void ff__arena_cancel_message(const void *message, size_t length);
void ff__arena_discard_message(const void *message, size_t length);
/* A task message goes to the worker known as receiver: its references are
 * given to it, and only its reports or its death free them. */
void ff__arena_assign_message(const void *message, size_t length,
                              uint64_t receiver);
/* A task message given to receiver, which died before it ran the task
 * (or died running it, and the task is retried), goes back to the queue:
 * its references are SENT again. 1, or 0 if any was not held by receiver
 * any more (it let the bytes go, and they may have been reused). */
int ff__arena_unassign_message(const void *message, size_t length,
                               uint64_t receiver);
/* A RELEASE record of receiver's (FF__RECEIVER_PARENT in a worker): frees
 * the slots it names that were given to receiver; the others are
 * ignored. */
void ff__arena_reported(uint64_t receiver, const void *records,
                        size_t length);
/* receiver is gone: whatever was given to it is free, and nothing is
 * reported to it any more. */
void ff__arena_drop_receiver(uint64_t receiver);
/* Worker: up to max of the reports not yet sent to its parent; their
 * number. */
size_t ff__arena_take_reports(ff__arena_report_t *out, size_t max);
/* Parent: up to max of the reports not yet sent to the worker known as
 * owner; their number. Those that did not fit its ring go back. */
size_t ff__arena_take_reports_for(uint64_t owner, ff__arena_report_t *out,
                                  size_t max);
void ff__arena_put_back_reports(uint64_t owner, const ff__arena_report_t *in,
                                size_t count);
/* In a new worker: the reports and the lock are this process's own. */
void ff__arena_forget_reports(void);

/* Around a fork of the runtime's (ff__runtime_fork): the table is
 * consistent in the child, and its lock free there. */
void ff__share_fork_prepare(void);
void ff__share_fork_parent(void);
void ff__share_fork_child(void);

/* ---- task.c: tasks, contexts and completion queues -----------------------
 * Below the pool: task.c reaches a task's pool only through the
 * ff__task_host_t the pool gave it. */

enum ff__task_stage {
  FF__TASK_QUEUED = 0,     /* waiting in the pool */
  FF__TASK_CANCELLING = 1, /* cancel() won: the loop will finish it */
  FF__TASK_DISPATCHED = 2, /* sent to a worker */
  FF__TASK_FINISHED = 3,   /* has its outcome; waiters are being woken */
};

/* The values of a task's done word. */
#define FF__TASK_RUNNING 0u
#define FF__TASK_PUBLISHED 1u /* finished; waiters may go */
#define FF__TASK_CALLBACK 2u  /* finished; its callback has yet to run */

/* What task.c needs of the pool a task belongs to: the pool gives these
 * with each task (ff__task_new), so that task.c, below the pool, never
 * calls it by name. */
typedef struct ff__task_host_s {
  void (*retain)(ff_pool_t *pool);
  void (*release)(ff_pool_t *pool);
  /* 1 in a forked child that holds a copy of its parent's pool. */
  int (*is_foreign)(ff_pool_t *pool);
  /* 1 on the loop thread, which finishes tasks and must never wait. */
  int (*on_loop_thread)(ff_pool_t *pool);
  /* The options the pool was made with (its completion callback, for the
   * callback thread). */
  const ff_pool_options_t *(*options)(ff_pool_t *pool);
  /* Drains the pool's result rings if no other thread holds its lock. */
  void (*poll)(ff_pool_t *pool);
  /* Waits until *word != value or the deadline, polling the pool's result
   * rings for a while first. 0, -ETIMEDOUT or -EINTR. */
  int (*wait)(ff_pool_t *pool, _Atomic uint32_t *word, uint32_t value,
              _Atomic uint32_t *sleepers, uint64_t deadline_ns);
  /* A queued task was marked cancelling: the loop finishes it. */
  void (*wake)(ff_pool_t *pool);
  /* Kills the worker running task (now, or once the task is the one it
   * runs next), for ff_task_kill. */
  void (*kill)(ff_pool_t *pool, ff_task_t *task);
} ff__task_host_t;

/* A context: immutable once made, shared by reference. */
struct ff_context_s {
  _Atomic uint32_t refs;
  uint64_t key; /* names it to the workers (never reused) */
  char *data;
  size_t length;
};

/* A context holding a copy of data: 0, or -ENOMEM. */
int ff__context_new(const void *data, size_t length, ff_context_t **out);
void ff__context_retain(ff_context_t *context);

struct ff_task_s {
  /* In the pool's pending list, a worker's in-flight list, a list of tasks
   * to publish, or the callback thread's queue. */
  ff__link_t link;
  ff__link_t queue_link; /* in a completion queue */
  _Atomic uint32_t refs;
  _Atomic uint32_t stage;
  _Atomic uint32_t done; /* the futex word waiters sleep on */
  _Atomic uint32_t sleepers;
  _Atomic uint32_t callback_claimed; /* a thread took its callback */
  /* Threads in ff_task_wait for it, when it is FF_SUBMIT_CLAIMABLE: its
   * callback is then left to them, not queued for the callback thread. */
  _Atomic uint32_t claimers;
  uint64_t id;
  unsigned flags;
  ff_pool_t *pool; /* holds a reference to the pool while the task lives */
  const ff__task_host_t *host; /* what the task may ask of its pool */
  ff_context_t *context; /* a reference, or NULL */
  uint16_t ring_flags;   /* the TASK record's flags for the worker it went to */
  ff_queue_t *queue;
  void *user_data;
  /* Until it finishes: the caller's message (kept after dispatch, so that
   * a task queued behind a worker that died can be sent again). */
  char *message;
  size_t message_length;
  /* Once finished: */
  int status;
  char *result_block; /* the allocation that holds the result */
  char *result;       /* inside result_block */
  size_t result_length;
  uint64_t run_ns;
  ff_exit_t exit;
  /* What its worker wrote while it ran it, when the pool captures output. */
  ff_buf_t output[FF_OUTPUT_STREAMS];
  int output_slot; /* the slot of the worker that wrote it, or -1 */
  /* ff_task_result_taken was called: a decoder received the result's
   * out-of-band buffers, and gives each back itself. */
  bool result_taken;
  /* Set by ff_task_kill once a worker has it: the status it finishes with
   * when its worker is killed for it. */
  _Atomic int kill_status;
  /* Its timeout (0: none); when its worker started it (it became the head
   * of the worker's in-flight list); when its worker got SIGTERM for it.
   * Under the pool lock. */
  uint64_t timeout_ns;
  uint64_t started_ns;
  uint64_t stopped_ns;
  unsigned retries; /* runs left after a worker dies under it */
};

ff_task_t *ff__task_new(ff_pool_t *pool, const ff__task_host_t *host,
                        ff_context_t *context, const void *message,
                        size_t length, unsigned flags, ff_queue_t *queue,
                        void *user_data);
/* Records the outcome: the result is result_length bytes at offset in
 * block, which the task takes over (NULL: none). Waiters are not woken
 * yet: ff__task_publish does that, after any completion callback ran. */
void ff__task_settle(ff_task_t *task, int status, char *block, size_t offset,
                     size_t result_length, const ff_exit_t *exit);
/* Marks a settled task finished, wakes its waiters, pushes it onto its
 * completion queue and drops the runtime's reference. */
void ff__task_publish(ff_task_t *task);
/* Settled tasks (linked through link) whose completion callbacks are to
 * run: on the callback thread, in order, unless a waiter claims one; each
 * is published after its callback. Empties tasks. */
void ff__task_defer_callbacks(ff__link_t *tasks);
/* Keeps the callback thread from running callbacks, once the batch it runs
 * (if any) is done, until the deadline: 1 when held, 0 on the callback
 * thread itself (between its batches already), -ETIMEDOUT. */
int ff__task_callbacks_hold(uint64_t deadline_ns);
/* Ends a hold: held is what ff__task_callbacks_hold returned (in the
 * parent, or in the child of a fork, whose one thread holds it). */
void ff__task_callbacks_unhold(int held);
/* Waits until the callback thread has run every callback handed to it so
 * far (at once on that thread). 0, -ETIMEDOUT or -EINTR. */
int ff__task_callbacks_flush(uint64_t deadline_ns);
void ff__queue_push(ff_queue_t *queue, ff_task_t *task);

/* ---- the pool (pool.c, pool_dispatch.c, pool_slot.c, pool_core.c) ------
 * Its state and the interface between its files are in pool_internal.h:
 * nothing else in lib/ calls the pool (task.c reaches it through
 * ff__task_host_t). */

#endif /* FF_INTERNAL_H */
