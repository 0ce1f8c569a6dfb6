/* Single-producer single-consumer message rings in shared memory.
 *
 * The producer owns tail and the consumer owns head, each on its own cache
 * line; both are byte positions that only grow, so full and empty are told
 * apart without a spare slot. The consumer reads records in place and gives
 * their space back by moving head, so a consumer killed mid-read leaves head
 * on a record boundary: the ring is never corrupt, only stalled, until its
 * supervisor marks it broken.
 *
 * Wake-ups follow the Dekker pattern: a side that is about to sleep sets its
 * futex word, then looks at the ring once more; the other side publishes,
 * then looks at the word. A full fence on both sides makes sure that one of
 * them sees the other, so no wake-up is lost and none is paid for while the
 * other side is awake. */
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RING_MAGIC 0x474e5246u /* "FRNG" */

struct ff__ring_shared_s {
  /* Written by the producer. */
  _Atomic uint64_t tail;
  _Atomic uint32_t producer_sleeps;
  char producer_pad[64 - sizeof(uint64_t) - sizeof(uint32_t)];
  /* Written by the consumer. */
  _Atomic uint64_t head;
  _Atomic uint32_t consumer_sleeps;
  char consumer_pad[64 - sizeof(uint64_t) - sizeof(uint32_t)];
  /* Written once, or by whoever breaks the ring. */
  uint32_t magic;
  _Atomic uint32_t broken;
  uint64_t capacity;
};

_Static_assert(sizeof(struct ff__ring_shared_s) <= FF__RING_HEADER_SIZE,
               "the ring header must fit its reserved space");

typedef struct record_header_s {
  uint32_t length;
  uint16_t type;
  uint16_t flags;
  uint64_t id;
} record_header_t;

_Static_assert(sizeof(record_header_t) == FF__RING_RECORD_HEADER,
               "a record header is 16 bytes");

static uint64_t align_up(uint64_t n) {
  return (n + FF__RING_ALIGN - 1) & ~(uint64_t)(FF__RING_ALIGN - 1);
}

static uint64_t record_size(uint64_t payload) {
  return FF__RING_RECORD_HEADER + align_up(payload);
}

size_t ff__ring_size(size_t capacity) {
  return FF__RING_HEADER_SIZE + capacity;
}

int ff__ring_attach(ff__ring_t *ring, void *memory, size_t capacity,
                    int init) {
  if (memory == NULL || capacity < 4096 || (capacity & (capacity - 1)) != 0 ||
      capacity > ((size_t)1 << 40))
    return -EINVAL;
  ff__ring_shared_t *s = memory;
  if (init) {
    memset(s, 0, FF__RING_HEADER_SIZE);
    atomic_init(&s->tail, 0);
    atomic_init(&s->head, 0);
    atomic_init(&s->producer_sleeps, 0);
    atomic_init(&s->consumer_sleeps, 0);
    atomic_init(&s->broken, 0);
    s->capacity = capacity;
    s->magic = RING_MAGIC;
  } else if (s->magic != RING_MAGIC || s->capacity != capacity) {
    return FF_EPROTOCOL;
  }
  ring->shared = s;
  ring->data = (char *)memory + FF__RING_HEADER_SIZE;
  ring->capacity = capacity;
  /* A quarter of the ring per record leaves room for a PAD record in front
   * of it and for the consumer to read while the producer writes. */
  ring->max_record = capacity / 4 - FF__RING_RECORD_HEADER;
  ring->consumer_fd = -1;
  ring->producer_fd = -1;
  /* A side that attaches to a ring in use takes the positions it finds:
   * after this, it only ever writes its own. */
  ring->tail = atomic_load_explicit(&s->tail, memory_order_acquire);
  ring->head = atomic_load_explicit(&s->head, memory_order_acquire);
  return 0;
}

/* ---- the producer ------------------------------------------------------ */

/* Copies bytes [offset, offset + length) of the concatenation of the two
 * parts to out. */
static void copy_parts(char *out, const void *prefix, size_t prefix_length,
                       const void *data, size_t offset, size_t length) {
  if (offset < prefix_length) {
    size_t n = prefix_length - offset < length ? prefix_length - offset
                                               : length;
    memcpy(out, (const char *)prefix + offset, n);
    out += n;
    offset += n;
    length -= n;
  }
  if (length) memcpy(out, (const char *)data + (offset - prefix_length), length);
}

int ff__ring_write2(ff__ring_t *ring, uint16_t type, uint16_t flags,
                    uint64_t id, const void *prefix, size_t prefix_length,
                    const void *data, size_t data_length, size_t *offset) {
  ff__ring_shared_t *s = ring->shared;
  if (atomic_load_explicit(&s->broken, memory_order_acquire)) return -EPIPE;
  size_t length = prefix_length + data_length;
  uint64_t cap = ring->capacity;
  uint64_t tail = ring->tail;
  /* This side's own state: a power-of-two ring, a message resumed where
   * the last call left it. */
  assert(cap >= 4096 && (cap & (cap - 1)) == 0);
  assert(*offset <= length);
  uint64_t head = atomic_load_explicit(&s->head, memory_order_acquire);
  /* The consumer's position comes from the other process: one that is
   * ahead of what was written, or further behind than the ring holds,
   * was not written by a working consumer. */
  if (head > tail || tail - head > cap) return FF_EPROTOCOL;
  bool complete = false;
  while (!complete) {
    size_t chunk = length - *offset;
    if (chunk > ring->max_record) chunk = ring->max_record;
    uint64_t need = record_size(chunk);
    uint64_t index = tail & (cap - 1);
    uint64_t pad = cap - index < need ? cap - index : 0;
    if (tail + pad + need - head > cap) {
      head = atomic_load_explicit(&s->head, memory_order_acquire);
      if (head > tail || tail - head > cap) return FF_EPROTOCOL;
      if (tail + pad + need - head > cap) break;
    }
    if (pad) {
      record_header_t filler = {(uint32_t)(pad - FF__RING_RECORD_HEADER),
                                FF__RING_PAD, 0, 0};
      memcpy(ring->data + index, &filler, sizeof(filler));
      tail += pad;
      index = 0;
    }
    /* A record never wraps. */
    assert(index + need <= cap);
    bool more = *offset + chunk < length;
    record_header_t h = {(uint32_t)chunk, type,
                         (uint16_t)(flags | (more ? FF__RING_MORE : 0)), id};
    memcpy(ring->data + index, &h, sizeof(h));
    copy_parts(ring->data + index + FF__RING_RECORD_HEADER, prefix,
               prefix_length, data, *offset, chunk);
    tail += need;
    *offset += chunk;
    complete = !more;
  }
  ring->tail = tail;
  atomic_store_explicit(&s->tail, tail, memory_order_release);
  return complete ? 1 : 0;
}

int ff__ring_write(ff__ring_t *ring, uint16_t type, uint16_t flags,
                   uint64_t id, const void *data, size_t length,
                   size_t *offset) {
  return ff__ring_write2(ring, type, flags, id, NULL, 0, data, length,
                         offset);
}

static void ring_signal(_Atomic uint32_t *word, int fd) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(word, memory_order_relaxed) == 0) return;
  if (atomic_exchange(word, 0) == 0) return;
  if (fd >= 0) {
    uint64_t one = 1;
    /* A full eventfd counter already means "wake up": nothing is lost. */
    ssize_t n = write(fd, &one, sizeof(one));
    (void)n;
  } else {
    ff__futex_wake_shared(word);
  }
}

void ff__ring_wake_consumer(ff__ring_t *ring) {
  ring_signal(&ring->shared->consumer_sleeps, ring->consumer_fd);
}

void ff__ring_wake_producer(ff__ring_t *ring) {
  ring_signal(&ring->shared->producer_sleeps, ring->producer_fd);
}

/* ---- the consumer ------------------------------------------------------ */

static int reader_append(ff__ring_reader_t *reader, const char *data,
                         size_t length) {
  if (length == 0) return 0; /* an empty fragment: nothing to keep */
  if (reader->length + length > reader->capacity) {
    size_t capacity = reader->capacity ? reader->capacity : 65536;
    while (capacity < reader->length + length) capacity *= 2;
    /* Past the limit, grow only to the limit: the buffer of a message
     * that may not grow further is never larger than one. */
    if (reader->limit && capacity > reader->limit &&
        reader->length + length <= reader->limit)
      capacity = reader->limit;
    char *grown = realloc(reader->buffer, capacity);
    if (grown == NULL) return -ENOMEM;
    reader->buffer = grown;
    reader->capacity = capacity;
  }
  memcpy(reader->buffer + reader->length, data, length);
  reader->length += length;
  return 0;
}

/* Gives the space up to head back to the producer. */
static void consumer_advance(ff__ring_t *ring, uint64_t head) {
  /* The consumer's position only moves forward. */
  assert(head >= ring->head);
  ring->head = head;
  atomic_store_explicit(&ring->shared->head, head, memory_order_release);
}

int ff__ring_read(ff__ring_t *ring, ff__ring_reader_t *reader,
                  ff__ring_msg_t *msg, size_t *budget) {
  ff__ring_shared_t *s = ring->shared;
  uint64_t cap = ring->capacity;
  uint64_t head = ring->head;
  for (;;) {
    uint64_t tail = atomic_load_explicit(&s->tail, memory_order_acquire);
    if (tail == head) return 0;
    uint64_t available = tail - head;
    /* tail comes from the other process: one that went backwards, or ran
     * further ahead than the ring holds, or stopped off a record's
     * boundary, was not written by a working producer. */
    if (tail < head || available > cap || available % FF__RING_ALIGN != 0)
      return FF_EPROTOCOL;
    uint64_t index = head & (cap - 1);
    /* One copy of the header: the other side may scribble on shared
     * memory, and a length checked must be the length used. */
    record_header_t h;
    memcpy(&h, ring->data + index, sizeof(h));
    uint64_t size = record_size(h.length);
    if (h.type > FF__RING_TYPE_MAX || size > available || index + size > cap)
      return FF_EPROTOCOL;
    if (h.type == FF__RING_PAD) {
      if (index + size != cap) return FF_EPROTOCOL;
      head += size;
      consumer_advance(ring, head);
      continue;
    }
    if (h.length > ring->max_record) return FF_EPROTOCOL;
    const char *payload = ring->data + index + FF__RING_RECORD_HEADER;
    uint16_t flags = h.flags & (uint16_t)~FF__RING_MORE;
    if (!(h.flags & FF__RING_MORE) && !reader->joining) {
      if (reader->limit && h.length > reader->limit) {
        msg->id = h.id;
        msg->length = h.length;
        return FF_EMSGSIZE;
      }
      msg->type = h.type;
      msg->flags = flags;
      msg->id = h.id;
      msg->data = payload;
      msg->length = h.length;
      msg->end = head + size;
      return 1;
    }
    /* A fragment: copy it out and give its space back at once, so that a
     * producer waiting to write the next one can go on. */
    if (reader->joining && (h.type != reader->type || h.id != reader->id))
      return FF_EPROTOCOL;
    if (budget != NULL && *budget < h.length) return FF__RING_FRAGMENT;
    size_t joined = reader->joining ? reader->length : 0;
    if (reader->limit && joined + h.length > reader->limit) {
      msg->id = h.id;
      msg->length = joined + h.length;
      return FF_EMSGSIZE;
    }
    if (!reader->joining) {
      reader->joining = true;
      reader->type = h.type;
      reader->id = h.id;
      reader->length = 0;
    }
    if (reader_append(reader, payload, h.length) < 0) return -ENOMEM;
    if (budget != NULL) *budget -= h.length;
    head += size;
    consumer_advance(ring, head);
    ff__ring_wake_producer(ring);
    if (!(h.flags & FF__RING_MORE)) {
      reader->joining = false;
      msg->type = h.type;
      msg->flags = flags;
      msg->id = h.id;
      msg->data = reader->buffer ? reader->buffer : "";
      msg->length = reader->length;
      msg->end = head;
      return 1;
    }
  }
}

void ff__ring_release(ff__ring_t *ring, const ff__ring_msg_t *msg) {
  if (ring->head < msg->end) consumer_advance(ring, msg->end);
}

char *ff__ring_reader_take(ff__ring_reader_t *reader,
                           const ff__ring_msg_t *msg) {
  if (reader->buffer == NULL || msg->data != reader->buffer) return NULL;
  char *buffer = reader->buffer;
  reader->buffer = NULL;
  reader->capacity = 0;
  reader->length = 0;
  return buffer;
}

void ff__ring_reader_free(ff__ring_reader_t *reader) {
  size_t limit = reader->limit;
  free(reader->buffer);
  memset(reader, 0, sizeof(*reader));
  reader->limit = limit;
}

void ff__ring_reader_trim(ff__ring_reader_t *reader, size_t keep) {
  if (reader->joining || reader->capacity <= keep) return;
  free(reader->buffer);
  reader->buffer = NULL;
  reader->capacity = 0;
  reader->length = 0;
}

/* ---- waiting ------------------------------------------------------------- */

int ff__ring_readable(const ff__ring_t *ring) {
  ff__ring_shared_t *s = ring->shared;
  return atomic_load_explicit(&s->tail, memory_order_acquire) != ring->head;
}

static uint64_t ring_free(const ff__ring_t *ring) {
  ff__ring_shared_t *s = ring->shared;
  uint64_t head = atomic_load_explicit(&s->head, memory_order_acquire);
  /* An impossible head counts as room: the write that follows finds it
   * impossible and says so. */
  if (head > ring->tail || ring->tail - head > ring->capacity)
    return ring->capacity;
  return ring->capacity - (ring->tail - head);
}

/* Room that certainly takes the next record of a message with length bytes
 * left, whatever PAD it needs first. */
static uint64_t room_for(const ff__ring_t *ring, size_t length) {
  size_t chunk = length < ring->max_record ? length : ring->max_record;
  return 2 * record_size(chunk);
}

int ff__ring_broken(const ff__ring_t *ring) {
  return atomic_load_explicit(&ring->shared->broken, memory_order_acquire)
             ? 1
             : 0;
}

typedef int (*ring_ready_fn)(const ff__ring_t *ring, size_t bytes);

static int ready_to_read(const ff__ring_t *ring, size_t bytes) {
  (void)bytes;
  return ff__ring_readable(ring);
}

static int ready_to_write(const ff__ring_t *ring, size_t bytes) {
  return ring_free(ring) >= room_for(ring, bytes);
}

static int ring_wait(ff__ring_t *ring, _Atomic uint32_t *word,
                     ring_ready_fn ready, size_t bytes, uint64_t spin_ns,
                     uint64_t deadline_ns) {
  if (ready(ring, bytes)) return 0;
  if (spin_ns) {
    uint64_t until = ff__now_ns() + spin_ns;
    if (until > deadline_ns) until = deadline_ns;
    for (unsigned i = 1;; i++) {
      if (ready(ring, bytes)) return 0;
      if (ff__ring_broken(ring)) return -EPIPE;
      ff__spin_pause(i);
      if (i % 16 == 0 && ff__now_ns() >= until) break;
    }
  }
  for (;;) {
    atomic_store(word, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (ready(ring, bytes)) {
      atomic_store(word, 0);
      return 0;
    }
    if (ff__ring_broken(ring)) return -EPIPE;
    int rc = ff__futex_wait_shared(word, 1, deadline_ns);
    if (rc == -ETIMEDOUT || rc == -EINTR) {
      atomic_store(word, 0);
      return ready(ring, bytes) ? 0 : rc;
    }
  }
}

int ff__ring_wait_readable(ff__ring_t *ring, uint64_t spin_ns,
                           uint64_t deadline_ns) {
  return ring_wait(ring, &ring->shared->consumer_sleeps, ready_to_read, 0,
                   spin_ns, deadline_ns);
}

int ff__ring_wait_writable(ff__ring_t *ring, size_t bytes, uint64_t spin_ns,
                           uint64_t deadline_ns) {
  return ring_wait(ring, &ring->shared->producer_sleeps, ready_to_write,
                   bytes, spin_ns, deadline_ns);
}

int ff__ring_arm_consumer(ff__ring_t *ring) {
  atomic_store(&ring->shared->consumer_sleeps, 1);
  atomic_thread_fence(memory_order_seq_cst);
  return ff__ring_readable(ring);
}

void ff__ring_disarm_consumer(ff__ring_t *ring) {
  atomic_store_explicit(&ring->shared->consumer_sleeps, 0,
                        memory_order_relaxed);
}

int ff__ring_arm_producer(ff__ring_t *ring, size_t bytes) {
  atomic_store(&ring->shared->producer_sleeps, 1);
  atomic_thread_fence(memory_order_seq_cst);
  return ready_to_write(ring, bytes);
}

/* ---- failure ------------------------------------------------------------- */

void ff__ring_break(ff__ring_t *ring) {
  ff__ring_shared_t *s = ring->shared;
  atomic_store(&s->broken, 1);
  atomic_store(&s->consumer_sleeps, 0);
  atomic_store(&s->producer_sleeps, 0);
  ff__futex_wake_shared(&s->consumer_sleeps);
  ff__futex_wake_shared(&s->producer_sleeps);
}

int ff__ring_check(const ff__ring_t *ring) {
  const ff__ring_shared_t *s = ring->shared;
  uint64_t cap = ring->capacity;
  if (s->magic != RING_MAGIC || s->capacity != cap) return FF_EPROTOCOL;
  uint64_t head = atomic_load(&((ff__ring_shared_t *)s)->head);
  uint64_t tail = atomic_load(&((ff__ring_shared_t *)s)->tail);
  if (head > tail || tail - head > cap || head % FF__RING_ALIGN ||
      tail % FF__RING_ALIGN)
    return FF_EPROTOCOL;
  bool joining = false;
  record_header_t first = {0, 0, 0, 0};
  for (uint64_t pos = head; pos < tail;) {
    uint64_t index = pos & (cap - 1);
    record_header_t h;
    memcpy(&h, ring->data + index, sizeof(h));
    uint64_t size = record_size(h.length);
    if (h.type > FF__RING_TYPE_MAX || index + size > cap || pos + size > tail)
      return FF_EPROTOCOL;
    if (h.type == FF__RING_PAD) {
      if (index + size != cap) return FF_EPROTOCOL;
    } else {
      if (h.length > ring->max_record) return FF_EPROTOCOL;
      if (joining && (h.type != first.type || h.id != first.id))
        return FF_EPROTOCOL;
      if (!joining) first = h;
      joining = (h.flags & FF__RING_MORE) != 0;
    }
    pos += size;
  }
  return 0;
}
