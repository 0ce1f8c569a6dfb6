/* Talking to other processes: messages with descriptors attached
 * (SCM_RIGHTS) on SOCK_SEQPACKET sockets, pidfds, and wait statuses.
 *
 * A leaf of lib/: it calls no other file of it. The zygote's control
 * socket (zygote.c, pool.c) and the lender sockets (share.c) use it, so
 * that share.c does not depend on the zygote. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

int ff__pidfd_open(pid_t pid) {
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return -errno;
  return (int)fd;
}

int ff__pidfd_send_signal(int pidfd, int sig) {
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0) return -errno;
  return 0;
}

void ff__exit_from_status(ff_exit_t *exit, pid_t pid, int status) {
  exit->pid = pid;
  exit->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  exit->term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

int ff__sock_sendmsg(int socket, const void *msg, size_t length,
                     const int *fds, unsigned nfds, int flags) {
  if (nfds > FF__SCM_MAX_FDS) return -EINVAL;
  struct iovec iov = {(void *)msg, length};
  union {
    char buf[CMSG_SPACE(sizeof(int) * FF__SCM_MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds > 0) {
    memset(control.buf, 0, CMSG_SPACE(sizeof(int) * nfds));
    mh.msg_control = control.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
  }
  for (;;) {
    ssize_t n = sendmsg(socket, &mh, MSG_NOSIGNAL | flags);
    if (n == (ssize_t)length) return 0;
    if (n >= 0) return -EIO; /* a seqpacket send is whole or not at all */
    if (errno != EINTR) return -errno;
  }
}

int ff__sock_send(int socket, const void *msg, size_t length, const int *fds,
                  unsigned nfds) {
  if (nfds > FF__SOCK_MAX_FDS) return -EINVAL;
  return ff__sock_sendmsg(socket, msg, length, fds, nfds, 0);
}

void ff__sock_close_fds(int *fds, unsigned *nfds) {
  for (unsigned i = 0; i < *nfds; i++)
    if (fds[i] >= 0) close(fds[i]);
  *nfds = 0;
}

ssize_t ff__sock_recvmsg(int socket, void *msg, size_t length, int *fds,
                         unsigned max_fds, unsigned *nfds, int flags,
                         bool *cut) {
  struct iovec iov = {msg, length};
  /* Room for as many descriptors as Linux sends in one message, so that
   * none is lost to a short buffer: those past max_fds are closed here. */
  union {
    char buf[CMSG_SPACE(sizeof(int) * FF__SCM_MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control.buf;
  mh.msg_controllen = sizeof(control.buf);
  *nfds = 0;
  if (cut != NULL) *cut = false;
  ssize_t n;
  do {
    n = recvmsg(socket, &mh, MSG_CMSG_CLOEXEC | flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  bool lost = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
      if (*nfds < max_fds) {
        fds[(*nfds)++] = fd;
      } else {
        close(fd);
        lost = true;
      }
    }
  }
  if (cut != NULL) *cut = lost;
  return n;
}

int ff__sock_recv(int socket, void *msg, size_t length, int *fds,
                  unsigned *nfds, int flags) {
  bool cut;
  ssize_t n = ff__sock_recvmsg(socket, msg, length, fds, FF__SOCK_MAX_FDS,
                               nfds, flags, &cut);
  if (n <= 0) {
    ff__sock_close_fds(fds, nfds);
    return (int)n;
  }
  if (n != (ssize_t)length || cut) {
    ff__sock_close_fds(fds, nfds);
    return FF_EPROTOCOL;
  }
  return 1;
}
