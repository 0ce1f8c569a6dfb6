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
 * Ids are the creating pid in the high half and a counter in the low one:
 * unique among live processes, and a worker's inherited table never names a
 * segment of its own under a parent's id. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
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
} share_msg_t;

typedef struct share_entry_s {
  uint64_t id;
  int fd;
  uintptr_t owner; /* 0: this process; else the worker it was made for */
  unsigned pins;   /* tasks in flight that carry it */
  bool forgotten;  /* its creator let it go: removed with the last pin */
} share_entry_t;

/* In a worker, the owner of the entries of segments its parent made for it:
 * forgetting one tells the parent. */
#define OWNER_PARENT ((uintptr_t)1)

/* In a worker: parent-made segments let go, not yet reported. */
static uint64_t *forgotten_ids;
static size_t forgotten_count;
static size_t forgotten_capacity;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static share_entry_t *table;
static size_t table_length;
static size_t table_capacity;
static uint32_t next_serial;

/* A worker's end of its lender socket (-1 elsewhere), and the lock that
 * keeps one request and its reply together. */
static int lender = -1;
static pthread_mutex_t lender_lock = PTHREAD_MUTEX_INITIALIZER;

/* How long a worker waits for its parent's answer: the loop thread answers
 * in microseconds, so this only bounds a parent that stopped. */
#define SHARE_REPLY_TIMEOUT_MS 30000

static share_entry_t *table_find(uint64_t id) {
  for (size_t i = 0; i < table_length; i++)
    if (table[i].id == id) return &table[i];
  return NULL;
}

static int table_add(uint64_t id, int fd, uintptr_t owner) {
  if (table_length == table_capacity) {
    size_t capacity = table_capacity ? table_capacity * 2 : 16;
    share_entry_t *grown = realloc(table, capacity * sizeof(*table));
    if (grown == NULL) return -ENOMEM;
    table = grown;
    table_capacity = capacity;
  }
  table[table_length++] = (share_entry_t){id, fd, owner, 0, false};
  return 0;
}

static void table_remove_at(size_t i) {
  close(table[i].fd);
  table[i] = table[--table_length];
}

static uint64_t new_id(void) {
  return (uint64_t)(uint32_t)getpid() << 32 | ++next_serial;
}

/* Keeps a copy of fd in the table under id (under table_lock). */
static int table_keep_copy(uint64_t id, int fd, uintptr_t owner) {
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
 * the caller. */
static int share_create(size_t size, uintptr_t owner, uint64_t *id, int *fd) {
  int made = ff__memfd("forkfarm-segment", size);
  if (made < 0) return made;
  pthread_mutex_lock(&table_lock);
  uint64_t new = new_id();
  int rc = table_keep_copy(new, made, owner);
  pthread_mutex_unlock(&table_lock);
  if (rc < 0) {
    close(made);
    return rc;
  }
  *id = new;
  *fd = made;
  return 0;
}

/* One request and its reply over the lender socket. */
static int lender_request(share_msg_t *msg, int *fd) {
  pthread_mutex_lock(&lender_lock);
  int rc = lender < 0 ? -ENOENT : ff__sock_send(lender, msg, sizeof(*msg), NULL, 0);
  int fds[FF__SOCK_MAX_FDS];
  unsigned nfds = 0;
  while (rc == 0) {
    struct pollfd p = {lender, POLLIN, 0};
    int n = poll(&p, 1, SHARE_REPLY_TIMEOUT_MS);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n == 0 ? -ETIMEDOUT : -errno;
      break;
    }
    rc = ff__sock_recv(lender, msg, sizeof(*msg), fds, &nfds, 0);
    rc = rc == 1 ? 0 : rc == 0 ? -EPIPE : rc;
    break;
  }
  pthread_mutex_unlock(&lender_lock);
  if (rc < 0) return rc;
  if (msg->type != SHARE_REPLY || msg->status > 0 ||
      (msg->status == 0 && nfds != 1)) {
    ff__sock_close_fds(fds, &nfds);
    return FF_EPROTOCOL;
  }
  if (msg->status < 0) {
    ff__sock_close_fds(fds, &nfds);
    return msg->status;
  }
  *fd = fds[0];
  return 0;
}

int ff_segment_create(size_t size, unsigned flags, uint64_t *id, int *fd) {
  if (size == 0 || size > (size_t)INT64_MAX) return -EINVAL;
  if ((flags & FF_SEGMENT_PARENT) && lender >= 0) {
    share_msg_t msg = {SHARE_CREATE, 0, 0, size};
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
  if (rc != -ENOENT || lender < 0) return rc;
  share_msg_t msg = {SHARE_OPEN, 0, id, 0};
  return lender_request(&msg, fd);
}

/* Worker: queues id for the parent (under table_lock). */
static void queue_forgotten(uint64_t id) {
  if (forgotten_count == forgotten_capacity) {
    size_t capacity = forgotten_capacity * 2 + 16;
    uint64_t *grown = realloc(forgotten_ids, capacity * sizeof(*grown));
    /* Without room the parent keeps lending it until this worker exits. */
    if (grown == NULL) return;
    forgotten_ids = grown;
    forgotten_capacity = capacity;
  }
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
  return rc;
}

void ff__share_forget_owned(uint64_t id, uintptr_t owner) {
  pthread_mutex_lock(&table_lock);
  for (size_t i = 0; i < table_length; i++) {
    if (table[i].id == id && table[i].owner == owner && owner > OWNER_PARENT) {
      entry_forget(i);
      break;
    }
  }
  pthread_mutex_unlock(&table_lock);
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
}

/* Adds delta to the pins of the segments a framed message names. */
static void pin_message(const void *message, size_t length, int delta) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1 ||
      frame.pins == 0)
    return;
  pthread_mutex_lock(&table_lock);
  for (size_t p = 0; p < frame.pins; p++) {
    uint64_t id = ff_arena_frame_pin(message, &frame, p);
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
}

void ff__share_pin_message(const void *message, size_t length) {
  pin_message(message, length, 1);
}

void ff__share_unpin_message(const void *message, size_t length) {
  pin_message(message, length, -1);
}

/* The answer to one request: a reply, and the descriptor to attach (the
 * caller closes it), or -1. */
static int share_answer(const share_msg_t *request, uintptr_t owner,
                        share_msg_t *reply) {
  *reply = (share_msg_t){SHARE_REPLY, 0, request->id, 0};
  int fd = -1;
  int rc;
  if (request->type == SHARE_OPEN) {
    pthread_mutex_lock(&table_lock);
    rc = table_dup(request->id);
    pthread_mutex_unlock(&table_lock);
    if (rc >= 0) fd = rc;
  } else if (request->type == SHARE_CREATE) {
    rc = share_create((size_t)request->size, owner, &reply->id, &fd);
    reply->size = request->size;
  } else {
    rc = FF_EPROTOCOL;
  }
  reply->status = rc < 0 ? rc : 0;
  return fd;
}

int ff__share_serve(int socket, uintptr_t owner) {
  for (;;) {
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
}

void ff__share_drop_owner(uintptr_t owner) {
  for (;;) {
    /* One at a time, outside the table's lock: the arena takes its own
     * lock, and holds it while it opens segments from this table. */
    share_entry_t dropped = {0, -1, 0, 0, false};
    pthread_mutex_lock(&table_lock);
    for (size_t i = 0; i < table_length; i++) {
      if (table[i].owner != owner) continue;
      if (table[i].pins > 0) {
        /* Held here (a result not yet read, an array the parent uses):
         * lent on until the last pin goes. */
        table[i].owner = 0;
        table[i].forgotten = true;
        continue;
      }
      dropped = table[i];
      table[i] = table[--table_length];
      break;
    }
    pthread_mutex_unlock(&table_lock);
    if (dropped.fd < 0) return;
    ff__arena_adopt(dropped.id, dropped.fd);
    close(dropped.fd);
  }
}

void ff__share_set_lender(int socket) {
  lender = socket;
  /* What the parent reported forgetting is the parent's business. */
  forgotten_count = 0;
  /* Forked while another thread may have held them: this process has one
   * thread now. */
  pthread_mutex_init(&lender_lock, NULL);
  pthread_mutex_init(&table_lock, NULL);
}

void ff__share_fork_prepare(void) { pthread_mutex_lock(&table_lock); }

void ff__share_fork_parent(void) { pthread_mutex_unlock(&table_lock); }
