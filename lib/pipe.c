/* Pipes: one end of a two-way message pipe between processes. Messages go
 * through a channel (channel.c) per direction, in one segment; a socket
 * pair carries wake-ups, descriptors and the end of the stream.
 *
 * The pipe starts with a page of per-direction flags, `asleep`, which a
 * receiver raises before it sleeps in poll() on its socket: a sender that
 * sees it writes one byte, PIPE_WAKE, to wake it. A receiver spins
 * briefly before it sleeps: in a ping-pong the answer usually comes first,
 * and then no system call is made at all. The kernel closes a dead
 * process's socket, so a receiver whose peer died sees POLLHUP and, once
 * the channel is empty, the end of the stream.
 *
 * Descriptors travel on the socket as Python's
 * multiprocessing.reduction.sendfds sends them: one byte (their count)
 * with SCM_RIGHTS. A receiver that drains wake-ups keeps the descriptors
 * it meets for ff_pipe_recv_fds, so a handle is never lost to a wake-up's
 * read; ff_pipe_recv_fds skips wake-up bytes. The socket may be blocking
 * (others may read it with their own functions), so every call here
 * passes MSG_DONTWAIT.
 *
 * Above channel.c and share.c (whose segments it maps); calls process.c
 * for the socket and futex.c for the clock. Nothing in lib/ calls it. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long a receiver spins on an empty channel before it sleeps. */
#define PIPE_SPIN_NS 50000ull
/* The ring each direction starts with: the address space it maps. */
#define PIPE_FIRST_RING (64u << 10)
/* How long a sender blocked on a full pipe waits before it looks whether
 * the receiver is still there. */
#define PIPE_SEND_CHECK_NS 50000000ull
/* The wake-up byte. A descriptor message's byte is its count, at most
 * FF_PIPE_MAX_FDS (253), so a wake-up is never taken for one. */
#define PIPE_WAKE 0xFF

_Static_assert(FF_PIPE_MAX_FDS == FF__SCM_MAX_FDS,
               "a pipe's descriptors travel in one message");

typedef struct pipe_flags_s {
  _Atomic uint32_t asleep[2]; /* per direction: its receiver sleeps */
} pipe_flags_t;

struct ff_pipe_s {
  pipe_flags_t *flags; /* the pipe's first page, mapped here */
  ff_channel_t handles[2];
  ff_channel_t *in;  /* NULL: not readable */
  ff_channel_t *out; /* NULL: not writable */
  int in_index, out_index;
  _Atomic int fd;        /* this end of the socket pair; -1 once closed */
  _Atomic int peer_gone; /* the socket said so */
  /* Descriptors met while draining wake-ups, kept for ff_pipe_recv_fds:
   * messages laid out as [count, fd...], oldest first, under held_lock. */
  int *held;
  size_t held_len, held_cap;
  _Atomic int held_lock; /* the pid of the holder, 0 when free */
};

/* ---- descriptors kept for ff_pipe_recv_fds ------------------------------ */

/* The lock lives in this process's memory, so a holder with another pid
 * is a thread of the parent this process was forked from, which does not
 * exist here: its lock is taken over rather than waited for forever. */
static void held_acquire(ff_pipe_t *pipe) {
  int me = (int)getpid();
  for (;;) {
    int holder = 0;
    if (atomic_compare_exchange_weak(&pipe->held_lock, &holder, me)) return;
    if (holder != 0 && holder != me &&
        atomic_compare_exchange_weak(&pipe->held_lock, &holder, me))
      return;
    sched_yield();
  }
}

static void held_release(ff_pipe_t *pipe) { atomic_store(&pipe->held_lock, 0); }

/* Keeps one message's descriptors; called with held_lock. Closes them if
 * there is no memory to keep them in (the handle is lost, not leaked). */
static void held_push(ff_pipe_t *pipe, const int *fds, size_t n) {
  if (pipe->held_len + n + 1 > pipe->held_cap) {
    size_t cap = pipe->held_cap ? pipe->held_cap * 2 : 16;
    while (cap < pipe->held_len + n + 1) cap *= 2;
    int *grown = realloc(pipe->held, cap * sizeof(int));
    if (grown == NULL) {
      for (size_t i = 0; i < n; i++) close(fds[i]);
      return;
    }
    pipe->held = grown;
    pipe->held_cap = cap;
  }
  pipe->held[pipe->held_len++] = (int)n;
  memcpy(pipe->held + pipe->held_len, fds, n * sizeof(int));
  pipe->held_len += n;
}

/* Takes the oldest kept message's descriptors into fds; returns how many,
 * or -1 when none is kept. Called with held_lock. */
static int held_pop(ff_pipe_t *pipe, int *fds) {
  if (pipe->held_len == 0) return -1;
  int n = pipe->held[0];
  memcpy(fds, pipe->held + 1, (size_t)n * sizeof(int));
  pipe->held_len -= (size_t)n + 1;
  memmove(pipe->held, pipe->held + n + 1, pipe->held_len * sizeof(int));
  return n;
}

static void held_close_all(ff_pipe_t *pipe) {
  held_acquire(pipe);
  for (size_t i = 0; i < pipe->held_len;) {
    int n = pipe->held[i];
    for (int k = 1; k <= n; k++) close(pipe->held[i + (size_t)k]);
    i += (size_t)n + 1;
  }
  free(pipe->held);
  pipe->held = NULL;
  pipe->held_len = pipe->held_cap = 0;
  held_release(pipe);
}

/* Reads the wake-up bytes waiting on the socket, without waiting: once,
 * or until none is left. Descriptors met on the way are kept for
 * ff_pipe_recv_fds. Notes the end of the stream. */
static void drain_socket(ff_pipe_t *pipe, int once) {
  for (;;) {
    char data[256];
    int fds[FF_PIPE_MAX_FDS];
    unsigned nfds;
    held_acquire(pipe);
    ssize_t got = ff__sock_recvmsg(atomic_load(&pipe->fd), data, sizeof(data),
                                   fds, FF_PIPE_MAX_FDS, &nfds, MSG_DONTWAIT,
                                   NULL);
    if (nfds > 0) held_push(pipe, fds, nfds);
    held_release(pipe);
    if (got == 0) atomic_store(&pipe->peer_gone, 1);
    if (got <= 0 || once) return;
  }
}

/* Whether the peer's socket end is closed everywhere (it died, or closed
 * it), looking without waiting. */
static int peer_hung_up(ff_pipe_t *pipe) {
  if (atomic_load(&pipe->peer_gone)) return 1;
  struct pollfd p = {atomic_load(&pipe->fd), POLLIN, 0};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) {
    atomic_store(&pipe->peer_gone, 1);
    return 1;
  }
  return 0;
}

/* The milliseconds poll() waits for a deadline: rounded up, so that a
 * wake-up never comes before it; -1 for none. */
static int poll_ms(uint64_t deadline_ns) {
  if (deadline_ns == UINT64_MAX) return -1;
  uint64_t now = ff__now_ns();
  if (now >= deadline_ns) return 0;
  uint64_t ms = (deadline_ns - now + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ---- opening and closing ------------------------------------------------ */

/* Maps the pipe's page of flags, checking that the segment holds the whole
 * pipe: its size is what the kernel says, not what anyone wrote. */
static int flags_map(uint64_t segment, uint64_t offset, uint64_t size,
                     pipe_flags_t **out) {
  int fd;
  int rc = ff_segment_open(segment, &fd);
  if (rc < 0) return rc;
  struct stat st;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
  } else if (st.st_size < 0 || (uint64_t)st.st_size < offset ||
             (uint64_t)st.st_size - offset < size) {
    rc = -EINVAL;
  } else {
    void *p = mmap(NULL, FF_PIPE_HEADER, PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, (off_t)offset);
    if (p == MAP_FAILED)
      rc = -errno;
    else
      *out = p;
  }
  close(fd);
  return rc;
}

int ff_pipe_open(ff_pipe_t **out, uint64_t segment, uint64_t offset,
                 size_t region, int in_index, int out_index, int fd,
                 int init) {
  if (out == NULL || fd < 0 || offset % 4096 != 0 || region < 8192 ||
      region % 4096 != 0 || in_index < -1 || in_index > 1 ||
      out_index < -1 || out_index > 1 || offset > (uint64_t)INT64_MAX / 2 ||
      region > ((uint64_t)INT64_MAX / 2 - FF_PIPE_HEADER) / 2)
    return -EINVAL;
  ff_pipe_t *pipe = calloc(1, sizeof(*pipe));
  if (pipe == NULL) return -ENOMEM;
  int indices[2] = {in_index, out_index};
  ff_channel_t **channels[2] = {&pipe->in, &pipe->out};
  int rc = flags_map(segment, offset, FF_PIPE_HEADER + 2 * (uint64_t)region,
                     &pipe->flags);
  if (rc < 0) goto fail;
  for (int i = 0; i < 2; i++) {
    if (indices[i] < 0) continue;
    /* Only the ring a direction uses is mapped, and grows with it. */
    uint64_t at = offset + FF_PIPE_HEADER + (uint64_t)indices[i] * region;
    rc = ff_channel_map(&pipe->handles[i], segment, at, region,
                        PIPE_FIRST_RING, init, PIPE_FIRST_RING, 0);
    if (rc < 0) goto fail;
    *channels[i] = &pipe->handles[i];
  }
  pipe->in_index = in_index;
  pipe->out_index = out_index;
  atomic_store(&pipe->fd, fd);
  *out = pipe;
  return 0;

fail:
  if (pipe->in != NULL) ff_channel_unmap(pipe->in);
  if (pipe->out != NULL) ff_channel_unmap(pipe->out);
  if (pipe->flags != NULL) munmap(pipe->flags, FF_PIPE_HEADER);
  free(pipe);
  return rc;
}

void ff_pipe_close(ff_pipe_t *pipe) {
  int fd = atomic_exchange(&pipe->fd, -1);
  if (fd >= 0) close(fd);
  held_close_all(pipe);
}

void ff_pipe_destroy(ff_pipe_t *pipe) {
  if (pipe == NULL) return;
  ff_pipe_close(pipe);
  if (pipe->in != NULL) ff_channel_unmap(pipe->in);
  if (pipe->out != NULL) ff_channel_unmap(pipe->out);
  munmap(pipe->flags, FF_PIPE_HEADER);
  free(pipe);
}

int ff_pipe_fd(const ff_pipe_t *pipe) { return atomic_load(&pipe->fd); }

int ff_pipe_readable(const ff_pipe_t *pipe) { return pipe->in != NULL; }

int ff_pipe_writable(const ff_pipe_t *pipe) { return pipe->out != NULL; }

/* ---- messages ----------------------------------------------------------- */

int ff_pipe_send(ff_pipe_t *pipe, const void *data, size_t length,
                 double timeout) {
  if (atomic_load(&pipe->fd) < 0 || pipe->out == NULL) return -EBADF;
  /* A receiver that keeps up leaves the channel empty; only messages
   * piling up make it worth asking the socket whether the other end is
   * gone (closed in every process, or its process dead). */
  if (ff_channel_count(pipe->out) > 0 && peer_hung_up(pipe)) return -EPIPE;
  int rc = ff_channel_put(pipe->out, data, length, 0, NULL);
  if (rc == -ETIMEDOUT && timeout != 0) {
    /* Full: wait for room in short steps, looking between them whether
     * the receiver died (its end of the socket closes). */
    uint64_t deadline = ff__deadline(timeout);
    do {
      if (peer_hung_up(pipe)) return -EPIPE;
      uint64_t now = ff__now_ns();
      if (now >= deadline) break;
      uint64_t step = deadline - now < PIPE_SEND_CHECK_NS ? deadline - now
                                                          : PIPE_SEND_CHECK_NS;
      rc = ff_channel_put(pipe->out, data, length, (double)step / 1e9, NULL);
    } while (rc == -ETIMEDOUT);
  }
  if (rc < 0) return rc;
  /* The receiver raised its flag before it slept (sequentially consistent
   * with the put above): ring. The send's failure is no loss: a full
   * socket buffer already rings, and a closed one wakes with POLLHUP. */
  if (atomic_load(&pipe->flags->asleep[pipe->out_index])) {
    const unsigned char wake = PIPE_WAKE;
    int ignored = ff__sock_sendmsg(atomic_load(&pipe->fd), &wake, 1, NULL, 0,
                                   MSG_DONTWAIT);
    (void)ignored;
  }
  return 0;
}

/* Waits until the channel holds a message or the peer is gone (0), the
 * deadline passes (-ETIMEDOUT) or a signal comes (-EINTR). */
static int pipe_wait(ff_pipe_t *pipe, uint64_t deadline) {
  uint64_t start = ff__now_ns();
  for (unsigned i = 0; ff_channel_count(pipe->in) == 0; i++) {
    uint64_t now = ff__now_ns();
    if (now >= deadline) return -ETIMEDOUT;
    if (now - start >= PIPE_SPIN_NS) break;
    if (i % 64 == 63) sched_yield();
  }
  _Atomic uint32_t *asleep = &pipe->flags->asleep[pipe->in_index];
  for (;;) {
    if (ff_channel_count(pipe->in) > 0) return 0;
    atomic_store(asleep, 1);
    if (ff_channel_count(pipe->in) > 0) {
      atomic_store(asleep, 0);
      return 0;
    }
    int ms = poll_ms(deadline);
    if (ms == 0) {
      atomic_store(asleep, 0);
      return -ETIMEDOUT;
    }
    struct pollfd p = {atomic_load(&pipe->fd), POLLIN, 0};
    int n = poll(&p, 1, ms);
    atomic_store(asleep, 0);
    if (n < 0 && errno == EINTR) return -EINTR;
    if (n > 0 && (p.revents & POLLIN)) drain_socket(pipe, 1);
    if (n > 0 && (p.revents & (POLLHUP | POLLERR)))
      atomic_store(&pipe->peer_gone, 1);
    if (atomic_load(&pipe->peer_gone)) return 0; /* what is left, or EOF */
  }
}

int ff_pipe_recv(ff_pipe_t *pipe, double timeout,
                 void *(*alloc)(void *arg, size_t length), void *arg) {
  if (atomic_load(&pipe->fd) < 0 || pipe->in == NULL) return -EBADF;
  uint64_t deadline = 0;
  for (;;) {
    int rc = ff_channel_get(pipe->in, 0, alloc, arg, NULL);
    if (rc != -ETIMEDOUT) return rc;
    if (atomic_load(&pipe->peer_gone) && ff_channel_count(pipe->in) == 0)
      return -EPIPE;
    if (timeout == 0) return -ETIMEDOUT;
    if (deadline == 0) deadline = ff__deadline(timeout);
    rc = pipe_wait(pipe, deadline);
    if (rc < 0) return rc;
  }
}

int ff_pipe_poll(ff_pipe_t *pipe, double timeout) {
  if (atomic_load(&pipe->fd) < 0 || pipe->in == NULL) return -EBADF;
  if (ff_channel_count(pipe->in) > 0) return 1;
  if (timeout == 0) return peer_hung_up(pipe);
  int rc = pipe_wait(pipe, ff__deadline(timeout));
  if (rc == -EINTR) return rc;
  return ff_channel_count(pipe->in) > 0 || atomic_load(&pipe->peer_gone);
}

int ff_pipe_arm(ff_pipe_t *pipe) {
  if (atomic_load(&pipe->fd) < 0) return -EBADF;
  if (pipe->in == NULL) return 0;
  atomic_store(&pipe->flags->asleep[pipe->in_index], 1);
  return ff_channel_count(pipe->in) > 0;
}

int ff_pipe_disarm(ff_pipe_t *pipe) {
  if (atomic_load(&pipe->fd) < 0) return -EBADF;
  if (pipe->in == NULL) return 0;
  atomic_store(&pipe->flags->asleep[pipe->in_index], 0);
  drain_socket(pipe, 0);
  return ff_channel_count(pipe->in) > 0 || peer_hung_up(pipe);
}

/* ---- descriptors -------------------------------------------------------- */

/* Waits until the socket is ready for events (or hung up), or, when
 * reading, until a drain in another thread kept a message of descriptors:
 * 0, -ETIMEDOUT, -EINTR, or a negative errno. */
static int fd_wait(ff_pipe_t *pipe, short events, uint64_t deadline) {
  if (events & POLLIN) {
    held_acquire(pipe);
    size_t held = pipe->held_len;
    held_release(pipe);
    if (held > 0) return 0;
  }
  struct pollfd p = {atomic_load(&pipe->fd), events, 0};
  int n = poll(&p, 1, poll_ms(deadline));
  if (n < 0) return -errno;
  return n > 0 ? 0 : -ETIMEDOUT;
}

int ff_pipe_send_fds(ff_pipe_t *pipe, const int *fds, unsigned count,
                     double timeout) {
  if (count < 1 || count > FF_PIPE_MAX_FDS) return -EINVAL;
  for (unsigned i = 0; i < count; i++)
    if (fds[i] < 0) return -EBADF;
  uint64_t deadline = 0;
  for (;;) {
    int fd = atomic_load(&pipe->fd);
    if (fd < 0) return -EBADF;
    const unsigned char byte = (unsigned char)count;
    int rc = ff__sock_sendmsg(fd, &byte, 1, fds, count, MSG_DONTWAIT);
    if (rc != -EAGAIN && rc != -EWOULDBLOCK) return rc;
    /* The socket's buffer is full of wake-ups the other end has not read:
     * wait for room. */
    if (timeout == 0) return -ETIMEDOUT;
    if (deadline == 0) deadline = ff__deadline(timeout);
    rc = fd_wait(pipe, POLLOUT, deadline);
    if (rc < 0) return rc;
  }
}

int ff_pipe_recv_fds(ff_pipe_t *pipe, int *fds, double timeout) {
  uint64_t deadline = 0;
  for (;;) {
    int fd = atomic_load(&pipe->fd);
    if (fd < 0) return -EBADF;
    unsigned char byte = 0;
    unsigned nfds = 0;
    held_acquire(pipe);
    int kept = held_pop(pipe, fds);
    ssize_t got = 1;
    if (kept >= 0)
      nfds = (unsigned)kept;
    else /* one byte at a time: a message's descriptors come with its byte */
      got = ff__sock_recvmsg(fd, &byte, 1, fds, FF_PIPE_MAX_FDS, &nfds,
                             MSG_DONTWAIT, NULL);
    held_release(pipe);
    if (got > 0 && nfds > 0) return (int)nfds;
    if (got > 0) {
      if (byte == PIPE_WAKE) continue;
      return FF_EPROTOCOL;
    }
    if (got == 0) {
      atomic_store(&pipe->peer_gone, 1);
      return -EPIPE;
    }
    if (got != -EAGAIN && got != -EWOULDBLOCK) return (int)got;
    if (timeout == 0) return -ETIMEDOUT;
    if (deadline == 0) deadline = ff__deadline(timeout);
    int rc = fd_wait(pipe, POLLIN, deadline);
    if (rc < 0) return rc;
  }
}
