/* Segments with a header: the layout a Python shared array (or any typed
 * data another process maps by id) lives in. The first FF_SEGMENT_HEADER
 * bytes hold a magic, the segment's id, its size (the bytes after the
 * header) and a flag its creator sets when it lets go; the bytes follow.
 *
 * A header is read from memory another process can write: opening checks
 * a copy of it against the id asked for and the size of the file (which
 * is sealed, so it cannot change), and keeps what it checked. */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SEGMENT_MAGIC UINT64_C(0x314d474553464646) /* "FFFSEGM1" */

typedef struct segment_header_s {
  uint64_t magic;
  uint64_t id;
  uint64_t size;
  _Atomic uint32_t released; /* the creator let go: caches drop it */
} segment_header_t;

_Static_assert(sizeof(segment_header_t) <= FF_SEGMENT_HEADER,
               "the header fits its page");

static size_t clamp(size_t mapped, size_t size) {
  return mapped > size ? size : mapped;
}

static int map_fd(int fd, size_t length, void **base) {
  void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return -errno;
  *base = p;
  return 0;
}

int ff_segment_create_mapped(size_t size, unsigned flags, size_t mapped,
                             uint64_t *id, void **base) {
  if (size > SIZE_MAX - FF_SEGMENT_HEADER) return -EINVAL;
  int fd;
  int rc = ff_segment_create(FF_SEGMENT_HEADER + size, flags, id, &fd);
  if (rc < 0) return rc;
  rc = map_fd(fd, FF_SEGMENT_HEADER + clamp(mapped, size), base);
  close(fd);
  if (rc < 0) {
    ff_segment_forget(*id);
    return rc;
  }
  segment_header_t *h = *base;
  h->magic = SEGMENT_MAGIC;
  h->id = *id;
  h->size = (uint64_t)size;
  atomic_store(&h->released, 0);
  return 0;
}

int ff_segment_open_mapped(uint64_t id, size_t mapped, void **base,
                           size_t *size) {
  int fd;
  int rc = ff_segment_open(id, &fd);
  if (rc < 0) return rc;
  /* The file's size is what counts (segments are sealed at it); the
   * header, written by whoever made the segment, is checked against it. */
  off_t end = lseek(fd, 0, SEEK_END);
  if (end < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  if (end < (off_t)FF_SEGMENT_HEADER) {
    close(fd);
    return FF_EPROTOCOL;
  }
  size_t bytes = (size_t)end - FF_SEGMENT_HEADER;
  size_t length = FF_SEGMENT_HEADER + clamp(mapped, bytes);
  void *p = NULL;
  rc = map_fd(fd, length, &p);
  close(fd);
  if (rc < 0) return rc;
  segment_header_t h;
  memcpy(&h, p, offsetof(segment_header_t, released));
  if (h.magic != SEGMENT_MAGIC || h.id != id || h.size != (uint64_t)bytes) {
    munmap(p, length);
    return FF_EPROTOCOL;
  }
  *base = p;
  *size = bytes;
  return 0;
}

void ff_segment_unmap(void *base, size_t mapped) {
  if (base != NULL) munmap(base, FF_SEGMENT_HEADER + mapped);
}

uint64_t ff_segment_header_id(const void *base) {
  uint64_t id;
  memcpy(&id, (const char *)base + offsetof(segment_header_t, id), sizeof(id));
  return id;
}

uint64_t ff_segment_header_size(const void *base) {
  uint64_t size;
  memcpy(&size, (const char *)base + offsetof(segment_header_t, size),
         sizeof(size));
  return size;
}

void ff_segment_mark_released(void *base) {
  atomic_store(&((segment_header_t *)base)->released, 1);
}

int ff_segment_released(const void *base) {
  /* atomic_load takes a pointer to non-const in C11. */
  return atomic_load(&((segment_header_t *)(uintptr_t)base)->released) != 0;
}
