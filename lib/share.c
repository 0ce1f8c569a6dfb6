/* Segments this process lends to its workers.
 *
 * A shared array made after a pool started cannot reach the pool's workers
 * by inheritance, so the creator keeps a table of the memfds it made, by id,
 * and each worker has a socket to the creator (the lender socket, created
 * with the worker and handed over by the zygote). A worker that meets an id
 * it does not hold asks for it once; the creator's loop thread answers with
 * the descriptor attached (SCM_RIGHTS). A worker's outgoing arena is made by
 * the creator on the worker's request (CREATE), so that the creator can
 * open it when results point into it; those segments belong to the worker
 * and are forgotten when it goes.
 *
 * The creator does not trust its workers (see the trust boundary in
 * docs/failures.md):
 * - Ids are random 64-bit values, and a worker may open only what it was
 *   given: the segments named by the messages sent to it, those made for
 *   it, and those its pool lends every worker (its initializer's).
 * - A worker may hold FF__SHARE_QUOTA segments made for it at a time, and
 *   the creator keeps half its descriptor limit for itself.
 * - Every request carries an id that its reply echoes, and the worker
 *   checks the reply against its request. A worker whose request times out
 *   closes its socket and asks to be replaced: a late reply must never
 *   answer a later request. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum share_request {
  SHARE_OPEN = 1,   /* worker -> creator: a descriptor of segment id */
  SHARE_CREATE = 2, /* worker -> creator: make a segment of size bytes */
  SHARE_REPLY = 3,  /* creator -> worker: status, id, size (+ descriptor) */
};

typedef struct share_msg_s {
  uint32_t type;
  int32_t status;
  uint64_t id;
  uint64_t size;
  uint64_t request; /* the worker's count of requests; echoed */
} share_msg_t;

typedef struct share_entry_s {
  uint64_t id;
  int fd;
  uint64_t owner; /* 0: this process; else the worker it was made for */
  unsigned pins;  /* tasks in flight that carry it */
  bool forgotten; /* its creator let it go: removed with the last pin */
} share_entry_t;

/* In a worker, the owner of the entries of segments its parent made for it:
 * forgetting one tells the parent. */
#define OWNER_PARENT ((uint64_t)1)

/* A worker of this process's pools, as the lender knows it: the segments
 * it may open, and how many made for it are alive. */
typedef struct share_owner_s {
  uint64_t owner;
  uint64_t *allowed; /* an open-addressed set; 0 marks an empty place */
  size_t allowed_count;
  size_t allowed_capacity; /* a power of two, or 0 */
  unsigned created;
} share_owner_t;

/* In a worker: parent-made segments let go, not yet reported. */
static uint64_t *forgotten_ids;
static size_t forgotten_count;
static size_t forgotten_capacity;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static share_entry_t *table;
static size_t table_length;
static size_t table_capacity;
static share_owner_t *owners;
static size_t owner_count;
/* Ids of entries removed, whose views the arena is told of once the lock
 * is released (it takes its own lock, then this one). */
static uint64_t *gone_ids;
static size_t gone_count;
static size_t gone_capacity;

/* A worker's end of its lender socket (-1 elsewhere, or once lost), the
 * lock that keeps one request and its reply together, and the count that
 * numbers the requests. */
static int lender = -1;
static bool lender_lost;
static uint64_t lender_requests;
static pthread_mutex_t lender_lock = PTHREAD_MUTEX_INITIALIZER;

/* How long a worker waits for its parent's answer: the loop thread answers
 * in microseconds (no user code runs there), so this only bounds a parent
 * that stopped. */
#define SHARE_REPLY_TIMEOUT_MS 30000

static share_entry_t *table_find(uint64_t id) {
  for (size_t i = 0; i < table_length; i++)
    if (table[i].id == id) return &table[i];
  return NULL;
}

static int table_add(uint64_t id, int fd, uint64_t owner) {
  share_entry_t *grown =
      ff__grow(table, table_length, &table_capacity, sizeof(*table));
  if (grown == NULL) return -ENOMEM;
  table = grown;
  table[table_length++] = (share_entry_t){id, fd, owner, 0, false};
  return 0;
}

static share_owner_t *owner_find(uint64_t owner) {
  for (size_t i = 0; i < owner_count; i++)
    if (owners[i].owner == owner) return &owners[i];
  return NULL;
}

/* Notes id for the arena (under table_lock); see flush_gone. Without
 * room, the arena keeps its view until the chunk retires. */
static void note_gone(uint64_t id) {
  uint64_t *grown = ff__grow(gone_ids, gone_count, &gone_capacity, sizeof(id));
  if (grown == NULL) return;
  gone_ids = grown;
  gone_ids[gone_count++] = id;
}

/* Who is told of segments that can no longer be opened: the arena, which
 * sits above this file and sets it (ff__share_on_gone) rather than being
 * called by name. */
static void (*_Atomic gone_hook)(uint64_t id);

void ff__share_on_gone(void (*hook)(uint64_t id)) {
  atomic_store(&gone_hook, hook);
}

/* Tells the arena of the entries removed (without table_lock). */
static void flush_gone(void) {
  for (;;) {
    pthread_mutex_lock(&table_lock);
    uint64_t id = gone_count > 0 ? gone_ids[--gone_count] : 0;
    pthread_mutex_unlock(&table_lock);
    if (id == 0) return;
    void (*hook)(uint64_t id) = atomic_load(&gone_hook);
    if (hook != NULL) hook(id);
  }
}

static void table_remove_at(size_t i) {
  close(table[i].fd);
  share_owner_t *o = table[i].owner > OWNER_PARENT ? owner_find(table[i].owner)
                                                  : NULL;
  if (o != NULL && o->created > 0) o->created--;
  note_gone(table[i].id);
  table[i] = table[--table_length];
}

/* A random id that names no segment here (under table_lock): ids cannot be
 * guessed, and 0 and 1 are never one. */
static uint64_t new_id(void) {
  for (;;) {
    uint64_t id = 0;
    if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id)) {
      /* No entropy yet (early boot): the clock and the pid still differ
       * between processes. */
      id = ff__now_ns() * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)getpid();
    }
    if (id > OWNER_PARENT && table_find(id) == NULL) return id;
  }
}

/* The descriptors the table may hold: half of this process's limit, so
 * that its own queues, arrays and pools always find one. */
static size_t table_fd_budget(void) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) < 0 || limit.rlim_cur == RLIM_INFINITY)
    return 1u << 20;
  return limit.rlim_cur / 2 > 64 ? (size_t)(limit.rlim_cur / 2) : 64;
}

/* Keeps a copy of fd in the table under id (under table_lock). */
static int table_keep_copy(uint64_t id, int fd, uint64_t owner) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return -errno;
  int rc = table_add(id, copy, owner);
  if (rc < 0) close(copy);
  return rc;
}

/* A new descriptor of the table's segment id (under table_lock). */
static int table_dup(uint64_t id) {
  share_entry_t *e = table_find(id);
  if (e == NULL) return -ENOENT;
  int fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

/* Makes a segment and keeps it in the table: its id, and a descriptor for
 * the caller. A segment made for a worker counts against its quota and the
 * table's share of descriptors: FF_EQUOTA past either. */
static int share_create(size_t size, uint64_t owner, uint64_t *id, int *fd) {
  if (owner > OWNER_PARENT) {
    pthread_mutex_lock(&table_lock);
    share_owner_t *o = owner_find(owner);
    bool over = o == NULL || o->created >= FF__SHARE_QUOTA ||
                table_length >= table_fd_budget();
    pthread_mutex_unlock(&table_lock);
    if (over) return FF_EQUOTA;
  }
  int made = ff__memfd("forkfarm-segment", size);
  if (made < 0) return made;
  pthread_mutex_lock(&table_lock);
  uint64_t new = new_id();
  int rc = table_keep_copy(new, made, owner);
  share_owner_t *o = rc == 0 && owner > OWNER_PARENT ? owner_find(owner) : NULL;
  if (o != NULL) o->created++;
  pthread_mutex_unlock(&table_lock);
  if (rc < 0) {
    close(made);
    return rc;
  }
  *id = new;
  *fd = made;
  return 0;
}

/* Gives up the lender socket after a request went wrong: no later request
 * may read this one's late reply. The worker asks to be replaced. */
static void lender_give_up(void) {
  if (lender >= 0) close(lender);
  lender = -1;
  lender_lost = true;
}

/* One request and its reply over the lender socket: the reply must echo
 * the request's number, and answer what was asked (the id for OPEN, the
 * size for CREATE). */
static int lender_request(share_msg_t *msg, int *fd) {
  pthread_mutex_lock(&lender_lock);
  msg->request = ++lender_requests;
  share_msg_t request = *msg;
  int rc = lender < 0 ? (lender_lost ? -EPIPE : -ENOENT)
                      : ff__sock_send(lender, msg, sizeof(*msg), NULL, 0);
  int fds[FF__SOCK_MAX_FDS];
  unsigned nfds = 0;
  uint64_t deadline = ff__deadline(SHARE_REPLY_TIMEOUT_MS / 1000.0);
  while (rc == 0) {
    uint64_t now = ff__now_ns();
    int left = now >= deadline ? 0 : (int)((deadline - now) / 1000000 + 1);
    struct pollfd p = {lender, POLLIN, 0};
    int n = poll(&p, 1, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n == 0 ? -ETIMEDOUT : -errno;
      break;
    }
    rc = ff__sock_recv(lender, msg, sizeof(*msg), fds, &nfds, 0);
    rc = rc == 1 ? 0 : rc == 0 ? -EPIPE : rc;
    break;
  }
  if (rc == 0 &&
      (msg->type != SHARE_REPLY || msg->request != request.request ||
       msg->status > 0 || (msg->status == 0 && nfds != 1) ||
       (msg->status == 0 && request.type == SHARE_OPEN &&
        msg->id != request.id) ||
       (msg->status == 0 && request.type == SHARE_CREATE &&
        msg->size != request.size))) {
    ff__sock_close_fds(fds, &nfds);
    rc = FF_EPROTOCOL;
  }
  if (rc < 0 && rc != -ENOENT && (lender >= 0 || rc != -EPIPE))
    lender_give_up();
  pthread_mutex_unlock(&lender_lock);
  if (rc < 0) return rc;
  if (msg->status < 0) {
    ff__sock_close_fds(fds, &nfds);
    return msg->status;
  }
  *fd = fds[0];
  return 0;
}

int ff__share_lender_lost(void) { return lender_lost ? 1 : 0; }

uint64_t ff__share_owner_of(uint64_t id) {
  pthread_mutex_lock(&table_lock);
  share_entry_t *e = table_find(id);
  uint64_t owner = e != NULL && e->owner > OWNER_PARENT ? e->owner : 0;
  pthread_mutex_unlock(&table_lock);
  return owner;
}

int ff_segment_create(size_t size, unsigned flags, uint64_t *id, int *fd) {
  if (size == 0 || size > (size_t)INT64_MAX) return -EINVAL;
  if ((flags & FF_SEGMENT_PARENT) && (lender >= 0 || lender_lost)) {
    share_msg_t msg = {SHARE_CREATE, 0, 0, size, 0};
    int rc = lender_request(&msg, fd);
    if (rc < 0) return rc;
    /* Lent on to this worker's own workers, should it run a pool. */
    pthread_mutex_lock(&table_lock);
    rc = table_keep_copy(msg.id, *fd, OWNER_PARENT);
    pthread_mutex_unlock(&table_lock);
    if (rc < 0) {
      close(*fd);
      return rc;
    }
    *id = msg.id;
    return 0;
  }
  return share_create(size, 0, id, fd);
}

int ff_segment_open(uint64_t id, int *fd) {
  pthread_mutex_lock(&table_lock);
  int rc = table_dup(id);
  pthread_mutex_unlock(&table_lock);
  if (rc >= 0) {
    *fd = rc;
    return 0;
  }
  if (rc != -ENOENT || (lender < 0 && !lender_lost)) return rc;
  share_msg_t msg = {SHARE_OPEN, 0, id, 0, 0};
  return lender_request(&msg, fd);
}

/* Worker: queues id for the parent (under table_lock). Without room the
 * parent keeps lending it until this worker exits. */
static void queue_forgotten(uint64_t id) {
  uint64_t *grown =
      ff__grow(forgotten_ids, forgotten_count, &forgotten_capacity, sizeof(id));
  if (grown == NULL) return;
  forgotten_ids = grown;
  forgotten_ids[forgotten_count++] = id;
}

size_t ff__share_take_forgotten(uint64_t *ids, size_t max) {
  pthread_mutex_lock(&table_lock);
  size_t n = forgotten_count < max ? forgotten_count : max;
  if (n > 0) {
    memcpy(ids, forgotten_ids + forgotten_count - n, n * sizeof(*ids));
    forgotten_count -= n;
  }
  pthread_mutex_unlock(&table_lock);
  return n;
}

/* Takes one pin off entry i; one its creator forgot goes with its last. */
static void entry_unpin(size_t i) {
  if (table[i].pins > 0 && --table[i].pins == 0 && table[i].forgotten)
    table_remove_at(i);
}

/* Lets entry i go: removed now, or marked and removed with its last pin. */
static void entry_forget(size_t i) {
  if (table[i].pins > 0) {
    share_owner_t *o = table[i].owner > OWNER_PARENT
                           ? owner_find(table[i].owner)
                           : NULL;
    if (o != NULL && o->created > 0) o->created--;
    table[i].forgotten = true;
    table[i].owner = 0;
  } else {
    table_remove_at(i);
  }
}

int ff_segment_forget(uint64_t id) {
  pthread_mutex_lock(&table_lock);
  int rc = -ENOENT;
  for (size_t i = 0; i < table_length; i++) {
    if (table[i].id == id && !table[i].forgotten) {
      if (table[i].owner == OWNER_PARENT) queue_forgotten(id);
      /* A task in flight may still have a worker open it. */
      entry_forget(i);
      rc = 0;
      break;
    }
  }
  pthread_mutex_unlock(&table_lock);
  flush_gone();
  return rc;
}

void ff__share_forget_owned(uint64_t id, uint64_t owner) {
  pthread_mutex_lock(&table_lock);
  for (size_t i = 0; i < table_length; i++) {
    if (table[i].id == id && table[i].owner == owner && owner > OWNER_PARENT) {
      entry_forget(i);
      break;
    }
  }
  pthread_mutex_unlock(&table_lock);
  flush_gone();
}

int ff_segment_retain(uint64_t id) {
  pthread_mutex_lock(&table_lock);
  share_entry_t *e = table_find(id);
  if (e != NULL) e->pins++;
  pthread_mutex_unlock(&table_lock);
  return e != NULL ? 0 : -ENOENT;
}

void ff_segment_release(uint64_t id) {
  pthread_mutex_lock(&table_lock);
  for (size_t i = 0; i < table_length; i++) {
    if (table[i].id == id) {
      entry_unpin(i);
      break;
    }
  }
  pthread_mutex_unlock(&table_lock);
  flush_gone();
}

/* The i-th segment a framed message names: its pins, then the chunks of
 * its arena references. */
static uint64_t message_segment(const void *message,
                                const ff_arena_frame_t *frame, size_t i) {
  if (i < frame->pins) return ff_arena_frame_pin(message, frame, i);
  ff_arena_ref_t ref;
  ff_arena_frame_ref(message, i - frame->pins, &ref);
  return ref.chunk;
}

/* Adds delta to the pins of the segments a framed message names (its
 * pins, and the chunks its references point into: a worker's chunk stays
 * open for its result even after the worker goes). */
static void pin_message(const void *message, size_t length, int delta) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1 ||
      frame.pins + frame.refs == 0)
    return;
  pthread_mutex_lock(&table_lock);
  for (size_t p = 0; p < frame.pins + frame.refs; p++) {
    uint64_t id = message_segment(message, &frame, p);
    for (size_t i = 0; i < table_length; i++) {
      if (table[i].id != id) continue;
      if (delta > 0)
        table[i].pins++;
      else
        entry_unpin(i);
      break;
    }
  }
  pthread_mutex_unlock(&table_lock);
  flush_gone();
}

/* Adds id to the segments owner o may open (under table_lock). */
static int owner_allow(share_owner_t *o, uint64_t id) {
  if (id <= OWNER_PARENT) return 0;
  if (2 * (o->allowed_count + 1) > o->allowed_capacity) {
    size_t capacity = o->allowed_capacity ? o->allowed_capacity * 2 : 16;
    uint64_t *grown = calloc(capacity, sizeof(*grown));
    if (grown == NULL) return -ENOMEM;
    for (size_t i = 0; i < o->allowed_capacity; i++) {
      uint64_t kept = o->allowed[i];
      if (kept == 0) continue;
      size_t at = (size_t)(kept * UINT64_C(0x9E3779B97F4A7C15)) & (capacity - 1);
      while (grown[at] != 0) at = (at + 1) & (capacity - 1);
      grown[at] = kept;
    }
    free(o->allowed);
    o->allowed = grown;
    o->allowed_capacity = capacity;
  }
  size_t mask = o->allowed_capacity - 1;
  size_t at = (size_t)(id * UINT64_C(0x9E3779B97F4A7C15)) & mask;
  while (o->allowed[at] != 0 && o->allowed[at] != id) at = (at + 1) & mask;
  if (o->allowed[at] == 0) {
    o->allowed[at] = id;
    o->allowed_count++;
  }
  return 0;
}

static bool owner_allows(const share_owner_t *o, uint64_t id) {
  if (o->allowed_capacity == 0) return false;
  size_t mask = o->allowed_capacity - 1;
  size_t at = (size_t)(id * UINT64_C(0x9E3779B97F4A7C15)) & mask;
  while (o->allowed[at] != 0) {
    if (o->allowed[at] == id) return true;
    at = (at + 1) & mask;
  }
  return false;
}

int ff__share_add_owner(uint64_t owner, const uint64_t *lendable,
                        size_t count) {
  if (owner <= OWNER_PARENT) return -EINVAL;
  pthread_mutex_lock(&table_lock);
  int rc = 0;
  share_owner_t *grown = realloc(owners, (owner_count + 1) * sizeof(*owners));
  if (grown == NULL) {
    rc = -ENOMEM;
  } else {
    owners = grown;
    share_owner_t *o = &owners[owner_count++];
    *o = (share_owner_t){owner, NULL, 0, 0, 0};
    for (size_t i = 0; i < count && rc == 0; i++)
      rc = owner_allow(o, lendable[i]);
  }
  pthread_mutex_unlock(&table_lock);
  return rc;
}

void ff__share_allow_message(uint64_t owner, const void *message,
                             size_t length) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1 ||
      frame.pins + frame.refs == 0)
    return;
  pthread_mutex_lock(&table_lock);
  share_owner_t *o = owner_find(owner);
  /* Without memory for it, the worker is refused the segment and its task
   * fails: never given more than it was sent. */
  for (size_t p = 0; o != NULL && p < frame.pins + frame.refs; p++)
    owner_allow(o, message_segment(message, &frame, p));
  pthread_mutex_unlock(&table_lock);
}

void ff__share_pin_message(const void *message, size_t length) {
  pin_message(message, length, 1);
}

void ff__share_unpin_message(const void *message, size_t length) {
  pin_message(message, length, -1);
}

/* The answer to one request: a reply, and the descriptor to attach (the
 * caller closes it), or -1. A worker may open only what it was given or
 * what was made for it; anything else is unknown to it (-ENOENT). */
static int share_answer(const share_msg_t *request, uint64_t owner,
                        share_msg_t *reply) {
  *reply = (share_msg_t){SHARE_REPLY, 0, request->id, 0, request->request};
  int fd = -1;
  int rc;
  if (request->type == SHARE_OPEN) {
    pthread_mutex_lock(&table_lock);
    share_entry_t *e = table_find(request->id);
    share_owner_t *o = owner_find(owner);
    bool allowed = e != NULL && o != NULL &&
                   (e->owner == owner || owner_allows(o, request->id));
    rc = allowed ? table_dup(request->id) : -ENOENT;
    pthread_mutex_unlock(&table_lock);
    if (rc >= 0) fd = rc;
  } else if (request->type == SHARE_CREATE) {
    rc = request->size == 0 || request->size > (uint64_t)INT64_MAX
             ? -EINVAL
             : share_create((size_t)request->size, owner, &reply->id, &fd);
    reply->size = request->size;
  } else {
    rc = FF_EPROTOCOL;
  }
  reply->status = rc < 0 ? rc : 0;
  return fd;
}

/* Requests answered per call: a worker that keeps asking waits for the
 * next round of the loop, after the other workers and pools. */
#define SHARE_SERVE_BATCH 32

int ff__share_serve(int socket, uint64_t owner) {
  for (int served = 0; served < SHARE_SERVE_BATCH; served++) {
    share_msg_t request;
    int fds[FF__SOCK_MAX_FDS];
    unsigned nfds;
    int rc = ff__sock_recv(socket, &request, sizeof(request), fds, &nfds,
                           MSG_DONTWAIT);
    if (rc == -EAGAIN) return 0;
    if (rc <= 0) return rc == 0 ? -EPIPE : rc;
    /* A worker has no descriptor to give its parent. */
    ff__sock_close_fds(fds, &nfds);
    share_msg_t reply;
    int fd = share_answer(&request, owner, &reply);
    /* The worker waits for this reply before it asks again, so the socket
     * always has room for it. */
    rc = ff__sock_send(socket, &reply, sizeof(reply), &fd, fd >= 0 ? 1 : 0);
    if (fd >= 0) close(fd);
    if (rc < 0) return rc;
  }
  return 0;
}

void ff__share_drop_owner(uint64_t owner) {
  pthread_mutex_lock(&table_lock);
  for (size_t i = 0; i < table_length;) {
    if (table[i].owner != owner) {
      i++;
    } else if (table[i].pins > 0) {
      /* Held here (a result not yet read, an array the parent uses):
       * lent on until the last pin goes. */
      table[i].owner = 0;
      table[i].forgotten = true;
      i++;
    } else {
      table_remove_at(i);
    }
  }
  share_owner_t *o = owner_find(owner);
  if (o != NULL) {
    free(o->allowed);
    *o = owners[--owner_count];
  }
  pthread_mutex_unlock(&table_lock);
  flush_gone();
}

void ff__share_set_lender(int socket) {
  lender = socket;
  lender_lost = false;
  lender_requests = 0;
  /* What the parent reported forgetting, and the workers it lent to, are
   * the parent's business. */
  forgotten_count = 0;
  gone_count = 0;
  for (size_t i = 0; i < owner_count; i++) free(owners[i].allowed);
  owner_count = 0;
  /* Forked while another thread may have held them: this process has one
   * thread now. */
  pthread_mutex_init(&lender_lock, NULL);
  pthread_mutex_init(&table_lock, NULL);
}

void ff__share_fork_prepare(void) { pthread_mutex_lock(&table_lock); }

void ff__share_fork_parent(void) { pthread_mutex_unlock(&table_lock); }

/* The forking thread took the lock, and is the child's one thread. */
void ff__share_fork_child(void) { pthread_mutex_unlock(&table_lock); }

int ff_segment_adopt(uint64_t id, int fd) {
  if (fd < 0) return -EINVAL;
  int rc = 0;
  int flags = -1;
  if (id <= OWNER_PARENT) {
    rc = -EINVAL;
    goto done;
  }
  flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
    rc = -errno;
    goto done;
  }
  pthread_mutex_lock(&table_lock);
  /* Known already (inherited, or adopted twice): the copy is not needed. */
  if (table_find(id) == NULL) {
    rc = table_add(id, fd, 0);
    if (rc == 0) fd = -1;
  }
  pthread_mutex_unlock(&table_lock);
done:
  if (fd >= 0) close(fd);
  return rc;
}
