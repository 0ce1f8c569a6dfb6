/* The arena: reusable shared memory for large buffers that travel out of
 * band.
 *
 * A sender copies a large buffer (a NumPy array's data, say) into its arena
 * once, and the message carries a reference (ff_arena_ref_t) in its place;
 * the receiver maps the same memory and reads it where it is. Arena memory
 * is reused, so after the first use its pages are already faulted in on
 * both sides: a fresh page fault costs tens of times more than copying into
 * a warm one.
 *
 * An arena is a list of chunks, each a segment (share.c). A slot is one
 * message's claim on a region of a chunk; a region stays allocated while
 * any slot on it is in use, so a view that outlives its task keeps its
 * memory.
 *
 * Nothing about slots is kept in shared memory: every receiver maps the
 * chunk, and any of them may scribble on it. The sender keeps its slots in
 * private memory (offsets, lengths, generations, states), and a receiver
 * gives a reference back by reporting it, never by writing the chunk:
 *
 * - A worker reports what it let go of its parent's messages in RELEASE
 *   records on its result ring (FF_ARENA_FROM_PARENT); the parent gave
 *   each slot to the worker its message went to, and counts a report only
 *   from that worker. A worker's death frees what it held.
 * - A parent reports what it let go of a worker's results in RELEASE
 *   records on the worker's task ring (FF_ARENA_FROM_WORKER); the worker's
 *   result arena (FF_ARENA_TO_PARENT) has one receiver, the parent.
 *
 * A receiver can then waste what it was given, never free what another
 * holds, and a worker that scribbles on its own chunks' headers still sends
 * right results. The receiving side is arena_view.c. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Regions start on a cache line (NumPy wants 16 bytes; 64 avoids sharing a
 * line between two messages). */
#define REGION_ALIGN 64u
#define ARENA_SLOTS FF__ARENA_SLOTS
#define ARENA_MAGIC FF__ARENA_MAGIC
typedef ff__arena_header_t arena_header_t;

enum slot_state {
  SLOT_FREE = 0,
  SLOT_SENT = 1,     /* in a message no receiver has been given (or, in a
                        worker's result arena, given to the parent) */
  SLOT_ASSIGNED = 2, /* given to receiver; freed by its report or death */
  SLOT_HELD = 3,     /* the sender's own memory (ff_arena_hold), freed by
                        ff_arena_unhold; lent to messages by SENT slots */
  SLOT_RETIRED = 4,  /* a frozen held region let go: a child forked while
                        it was held may map it still, so it is never used
                        again (the chunk goes when nothing else is busy) */
};

/* A slot as the sender knows it, in private memory. */
typedef struct slot_s {
  uint64_t offset;
  uint64_t length;
  uint64_t receiver; /* while ASSIGNED */
  uint32_t generation;
  uint16_t state;
  /* The page faults of this process when a frozen region was last seen
   * to hold no private copy (ff__page_faults): none since, none now. */
  long clean_at;
  uint8_t frozen; /* HELD, and mapped privately here */
  uint8_t forked; /* frozen before a fork: a child may map it still */
  uint8_t fresh;  /* its bytes were never written: past the chunk's high */
} slot_t;

typedef struct arena_chunk_s {
  uint64_t id;
  char *base;
  size_t size;
  /* Kept from the first held region on, to remap held regions without the
   * segment table, whose lock a fork holds (freezing runs in the fork's
   * prepare handler). */
  int fd;
  /* The end of the furthest region ever taken: the bytes past it were never
   * written, so they are still the zeros of a new segment. */
  uint64_t high;
  slot_t slot[ARENA_SLOTS];
} arena_chunk_t;

struct ff_arena_s {
  pthread_mutex_t lock;
  unsigned flags;
  size_t chunk_size;
  size_t limit;
  size_t total;
  arena_chunk_t **chunks;
  size_t chunk_count;
};

static arena_header_t *header_of(const arena_chunk_t *c) {
  return (arena_header_t *)c->base;
}

/* Writes the chunk's header, for receivers to check it by: again before
 * every message, since any of them may have written over it. */
static void header_write(arena_chunk_t *c) {
  arena_header_t *h = header_of(c);
  h->magic = ARENA_MAGIC;
  h->id = c->id;
  h->size = c->size;
  h->slots = (uint32_t)ARENA_SLOTS;
  atomic_store(&h->retired, 0);
}

static void chunk_release(arena_chunk_t *c) {
  atomic_store(&header_of(c)->retired, 1);
  munmap(c->base, c->size);
  if (c->fd >= 0) close(c->fd);
  ff_segment_forget(c->id);
  free(c);
}

/* Every sender arena of this process, so that a task's message can give
 * back what was never received without knowing its arena. */
static pthread_mutex_t arenas_lock = PTHREAD_MUTEX_INITIALIZER;
static ff_arena_t **arenas;
static size_t arena_count;

static void arenas_add(ff_arena_t *a) {
  pthread_mutex_lock(&arenas_lock);
  ff_arena_t **grown = realloc(arenas, (arena_count + 1) * sizeof(*arenas));
  if (grown != NULL) {
    arenas = grown;
    arenas[arena_count++] = a;
  }
  pthread_mutex_unlock(&arenas_lock);
}

static void arenas_remove(ff_arena_t *a) {
  pthread_mutex_lock(&arenas_lock);
  for (size_t i = 0; i < arena_count; i++)
    if (arenas[i] == a) arenas[i] = arenas[--arena_count];
  pthread_mutex_unlock(&arenas_lock);
}

int ff_arena_create(ff_arena_t **arena, unsigned flags, size_t chunk_size,
                    size_t limit) {
  ff_arena_t *a = calloc(1, sizeof(*a));
  if (a == NULL) return -ENOMEM;
  pthread_mutex_init(&a->lock, NULL);
  a->flags = flags;
  a->chunk_size = chunk_size < 2 * FF__ARENA_HEADER ? 2 * FF__ARENA_HEADER
                                                    : chunk_size;
  a->limit = limit;
  arenas_add(a);
  *arena = a;
  return 0;
}

void ff_arena_destroy(ff_arena_t *arena) {
  if (arena == NULL) return;
  arenas_remove(arena);
  for (size_t i = 0; i < arena->chunk_count; i++)
    chunk_release(arena->chunks[i]);
  free(arena->chunks);
  pthread_mutex_destroy(&arena->lock);
  free(arena);
}

/* Chunks larger than the default fit their buffer, in steps of this. */
#define CHUNK_STEP ((size_t)2 << 20)

static int chunk_add(ff_arena_t *a, size_t need) {
  size_t size = a->chunk_size;
  if (need > SIZE_MAX - FF__ARENA_HEADER - CHUNK_STEP) return -ENOSPC;
  if (need + FF__ARENA_HEADER > size)
    size = (need + FF__ARENA_HEADER + CHUNK_STEP - 1) / CHUNK_STEP * CHUNK_STEP;
  if (a->total + size > a->limit) return -ENOSPC;
  arena_chunk_t **grown =
      realloc(a->chunks, (a->chunk_count + 1) * sizeof(*a->chunks));
  if (grown == NULL) return -ENOMEM;
  a->chunks = grown;
  arena_chunk_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return -ENOMEM;
  c->fd = -1;
  int fd;
  int rc = ff_segment_create(size, a->flags & FF_SEGMENT_PARENT, &c->id, &fd);
  if (rc < 0) {
    free(c);
    return rc;
  }
  ff__shm_t shm;
  rc = ff__shm_attach(&shm, fd);
  close(fd);
  if (rc < 0 || shm.size != size) {
    if (rc == 0) munmap(shm.base, shm.size);
    ff_segment_forget(c->id);
    free(c);
    return rc < 0 ? rc : FF_EPROTOCOL;
  }
  c->base = shm.base;
  c->size = size;
  header_write(c);
  a->chunks[a->chunk_count++] = c;
  a->total += size;
  return 0;
}

/* Whether slot i is taken. */
static bool slot_busy(const arena_chunk_t *c, uint32_t i) {
  return c->slot[i].state != SLOT_FREE;
}

typedef struct span_s {
  uint64_t offset, end;
} span_t;

static int span_cmp(const void *x, const void *y) {
  const span_t *a = x, *b = y;
  return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* The regions in use in a chunk, sorted by offset, into spans (room for
 * ARENA_SLOTS); their number. */
static size_t used_spans(const arena_chunk_t *c, span_t *spans) {
  size_t n = 0;
  for (uint32_t i = 0; i < ARENA_SLOTS; i++)
    if (slot_busy(c, i))
      spans[n++] = (span_t){c->slot[i].offset,
                            c->slot[i].offset + c->slot[i].length};
  qsort(spans, n, sizeof(*spans), span_cmp);
  return n;
}

static uint64_t align_up(uint64_t x, uint64_t align) {
  return (x + align - 1) & ~(align - 1);
}

/* Takes a free slot of chunk c for the region [offset, offset + length). */
static int slot_take(arena_chunk_t *c, uint64_t offset, uint64_t length,
                     ff_arena_ref_t *ref) {
  header_write(c);
  for (uint32_t i = 0; i < ARENA_SLOTS; i++) {
    slot_t *s = &c->slot[i];
    if (s->state != SLOT_FREE) continue;
    s->generation++;
    s->offset = offset;
    s->length = length;
    s->state = SLOT_SENT;
    s->frozen = 0;
    s->forked = 0;
    s->fresh = offset >= c->high;
    s->receiver = 0;
    if (offset + length > c->high) c->high = offset + length;
    *ref = (ff_arena_ref_t){.chunk = c->id,
                            .offset = offset,
                            .length = length,
                            .slot = (uint16_t)i,
                            .generation = s->generation};
    return 0;
  }
  return -ENOSPC;
}

/* Claims a free slot of chunk c for length bytes at a free place that
 * starts on a multiple of align (a power of two). */
static int chunk_alloc(arena_chunk_t *c, size_t length, uint64_t align,
                       ff_arena_ref_t *ref) {
  span_t spans[ARENA_SLOTS];
  size_t n = used_spans(c, spans);
  int rc = -ENOSPC;
  if (n < ARENA_SLOTS) {
    uint64_t at = align_up(FF__ARENA_HEADER, align);
    for (size_t i = 0; i <= n; i++) {
      uint64_t limit = i < n ? spans[i].offset : c->size;
      if (limit >= at && limit - at >= length) {
        rc = slot_take(c, at, length, ref);
        break;
      }
      if (i < n && spans[i].end > at) at = align_up(spans[i].end, align);
    }
  }
  return rc;
}

/* Takes a slot for length bytes aligned to align, in a new chunk if no
 * chunk has room (under the arena's lock): the chunk, or NULL with *rc. */
static arena_chunk_t *arena_take(ff_arena_t *arena, size_t length,
                                 uint64_t align, ff_arena_ref_t *ref, int *rc) {
  *rc = -ENOSPC;
  /* Newest chunks first: they are the largest. */
  for (size_t i = arena->chunk_count; i-- > 0;) {
    *rc = chunk_alloc(arena->chunks[i], length, align, ref);
    if (*rc != -ENOSPC) return *rc == 0 ? arena->chunks[i] : NULL;
  }
  *rc = chunk_add(arena, length + align);
  if (*rc == -ENOSPC) {
    /* At the limit: idle chunks (of other sizes, say) make room. */
    pthread_mutex_unlock(&arena->lock);
    ff_arena_trim(arena, 0);
    pthread_mutex_lock(&arena->lock);
    *rc = chunk_add(arena, length + align);
  }
  if (*rc < 0) return NULL;
  arena_chunk_t *c = arena->chunks[arena->chunk_count - 1];
  *rc = chunk_alloc(c, length, align, ref);
  return *rc == 0 ? c : NULL;
}

int ff_arena_alloc(ff_arena_t *arena, size_t length, ff_arena_ref_t *ref,
                   void **data) {
  if (length == 0) return -EINVAL;
  pthread_mutex_lock(&arena->lock);
  int rc;
  arena_chunk_t *c = arena_take(arena, length, REGION_ALIGN, ref, &rc);
  /* Where the private slot says: inside the chunk by construction. */
  if (c != NULL) *data = c->base + ref->offset;
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

/* Whether nothing in chunk c is in use: a retired region is not, though
 * it is never allocated again. */
static bool chunk_idle(const arena_chunk_t *c) {
  for (uint32_t i = 0; i < ARENA_SLOTS; i++)
    if (slot_busy(c, i) && c->slot[i].state != SLOT_RETIRED) return false;
  return true;
}

size_t ff_arena_trim(ff_arena_t *arena, size_t keep) {
  pthread_mutex_lock(&arena->lock);
  size_t released = 0, kept = 0;
  for (size_t i = 0; i < arena->chunk_count;) {
    arena_chunk_t *c = arena->chunks[i];
    if (kept + c->size <= keep || !chunk_idle(c)) {
      kept += c->size;
      i++;
      continue;
    }
    released += c->size;
    arena->total -= c->size;
    arena->chunks[i] = arena->chunks[--arena->chunk_count];
    chunk_release(c);
  }
  pthread_mutex_unlock(&arena->lock);
  return released;
}

static arena_chunk_t *chunk_find(ff_arena_t *arena, uint64_t id) {
  for (size_t i = 0; i < arena->chunk_count; i++)
    if (arena->chunks[i]->id == id) return arena->chunks[i];
  return NULL;
}

/* The private slot a reference names, if it is still the one the
 * reference was made for. */
static slot_t *slot_of(arena_chunk_t *c, const ff_arena_ref_t *ref) {
  if (c == NULL || ref->slot >= ARENA_SLOTS) return NULL;
  slot_t *s = &c->slot[ref->slot];
  if (s->state == SLOT_FREE || s->generation != ref->generation) return NULL;
  return s;
}

int ff_arena_share(ff_arena_t *arena, const ff_arena_ref_t *ref,
                   ff_arena_ref_t *another) {
  pthread_mutex_lock(&arena->lock);
  arena_chunk_t *c = chunk_find(arena, ref->chunk);
  slot_t *s = slot_of(c, ref);
  /* The region must still be held, by ref's own slot, or its bytes may be
   * another message's by now. */
  int rc = c == NULL ? -ENOENT : s == NULL ? -ESTALE : 0;
  if (rc == 0) rc = slot_take(c, s->offset, s->length, another);
  if (rc == 0) another->flags = ref->flags;
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

/* Frees a slot that is still SENT: its message was never received. */
static void slot_cancel(arena_chunk_t *c, const ff_arena_ref_t *ref) {
  slot_t *s = slot_of(c, ref);
  if (s != NULL && s->state == SLOT_SENT) s->state = SLOT_FREE;
}

void ff_arena_cancel(ff_arena_t *arena, const ff_arena_ref_t *ref) {
  pthread_mutex_lock(&arena->lock);
  slot_cancel(chunk_find(arena, ref->chunk), ref);
  pthread_mutex_unlock(&arena->lock);
}

/* ---- held regions ---------------------------------------------------------
 * Memory the sender keeps for itself: the data of a NumPy array born in
 * shared memory. It is whole pages, so that freezing it (below) never
 * covers a neighbour's bytes, and a message lends it (ff_arena_lend) by a
 * SENT slot on the same bytes instead of a copy. */

static size_t page_size(void) {
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? (size_t)page : 4096;
}

int ff_arena_hold(ff_arena_t *arena, size_t length, ff_arena_ref_t *ref,
                  void **data, int *fresh) {
  size_t page = page_size();
  if (length == 0 || length > SIZE_MAX - page) return -EINVAL;
  length = (length + page - 1) / page * page;
  pthread_mutex_lock(&arena->lock);
  int rc;
  arena_chunk_t *c = arena_take(arena, length, page, ref, &rc);
  if (c != NULL && c->fd < 0) {
    rc = ff_segment_open(c->id, &c->fd);
    if (rc < 0) {
      c->fd = -1;
      c->slot[ref->slot].state = SLOT_FREE;
      c = NULL;
    }
  }
  if (c != NULL) {
    slot_t *s = &c->slot[ref->slot];
    s->state = SLOT_HELD;
    *data = c->base + ref->offset;
    *fresh = s->fresh;
  }
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

/* The HELD slot of ref (under the arena's lock), or NULL. */
static slot_t *held_slot(ff_arena_t *arena, const ff_arena_ref_t *ref,
                         arena_chunk_t **chunk) {
  arena_chunk_t *c = chunk_find(arena, ref->chunk);
  slot_t *s = slot_of(c, ref);
  if (s == NULL || s->state != SLOT_HELD) return NULL;
  if (chunk != NULL) *chunk = c;
  return s;
}

/* Maps held slot s of chunk c privately over its own addresses (private)
 * or back to the shared file (under the arena's lock). */
static int slot_remap(arena_chunk_t *c, slot_t *s, bool private_copy) {
  if (c->fd < 0) return -EBADF;
  return ff__shm_remap(c->base + s->offset, s->length, c->fd, s->offset,
                       private_copy);
}

void ff_arena_unhold(ff_arena_t *arena, const ff_arena_ref_t *ref) {
  pthread_mutex_lock(&arena->lock);
  arena_chunk_t *c = NULL;
  slot_t *s = held_slot(arena, ref, &c);
  /* Messages that lent it keep its bytes through their own slots. A region
   * frozen for a message is this process's to write again (nobody else
   * writes it); one frozen for a fork may still be a child's. */
  if (s != NULL && s->frozen && !s->forked && slot_remap(c, s, false) < 0)
    s->forked = 1;
  if (s != NULL) s->state = s->forked ? SLOT_RETIRED : SLOT_FREE;
  pthread_mutex_unlock(&arena->lock);
}

int ff_arena_lend(ff_arena_t *arena, const ff_arena_ref_t *held,
                  size_t offset, size_t length, ff_arena_ref_t *lent) {
  pthread_mutex_lock(&arena->lock);
  arena_chunk_t *c = NULL;
  slot_t *s = held_slot(arena, held, &c);
  int rc = s == NULL ? -ESTALE : 0;
  if (rc == 0 && (offset > s->length || length > s->length - offset))
    rc = -EINVAL;
  uint16_t flags = 0;
  if (rc == 0 && (arena->flags & FF_ARENA_TO_PARENT)) {
    /* A worker's result is lent only when the worker let the array go:
     * the parent may then write it. A frozen one a child may still see. */
    if (s->frozen) rc = -EBUSY;
  } else if (rc == 0) {
    /* The sender keeps its array: from now on its writes stay its own
     * (frozen), the receivers map it privately, and nobody writes the
     * file. If the sender wrote since an earlier freeze, the file no longer
     * has what it sees: copy instead. */
    long faults = ff__page_faults();
    if (!s->frozen) {
      rc = slot_remap(c, s, true);
      if (rc == 0) s->frozen = 1;
      s->clean_at = faults;
    } else if (faults < 0 || faults != s->clean_at) {
      long copied = ff__private_pages(c->base + s->offset + offset, length,
                                      NULL, NULL);
      if (copied != 0) rc = -EBUSY;
      if (copied == 0 && offset == 0 && length == s->length)
        s->clean_at = faults;
    }
    flags = FF_ARENA_REF_PRIVATE;
  }
  if (rc == 0) rc = slot_take(c, s->offset + offset, length, lent);
  if (rc == 0) lent->flags = flags;
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

int ff_arena_freeze(ff_arena_t *arena, const ff_arena_ref_t *held) {
  /* Called before a fork, where a thread that holds the lock might wait for
   * the forking one: then the region is left as it is. */
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 1;
  if (pthread_mutex_timedlock(&arena->lock, &deadline) != 0) return -EBUSY;
  arena_chunk_t *c = NULL;
  slot_t *s = held_slot(arena, held, &c);
  int rc = s == NULL ? -ESTALE : 0;
  /* Over the same addresses, so every pointer into it stays valid; the
   * contents are the file's, which nobody writes again. */
  if (rc == 0 && !s->frozen) rc = slot_remap(c, s, true);
  if (rc == 0) s->frozen = s->forked = 1;
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

/* Calls fn(chunk, ref, arg) for each reference of a framed message, with
 * the chunk it names among this process's arenas (NULL if none), under
 * the arenas' locks. */
static void for_each_ref(const void *message, size_t length,
                         void (*fn)(arena_chunk_t *c, const ff_arena_ref_t *ref,
                                    void *arg),
                         void *arg) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1) return;
  pthread_mutex_lock(&arenas_lock);
  for (size_t i = 0; i < frame.refs; i++) {
    ff_arena_ref_t ref;
    ff_arena_frame_ref(message, i, &ref);
    arena_chunk_t *c = NULL;
    size_t j = 0;
    for (; j < arena_count && c == NULL; j++) {
      pthread_mutex_lock(&arenas[j]->lock);
      c = chunk_find(arenas[j], ref.chunk);
      if (c == NULL) pthread_mutex_unlock(&arenas[j]->lock);
    }
    fn(c, &ref, arg);
    if (c != NULL) pthread_mutex_unlock(&arenas[j - 1]->lock);
  }
  pthread_mutex_unlock(&arenas_lock);
}

static void cancel_ref(arena_chunk_t *c, const ff_arena_ref_t *ref,
                       void *arg) {
  (void)arg;
  slot_cancel(c, ref);
}

void ff__arena_cancel_message(const void *message, size_t length) {
  for_each_ref(message, length, cancel_ref, NULL);
}

static void assign_ref(arena_chunk_t *c, const ff_arena_ref_t *ref,
                       void *arg) {
  slot_t *s = slot_of(c, ref);
  if (s != NULL && s->state == SLOT_SENT) {
    s->state = SLOT_ASSIGNED;
    s->receiver = *(const uint64_t *)arg;
  }
}

void ff__arena_assign_message(const void *message, size_t length,
                              uint64_t receiver) {
  for_each_ref(message, length, assign_ref, &receiver);
}

typedef struct unassign_s {
  uint64_t receiver;
  bool all;
} unassign_t;

static void unassign_ref(arena_chunk_t *c, const ff_arena_ref_t *ref,
                         void *arg) {
  unassign_t *u = arg;
  slot_t *s = slot_of(c, ref);
  if (s != NULL && s->state == SLOT_ASSIGNED && s->receiver == u->receiver)
    s->state = SLOT_SENT;
  else
    u->all = false;
}

int ff__arena_unassign_message(const void *message, size_t length,
                               uint64_t receiver) {
  unassign_t u = {receiver, true};
  for_each_ref(message, length, unassign_ref, &u);
  return u.all ? 1 : 0;
}

void ff__arena_reported(uint64_t receiver, const void *records,
                        size_t length) {
  size_t n = length / sizeof(ff__arena_report_t);
  pthread_mutex_lock(&arenas_lock);
  for (size_t i = 0; i < n; i++) {
    ff__arena_report_t r;
    memcpy(&r, (const char *)records + i * sizeof(r), sizeof(r));
    for (size_t j = 0; j < arena_count; j++) {
      pthread_mutex_lock(&arenas[j]->lock);
      arena_chunk_t *c = chunk_find(arenas[j], r.chunk);
      ff_arena_ref_t ref = {
          .chunk = r.chunk, .slot = (uint16_t)r.slot, .generation = r.generation};
      slot_t *s = slot_of(c, &ref);
      /* Only the receiver it was given to can give it back: in a worker's
       * result arena, the parent, to which every message goes. */
      if (s != NULL &&
          ((s->state == SLOT_ASSIGNED && s->receiver == receiver) ||
           (s->state == SLOT_SENT && receiver == FF__RECEIVER_PARENT &&
            (arenas[j]->flags & FF_ARENA_TO_PARENT))))
        s->state = SLOT_FREE;
      pthread_mutex_unlock(&arenas[j]->lock);
      if (c != NULL) break;
    }
  }
  pthread_mutex_unlock(&arenas_lock);
}

void ff__arena_drop_receiver(uint64_t receiver) {
  ff__arena_drop_reports_for(receiver);
  pthread_mutex_lock(&arenas_lock);
  for (size_t j = 0; j < arena_count; j++) {
    ff_arena_t *a = arenas[j];
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->chunk_count; i++)
      for (uint32_t k = 0; k < ARENA_SLOTS; k++) {
        slot_t *s = &a->chunks[i]->slot[k];
        if (s->state == SLOT_ASSIGNED && s->receiver == receiver)
          s->state = SLOT_FREE;
      }
    pthread_mutex_unlock(&a->lock);
  }
  pthread_mutex_unlock(&arenas_lock);
}
