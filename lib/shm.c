/* Shared-memory segments: anonymous memfds, never a name in /dev/shm, so
 * nothing can leak when a process is killed, and no resource tracker is
 * needed: the kernel frees a segment with its last descriptor or mapping.
 *
 * Every segment is sealed at its size: a process that holds a descriptor
 * (a worker, say) cannot shrink it under another's mapping, which would
 * turn that process's next access into SIGBUS. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int ff__memfd(const char *name, size_t size) {
  if (size == 0) return -EINVAL;
  if (size > (size_t)INT64_MAX) return -EINVAL;
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -errno;
  /* Only this user may map it, should anyone find it under /proc. */
  if (fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)size) < 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  return fd;
}

int ff__shm_create(ff__shm_t *shm, const char *name, size_t size) {
  int fd = ff__memfd(name, size);
  if (fd < 0) return fd;
  int rc = ff__shm_attach(shm, fd);
  if (rc < 0) close(fd);
  return rc;
}

int ff__shm_attach(ff__shm_t *shm, int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (st.st_size <= 0) return -EINVAL;
  void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
                    MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return -errno;
  shm->base = base;
  shm->size = (size_t)st.st_size;
  shm->fd = fd;
  return 0;
}

void ff__shm_close(ff__shm_t *shm) {
  if (shm->base) munmap(shm->base, shm->size);
  if (shm->fd >= 0) close(shm->fd);
  shm->base = NULL;
  shm->size = 0;
  shm->fd = -1;
}

int ff__shm_remap(void *at, size_t length, int fd, uint64_t offset,
                  bool private_copy) {
  void *p = mmap(at, length, PROT_READ | PROT_WRITE,
                 (private_copy ? MAP_PRIVATE : MAP_SHARED) | MAP_FIXED, fd,
                 (off_t)offset);
  return p == MAP_FAILED ? -errno : 0;
}

/* pagemap(5): bit 63 present, 62 swapped, 61 a file page (or shared
 * anonymous); a present page without bit 61 is a private copy. */
#define PAGE_PRESENT (UINT64_C(1) << 63)
#define PAGE_SWAPPED (UINT64_C(1) << 62)
#define PAGE_FILE (UINT64_C(1) << 61)

long ff__private_pages(char *base, size_t length,
                       void (*run)(char *start, size_t length, void *arg),
                       void *arg) {
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0) return -EINVAL;
  uintptr_t first = (uintptr_t)base / (uintptr_t)page;
  uintptr_t end = ((uintptr_t)base + length + (uintptr_t)page - 1) /
                  (uintptr_t)page;
  /* Opened each time: after a fork, a kept descriptor would still read the
   * parent's pages. */
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  long count = 0;
  uintptr_t run_start = 0;
  bool in_run = false;
  uint64_t entries[512];
  for (uintptr_t at = first; at < end && count >= 0;) {
    size_t want = end - at < 512 ? (size_t)(end - at) : 512;
    ssize_t got = pread(fd, entries, want * sizeof(uint64_t),
                        (off_t)(at * sizeof(uint64_t)));
    if (got < (ssize_t)sizeof(uint64_t)) {
      count = got < 0 ? -errno : -EIO;
      break;
    }
    size_t n = (size_t)got / sizeof(uint64_t);
    for (size_t i = 0; i < n; i++, at++) {
      uint64_t e = entries[i];
      bool copied = (e & PAGE_SWAPPED) || ((e & PAGE_PRESENT) && !(e & PAGE_FILE));
      if (copied && !in_run) run_start = at;
      if (copied) count++;
      if (!copied && in_run && run != NULL)
        run((char *)(run_start * (uintptr_t)page),
            (size_t)(at - run_start) * (size_t)page, arg);
      in_run = copied;
    }
  }
  if (count >= 0 && in_run && run != NULL)
    run((char *)(run_start * (uintptr_t)page),
        (size_t)(end - run_start) * (size_t)page, arg);
  close(fd);
  return count;
}

long ff__page_faults(void) {
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) < 0) return -1;
  return usage.ru_minflt;
}
