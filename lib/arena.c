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
 * right results. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ARENA_MAGIC UINT64_C(0x31414e4552414646) /* "FFARENA1" */
/* Regions start on a cache line (NumPy wants 16 bytes; 64 avoids sharing a
 * line between two messages). */
#define REGION_ALIGN 64u
/* The most messages a chunk holds at once. */
#define ARENA_SLOTS 340u

/* The chunk header in shared memory: what receivers check a chunk by. The
 * sender writes it and never reads it back. */
typedef struct arena_header_s {
  uint64_t magic;
  uint64_t id;
  uint64_t size;
  uint32_t slots;
  /* Set by the sender when it lets the chunk go: receivers unmap it once
   * they hold nothing in it. */
  _Atomic uint32_t retired;
} arena_header_t;

_Static_assert(sizeof(arena_header_t) <= FF__ARENA_HEADER,
               "the header fits its space");

enum slot_state {
  SLOT_FREE = 0,
  SLOT_SENT = 1,     /* in a message no receiver has been given (or, in a
                        worker's result arena, given to the parent) */
  SLOT_ASSIGNED = 2, /* given to receiver; freed by its report or death */
};

/* A slot as the sender knows it, in private memory. */
typedef struct slot_s {
  uint64_t offset;
  uint64_t length;
  uint64_t receiver; /* while ASSIGNED */
  uint32_t generation;
  uint32_t state;
} slot_t;

typedef struct arena_chunk_s {
  uint64_t id;
  char *base;
  size_t size;
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

static int map_segment(uint64_t id, char **base, size_t *size) {
  int fd;
  int rc = ff_segment_open(id, &fd);
  if (rc < 0) return rc;
  ff__shm_t shm;
  rc = ff__shm_attach(&shm, fd);
  close(fd);
  if (rc < 0) return rc;
  *base = shm.base;
  *size = shm.size;
  return 0;
}

static void chunk_release(arena_chunk_t *c) {
  atomic_store(&header_of(c)->retired, 1);
  munmap(c->base, c->size);
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

static uint64_t align_up(uint64_t x) {
  return (x + REGION_ALIGN - 1) & ~(uint64_t)(REGION_ALIGN - 1);
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
    s->receiver = 0;
    *ref = (ff_arena_ref_t){c->id, offset, length, i, s->generation};
    return 0;
  }
  return -ENOSPC;
}

/* Claims a free slot of chunk c for length bytes at a free place. */
static int chunk_alloc(arena_chunk_t *c, size_t length, ff_arena_ref_t *ref) {
  span_t spans[ARENA_SLOTS];
  size_t n = used_spans(c, spans);
  int rc = -ENOSPC;
  if (n < ARENA_SLOTS) {
    uint64_t at = FF__ARENA_HEADER;
    for (size_t i = 0; i <= n; i++) {
      uint64_t limit = i < n ? spans[i].offset : c->size;
      if (limit >= at && limit - at >= length) {
        rc = slot_take(c, at, length, ref);
        break;
      }
      if (i < n && spans[i].end > at) at = align_up(spans[i].end);
    }
  }
  return rc;
}

int ff_arena_alloc(ff_arena_t *arena, size_t length, ff_arena_ref_t *ref,
                   void **data) {
  if (length == 0) return -EINVAL;
  pthread_mutex_lock(&arena->lock);
  int rc = -ENOSPC;
  /* Newest chunks first: they are the largest. */
  for (size_t i = arena->chunk_count; i-- > 0 && rc == -ENOSPC;)
    rc = chunk_alloc(arena->chunks[i], length, ref);
  if (rc == -ENOSPC) {
    rc = chunk_add(arena, length);
    if (rc == -ENOSPC) {
      /* At the limit: idle chunks (of other sizes, say) make room. */
      pthread_mutex_unlock(&arena->lock);
      ff_arena_trim(arena, 0);
      pthread_mutex_lock(&arena->lock);
      rc = chunk_add(arena, length);
    }
    if (rc == 0)
      rc = chunk_alloc(arena->chunks[arena->chunk_count - 1], length, ref);
  }
  if (rc == 0) {
    /* Where the private slot says: inside the chunk by construction. */
    for (size_t i = 0; i < arena->chunk_count; i++)
      if (arena->chunks[i]->id == ref->chunk)
        *data = arena->chunks[i]->base + ref->offset;
  }
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

static bool chunk_idle(const arena_chunk_t *c) {
  for (uint32_t i = 0; i < ARENA_SLOTS; i++)
    if (slot_busy(c, i)) return false;
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
      ff_arena_ref_t ref = {r.chunk, 0, 0, r.slot, r.generation};
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

static void down_reports_drop(uint64_t owner);

void ff__arena_drop_receiver(uint64_t receiver) {
  down_reports_drop(receiver);
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

/* ---- the receiving side ------------------------------------------------- */

/* The chunks this process has mapped as a receiver, kept mapped while it
 * holds slots in them and afterwards too, so that the next message finds
 * them warm. A chunk is unmapped once nothing here holds it and its sender
 * retired it, or it can no longer be opened (its worker is gone). */
typedef struct view_s {
  uint64_t id;
  char *base;
  size_t size;
  unsigned refs;
  bool gone;
} view_t;

static pthread_mutex_t views_lock = PTHREAD_MUTEX_INITIALIZER;
static view_t *views;
static size_t view_count;

/* In a worker: what it let go of its parent's messages, not yet reported
 * (under views_lock). */
static ff__arena_report_t *reports;
static size_t report_count;
static size_t report_capacity;

/* In a parent: what it let go of its workers' results, by worker, not yet
 * written to their task rings (under views_lock), and how many. */
typedef struct down_report_s {
  uint64_t owner;
  ff__arena_report_t report;
} down_report_t;
static down_report_t *down_reports;
static size_t down_count;
static size_t down_capacity;
static _Atomic size_t down_pending;

static void views_sweep(void) {
  for (size_t i = 0; i < view_count;) {
    view_t *v = &views[i];
    const arena_header_t *h = (const arena_header_t *)v->base;
    if (v->refs == 0 && (v->gone || atomic_load(&h->retired))) {
      munmap(v->base, v->size);
      views[i] = views[--view_count];
    } else {
      i++;
    }
  }
}

static view_t *view_find(uint64_t id) {
  for (size_t i = 0; i < view_count; i++)
    if (views[i].id == id) return &views[i];
  return NULL;
}

static void arena_watch_segments(void);
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;

/* The view of chunk id, mapped if needed, with one more reference. */
static int view_get(uint64_t id, view_t **out) {
  view_t *v = view_find(id);
  if (v == NULL) {
    /* From the first view on, the lender says which segments go. */
    pthread_once(&watch_once, arena_watch_segments);
    view_t *grown = realloc(views, (view_count + 1) * sizeof(*views));
    if (grown == NULL) return -ENOMEM;
    views = grown;
    char *base;
    size_t size;
    int rc = map_segment(id, &base, &size);
    if (rc < 0) return rc;
    /* One look at the header, copied: its sender may be hostile. */
    arena_header_t h;
    if (size >= FF__ARENA_HEADER) memcpy(&h, base, sizeof(h));
    if (size < FF__ARENA_HEADER || h.magic != ARENA_MAGIC || h.id != id ||
        h.size != size || h.slots != ARENA_SLOTS) {
      munmap(base, size);
      return FF_EPROTOCOL;
    }
    v = &views[view_count++];
    *v = (view_t){id, base, size, 0, false};
  }
  v->refs++;
  *out = v;
  return 0;
}

/* A reference checked against what this process mapped. */
static int ref_check(const view_t *v, const ff_arena_ref_t *ref) {
  if (ref->slot >= ARENA_SLOTS || ref->offset < FF__ARENA_HEADER ||
      ref->offset > v->size || ref->length > v->size - ref->offset)
    return FF_EPROTOCOL;
  return 0;
}

/* Queues a report for this process's parent (under views_lock). Without
 * memory for it the report is lost, and its slot waits for the receiver's
 * end; so in down_report_push. */
static void report_push(ff__arena_report_t r) {
  ff__arena_report_t *grown =
      ff__grow(reports, report_count, &report_capacity, sizeof(*reports));
  if (grown == NULL) return;
  reports = grown;
  reports[report_count++] = r;
}

/* Queues a report for the worker owner (under views_lock). */
static void down_report_push(uint64_t owner, ff__arena_report_t r) {
  down_report_t *grown =
      ff__grow(down_reports, down_count, &down_capacity, sizeof(*down_reports));
  if (grown == NULL) return;
  down_reports = grown;
  down_reports[down_count++] = (down_report_t){owner, r};
}

/* Gives ref back to its sender, by report (under views_lock). */
static void report(const ff_arena_ref_t *ref, unsigned how) {
  ff__arena_report_t r = {ref->chunk, ref->slot, ref->generation};
  if (how == FF_ARENA_FROM_PARENT) {
    report_push(r);
    return;
  }
  /* A worker's result: to the worker that made the chunk, if it lives. */
  uint64_t owner = ff__share_owner_of(ref->chunk);
  if (owner == 0) return;
  down_report_push(owner, r);
  atomic_store(&down_pending, down_count);
  ff__runtime_kick();
}

size_t ff__arena_take_reports(ff__arena_report_t *out, size_t max) {
  pthread_mutex_lock(&views_lock);
  size_t n = report_count < max ? report_count : max;
  if (n > 0) {
    memcpy(out, reports + report_count - n, n * sizeof(*out));
    report_count -= n;
  }
  pthread_mutex_unlock(&views_lock);
  return n;
}

size_t ff__arena_take_reports_for(uint64_t owner, ff__arena_report_t *out,
                                  size_t max) {
  if (atomic_load(&down_pending) == 0) return 0;
  pthread_mutex_lock(&views_lock);
  size_t n = 0;
  for (size_t i = 0; i < down_count && n < max;) {
    if (down_reports[i].owner == owner) {
      out[n++] = down_reports[i].report;
      down_reports[i] = down_reports[--down_count];
    } else {
      i++;
    }
  }
  atomic_store(&down_pending, down_count);
  pthread_mutex_unlock(&views_lock);
  return n;
}

void ff__arena_put_back_reports(uint64_t owner, const ff__arena_report_t *in,
                                size_t count) {
  pthread_mutex_lock(&views_lock);
  for (size_t i = 0; i < count; i++) down_report_push(owner, in[i]);
  atomic_store(&down_pending, down_count);
  pthread_mutex_unlock(&views_lock);
}

static void down_reports_drop(uint64_t owner) {
  pthread_mutex_lock(&views_lock);
  for (size_t i = 0; i < down_count;) {
    if (down_reports[i].owner == owner)
      down_reports[i] = down_reports[--down_count];
    else
      i++;
  }
  atomic_store(&down_pending, down_count);
  pthread_mutex_unlock(&views_lock);
}

void ff__arena_forget_reports(void) {
  pthread_mutex_init(&views_lock, NULL);
  report_count = 0;
  down_count = 0;
  atomic_store(&down_pending, 0);
}

int ff_arena_receive(const ff_arena_ref_t *ref, unsigned how, void **data) {
  (void)how;
  pthread_mutex_lock(&views_lock);
  view_t *v;
  int rc = view_get(ref->chunk, &v);
  if (rc == 0) {
    rc = ref_check(v, ref);
    if (rc == 0)
      *data = v->base + ref->offset;
    else
      v->refs--;
  }
  views_sweep();
  pthread_mutex_unlock(&views_lock);
  return rc;
}

void ff_arena_release(const ff_arena_ref_t *ref, unsigned how) {
  pthread_mutex_lock(&views_lock);
  view_t *v = view_find(ref->chunk);
  if (v != NULL) {
    report(ref, how);
    v->refs--;
  }
  views_sweep();
  pthread_mutex_unlock(&views_lock);
}

void ff_arena_discard(const ff_arena_ref_t *ref, unsigned how) {
  pthread_mutex_lock(&views_lock);
  report(ref, how);
  pthread_mutex_unlock(&views_lock);
}

void ff__arena_discard_message(const void *message, size_t length) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1)
    return;
  for (size_t i = 0; i < frame.refs; i++) {
    ff_arena_ref_t ref;
    ff_arena_frame_ref(message, i, &ref);
    ff_arena_discard(&ref, FF_ARENA_FROM_WORKER);
  }
}

/* Segment id can no longer be opened here (its worker is gone): a view of
 * it is unmapped once nothing holds it. share.c calls it through the hook
 * set below, being the lower layer. */
static void arena_segment_gone(uint64_t id) {
  pthread_mutex_lock(&views_lock);
  view_t *v = view_find(id);
  if (v != NULL) v->gone = true;
  views_sweep();
  pthread_mutex_unlock(&views_lock);
}

static void arena_watch_segments(void) { ff__share_on_gone(arena_segment_gone); }
