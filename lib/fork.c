/* Forking the caller with the runtime consistent in the child: the loop
 * thread parked (loop.c), the callback thread held between its batches
 * (task.c), the share table's lock held across the fork (share.c), and the
 * caller's hooks around it. The zygote's fork (zygote.c) and ff_fork (any
 * other fork of the caller's, a Python Process) both go through here.
 *
 * Layering: above loop.c, task.c and share.c, which know nothing of it. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

static void run_fork_hook(void (*hook)(void *), void *arg) {
  if (hook != NULL) hook(arg);
}

pid_t ff__runtime_fork(ff__runtime_t *rt, const ff_fork_hooks_t *hooks,
                       bool child_hook, double callbacks_wait) {
  /* Held before the park: a running callback may need the loop to end. */
  int held = 0;
  if (callbacks_wait >= 0) {
    held = ff__task_callbacks_hold(ff__deadline(callbacks_wait));
    if (held < 0) return held == -ETIMEDOUT ? -EBUSY : held;
  }
  /* C stdio is flushed first, so that no buffered output is written twice,
   * once by each process. */
  fflush(NULL);
  if (rt != NULL) ff__runtime_park(rt);
  run_fork_hook(hooks->prepare, hooks->arg);
  ff__share_fork_prepare();
  pid_t pid = fork();
  if (pid == 0) {
    /* The atfork handlers of loop.c and task.c have abandoned the
     * parent's runtime and callback thread already. */
    ff__share_fork_child();
    ff__task_callbacks_unhold(held);
    if (child_hook) run_fork_hook(hooks->child, hooks->arg);
    return 0;
  }
  int err = pid < 0 ? -errno : 0;
  ff__share_fork_parent();
  run_fork_hook(hooks->parent, hooks->arg);
  if (rt != NULL) ff__runtime_unpark(rt);
  ff__task_callbacks_unhold(held);
  return err < 0 ? err : pid;
}

pid_t ff_fork(const ff_fork_hooks_t *hooks, double callbacks_wait) {
  static const ff_fork_hooks_t no_hooks = {NULL, NULL, NULL, NULL};
  /* A runtime that does not run yet is not started for a fork: there is no
   * loop thread to park then. */
  return ff__runtime_fork(ff__runtime_running(),
                          hooks != NULL ? hooks : &no_hooks, true,
                          callbacks_wait);
}
