/* A worker's captured output: its standard output and error, and a stream
 * of records, written to memfds the parent reads back task by task.
 *
 * Files rather than pipes: a worker that prints a lot never blocks on a
 * parent that is not reading, what it wrote survives its death (SIGKILL,
 * a timeout, terminate) for the parent to read, and the size of the file
 * tells the worker how much it wrote, so that the end of each task is an
 * exact offset in each stream. The files are opened in append mode, so
 * that a write lands at the end whoever shares the descriptor (a child of
 * the worker, a descriptor dup()ed by the task). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The parent gives a stream's pages back once this much was read past
 * what it gave back last: a punch per task would cost more than it
 * saves. */
#define FREE_EVERY ((uint64_t)1 << 20)

static const char *const stream_names[FF_OUTPUT_STREAMS] = {
    "forkfarm-stdout", "forkfarm-stderr", "forkfarm-records"};

void ff__output_init(ff__output_t *output) {
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    output->fd[i] = -1;
    output->taken[i] = 0;
    output->freed[i] = 0;
  }
}

int ff__output_open(ff__output_t *output) {
  ff__output_init(output);
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    int fd = memfd_create(stream_names[i], MFD_CLOEXEC);
    if (fd < 0 || fcntl(fd, F_SETFL, O_APPEND) < 0) {
      int err = -errno;
      if (fd >= 0) close(fd);
      ff__output_close(output);
      return err;
    }
    ff__fd_track(fd);
    output->fd[i] = fd;
  }
  return 0;
}

void ff__output_close(ff__output_t *output) {
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    if (output->fd[i] >= 0) {
      ff__fd_untrack(output->fd[i]);
      close(output->fd[i]);
    }
  }
  ff__output_init(output);
}

int ff__output_take(ff__output_t *output, unsigned stream, uint64_t end,
                    ff_buf_t *into, size_t limit) {
  if (stream >= FF_OUTPUT_STREAMS || output->fd[stream] < 0) return -EINVAL;
  int fd = output->fd[stream];
  /* Most tasks print nothing on most streams: no system call for them. */
  if (end <= output->taken[stream]) return 0;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  /* The worker's word is checked against the file: never past its end,
   * never before what was read already. */
  uint64_t size = (uint64_t)st.st_size;
  if (end > size) end = size;
  uint64_t from = output->taken[stream];
  if (end <= from) return 0;
  uint64_t want = end - from;
  /* A worker that prints without end costs the parent no more memory than
   * its largest result may: the rest is skipped, and the skip says so. */
  size_t room = into->len < limit ? limit - into->len : 0;
  if (want > room) {
    char note[96];
    int n = snprintf(note, sizeof(note),
                     "\n[forkfarm: %llu bytes of output dropped: over "
                     "max_message_size]\n",
                     (unsigned long long)(want - room));
    output->taken[stream] = from + (want - room);
    from = output->taken[stream];
    want = room;
    /* Records are framed: a note among them would break the frames. */
    if (stream != FF_OUTPUT_RECORDS && n > 0 &&
        ff_buf_reserve(into, into->len + (size_t)n) != NULL)
      memcpy(into->base + into->len - (size_t)n, note, (size_t)n);
    if (want == 0) return 0;
  }
  if (want > SIZE_MAX - into->len) return -ENOMEM;
  size_t old = into->len;
  if (ff_buf_reserve(into, old + (size_t)want) == NULL) {
    into->len = old;
    return -ENOMEM;
  }
  size_t got = 0;
  int rc = 0;
  while (got < want) {
    ssize_t n = pread(fd, into->base + old + got, (size_t)want - got,
                      (off_t)(from + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n < 0 ? -errno : 0;
      break;
    }
    got += (size_t)n;
  }
  into->len = old + got;
  output->taken[stream] = from + got;
  /* Pages fully read go back to the system; the offsets keep growing. */
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  uint64_t upto = output->taken[stream] / page * page;
  if (upto - output->freed[stream] >= FREE_EVERY &&
      fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                (off_t)output->freed[stream],
                (off_t)(upto - output->freed[stream])) == 0)
    output->freed[stream] = upto;
  return rc;
}

/* ---- in the worker ---------------------------------------------------------- */

/* The streams' files as the worker received them: descriptors of its own,
 * which a task that closes or moves 1 and 2 does not touch. */
static int worker_fds[FF_OUTPUT_STREAMS] = {-1, -1, -1};

int ff_worker_output_fd(unsigned stream) {
  if (stream >= FF_OUTPUT_STREAMS || worker_fds[stream] < 0) return -1;
  if (stream == FF_OUTPUT_STDOUT) return STDOUT_FILENO;
  if (stream == FF_OUTPUT_STDERR) return STDERR_FILENO;
  return worker_fds[stream];
}

void ff__output_worker_start(const int *fds) {
  if (fds == NULL) return;
  /* What the parent's stdio had buffered when it forked is the parent's to
   * print: flushed here, it would be printed twice. */
  __fpurge(stdout);
  __fpurge(stderr);
  if (dup2(fds[FF_OUTPUT_STDOUT], STDOUT_FILENO) < 0 ||
      dup2(fds[FF_OUTPUT_STDERR], STDERR_FILENO) < 0)
    _exit(FF__EXIT_PROTOCOL);
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) worker_fds[i] = fds[i];
}

bool ff__output_worker_ends(uint64_t end[FF_OUTPUT_STREAMS]) {
  if (worker_fds[0] < 0) return false;
  fflush(stdout);
  fflush(stderr);
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    struct stat st;
    end[i] = fstat(worker_fds[i], &st) == 0 ? (uint64_t)st.st_size : 0;
  }
  return true;
}
