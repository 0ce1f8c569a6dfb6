/* The zygote: a single-threaded process, forked from the pool's creator,
 * that forks the pool's workers on request and reports how they exit.
 *
 * The parent talks to it over a SOCK_SEQPACKET socketpair. The parent sends
 * SPAWN with the worker's shared-memory segment, its doorbell eventfd, its
 * lender socket and, when the pool captures output, the files of its
 * streams attached; the zygote forks, hands them to the worker, and answers SPAWNED
 * with a pidfd of the worker attached. It reaps its children through a signalfd for SIGCHLD
 * and reports each with EXITED and its wait status: the parent is not the
 * workers' parent, so only the zygote can learn their exit codes. When the
 * control socket reaches its end (the pool is done, or the parent died), the
 * zygote kills and reaps what is left and exits. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- inside the zygote -------------------------------------------------- */

typedef struct zygote_s {
  const ff_pool_options_t *options;
  int ctl;
  int sigfd;
  pid_t *children;
  size_t nchildren;
  size_t capacity;
} zygote_t;

static void zygote_add_child(zygote_t *z, pid_t pid) {
  pid_t *children =
      ff__grow(z->children, z->nchildren, &z->capacity, sizeof(pid_t));
  if (children == NULL) return; /* it is still reaped, just not killed */
  z->children = children;
  z->children[z->nchildren++] = pid;
}

static void zygote_remove_child(zygote_t *z, pid_t pid) {
  for (size_t i = 0; i < z->nchildren; i++) {
    if (z->children[i] == pid) {
      z->children[i] = z->children[--z->nchildren];
      return;
    }
  }
}

/* The parent is gone or done: no worker may outlive the zygote. */
static _Noreturn void zygote_exit(zygote_t *z) {
  for (size_t i = 0; i < z->nchildren; i++) kill(z->children[i], SIGKILL);
  while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
  }
  _exit(0);
}

static void zygote_reap(zygote_t *z) {
  struct signalfd_siginfo info;
  while (read(z->sigfd, &info, sizeof(info)) == (ssize_t)sizeof(info)) {
  }
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    zygote_remove_child(z, pid);
    ff__ctl_msg_t msg = {FF__CTL_EXITED, 0, pid, status};
    if (ff__sock_send(z->ctl, &msg, sizeof(msg), NULL, 0) < 0) zygote_exit(z);
  }
}

static void run_hook(void (*hook)(void *), void *arg) {
  if (hook) hook(arg);
}

/* fds: the worker's segment, doorbell and lender socket, then, when its
 * pool captures output, its streams' files (FF_OUTPUT_STREAMS of them). */
static void zygote_spawn(zygote_t *z, uint32_t slot, int *fds,
                         unsigned nfds) {
  int shm_fd = fds[0], doorbell_fd = fds[1], lender_fd = fds[2];
  const int *output_fds = nfds == 3 + FF_OUTPUT_STREAMS ? fds + 3 : NULL;
  const ff_pool_options_t *o = z->options;
  pid_t zygote_pid = getpid();
  /* No prepare or parent hook here: the zygote is a frozen image of its
   * creator at the moment of the first fork, and runs no code of the
   * embedding runtime. Each worker runs the child hook once, as if it were
   * forked straight from the creator at that moment. */
  pid_t pid = fork();
  if (pid == 0) {
    close(z->ctl);
    close(z->sigfd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* The zygote is single-threaded, so its one thread lives as long as the
     * zygote: the death signal fires exactly when the zygote dies. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != zygote_pid) _exit(1);
    /* Before the hook: the embedding runtime finds its output where the
     * pool wants it from its first line on. */
    ff__output_worker_start(output_fds);
    run_hook(o->fork_hooks.child, o->fork_hooks.arg);
    ff__worker_main(o, slot, shm_fd, doorbell_fd, lender_fd);
  }
  int err = pid < 0 ? -errno : 0;
  ff__sock_close_fds(fds, &nfds);
  ff__ctl_msg_t msg = {FF__CTL_SPAWNED, slot, pid > 0 ? pid : 0, err};
  int pidfd = -1;
  if (pid > 0) {
    zygote_add_child(z, pid);
    /* Not reaped yet, so the pid names this very child. */
    pidfd = ff__pidfd_open(pid);
    if (pidfd < 0) msg.status = pidfd;
  }
  int rc = ff__sock_send(z->ctl, &msg, sizeof(msg), &pidfd, pidfd >= 0 ? 1 : 0);
  if (pidfd >= 0) close(pidfd);
  if (rc < 0) zygote_exit(z);
}

/* parent is the pool's creator when it forked this zygote, else 0: then
 * only the end of the control socket ties the zygote to the pool. */
static _Noreturn void zygote_main(const ff_pool_options_t *options, int ctl,
                                  pid_t parent, bool parent_is_main_thread) {
  zygote_t z = {.options = options, .ctl = ctl, .sigfd = -1};
  /* Ctrl-C goes to the whole foreground process group; the parent decides
   * what it means for the pool, so the zygote and its workers ignore it. */
  signal(SIGINT, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, SIG_DFL);
  /* An ignored SIGCHLD (a fork server's habit) would reap the workers
   * before their exit status could be reported. */
  signal(SIGCHLD, SIG_DFL);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  z.sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (z.sigfd < 0) _exit(1);
  /* The death signal follows the thread that forked us: it is only a
   * guarantee when that thread is the main thread. The end of the control
   * socket covers every case. */
  if (parent != 0) {
    if (parent_is_main_thread) prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
  }

  for (;;) {
    struct pollfd polled[2] = {{ctl, POLLIN, 0}, {z.sigfd, POLLIN, 0}};
    int n = poll(polled, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      zygote_exit(&z);
    }
    if (polled[1].revents) zygote_reap(&z);
    if (polled[0].revents) {
      ff__ctl_msg_t msg;
      int fds[FF__SOCK_MAX_FDS];
      unsigned nfds;
      int rc = ff__sock_recv(ctl, &msg, sizeof(msg), fds, &nfds, 0);
      if (rc <= 0) zygote_exit(&z); /* end of stream or broken socket */
      if (msg.type == FF__CTL_SPAWN &&
          (nfds == 3 || nfds == 3 + FF_OUTPUT_STREAMS))
        zygote_spawn(&z, msg.slot, fds, nfds);
      else
        ff__sock_close_fds(fds, &nfds);
    }
  }
}

int ff_zygote_serve(const ff_pool_options_t *options, int ctl) {
  if (options == NULL || options->work == NULL || ctl < 0) return -EINVAL;
  int flags = fcntl(ctl, F_GETFL);
  /* The zygote blocks in poll(), then reads what poll() announced. */
  if (flags < 0 || fcntl(ctl, F_SETFL, flags & ~O_NONBLOCK) < 0)
    return -EINVAL;
  zygote_main(options, ctl, 0, false);
}

/* Makes a zygote started elsewhere the pool's, as ff__zygote_fork would
 * have. The descriptors are the pool's from here on, and closed on error. */
int ff__zygote_adopt(const ff_zygote_t *zygote, pid_t *pid_out,
                     int *pidfd_out, int *ctl_out) {
  int err = 0;
  if (zygote->pid <= 0 || zygote->pidfd < 0) err = -EINVAL;
  int flags = err ? -1 : fcntl(zygote->ctl, F_GETFL);
  if (!err && (flags < 0 || fcntl(zygote->ctl, F_SETFL, flags | O_NONBLOCK) < 0 ||
               fcntl(zygote->ctl, F_SETFD, FD_CLOEXEC) < 0 ||
               fcntl(zygote->pidfd, F_SETFD, FD_CLOEXEC) < 0))
    err = -errno;
  if (err < 0) {
    close(zygote->ctl);
    if (zygote->pidfd >= 0) close(zygote->pidfd);
    return err;
  }
  ff__fd_track(zygote->ctl);
  ff__fd_track(zygote->pidfd);
  *pid_out = zygote->pid;
  *pidfd_out = zygote->pidfd;
  *ctl_out = zygote->ctl;
  return 0;
}

int ff__zygote_fork(ff__runtime_t *runtime, const ff_pool_options_t *options,
                    pid_t *pid_out, int *pidfd_out, int *ctl_out) {
  int sv[2];
  int pidfd = -1;
  int rc;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
    return FF_ESPAWN(errno);
  pid_t parent = getpid();
  bool main_thread = (pid_t)syscall(SYS_gettid) == parent;

  /* The child hook runs in each worker, not here (see zygote_spawn). */
  pid_t pid = ff__runtime_fork(runtime, &options->fork_hooks, false, -1);
  if (pid == 0) {
    close(sv[0]);
    zygote_main(options, sv[1], parent, main_thread);
  }
  close(sv[1]);
  if (pid < 0) {
    rc = FF_ESPAWN(-pid);
    goto fail;
  }
  /* Without a pidfd the exit could not be watched: the fork is undone. */
  pidfd = ff__pidfd_open(pid);
  if (pidfd < 0) {
    rc = pidfd;
    goto fail;
  }
  /* The loop thread polls the control socket; it must never block on it. */
  int flags = fcntl(sv[0], F_GETFL);
  if (flags < 0 || fcntl(sv[0], F_SETFL, flags | O_NONBLOCK) < 0) {
    rc = -errno;
    goto fail;
  }
  ff__fd_track(sv[0]);
  ff__fd_track(pidfd);
  *pid_out = pid;
  *pidfd_out = pidfd;
  *ctl_out = sv[0];
  return 0;

fail:
  if (pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  if (pidfd >= 0) close(pidfd);
  close(sv[0]);
  return rc;
}
