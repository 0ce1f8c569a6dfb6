/* The parent's end of a worker's transport: a non-blocking stream socket
 * watched by the loop thread with uv_poll. Reads go through a wire reader;
 * writes are queued and flushed with writev when the socket has room. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define FF__WRITEV_BATCH 64

typedef struct ff__send_s {
  ff__link_t link;
  unsigned char header[FF__WIRE_HEADER_SIZE];
  const char *payload;
  size_t length;
  size_t written; /* bytes of header + payload already written */
  void (*done)(void *context, int status);
  void *context;
} ff__send_t;

struct ff__channel_s {
  uv_poll_t poll;
  int fd;
  int events;
  bool ended; /* the read side reached its end */
  bool closing;
  ff__wire_reader_t reader;
  ff__link_t sends;
  ff__channel_callbacks_t callbacks;
  void *data;
};

static void channel_update_events(ff__channel_t *ch);

static void channel_end(ff__channel_t *ch, int error) {
  if (ch->ended) return;
  ch->ended = true;
  channel_update_events(ch);
  ch->callbacks.on_end(ch, error);
}

/* Parses and delivers every whole frame in the reader. Returns false when
 * the channel ended (a protocol error). */
static bool channel_deliver(ff__channel_t *ch) {
  for (;;) {
    ff__frame_t frame;
    int rc = ff__wire_reader_next(&ch->reader, &frame);
    if (rc == 0) return true;
    if (rc < 0) {
      channel_end(ch, rc);
      return false;
    }
    ch->callbacks.on_frame(ch, &frame);
    if (ch->closing || ch->ended) return false;
  }
}

static void channel_read(ff__channel_t *ch) {
  while (!ch->ended && !ch->closing) {
    ssize_t n = ff__wire_reader_fill(&ch->reader, ch->fd);
    if (n == -EAGAIN) return;
    if (n < 0) {
      channel_end(ch, (int)n);
      return;
    }
    if (n == 0) {
      channel_end(ch, ff__wire_reader_partial(&ch->reader) ? FF_EPROTOCOL : 0);
      return;
    }
    if (!channel_deliver(ch)) return;
  }
}

static void send_finish(ff__send_t *send, int status) {
  if (send->done) send->done(send->context, status);
  free(send);
}

static void channel_flush(ff__channel_t *ch) {
  while (!ff__list_empty(&ch->sends)) {
    struct iovec iov[FF__WRITEV_BATCH * 2];
    int count = 0;
    for (ff__link_t *l = ch->sends.next;
         l != &ch->sends && count + 2 <= FF__WRITEV_BATCH * 2; l = l->next) {
      ff__send_t *s = FF__CONTAINER_OF(l, ff__send_t, link);
      size_t off = s->written;
      if (off < FF__WIRE_HEADER_SIZE) {
        iov[count].iov_base = s->header + off;
        iov[count].iov_len = FF__WIRE_HEADER_SIZE - off;
        count++;
        off = 0;
      } else {
        off -= FF__WIRE_HEADER_SIZE;
      }
      if (s->length > off) {
        iov[count].iov_base = (char *)s->payload + off;
        iov[count].iov_len = s->length - off;
        count++;
      }
    }
    ssize_t n = writev(ch->fd, iov, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      /* The worker is gone; its exit is reported through the zygote, and
       * the pool fails its tasks then. Drop what cannot be sent. */
      int err = -errno;
      while (!ff__list_empty(&ch->sends)) {
        ff__send_t *s =
            FF__CONTAINER_OF(ff__list_pop_front(&ch->sends), ff__send_t, link);
        send_finish(s, err);
      }
      break;
    }
    size_t left = (size_t)n;
    while (left > 0) {
      ff__send_t *s = FF__CONTAINER_OF(ch->sends.next, ff__send_t, link);
      size_t total = FF__WIRE_HEADER_SIZE + s->length;
      size_t need = total - s->written;
      if (left >= need) {
        left -= need;
        ff__list_remove(&s->link);
        send_finish(s, 0);
      } else {
        s->written += left;
        left = 0;
      }
    }
  }
  channel_update_events(ch);
}

static void channel_on_poll(uv_poll_t *handle, int status, int events) {
  ff__channel_t *ch = FF__CONTAINER_OF(handle, ff__channel_t, poll);
  if (status < 0) {
    channel_end(ch, status);
    return;
  }
  if (events & UV_WRITABLE) channel_flush(ch);
  if ((events & (UV_READABLE | UV_DISCONNECT)) && !ch->closing)
    channel_read(ch);
}

static void channel_update_events(ff__channel_t *ch) {
  if (ch->closing) return;
  int events = 0;
  if (!ch->ended) events |= UV_READABLE;
  if (!ff__list_empty(&ch->sends)) events |= UV_WRITABLE;
  if (events == ch->events) return;
  ch->events = events;
  if (events)
    uv_poll_start(&ch->poll, events, channel_on_poll);
  else
    uv_poll_stop(&ch->poll);
}

int ff__channel_open(ff__channel_t **channel, uv_loop_t *loop, int fd,
                     const ff__channel_callbacks_t *callbacks, void *data) {
  ff__channel_t *ch = calloc(1, sizeof(*ch));
  if (ch == NULL) return -ENOMEM;
  int rc = ff__wire_reader_init(&ch->reader);
  if (rc < 0) {
    free(ch);
    return rc;
  }
  rc = uv_poll_init(loop, &ch->poll, fd);
  if (rc < 0) {
    ff__wire_reader_free(&ch->reader);
    free(ch);
    return rc;
  }
  ch->fd = fd;
  ch->callbacks = *callbacks;
  ch->data = data;
  ff__list_init(&ch->sends);
  channel_update_events(ch);
  *channel = ch;
  return 0;
}

void *ff__channel_data(const ff__channel_t *channel) { return channel->data; }

int ff__channel_send(ff__channel_t *ch, uint16_t type, uint16_t flags,
                     uint64_t id, const void *payload, size_t length,
                     void (*done)(void *context, int status), void *context) {
  if (ch->closing) return FF_ECANCELED;
  ff__send_t *s = malloc(sizeof(*s));
  if (s == NULL) return -ENOMEM;
  ff__wire_encode_header(s->header, type, flags, id, length);
  s->payload = payload;
  s->length = length;
  s->written = 0;
  s->done = done;
  s->context = context;
  ff__list_push_back(&ch->sends, &s->link);
  /* Try at once: the socket usually has room, and waiting for the next
   * poll round would cost a loop iteration of latency. */
  channel_flush(ch);
  return 0;
}

void ff__channel_drain(ff__channel_t *ch) { channel_read(ch); }

static void channel_on_closed(uv_handle_t *handle) {
  ff__channel_t *ch = FF__CONTAINER_OF((uv_poll_t *)handle, ff__channel_t, poll);
  ff__fd_untrack(ch->fd);
  close(ch->fd);
  ff__wire_reader_free(&ch->reader);
  free(ch);
}

void ff__channel_close(ff__channel_t *ch) {
  if (ch->closing) return;
  ch->closing = true;
  while (!ff__list_empty(&ch->sends)) {
    ff__send_t *s =
        FF__CONTAINER_OF(ff__list_pop_front(&ch->sends), ff__send_t, link);
    send_finish(s, FF_ECANCELED);
  }
  uv_close((uv_handle_t *)&ch->poll, channel_on_closed);
}
