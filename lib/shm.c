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
