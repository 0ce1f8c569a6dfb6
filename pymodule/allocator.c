/* Arrays born in shared memory: the memory behind forkfarm's NEP 49
 * allocator (NumPy's side of it, the handler, is in arrays.c).
 *
 * In a worker, the data of a NumPy array of at least the threshold (1 MiB)
 * is a held region of the worker's result arena (lib/arena.c): pages of a
 * chunk the parent can map. A result that carries such an array lends the
 * region to the parent instead of copying it, so it travels with no copy at
 * all, whatever its size.
 *
 * The result still behaves as a copy. The region is lent only if the
 * worker let go of the array before the result left, which is the common
 * case: a task returns an array it made, and the worker drops the value
 * once it is encoded. ffpy_shared_settle runs after that drop; a region the
 * worker still holds (an array it keeps in a global, say) is copied then,
 * as a plain array's bytes would have been, and the message is changed to
 * name the copy. So no two processes ever write the same bytes.
 *
 * Before a fork every held region is frozen: mapped privately over its own
 * addresses (ff_arena_freeze), so that the child and the parent no longer
 * see each other's writes, as fork promises. A frozen region is never lent,
 * and never used again once let go. */
#include "core.h"

#include <pthread.h>
#include <string.h>

/* A held region: an array's data. */
typedef struct held_s {
  char *data;
  size_t length; /* asked for; the region is whole pages */
  ff_arena_t *arena;
  ff_arena_ref_t ref;
  int frozen;    /* for a fork (ff_arena_freeze) */
  int inherited; /* the parent's, from before this process was forked */
} held_t;

/* A region lent to the result being encoded. */
typedef struct lent_s {
  char *data; /* the held region's */
  ff_arena_t *arena;
  ff_arena_ref_t held;
  ff_arena_ref_t lent;
} lent_t;

/* Everything below is under this lock, since free() may come from any
 * thread. It is never held across a call into the arena, which may need
 * the segment table's lock, which a fork holds: the fork's own handlers
 * take this lock. */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static held_t *held; /* sorted by data */
static size_t held_count;
static size_t held_capacity;
static lent_t *lends;
static size_t lend_count;
static size_t lend_capacity;
/* Set while the worker encodes a result: only then are regions lent. */
static int lending;
static size_t threshold = (size_t)1 << 20;
static ffpy_shared_counts_t counts;
static pthread_once_t fork_hooks_once = PTHREAD_ONCE_INIT;

/* array with room for one more of size bytes (capacity grown), or NULL;
 * raw memory: free() may run without the GIL. */
static void *grow(void *array, size_t count, size_t *capacity, size_t size) {
  if (count < *capacity) return array;
  size_t more = *capacity * 2 + 8;
  void *grown = PyMem_RawRealloc(array, more * size);
  if (grown != NULL) *capacity = more;
  return grown;
}

/* The index of the first region whose data is not below p. */
static size_t held_search(const char *p) {
  size_t lo = 0, hi = held_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (held[mid].data < p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The region that starts at p, or NULL. */
static held_t *held_at(const void *p) {
  size_t i = held_search(p);
  return i < held_count && held[i].data == p ? &held[i] : NULL;
}

/* The region that contains [p, p + length), or NULL. */
static held_t *held_containing(const char *p, size_t length) {
  size_t i = held_search(p + 1);
  if (i == 0) return NULL;
  held_t *h = &held[i - 1];
  if (p < h->data || (size_t)(p - h->data) > h->ref.length ||
      length > h->ref.length - (size_t)(p - h->data))
    return NULL;
  return h;
}

static void held_remove(held_t *h) {
  size_t i = (size_t)(h - held);
  if (!h->inherited) {
    counts.held_bytes -= h->ref.length;
    counts.held_count--;
  }
  memmove(&held[i], &held[i + 1], (held_count - i - 1) * sizeof(*held));
  held_count--;
}

/* ---- fork ----------------------------------------------------------------
 * A fork freezes every held region, so that the child and the parent never
 * see each other's writes. forkfarm's own forks (a pool's zygote, a
 * Process) do it in their prepare hook, ffpy_shared_before_fork, before the
 * runtime takes the segment table's lock for the fork; any fork does it
 * again in the pthread_atfork handler, where only regions made since are
 * left to freeze. */

/* Under held_lock. */
static void freeze_all(void) {
  for (size_t i = 0; i < held_count; i++) {
    held_t *h = &held[i];
    if (h->frozen || h->inherited) continue;
    if (ff_arena_freeze(h->arena, &h->ref) == 0) {
      h->frozen = 1;
      counts.frozen++;
    }
  }
}

void ffpy_shared_before_fork(void) {
  pthread_mutex_lock(&held_lock);
  freeze_all();
  pthread_mutex_unlock(&held_lock);
}

/* Held through the fork, so that the child's table is whole. */
static void before_fork(void) {
  pthread_mutex_lock(&held_lock);
  freeze_all();
}

static void after_fork_in_parent(void) { pthread_mutex_unlock(&held_lock); }

/* The child's arrays are its parent's: frozen, never lent, and not its
 * own in the counts. */
static void after_fork_in_child(void) {
  for (size_t i = 0; i < held_count; i++) held[i].inherited = 1;
  counts = (ffpy_shared_counts_t){0};
  lend_count = 0;
  lending = 0;
  pthread_mutex_unlock(&held_lock);
}

static void fork_hooks_install(void) {
  pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

/* ---- the allocator ------------------------------------------------------- */

void *ffpy_shared_alloc(size_t size, int zeroed) {
  if (size < threshold || threshold == 0) return NULL;
  /* A worker's arrays may become its results; a parent's (opted in) go to
   * its tasks, through the arena it sends with. */
  ff_arena_t *arena =
      ffpy_in_worker() ? ffpy_result_arena() : ffpy_sending_arena();
  if (arena == NULL) return NULL;
  pthread_once(&fork_hooks_once, fork_hooks_install);
  ff_arena_ref_t ref;
  void *data = NULL;
  int fresh = 0;
  if (ff_arena_hold(arena, size, &ref, &data, &fresh) < 0) return NULL;
  /* New bytes of a segment are zeros already; reused ones are not. */
  if (zeroed && !fresh) memset(data, 0, size);
  pthread_mutex_lock(&held_lock);
  held_t *grown = grow(held, held_count, &held_capacity, sizeof(*held));
  if (grown != NULL) {
    held = grown;
    size_t i = held_search(data);
    memmove(&held[i + 1], &held[i], (held_count - i) * sizeof(*held));
    held[i] = (held_t){data, size, arena, ref, 0, 0};
    held_count++;
    counts.held_bytes += ref.length;
    counts.held_count++;
    counts.allocations++;
  }
  pthread_mutex_unlock(&held_lock);
  if (grown == NULL) {
    ff_arena_unhold(arena, &ref);
    return NULL;
  }
  return data;
}

int ffpy_shared_free(void *p) {
  if (p == NULL) return 0;
  pthread_mutex_lock(&held_lock);
  held_t *h = held_count > 0 ? held_at(p) : NULL;
  held_t gone = h != NULL ? *h : (held_t){0};
  if (h != NULL) held_remove(h);
  pthread_mutex_unlock(&held_lock);
  /* An inherited region is the parent's: its arena here is a copy, whose
   * lock may have been held by a thread the fork left behind. */
  if (h != NULL && !gone.inherited) ff_arena_unhold(gone.arena, &gone.ref);
  return h != NULL;
}

size_t ffpy_shared_length(const void *p) {
  if (p == NULL) return 0;
  pthread_mutex_lock(&held_lock);
  held_t *h = held_count > 0 ? held_at(p) : NULL;
  size_t length = h != NULL ? h->length : 0;
  pthread_mutex_unlock(&held_lock);
  return length;
}

int ffpy_shared_resize(void *p, size_t size) {
  pthread_mutex_lock(&held_lock);
  held_t *h = held_count > 0 ? held_at(p) : NULL;
  int fits = h != NULL && size <= h->ref.length;
  if (fits) h->length = size;
  pthread_mutex_unlock(&held_lock);
  return fits;
}

/* ---- lending results ------------------------------------------------------ */

void ffpy_shared_begin_result(void) {
  pthread_mutex_lock(&held_lock);
  lending = 1;
  pthread_mutex_unlock(&held_lock);
}

int ffpy_shared_lend(const void *buffer, size_t length, ff_arena_t *arena,
                     ff_arena_ref_t *lent) {
  /* A worker lends only to the result being encoded, which it settles; a
   * parent lends to any message (the arena freezes what it keeps). */
  int worker = ffpy_in_worker();
  pthread_mutex_lock(&held_lock);
  held_t *h = (lending || !worker) && held_count > 0
                  ? held_containing(buffer, length)
                  : NULL;
  held_t found = h != NULL ? *h : (held_t){0};
  pthread_mutex_unlock(&held_lock);
  if (h == NULL || found.arena != arena || found.inherited) return 0;
  size_t offset = (size_t)((const char *)buffer - found.data);
  if (ff_arena_lend(arena, &found.ref, offset, length, lent) < 0) return 0;
  pthread_mutex_lock(&held_lock);
  int done = 1;
  if (worker) {
    lent_t *grown = grow(lends, lend_count, &lend_capacity, sizeof(*lends));
    if (grown != NULL) {
      lends = grown;
      lends[lend_count++] = (lent_t){found.data, arena, found.ref, *lent};
    } else {
      done = 0; /* unsettled, it must not go */
    }
  } else {
    counts.lent++;
    counts.lent_bytes += length;
  }
  pthread_mutex_unlock(&held_lock);
  if (!done) ff_arena_cancel(arena, lent);
  return done;
}

static int same_ref(const ff_arena_ref_t *a, const ff_arena_ref_t *b) {
  return a->chunk == b->chunk && a->slot == b->slot &&
         a->generation == b->generation && a->offset == b->offset &&
         a->length == b->length;
}

/* The place of ref among the frame's references in message, or -1. */
static long frame_index(const char *message, size_t length,
                        const ff_arena_ref_t *ref) {
  ff_arena_frame_t frame;
  if (ff_arena_frame(message, length, &frame) != 1) return -1;
  for (size_t i = 0; i < frame.refs; i++) {
    ff_arena_ref_t r;
    ff_arena_frame_ref(message, i, &r);
    if (same_ref(&r, ref)) return (long)i;
  }
  return -1;
}

/* The worker still holds the region lent as l: the message gets a copy of
 * its bytes instead. 0, or a negative errno. */
static int lend_replace_by_copy(const lent_t *l, char *message, long index) {
  ff_arena_ref_t copy;
  void *data;
  int rc = ff_arena_alloc(l->arena, l->lent.length, &copy, &data);
  if (rc < 0) return rc;
  memcpy(data, l->data + (l->lent.offset - l->held.offset), l->lent.length);
  memcpy(message + FF_ARENA_FRAME_HEADER + (size_t)index * sizeof(copy),
         &copy, sizeof(copy));
  ff_arena_cancel(l->arena, &l->lent);
  return 0;
}

/* What settling does with one lent region. */
enum { SETTLE_LENT, SETTLE_COPY, SETTLE_CANCEL };

int ffpy_shared_settle(ff_buf_t *out) {
  /* The lends are this thread's (the worker's, encoding its result); what
   * is still held is read under the lock, the arena called without it. */
  pthread_mutex_lock(&held_lock);
  size_t count = lend_count;
  lent_t *taken = count > 0 ? PyMem_RawMalloc(count * sizeof(*taken)) : NULL;
  int *what = count > 0 ? PyMem_RawMalloc(count * sizeof(*what)) : NULL;
  int rc = count > 0 && (taken == NULL || what == NULL) ? -ENOMEM : 0;
  for (size_t i = 0; rc == 0 && i < count; i++) {
    taken[i] = lends[i];
    held_t *h = held_count > 0 ? held_at(lends[i].data) : NULL;
    what[i] = h != NULL && same_ref(&h->ref, &lends[i].held) ? SETTLE_COPY
                                                             : SETTLE_LENT;
  }
  lend_count = 0;
  lending = 0;
  pthread_mutex_unlock(&held_lock);
  size_t lent = 0, lent_bytes = 0, copies = 0;
  for (size_t i = 0; rc == 0 && i < count; i++) {
    const lent_t *l = &taken[i];
    long index = out->base != NULL ? frame_index(out->base, out->len, &l->lent)
                                   : -1;
    if (index < 0) {
      /* Not in the message that leaves (an encoding that failed). */
      ff_arena_cancel(l->arena, &l->lent);
    } else if (what[i] == SETTLE_COPY) {
      rc = lend_replace_by_copy(l, out->base, index);
      copies += rc == 0;
    } else {
      lent++;
      lent_bytes += l->lent.length;
    }
  }
  if (rc < 0 && count > 0) {
    /* out will carry an error instead: none of its references is sent. */
    ff_arena_frame_t frame;
    if (out->base != NULL && ff_arena_frame(out->base, out->len, &frame) == 1)
      for (size_t i = 0; i < frame.refs; i++) {
        ff_arena_ref_t r;
        ff_arena_frame_ref(out->base, i, &r);
        ff_arena_cancel(ffpy_result_arena(), &r);
      }
  }
  PyMem_RawFree(taken);
  PyMem_RawFree(what);
  pthread_mutex_lock(&held_lock);
  counts.lent += lent;
  counts.lent_bytes += lent_bytes;
  counts.copies += copies;
  pthread_mutex_unlock(&held_lock);
  return rc;
}

/* ---- settings and counts ---------------------------------------------------- */

void ffpy_shared_set_threshold(size_t bytes) {
  pthread_mutex_lock(&held_lock);
  threshold = bytes;
  pthread_mutex_unlock(&held_lock);
}

size_t ffpy_shared_threshold(void) {
  pthread_mutex_lock(&held_lock);
  size_t value = threshold;
  pthread_mutex_unlock(&held_lock);
  return value;
}

ffpy_shared_counts_t ffpy_shared_counts(void) {
  pthread_mutex_lock(&held_lock);
  ffpy_shared_counts_t value = counts;
  pthread_mutex_unlock(&held_lock);
  return value;
}

/* ---- the bindings ------------------------------------------------------------ */

PyObject *ffpy_core_shared_counts(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  ffpy_shared_counts_t c = ffpy_shared_counts();
  return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}",
                       "received_bytes", (Py_ssize_t)ff_arena_received_bytes(),
                       "held_bytes",
                       (Py_ssize_t)c.held_bytes, "held", (Py_ssize_t)c.held_count,
                       "allocations", (Py_ssize_t)c.allocations, "lent",
                       (Py_ssize_t)c.lent, "lent_bytes",
                       (Py_ssize_t)c.lent_bytes, "copies",
                       (Py_ssize_t)c.copies, "frozen", (Py_ssize_t)c.frozen,
                       "threshold", (Py_ssize_t)ffpy_shared_threshold());
}

PyObject *ffpy_core_set_shared_threshold(PyObject *module, PyObject *arg) {
  (void)module;
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n < 0) {
    PyErr_SetString(PyExc_ValueError,
                    "the shared allocation threshold must be 0 (off) or a "
                    "number of bytes");
    return NULL;
  }
  ffpy_shared_set_threshold((size_t)n);
  Py_RETURN_NONE;
}
