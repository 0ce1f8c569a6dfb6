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
 * An arena is a list of chunks, each a segment (share.c) whose first
 * FF__ARENA_HEADER bytes hold its slots. A slot is one message's claim on
 * a region of the chunk; its 64-bit word, in shared memory, is the slot's
 * generation (high half) and its state (low half): FREE, SENT (written by
 * the sender, not yet taken), or the pid of the receiver that holds it.
 * Only the sender allocates; the receiver frees its slot when it lets go of
 * the last view. A region stays allocated while any slot on it is not FREE,
 * so a view that outlives its task keeps its memory. A receiver that dies
 * holding a slot cannot free it: the sender reclaims slots whose holder no
 * longer exists. */
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
#define STATE_FREE 0u
#define STATE_SENT 1u
/* Regions start on a cache line (NumPy wants 16 bytes; 64 avoids sharing a
 * line between two messages). */
#define REGION_ALIGN 64u

typedef struct arena_slot_s {
  _Atomic uint64_t word; /* generation << 32 | state */
  uint64_t offset;
  uint64_t length;
} arena_slot_t;

#define ARENA_SLOTS ((FF__ARENA_HEADER - 64u) / sizeof(arena_slot_t))

typedef struct arena_header_s {
  uint64_t magic;
  uint64_t id;
  uint64_t size;
  uint32_t slots;
  /* Set by the sender when it lets the chunk go: receivers unmap it once
   * they hold nothing in it. */
  _Atomic uint32_t retired;
  char pad[64 - 32];
  arena_slot_t slot[ARENA_SLOTS];
} arena_header_t;

_Static_assert(sizeof(arena_header_t) <= FF__ARENA_HEADER,
               "the slots fit the header");

typedef struct arena_chunk_s {
  uint64_t id;
  char *base;
  size_t size;
} arena_chunk_t;

struct ff_arena_s {
  pthread_mutex_t lock;
  unsigned segment_flags;
  size_t chunk_size;
  size_t limit;
  size_t total;
  arena_chunk_t *chunks;
  size_t chunk_count;
};

static uint64_t make_word(uint32_t generation, uint32_t state) {
  return (uint64_t)generation << 32 | state;
}

static int map_segment(uint64_t id, char **base, size_t *size) {
  int fd;
  int rc = ff_segment_open(id, &fd);
  if (rc < 0) return rc;
  ff__shm_t shm;
  rc = ff__shm_attach(&shm, fd);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  close(fd);
  *base = shm.base;
  *size = shm.size;
  return 0;
}

static void chunk_release(arena_chunk_t *c) {
  atomic_store(&((arena_header_t *)c->base)->retired, 1);
  munmap(c->base, c->size);
  ff_segment_forget(c->id);
}

/* Every sender arena of this process, so that a finished task's message
 * can give back what was never received without knowing its arena. */
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

int ff_arena_create(ff_arena_t **arena, unsigned segment_flags,
                    size_t chunk_size, size_t limit) {
  ff_arena_t *a = calloc(1, sizeof(*a));
  if (a == NULL) return -ENOMEM;
  pthread_mutex_init(&a->lock, NULL);
  a->segment_flags = segment_flags;
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
    chunk_release(&arena->chunks[i]);
  free(arena->chunks);
  pthread_mutex_destroy(&arena->lock);
  free(arena);
}

/* Chunks larger than the default fit their buffer, in steps of this. */
#define CHUNK_STEP ((size_t)2 << 20)

static int chunk_add(ff_arena_t *a, size_t need) {
  size_t size = a->chunk_size;
  if (need + FF__ARENA_HEADER > size)
    size = (need + FF__ARENA_HEADER + CHUNK_STEP - 1) / CHUNK_STEP * CHUNK_STEP;
  if (a->total + size > a->limit) return -ENOSPC;
  arena_chunk_t *grown =
      realloc(a->chunks, (a->chunk_count + 1) * sizeof(*a->chunks));
  if (grown == NULL) return -ENOMEM;
  a->chunks = grown;
  uint64_t id;
  int fd;
  int rc = ff_segment_create(size, a->segment_flags, &id, &fd);
  if (rc < 0) return rc;
  ff__shm_t shm;
  rc = ff__shm_attach(&shm, fd);
  if (rc < 0) {
    close(fd);
    ff_segment_forget(id);
    return rc;
  }
  close(fd);
  arena_header_t *h = (arena_header_t *)shm.base;
  h->magic = ARENA_MAGIC;
  h->id = id;
  h->size = size;
  h->slots = (uint32_t)ARENA_SLOTS;
  a->chunks[a->chunk_count++] = (arena_chunk_t){id, shm.base, size};
  a->total += size;
  return 0;
}

static bool holder_gone(uint32_t state) {
  return state > STATE_SENT && kill((pid_t)state, 0) < 0 && errno == ESRCH;
}

/* The regions in use in a chunk, sorted by offset. With reclaim, slots of
 * receivers that died are freed first. */
typedef struct span_s {
  uint64_t offset, end;
} span_t;

/* The regions of one chunk, sorted: scratch for the allocator, which runs
 * under its arena's lock, per thread since several arenas may allocate. */
static _Thread_local span_t scratch_spans[ARENA_SLOTS];

static int span_cmp(const void *x, const void *y) {
  const span_t *a = x, *b = y;
  return a->offset < b->offset ? -1 : a->offset > b->offset;
}

static size_t used_spans(arena_header_t *h, span_t *spans, bool reclaim) {
  size_t n = 0;
  for (uint32_t i = 0; i < h->slots; i++) {
    uint64_t word = atomic_load(&h->slot[i].word);
    uint32_t state = (uint32_t)word;
    if (state == STATE_FREE) continue;
    if (reclaim && holder_gone(state) &&
        atomic_compare_exchange_strong(&h->slot[i].word, &word,
                                       make_word((uint32_t)(word >> 32),
                                                 STATE_FREE)))
      continue;
    spans[n++] = (span_t){h->slot[i].offset,
                          h->slot[i].offset + h->slot[i].length};
  }
  qsort(spans, n, sizeof(*spans), span_cmp);
  return n;
}

static uint64_t align_up(uint64_t x) {
  return (x + REGION_ALIGN - 1) & ~(uint64_t)(REGION_ALIGN - 1);
}

/* Claims a free slot of chunk c for length bytes at a free place. */
static int chunk_alloc(arena_chunk_t *c, size_t length, bool reclaim,
                       ff_arena_ref_t *ref) {
  arena_header_t *h = (arena_header_t *)c->base;
  span_t *spans = scratch_spans;
  size_t n = used_spans(h, spans, reclaim);
  uint32_t free_slot = UINT32_MAX;
  for (uint32_t i = 0; i < h->slots && free_slot == UINT32_MAX; i++)
    if ((uint32_t)atomic_load(&h->slot[i].word) == STATE_FREE) free_slot = i;
  if (free_slot == UINT32_MAX) return -ENOSPC;
  uint64_t at = FF__ARENA_HEADER;
  for (size_t i = 0; i <= n; i++) {
    uint64_t limit = i < n ? spans[i].offset : c->size;
    if (limit >= at && limit - at >= length) break;
    if (i == n) return -ENOSPC;
    if (spans[i].end > at) at = align_up(spans[i].end);
  }
  arena_slot_t *s = &h->slot[free_slot];
  uint32_t generation = (uint32_t)(atomic_load(&s->word) >> 32) + 1;
  s->offset = at;
  s->length = length;
  atomic_store(&s->word, make_word(generation, STATE_SENT));
  *ref = (ff_arena_ref_t){c->id, at, length, free_slot, generation};
  return 0;
}

int ff_arena_alloc(ff_arena_t *arena, size_t length, ff_arena_ref_t *ref,
                   void **data) {
  if (length == 0) return -EINVAL;
  pthread_mutex_lock(&arena->lock);
  int rc = -ENOSPC;
  /* Newest chunks first: they are the largest. Dead receivers' slots are
   * only looked for when nothing fits without them. */
  for (int reclaim = 0; reclaim < 2 && rc == -ENOSPC; reclaim++)
    for (size_t i = arena->chunk_count; i-- > 0 && rc == -ENOSPC;)
      rc = chunk_alloc(&arena->chunks[i], length, reclaim, ref);
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
      rc = chunk_alloc(&arena->chunks[arena->chunk_count - 1], length, false,
                       ref);
  }
  if (rc == 0) {
    for (size_t i = 0; i < arena->chunk_count; i++)
      if (arena->chunks[i].id == ref->chunk)
        *data = arena->chunks[i].base + ref->offset;
  }
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

static bool chunk_idle(arena_chunk_t *c) {
  return used_spans((arena_header_t *)c->base, scratch_spans, true) == 0;
}


size_t ff_arena_trim(ff_arena_t *arena, size_t keep) {
  pthread_mutex_lock(&arena->lock);
  size_t released = 0, kept = 0;
  for (size_t i = 0; i < arena->chunk_count;) {
    arena_chunk_t *c = &arena->chunks[i];
    if (kept + c->size <= keep || !chunk_idle(c)) {
      kept += c->size;
      i++;
      continue;
    }
    released += c->size;
    arena->total -= c->size;
    chunk_release(c);
    arena->chunks[i] = arena->chunks[--arena->chunk_count];
  }
  pthread_mutex_unlock(&arena->lock);
  return released;
}

static arena_chunk_t *chunk_find(ff_arena_t *arena, uint64_t id) {
  for (size_t i = 0; i < arena->chunk_count; i++)
    if (arena->chunks[i].id == id) return &arena->chunks[i];
  return NULL;
}

int ff_arena_share(ff_arena_t *arena, const ff_arena_ref_t *ref,
                   ff_arena_ref_t *another) {
  pthread_mutex_lock(&arena->lock);
  arena_chunk_t *c = chunk_find(arena, ref->chunk);
  int rc = c == NULL ? -ENOENT : -ENOSPC;
  if (c != NULL) {
    arena_header_t *h = (arena_header_t *)c->base;
    for (uint32_t i = 0; i < h->slots; i++) {
      arena_slot_t *s = &h->slot[i];
      uint64_t word = atomic_load(&s->word);
      if ((uint32_t)word != STATE_FREE) continue;
      uint32_t generation = (uint32_t)(word >> 32) + 1;
      s->offset = ref->offset;
      s->length = ref->length;
      atomic_store(&s->word, make_word(generation, STATE_SENT));
      *another = (ff_arena_ref_t){ref->chunk, ref->offset, ref->length, i,
                                  generation};
      rc = 0;
      break;
    }
  }
  pthread_mutex_unlock(&arena->lock);
  return rc;
}

static void slot_cancel(arena_header_t *h, const ff_arena_ref_t *ref) {
  if (ref->slot >= h->slots) return;
  uint64_t expected = make_word(ref->generation, STATE_SENT);
  atomic_compare_exchange_strong(&h->slot[ref->slot].word, &expected,
                                 make_word(ref->generation, STATE_FREE));
}

void ff_arena_cancel(ff_arena_t *arena, const ff_arena_ref_t *ref) {
  pthread_mutex_lock(&arena->lock);
  arena_chunk_t *c = chunk_find(arena, ref->chunk);
  if (c != NULL) slot_cancel((arena_header_t *)c->base, ref);
  pthread_mutex_unlock(&arena->lock);
}

int ff_arena_frame(const void *message, size_t length,
                   ff_arena_frame_t *frame) {
  if (length < 4 || memcmp(message, FF_ARENA_FRAME_MAGIC, 4) != 0) return 0;
  if (length < FF_ARENA_FRAME_HEADER) return FF_EPROTOCOL;
  uint32_t counts[3];
  memcpy(counts, (const char *)message + 4, sizeof(counts));
  uint64_t need = FF_ARENA_FRAME_HEADER +
                  (uint64_t)counts[0] * sizeof(ff_arena_ref_t) +
                  (uint64_t)counts[1] * sizeof(uint64_t);
  if (counts[2] != 0 || need > length) return FF_EPROTOCOL;
  frame->refs = counts[0];
  frame->pins = counts[1];
  frame->body = (size_t)need;
  return 1;
}

void ff_arena_frame_ref(const void *message, size_t i, ff_arena_ref_t *ref) {
  memcpy(ref,
         (const char *)message + FF_ARENA_FRAME_HEADER + i * sizeof(*ref),
         sizeof(*ref));
}

uint64_t ff_arena_frame_pin(const void *message, const ff_arena_frame_t *frame,
                            size_t i) {
  uint64_t id;
  memcpy(&id,
         (const char *)message + FF_ARENA_FRAME_HEADER +
             frame->refs * sizeof(ff_arena_ref_t) + i * sizeof(id),
         sizeof(id));
  return id;
}

void ff__arena_cancel_message(const void *message, size_t length) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1)
    return;
  pthread_mutex_lock(&arenas_lock);
  for (size_t i = 0; i < frame.refs; i++) {
    ff_arena_ref_t ref;
    ff_arena_frame_ref(message, i, &ref);
    for (size_t j = 0; j < arena_count; j++) ff_arena_cancel(arenas[j], &ref);
  }
  pthread_mutex_unlock(&arenas_lock);
}

int ff__arena_resend_message(const void *message, size_t length,
                             pid_t receiver) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1)
    return 1;
  int ok = 1;
  pthread_mutex_lock(&arenas_lock);
  for (size_t i = 0; i < frame.refs && ok; i++) {
    ff_arena_ref_t ref;
    ff_arena_frame_ref(message, i, &ref);
    bool restored = false;
    for (size_t j = 0; j < arena_count && !restored; j++) {
      pthread_mutex_lock(&arenas[j]->lock);
      arena_chunk_t *c = chunk_find(arenas[j], ref.chunk);
      arena_header_t *h = c ? (arena_header_t *)c->base : NULL;
      uint64_t expected = make_word(ref.generation, (uint32_t)receiver);
      /* Only bytes the dead receiver still held are sure to be intact. */
      restored = h != NULL && ref.slot < h->slots &&
                 atomic_compare_exchange_strong(
                     &h->slot[ref.slot].word, &expected,
                     make_word(ref.generation, STATE_SENT));
      pthread_mutex_unlock(&arenas[j]->lock);
    }
    ok = restored;
  }
  pthread_mutex_unlock(&arenas_lock);
  return ok;
}

void ff__arena_discard_message(const void *message, size_t length) {
  ff_arena_frame_t frame;
  if (message == NULL || ff_arena_frame(message, length, &frame) != 1)
    return;
  for (size_t i = 0; i < frame.refs; i++) {
    ff_arena_ref_t ref;
    ff_arena_frame_ref(message, i, &ref);
    ff_arena_discard(&ref);
  }
}

/* ---- the receiving side ------------------------------------------------- */

/* The chunks this process has mapped as a receiver, kept mapped while it
 * holds slots in them and afterwards too, so that the next message finds
 * them warm. A chunk whose owner is gone is unmapped once nothing here
 * holds it and nothing sent in it waits to be received. */
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

static bool chunk_pending(const arena_header_t *h) {
  if (h->magic != ARENA_MAGIC) return false;
  for (uint32_t i = 0; i < h->slots && i < ARENA_SLOTS; i++)
    if ((uint32_t)atomic_load(&((arena_header_t *)h)->slot[i].word) ==
        STATE_SENT)
      return true;
  return false;
}

static void views_sweep(void) {
  for (size_t i = 0; i < view_count;) {
    view_t *v = &views[i];
    const arena_header_t *h = (const arena_header_t *)v->base;
    if (v->refs == 0 &&
        ((v->gone && !chunk_pending(h)) || atomic_load(&h->retired))) {
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

/* The view of chunk id, mapped if needed, with one more reference. */
static int view_get(uint64_t id, view_t **out) {
  view_t *v = view_find(id);
  if (v == NULL) {
    view_t *grown = realloc(views, (view_count + 1) * sizeof(*views));
    if (grown == NULL) return -ENOMEM;
    views = grown;
    char *base;
    size_t size;
    int rc = map_segment(id, &base, &size);
    if (rc < 0) return rc;
    const arena_header_t *h = (const arena_header_t *)base;
    if (size < FF__ARENA_HEADER || h->magic != ARENA_MAGIC || h->id != id ||
        h->size != size || h->slots != ARENA_SLOTS) {
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

static int ref_check(const view_t *v, const ff_arena_ref_t *ref) {
  if (ref->slot >= ARENA_SLOTS || ref->offset < FF__ARENA_HEADER ||
      ref->offset > v->size || ref->length > v->size - ref->offset)
    return FF_EPROTOCOL;
  return 0;
}

int ff_arena_receive(const ff_arena_ref_t *ref, void **data) {
  pthread_mutex_lock(&views_lock);
  view_t *v;
  int rc = view_get(ref->chunk, &v);
  if (rc == 0) {
    rc = ref_check(v, ref);
    arena_slot_t *s = rc == 0 ? &((arena_header_t *)v->base)->slot[ref->slot]
                              : NULL;
    uint64_t expected = make_word(ref->generation, STATE_SENT);
    if (s != NULL &&
        (s->offset != ref->offset || s->length != ref->length ||
         !atomic_compare_exchange_strong(
             &s->word, &expected,
             make_word(ref->generation, (uint32_t)getpid()))))
      rc = -ESTALE; /* taken already, or freed by its sender */
    if (rc == 0)
      *data = v->base + ref->offset;
    else
      v->refs--;
  }
  views_sweep();
  pthread_mutex_unlock(&views_lock);
  return rc;
}

void ff_arena_release(const ff_arena_ref_t *ref) {
  pthread_mutex_lock(&views_lock);
  view_t *v = view_find(ref->chunk);
  if (v != NULL) {
    arena_slot_t *s = &((arena_header_t *)v->base)->slot[ref->slot];
    uint64_t expected = make_word(ref->generation, (uint32_t)getpid());
    atomic_compare_exchange_strong(&s->word, &expected,
                                   make_word(ref->generation, STATE_FREE));
    v->refs--;
  }
  views_sweep();
  pthread_mutex_unlock(&views_lock);
}

void ff_arena_discard(const ff_arena_ref_t *ref) {
  pthread_mutex_lock(&views_lock);
  view_t *v;
  if (view_get(ref->chunk, &v) == 0) {
    if (ref_check(v, ref) == 0)
      slot_cancel((arena_header_t *)v->base, ref);
    v->refs--;
  }
  views_sweep();
  pthread_mutex_unlock(&views_lock);
}

void ff__arena_adopt(uint64_t id, int fd) {
  /* A look at the header first: most segments dropped with their worker
   * (its shared arrays, its idle chunks) have nothing waiting. */
  static _Thread_local arena_header_t header;
  if (pread(fd, &header, sizeof(header), 0) != (ssize_t)sizeof(header) ||
      header.magic != ARENA_MAGIC || !chunk_pending(&header))
    return;
  pthread_mutex_lock(&views_lock);
  view_t *v = view_find(id);
  if (v == NULL) {
    /* Messages sent in it still wait to be read here: map it before its
     * last descriptor goes. */
    ff__shm_t shm;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    view_t *grown = realloc(views, (view_count + 1) * sizeof(*views));
    if (grown != NULL) views = grown;
    if (copy >= 0 && grown != NULL && ff__shm_attach(&shm, copy) == 0) {
      close(copy);
      if (shm.size >= FF__ARENA_HEADER) {
        v = &views[view_count++];
        *v = (view_t){id, shm.base, shm.size, 0, false};
      } else {
        munmap(shm.base, shm.size);
      }
    } else if (copy >= 0) {
      close(copy);
    }
  }
  if (v != NULL) v->gone = true;
  views_sweep();
  pthread_mutex_unlock(&views_lock);
}
