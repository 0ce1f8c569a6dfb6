/* The receiving side of the arena (the sending side is arena.c): the
 * views a receiver keeps of the chunks it was sent references into, and
 * the reports by which it gives each reference back.
 *
 * A receiver never writes a chunk's slots: it maps the chunk, checks the
 * header (copied first: the sender may be hostile) and each reference
 * against its own mapping, and reports what it lets go, to its parent on
 * its result ring (FF_ARENA_FROM_PARENT) or, in a parent, to the worker
 * that made the chunk, on that worker's task ring. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef ff__arena_header_t arena_header_t;

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
  /* The same chunk mapped privately, for the references others may hold
   * too (FF_ARENA_REF_PRIVATE), made on the first: what this process
   * writes there stays its own. */
  char *private_base;
} view_t;

static pthread_mutex_t views_lock = PTHREAD_MUTEX_INITIALIZER;
static view_t *views;
static size_t view_count;

/* A private reference held here. Those in a view's private mapping never
 * share a page, so that each can drop the copies it wrote when it goes; one
 * that would gets a mapping of its own. */
typedef struct receipt_s {
  uint64_t chunk;
  uint64_t offset, length; /* whole pages */
  uint32_t generation;
  uint16_t slot;
  char *own;       /* its own mapping, or NULL: the view's private one */
  size_t own_size;
  /* This process's page faults when it was received: if none happened
   * since, it wrote none of its pages (ff__page_faults), so its release
   * has nothing to drop and scans nothing. */
  long faults;
} receipt_t;
static receipt_t *receipts;
static size_t receipt_count;
static size_t receipt_capacity;
/* The bytes of the references received and not yet released. */
static size_t received_bytes;

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
      if (v->private_base != NULL) munmap(v->private_base, v->size);
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
    if (size < FF__ARENA_HEADER || h.magic != FF__ARENA_MAGIC || h.id != id ||
        h.size != size || h.slots != FF__ARENA_SLOTS) {
      munmap(base, size);
      return FF_EPROTOCOL;
    }
    v = &views[view_count++];
    *v = (view_t){id, base, size, 0, false, NULL};
  }
  v->refs++;
  *out = v;
  return 0;
}

/* A reference checked against what this process mapped. */
static int ref_check(const view_t *v, const ff_arena_ref_t *ref) {
  if (ref->slot >= FF__ARENA_SLOTS || ref->offset < FF__ARENA_HEADER ||
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

void ff__arena_drop_reports_for(uint64_t owner) {
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

/* ---- private references ---------------------------------------------------- */

static size_t page_size(void) {
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? (size_t)page : 4096;
}

/* Maps length bytes of chunk id from offset (a page multiple) privately. */
static int map_private(uint64_t id, uint64_t offset, size_t length,
                       char **base) {
  int fd;
  int rc = ff_segment_open(id, &fd);
  if (rc < 0) return rc;
  void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
                 (off_t)offset);
  rc = p == MAP_FAILED ? -errno : 0;
  close(fd);
  if (rc == 0) *base = p;
  return rc;
}

static receipt_t *receipt_find(const ff_arena_ref_t *ref) {
  for (size_t i = 0; i < receipt_count; i++)
    if (receipts[i].chunk == ref->chunk && receipts[i].slot == ref->slot &&
        receipts[i].generation == ref->generation)
      return &receipts[i];
  return NULL;
}

/* Whether a held private reference of chunk id shares a page with
 * [offset, offset + length). */
static bool receipt_overlaps(uint64_t id, uint64_t offset, uint64_t length) {
  for (size_t i = 0; i < receipt_count; i++) {
    const receipt_t *r = &receipts[i];
    if (r->chunk == id && r->own == NULL && r->offset < offset + length &&
        offset < r->offset + r->length)
      return true;
  }
  return false;
}

/* Points *data at the bytes of a private ref in view v (under views_lock). */
static int receive_private(view_t *v, const ff_arena_ref_t *ref,
                           void **data) {
  receipt_t *grown =
      ff__grow(receipts, receipt_count, &receipt_capacity, sizeof(*receipts));
  if (grown == NULL) return -ENOMEM;
  receipts = grown;
  size_t page = page_size();
  uint64_t first = ref->offset / page * page;
  uint64_t end = (ref->offset + ref->length + page - 1) / page * page;
  if (end > v->size) end = v->size;
  receipt_t r = {ref->chunk, first, end - first, ref->generation, ref->slot,
                 NULL, 0, ff__page_faults()};
  int rc = 0;
  if (receipt_overlaps(ref->chunk, first, end - first)) {
    /* Another message here has these pages (the same array twice): each
     * must see only its own writes. */
    rc = map_private(ref->chunk, first, end - first, &r.own);
    if (rc == 0) {
      r.own_size = end - first;
      *data = r.own + (ref->offset - first);
    }
  } else {
    if (v->private_base == NULL) rc = map_private(ref->chunk, 0, v->size, &v->private_base);
    if (rc == 0) *data = v->private_base + ref->offset;
  }
  if (rc == 0) receipts[receipt_count++] = r;
  return rc;
}

static void drop_copies(char *start, size_t length, void *arg) {
  (void)arg;
  madvise(start, length, MADV_DONTNEED);
}

/* A private ref goes (under views_lock): the pages this process wrote are
 * dropped, so that its view shows the chunk's bytes again, whoever uses
 * them next; the others stay mapped, warm. */
static void release_private(view_t *v, const ff_arena_ref_t *ref) {
  receipt_t *r = receipt_find(ref);
  if (r == NULL) return;
  if (r->own != NULL) {
    munmap(r->own, r->own_size);
  } else if (v != NULL && v->private_base != NULL &&
             (r->faults < 0 || ff__page_faults() != r->faults)) {
    char *start = v->private_base + r->offset;
    if (ff__private_pages(start, r->length, drop_copies, NULL) < 0)
      madvise(start, r->length, MADV_DONTNEED);
  }
  *r = receipts[--receipt_count];
}

int ff_arena_receive(const ff_arena_ref_t *ref, unsigned how, void **data) {
  (void)how;
  pthread_mutex_lock(&views_lock);
  view_t *v;
  int rc = view_get(ref->chunk, &v);
  if (rc == 0) {
    rc = ref_check(v, ref);
    if (rc == 0 && (ref->flags & FF_ARENA_REF_PRIVATE))
      rc = receive_private(v, ref, data);
    else if (rc == 0)
      *data = v->base + ref->offset;
    if (rc < 0)
      v->refs--;
    else
      received_bytes += ref->length;
  }
  views_sweep();
  pthread_mutex_unlock(&views_lock);
  return rc;
}

void ff_arena_release(const ff_arena_ref_t *ref, unsigned how) {
  pthread_mutex_lock(&views_lock);
  view_t *v = view_find(ref->chunk);
  if (v != NULL) {
    if (ref->flags & FF_ARENA_REF_PRIVATE) release_private(v, ref);
    report(ref, how);
    v->refs--;
    received_bytes -= ref->length < received_bytes ? ref->length
                                                   : received_bytes;
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

size_t ff_arena_received_bytes(void) {
  pthread_mutex_lock(&views_lock);
  size_t bytes = received_bytes;
  pthread_mutex_unlock(&views_lock);
  return bytes;
}
