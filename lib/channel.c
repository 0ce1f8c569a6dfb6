/* A multi-producer, multi-consumer channel of byte messages in a region of
 * shared memory: what forkfarm's Queue, SimpleQueue and JoinableQueue are.
 * No feeder thread: put copies the message into the region under a
 * process-shared mutex (sync.c) and returns; get copies one out.
 *
 * The region (its segment sealed at its full size, so nobody can shrink
 * it under another's mapping) is used as a ring of a few pages that
 * doubles when a message does not fit (an unbounded queue must not block
 * its producers) and falls back to its first size when the channel
 * empties, giving the pages above back to the kernel. Growing copies the
 * live bytes into the half it adds, never over themselves, so a process
 * killed mid-way leaves the channel as it was; a holder that died at any
 * other point is noticed through the mutex, and the channel's positions
 * are checked, against what this process knows of the region, before every
 * use: a channel left in a state no put or get makes is emptied.
 *
 * A process maps only the part of the region the ring uses (its window),
 * and a larger window when the ring grows: a channel costs a few pages of
 * address space, not its largest size, so thousands of queues fit under a
 * limit on address space. Older windows stay mapped while the handle
 * lives: another thread of this process may still be reading through
 * one, and they add up to less than the largest. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CHANNEL_MAGIC 0x6c6e6863u /* "chnl" */
#define RECORD_ALIGN 8u
/* How long a get or put spins on an empty or full channel before it
 * sleeps: the other side is often about to act, and a futex sleep and wake
 * cost far more. */
#define SPIN_NS 20000ull

typedef struct channel_shared_s {
  ff_mutex_t lock;
  uint32_t magic;
  uint32_t maxsize;               /* messages; 0: none */
  _Atomic uint32_t puts;          /* bumped by every put: getters sleep on it */
  _Atomic uint32_t gets;          /* bumped by every get: putters sleep on it */
  _Atomic uint32_t getters_asleep;
  _Atomic uint32_t putters_asleep;
  _Atomic uint32_t count;         /* messages in the channel */
  _Atomic uint32_t unfinished;    /* puts not yet matched by task_done */
  _Atomic uint32_t joiners_asleep;
  uint32_t unused;
  /* Under the lock: byte positions (head <= tail), and the ring's size. */
  uint64_t head;
  uint64_t tail;
  uint64_t capacity;      /* a power of two */
  uint64_t base_capacity; /* what it shrinks back to */
  uint64_t max_capacity;  /* what the region holds */
} channel_shared_t;

_Static_assert(sizeof(channel_shared_t) <= FF_CHANNEL_HEADER,
               "the channel's header must fit its page");

/* Everything read from the shared header is checked against what this
 * process mapped (ch->limit) before it is used: another process may have
 * written anything there. */
typedef struct state_s {
  uint64_t head, tail, capacity;
} state_t;

/* The windows of a handle made by ff_channel_map: how to map a larger one,
 * and the older ones, kept until ff_channel_unmap. */
typedef struct channel_windows_s {
  pthread_mutex_t lock;
  uint64_t segment;
  uint64_t offset;
  void **old;
  size_t *old_sizes;
  size_t count;
} channel_windows_t;

/* What one operation uses of a handle: its region and the ring bytes
 * mapped there, read once (another thread may map a larger window). */
typedef struct view_s {
  char *region;
  uint64_t window;
} view_t;

static view_t view_of(const ff_channel_t *ch) {
  view_t v;
  /* A larger window is published after its region (channel_view): the
   * region read after the window maps at least that much. */
  v.window = __atomic_load_n(&ch->window, __ATOMIC_ACQUIRE);
  v.region = __atomic_load_n((char **)&ch->region, __ATOMIC_ACQUIRE);
  return v;
}

static channel_shared_t *shared_of(const ff_channel_t *ch) {
  /* The header is the same in every window. */
  return (channel_shared_t *)__atomic_load_n((char **)&ch->region,
                                             __ATOMIC_ACQUIRE);
}

static char *data_of(const view_t *v) { return v->region + FF_CHANNEL_HEADER; }

static uint64_t record_size(size_t length) {
  return (sizeof(uint32_t) + (uint64_t)length + RECORD_ALIGN - 1) &
         ~(uint64_t)(RECORD_ALIGN - 1);
}

static uint64_t floor_pow2(uint64_t n) {
  uint64_t p = 1;
  while (p <= n / 2) p *= 2;
  return p;
}

static bool is_pow2(uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

static void futex_wake(_Atomic uint32_t *word) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int ff_channel_init(void *region, size_t size, size_t capacity,
                    unsigned maxsize) {
  if (region == NULL || (uintptr_t)region % 4096 != 0 ||
      size < FF_CHANNEL_HEADER + 4096)
    return -EINVAL;
  channel_shared_t *c = region;
  memset(c, 0, sizeof(*c));
  ff_mutex_init(&c->lock);
  c->max_capacity = floor_pow2(size - FF_CHANNEL_HEADER);
  if (capacity < 4096) capacity = 4096;
  c->base_capacity = floor_pow2(capacity);
  if (c->base_capacity > c->max_capacity) c->base_capacity = c->max_capacity;
  c->capacity = c->base_capacity;
  c->maxsize = maxsize;
  c->magic = CHANNEL_MAGIC;
  return 0;
}

int ff_channel_attach(void *region, size_t size, ff_channel_t *channel) {
  channel_shared_t *c = region;
  if (region == NULL || channel == NULL || (uintptr_t)region % 4096 != 0 ||
      size < FF_CHANNEL_HEADER + 4096 || c->magic != CHANNEL_MAGIC)
    return -EINVAL;
  channel->region = region;
  /* What this mapping holds, whatever the header says. */
  channel->limit = floor_pow2(size - FF_CHANNEL_HEADER);
  channel->window = channel->limit;
  channel->windows = NULL;
  channel->base = c->base_capacity;
  if (!is_pow2(channel->base) || channel->base < 4096 ||
      channel->base > channel->limit)
    channel->base = 4096;
  return 0;
}

/* Maps the header and the first window bytes of the ring of segment id's
 * region at offset: a new mapping, or a negative errno. */
static int window_map(uint64_t id, uint64_t offset, uint64_t window,
                      void **out) {
  int fd;
  int rc = ff_segment_open(id, &fd);
  if (rc < 0) return rc;
  void *p = mmap(NULL, FF_CHANNEL_HEADER + window, PROT_READ | PROT_WRITE,
                 MAP_SHARED, fd, (off_t)offset);
  rc = p == MAP_FAILED ? -errno : 0;
  close(fd);
  if (rc == 0) *out = p;
  return rc;
}

int ff_channel_map(ff_channel_t *channel, uint64_t segment, uint64_t offset,
                   size_t size, size_t window, int init, size_t capacity,
                   unsigned maxsize) {
  if (channel == NULL || offset % 4096 != 0 ||
      size < FF_CHANNEL_HEADER + 4096)
    return -EINVAL;
  uint64_t limit = floor_pow2(size - FF_CHANNEL_HEADER);
  uint64_t first = window < 4096 ? 4096 : floor_pow2(window);
  if (first > limit) first = limit;
  channel_windows_t *w = calloc(1, sizeof(*w));
  if (w == NULL) return -ENOMEM;
  pthread_mutex_init(&w->lock, NULL);
  w->segment = segment;
  w->offset = offset;
  void *region;
  int rc = window_map(segment, offset, first, &region);
  if (rc < 0) {
    free(w);
    return rc;
  }
  if (init) rc = ff_channel_init(region, size, capacity, maxsize);
  if (rc == 0) rc = ff_channel_attach(region, size, channel);
  if (rc < 0) {
    munmap(region, FF_CHANNEL_HEADER + first);
    free(w);
    return rc;
  }
  channel->window = first;
  channel->windows = w;
  return 0;
}

void ff_channel_unmap(ff_channel_t *channel) {
  channel_windows_t *w = channel->windows;
  if (w == NULL) return;
  for (size_t i = 0; i < w->count; i++) munmap(w->old[i], w->old_sizes[i]);
  munmap(channel->region, FF_CHANNEL_HEADER + channel->window);
  free(w->old);
  free(w->old_sizes);
  pthread_mutex_destroy(&w->lock);
  free(w);
  channel->windows = NULL;
  channel->region = NULL;
}

/* A view of the handle that maps at least capacity ring bytes: mapping a
 * larger window if needed. 0, or a negative errno (-ENOMEM when the
 * address space is exhausted). */
static int channel_view(ff_channel_t *ch, uint64_t capacity, view_t *v) {
  *v = view_of(ch);
  if (v->window >= capacity) return 0;
  channel_windows_t *w = ch->windows;
  if (w == NULL || capacity > ch->limit) return FF_EPROTOCOL;
  pthread_mutex_lock(&w->lock);
  int rc = 0;
  if (ch->window < capacity) {
    void **old = realloc(w->old, (w->count + 1) * sizeof(*old));
    size_t *sizes = old ? realloc(w->old_sizes, (w->count + 1) * sizeof(*sizes))
                        : NULL;
    if (old) w->old = old;
    if (sizes) w->old_sizes = sizes;
    void *region = NULL;
    rc = old && sizes ? window_map(w->segment, w->offset, capacity, &region)
                      : -ENOMEM;
    if (rc == 0) {
      w->old[w->count] = ch->region;
      w->old_sizes[w->count] = FF_CHANNEL_HEADER + ch->window;
      w->count++;
      __atomic_store_n((void **)&ch->region, region, __ATOMIC_RELEASE);
      __atomic_store_n(&ch->window, capacity, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock(&w->lock);
  if (rc == 0) *v = view_of(ch);
  return rc;
}

/* Copies between the ring and a flat buffer, across the ring's end. */
static void ring_write(char *data, uint64_t cap, uint64_t position,
                       const void *src, size_t n) {
  uint64_t at = position & (cap - 1);
  size_t first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(data + at, src, first);
  memcpy(data, (const char *)src + first, n - first);
}

static void ring_read(const char *data, uint64_t cap, uint64_t position,
                      void *dst, size_t n) {
  uint64_t at = position & (cap - 1);
  size_t first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(dst, data + at, first);
  memcpy((char *)dst + first, data, n - first);
}

/* Empties the channel at its first size. */
static void channel_reset(const ff_channel_t *ch) {
  channel_shared_t *c = shared_of(ch);
  c->head = c->tail = 0;
  c->capacity = ch->base;
  atomic_store(&c->count, 0);
}

/* The positions, checked: false for a state no put or get leaves. */
static bool channel_state(const ff_channel_t *ch, state_t *st) {
  channel_shared_t *c = shared_of(ch);
  st->head = c->head;
  st->tail = c->tail;
  st->capacity = c->capacity;
  return is_pow2(st->capacity) && st->capacity >= 4096 &&
         st->capacity <= ch->limit && st->head <= st->tail &&
         st->tail - st->head <= st->capacity;
}

/* Doubles the ring: the live bytes are copied into the half it adds,
 * [capacity, capacity + used), where positions modulo the new capacity
 * find them. v maps the doubled ring. */
static void channel_grow(const ff_channel_t *ch, const view_t *v,
                         state_t *st) {
  channel_shared_t *c = shared_of(ch);
  uint64_t used = st->tail - st->head;
  uint64_t old = st->capacity;
  char *data = data_of(v);
  uint64_t at = st->head & (old - 1);
  uint64_t first = used < old - at ? used : old - at;
  memcpy(data + old, data + at, first);
  memcpy(data + old + first, data, used - first);
  st->head = old;
  st->tail = old + used;
  st->capacity = old * 2;
  c->head = st->head;
  c->tail = st->tail;
  c->capacity = st->capacity;
}

/* Back to the first size once empty, and the pages above to the kernel
 * (v maps them). */
static void channel_shrink(const ff_channel_t *ch, const view_t *v,
                           uint64_t capacity) {
  channel_reset(ch);
  madvise(data_of(v) + ch->base, capacity - ch->base, MADV_REMOVE);
}

/* Takes the channel's lock and reads its state, with a view that maps the
 * ring: 0, or FF_EPROTOCOL when the state is impossible (a process died
 * half-way through moving it, or wrote where it should not), in which case
 * the channel is emptied and the lock released, or the error of mapping a
 * larger window. *recovered tells of a holder that died. */
static int channel_lock(ff_channel_t *ch, double timeout, state_t *st,
                        view_t *v, int *recovered) {
  channel_shared_t *c = shared_of(ch);
  pid_t dead = 0;
  int rc = ff_mutex_acquire(&c->lock, timeout, &dead);
  if (rc == -EOWNERDEAD) {
    if (recovered) *recovered = (int)dead;
    rc = 0;
  }
  if (rc < 0) return rc;
  if (!channel_state(ch, st) ||
      (atomic_load(&c->count) == 0) != (st->head == st->tail)) {
    channel_reset(ch);
    ff_mutex_release(&c->lock);
    return FF_EPROTOCOL;
  }
  rc = channel_view(ch, st->capacity, v);
  if (rc < 0) ff_mutex_release(&c->lock);
  return rc;
}

/* The wait for the lock itself: held only for a copy, so a caller that
 * will not wait for the channel (put_nowait) still waits for that, up to a
 * second; one that will, up to its deadline. */
static double lock_timeout(uint64_t deadline) {
  if (deadline == UINT64_MAX) return -1;
  uint64_t now = ff__now_ns();
  double left = now >= deadline ? 0 : (double)(deadline - now) / 1e9;
  return left > 1.0 ? left : 1.0;
}

/* Sleeps until *word moves from seen, the deadline passes (-ETIMEDOUT) or a
 * signal comes (-EINTR); spins a little first. */
static int channel_wait(_Atomic uint32_t *word, uint32_t seen,
                        _Atomic uint32_t *asleep, uint64_t deadline) {
  uint64_t spin_until = ff__now_ns() + SPIN_NS;
  for (unsigned i = 0; atomic_load(word) == seen; i++) {
    uint64_t now = ff__now_ns();
    if (now >= deadline) return -ETIMEDOUT;
    if (now >= spin_until) break;
    ff__spin_pause(i);
  }
  atomic_fetch_add(asleep, 1);
  int rc = 0;
  if (atomic_load(word) == seen)
    rc = ff__futex_wait_shared(word, seen, deadline);
  atomic_fetch_sub(asleep, 1);
  return rc == -ETIMEDOUT && atomic_load(word) != seen ? 0 : rc;
}

int ff_channel_put(ff_channel_t *ch, const void *data, size_t length,
                   double timeout, int *recovered) {
  channel_shared_t *c = shared_of(ch);
  uint64_t need = record_size(length);
  if (length > UINT32_MAX || need > ch->limit) return -EMSGSIZE;
  uint64_t deadline = ff__deadline(timeout);
  for (;;) {
    state_t st;
    view_t v;
    int rc = channel_lock(ch, lock_timeout(deadline), &st, &v, recovered);
    if (rc < 0) return rc;
    uint32_t seen = atomic_load(&c->gets);
    bool full = c->maxsize != 0 && atomic_load(&c->count) >= c->maxsize;
    while (!full && st.tail - st.head + need > st.capacity) {
      if (st.capacity >= ch->limit) {
        full = true;
        break;
      }
      rc = channel_view(ch, st.capacity * 2, &v);
      if (rc < 0) {
        ff_mutex_release(&c->lock);
        return rc;
      }
      channel_grow(ch, &v, &st);
    }
    if (!full) {
      uint32_t header = (uint32_t)length;
      ring_write(data_of(&v), st.capacity, st.tail, &header, sizeof(header));
      ring_write(data_of(&v), st.capacity, st.tail + sizeof(header), data,
                 length);
      /* Published only now: a putter killed above leaves no half record. */
      c->tail = st.tail + need;
      atomic_fetch_add(&c->unfinished, 1);
      atomic_fetch_add(&c->count, 1);
      atomic_fetch_add(&c->puts, 1);
      ff_mutex_release(&c->lock);
      if (atomic_load(&c->getters_asleep)) futex_wake(&c->puts);
      return 0;
    }
    ff_mutex_release(&c->lock);
    rc = channel_wait(&c->gets, seen, &c->putters_asleep, deadline);
    if (rc < 0) return rc;
  }
}

int ff_channel_get(ff_channel_t *ch, double timeout,
                   void *(*alloc)(void *arg, size_t length), void *arg,
                   int *recovered) {
  channel_shared_t *c = shared_of(ch);
  uint64_t deadline = ff__deadline(timeout);
  for (;;) {
    uint32_t seen = atomic_load(&c->puts);
    if (atomic_load(&c->count) > 0) {
      state_t st;
      view_t v;
      int rc = channel_lock(ch, lock_timeout(deadline), &st, &v, recovered);
      if (rc < 0) return rc;
      if (atomic_load(&c->count) > 0) {
        uint32_t length;
        ring_read(data_of(&v), st.capacity, st.head, &length, sizeof(length));
        uint64_t size = record_size(length);
        if (size > st.tail - st.head) {
          /* Only a process writing where it should not gets here. */
          channel_reset(ch);
          ff_mutex_release(&c->lock);
          return FF_EPROTOCOL;
        }
        void *out = alloc(arg, length);
        if (out == NULL) {
          ff_mutex_release(&c->lock);
          return -ENOMEM;
        }
        ring_read(data_of(&v), st.capacity, st.head + sizeof(length), out,
                  length);
        c->head = st.head + size;
        if (atomic_fetch_sub(&c->count, 1) == 1 && st.capacity > ch->base)
          channel_shrink(ch, &v, st.capacity);
        atomic_fetch_add(&c->gets, 1);
        ff_mutex_release(&c->lock);
        if (atomic_load(&c->putters_asleep)) futex_wake(&c->gets);
        return 0;
      }
      seen = atomic_load(&c->puts);
      ff_mutex_release(&c->lock);
      if (atomic_load(&c->count) > 0) continue;
    }
    int rc = channel_wait(&c->puts, seen, &c->getters_asleep, deadline);
    if (rc < 0) return rc;
  }
}

unsigned ff_channel_count(const ff_channel_t *ch) {
  return atomic_load(&shared_of(ch)->count);
}

unsigned ff_channel_maxsize(const ff_channel_t *ch) {
  return shared_of(ch)->maxsize;
}

int ff_channel_task_done(ff_channel_t *ch) {
  channel_shared_t *c = shared_of(ch);
  uint32_t n = atomic_load(&c->unfinished);
  do {
    if (n == 0) return -EOVERFLOW;
  } while (!atomic_compare_exchange_weak(&c->unfinished, &n, n - 1));
  if (n == 1 && atomic_load(&c->joiners_asleep)) futex_wake(&c->unfinished);
  return 0;
}

int ff_channel_join(ff_channel_t *ch, double timeout) {
  channel_shared_t *c = shared_of(ch);
  uint64_t deadline = ff__deadline(timeout);
  for (;;) {
    uint32_t n = atomic_load(&c->unfinished);
    if (n == 0) return 0;
    if (ff__now_ns() >= deadline) return -ETIMEDOUT;
    atomic_fetch_add(&c->joiners_asleep, 1);
    int rc = 0;
    if (atomic_load(&c->unfinished) == n)
      rc = ff__futex_wait_shared(&c->unfinished, n, deadline);
    atomic_fetch_sub(&c->joiners_asleep, 1);
    if (rc == -EINTR) return rc;
  }
}
