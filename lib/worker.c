/* The worker process: initialize, then run tasks until told to stop.
 *
 * A worker is single-threaded and blocks in read(2) between tasks. It
 * answers each TASK frame with one RESULT frame carrying the same id, in
 * order, so the parent can match results to tasks by position and check the
 * id. It exits by itself after max_tasks_per_worker tasks, when the parent
 * closes its end, or on STOP. */
#include "internal.h"

#include <stdlib.h>
#include <unistd.h>

static _Noreturn void worker_exit(const ff_pool_options_t *o, int code) {
  if (o->worker_exit) o->worker_exit(o->worker_arg);
  /* _exit, not exit: the atexit handlers and stdio buffers inherited from
   * the parent belong to the parent. */
  _exit(code);
}

_Noreturn void ff__worker_main(const ff_pool_options_t *o, int fd) {
  ff_buf_t out = {0};
  int rc = o->worker_init ? o->worker_init(o->worker_arg, &out) : 0;
  if (rc != 0) {
    ff__wire_write_frame(fd, FF__FRAME_READY, FF__FRAME_FLAG_FAILED, 0,
                         out.base, out.len);
    worker_exit(o, FF__EXIT_INIT_FAILED);
  }
  if (ff__wire_write_frame(fd, FF__FRAME_READY, 0, 0, NULL, 0) < 0)
    worker_exit(o, 0);

  ff__wire_reader_t reader;
  if (ff__wire_reader_init(&reader) < 0) worker_exit(o, 1);
  unsigned done = 0;
  for (;;) {
    ff__frame_t frame;
    rc = ff__wire_reader_next(&reader, &frame);
    if (rc < 0) worker_exit(o, FF__EXIT_PROTOCOL);
    if (rc == 0) {
      ssize_t n = ff__wire_reader_fill(&reader, fd);
      if (n == 0) {
        /* The parent closed its end: a clean stop, unless a frame was cut
         * short. */
        worker_exit(o, ff__wire_reader_partial(&reader) ? FF__EXIT_PROTOCOL
                                                        : 0);
      }
      if (n < 0) worker_exit(o, 0);
      continue;
    }
    if (frame.header.type == FF__FRAME_STOP) {
      free(frame.payload);
      worker_exit(o, 0);
    }
    if (frame.header.type != FF__FRAME_TASK) {
      free(frame.payload);
      worker_exit(o, FF__EXIT_PROTOCOL);
    }
    out.len = 0;
    /* An empty message still comes as a valid pointer. */
    rc = o->work(o->work_arg, frame.payload ? frame.payload : "",
                 (size_t)frame.header.length, &out);
    free(frame.payload);
    uint16_t flags = rc != 0 ? FF__FRAME_FLAG_FAILED : 0;
    if (ff__wire_write_frame(fd, FF__FRAME_RESULT, flags, frame.header.id,
                             out.base, out.len) < 0)
      worker_exit(o, 0); /* the parent is gone */
    done++;
    if (o->max_tasks_per_worker && done >= o->max_tasks_per_worker)
      worker_exit(o, 0);
  }
}
