/* Framing of the byte stream between the parent and a worker.
 *
 * A frame is a 24-byte header (magic, type, flags, task id, payload length,
 * little endian) followed by the payload. The reader parses frames out of a
 * staging buffer, so many small frames cost one read(2); a frame larger than
 * the staging buffer is read straight into its own allocation, so a large
 * message is copied once. Everything read from another process is validated
 * before it is trusted: an unknown magic, type or oversized length is a
 * protocol error, never a crash. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define FF__STAGING_CAPACITY (64u * 1024u)

static void put_u16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}
static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint16_t get_u16(const unsigned char *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

void ff__wire_encode_header(void *out, uint16_t type, uint16_t flags,
                            uint64_t id, uint64_t length) {
  unsigned char *p = out;
  put_u32(p, FF__WIRE_MAGIC);
  put_u16(p + 4, type);
  put_u16(p + 6, flags);
  put_u64(p + 8, id);
  put_u64(p + 16, length);
}

int ff__wire_decode_header(const void *in, ff__frame_header_t *header) {
  const unsigned char *p = in;
  header->magic = get_u32(p);
  header->type = get_u16(p + 4);
  header->flags = get_u16(p + 6);
  header->id = get_u64(p + 8);
  header->length = get_u64(p + 16);
  if (header->magic != FF__WIRE_MAGIC) return FF_EPROTOCOL;
  if (header->type < FF__FRAME_TASK || header->type > FF__FRAME_STOP)
    return FF_EPROTOCOL;
  if (header->flags & ~FF__FRAME_FLAG_FAILED) return FF_EPROTOCOL;
  if (header->length > FF__WIRE_MAX_PAYLOAD) return FF_EPROTOCOL;
  if (header->type == FF__FRAME_STOP && header->length != 0)
    return FF_EPROTOCOL;
  return 0;
}

int ff__wire_reader_init(ff__wire_reader_t *reader) {
  memset(reader, 0, sizeof(*reader));
  reader->staging = malloc(FF__STAGING_CAPACITY);
  if (reader->staging == NULL) return -ENOMEM;
  reader->staging_capacity = FF__STAGING_CAPACITY;
  return 0;
}

void ff__wire_reader_free(ff__wire_reader_t *reader) {
  free(reader->staging);
  free(reader->large_payload);
  memset(reader, 0, sizeof(*reader));
}

char *ff__wire_reader_space(ff__wire_reader_t *reader, size_t *length) {
  if (reader->large_active) {
    *length = (size_t)reader->large_header.length - reader->large_filled;
    return reader->large_payload + reader->large_filled;
  }
  /* Move the unparsed tail to the front so the free space is contiguous. */
  if (reader->start > 0) {
    size_t pending = reader->end - reader->start;
    memmove(reader->staging, reader->staging + reader->start, pending);
    reader->start = 0;
    reader->end = pending;
  }
  *length = reader->staging_capacity - reader->end;
  return reader->staging + reader->end;
}

void ff__wire_reader_commit(ff__wire_reader_t *reader, size_t length) {
  if (reader->large_active)
    reader->large_filled += length;
  else
    reader->end += length;
}

ssize_t ff__wire_reader_fill(ff__wire_reader_t *reader, int fd) {
  size_t room;
  char *space = ff__wire_reader_space(reader, &room);
  if (room == 0) return -ENOBUFS; /* a caller bug: next() frees room */
  for (;;) {
    ssize_t n = read(fd, space, room);
    if (n > 0) {
      ff__wire_reader_commit(reader, (size_t)n);
      return n;
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    return -errno;
  }
}

int ff__wire_reader_next(ff__wire_reader_t *reader, ff__frame_t *frame) {
  if (reader->large_active) {
    if (reader->large_filled < reader->large_header.length) return 0;
    frame->header = reader->large_header;
    frame->payload = reader->large_payload;
    reader->large_payload = NULL;
    reader->large_active = false;
    reader->large_filled = 0;
    return 1;
  }
  size_t available = reader->end - reader->start;
  if (available < FF__WIRE_HEADER_SIZE) return 0;
  ff__frame_header_t header;
  int rc = ff__wire_decode_header(reader->staging + reader->start, &header);
  if (rc < 0) return rc;
  size_t body = available - FF__WIRE_HEADER_SIZE;
  const char *src = reader->staging + reader->start + FF__WIRE_HEADER_SIZE;
  if (header.length <= body) {
    char *payload = NULL;
    if (header.length > 0) {
      payload = malloc((size_t)header.length);
      if (payload == NULL) return -ENOMEM;
      memcpy(payload, src, (size_t)header.length);
    }
    reader->start += FF__WIRE_HEADER_SIZE + (size_t)header.length;
    frame->header = header;
    frame->payload = payload;
    return 1;
  }
  if (header.length + FF__WIRE_HEADER_SIZE <= reader->staging_capacity)
    return 0; /* fits in staging once the rest arrives */
  /* Too large for staging: give it its own buffer and read into it. */
  char *payload = malloc((size_t)header.length);
  if (payload == NULL) return -ENOMEM;
  memcpy(payload, src, body);
  reader->start = reader->end = 0;
  reader->large_header = header;
  reader->large_payload = payload;
  reader->large_filled = body;
  reader->large_active = true;
  return ff__wire_reader_next(reader, frame);
}

int ff__wire_reader_partial(const ff__wire_reader_t *reader) {
  return reader->large_active || reader->end > reader->start;
}

int ff__wire_write_frame(int fd, uint16_t type, uint16_t flags, uint64_t id,
                         const void *payload, size_t length) {
  unsigned char header[FF__WIRE_HEADER_SIZE];
  ff__wire_encode_header(header, type, flags, id, length);
  struct iovec iov[2] = {{header, sizeof(header)},
                         {(void *)payload, length}};
  int count = length ? 2 : 1;
  struct iovec *cur = iov;
  while (count > 0) {
    ssize_t n = writev(fd, cur, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    size_t done = (size_t)n;
    while (count > 0 && done >= cur->iov_len) {
      done -= cur->iov_len;
      cur++;
      count--;
    }
    if (count > 0) {
      cur->iov_base = (char *)cur->iov_base + done;
      cur->iov_len -= done;
    }
  }
  return 0;
}
