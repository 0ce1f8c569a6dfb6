/* Process-shared locks, semaphores, events and conditions: futex words in
 * memory the caller shares between processes (a memfd segment), with no
 * kernel object and no name. Every wait takes a deadline and returns early
 * with -EINTR on a signal, so that a Python caller can check for Ctrl-C.
 *
 * A mutex word holds the pid of the process that holds it, so a waiter can
 * tell when the holder died: it looks every FF__SYNC_CHECK_NS while it
 * waits, and takes the mutex over (with -EOWNERDEAD) from a holder that is
 * gone or a zombie. The kernel's robust futex lists would say so at once,
 * but they belong to the C library's own mutexes. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* How often a waiter looks whether a mutex's holder is still alive, and
 * how long it waits before the first look: a live holder usually lets go
 * sooner, and a look costs a read of /proc. */
#define FF__SYNC_CHECK_NS 50000000ull
#define FF__SYNC_FIRST_CHECK_NS 1000000ull

/* The mutex word: the holder's pid, and a bit for "others may sleep". */
#define MUTEX_WAITERS 0x80000000u
#define MUTEX_PID_MASK 0x3fffffffu

/* The holder's pid and start time in one word (pid << 42 | start): a
 * start time is only compared under its own pid. */
#define STAMP_START_BITS 42
#define STAMP_START_MASK ((UINT64_C(1) << STAMP_START_BITS) - 1)

typedef struct mutex_s {
  _Atomic uint32_t word;
  _Atomic uint32_t owner_tid; /* the holding thread, 0 in transition */
  _Atomic uint64_t owner_stamp; /* against pid reuse; 0 in transition */
} mutex_t;

typedef struct semaphore_s {
  _Atomic uint32_t value;
  _Atomic uint32_t sleepers;
  uint32_t max; /* 0: unbounded */
  uint32_t unused;
} semaphore_t;

typedef struct event_s {
  _Atomic uint32_t flag;
  _Atomic uint32_t sleepers;
} event_t;

/* A condition hands out tokens: notify(n) sets n aside (no more than the
 * waiters no token is set aside for yet), tagged with the sequence number
 * it moves seq to, and wakes as many sleepers; a waiter takes one only if
 * it prepared before that tag. A waiter the kernel woke must still take a
 * token, since one that was awake may have taken it first. */
typedef struct cond_s {
  _Atomic uint32_t seq;        /* moved by each notify that wakes: the futex */
  _Atomic uint32_t sleepers;   /* waiters in or entering the futex wait */
  _Atomic uint32_t waiters;    /* between prepare and finish; under the lock */
  _Atomic uint32_t unreserved; /* waiters with no token set aside; locked */
  _Atomic uint64_t tokens;     /* tokens not yet taken << 32 | their tag */
  uint64_t unused;
} cond_t;

_Static_assert(sizeof(mutex_t) == sizeof(ff_mutex_t), "ff_mutex_t's size");
_Static_assert(sizeof(semaphore_t) == sizeof(ff_semaphore_t),
               "ff_semaphore_t's size");
_Static_assert(sizeof(event_t) == sizeof(ff_event_t), "ff_event_t's size");
_Static_assert(sizeof(cond_t) == sizeof(ff_cond_t), "ff_cond_t's size");

static void futex_wake(_Atomic uint32_t *word, int count) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, count, NULL, NULL, 0);
}

/* ---- who is alive --------------------------------------------------------- */

/* Who the calling thread is: its pid, tid and process start time, cached
 * per thread (an uncontended lock must not cost system calls) and renewed
 * after a fork, which the fork generation tells. */
typedef struct self_s {
  uint32_t generation; /* fork_generation + 1 when valid */
  uint32_t pid;
  uint32_t tid;
  uint64_t start; /* 0 until first needed */
} self_t;

static _Atomic uint32_t fork_generation;
static __thread self_t self_cache;
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void) { atomic_fetch_add(&fork_generation, 1); }

static void register_fork_hook(void) {
  pthread_atfork(NULL, NULL, on_fork_child);
}

static self_t *self_get(void) {
  self_t *me = &self_cache;
  uint32_t generation =
      atomic_load_explicit(&fork_generation, memory_order_relaxed) + 1;
  if (me->generation != generation) {
    pthread_once(&fork_hook_once, register_fork_hook);
    me->pid = (uint32_t)getpid();
    me->tid = (uint32_t)syscall(SYS_gettid);
    me->start = 0;
    me->generation = generation;
  }
  return me;
}

/* Field 22 of /proc/<pid>/stat: when the process started, in clock ticks
 * since boot; 0 when it cannot be read (gone, or a zombie's fields). With
 * the pid, it names one process even after the pid is reused. */
static uint64_t process_start(pid_t pid, char *state) {
  char path[64], text[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = 0;
  /* The command name may hold spaces and parentheses: start after the
   * last ')'. */
  char *p = strrchr(text, ')');
  if (p == NULL) return 0;
  p += 2;
  if (state) *state = *p;
  for (int field = 3; field < 22 && *p; field++) {
    p = strchr(p, ' ');
    if (p == NULL) return 0;
    p++;
  }
  return strtoull(p, NULL, 10);
}

static uint64_t self_start(void) {
  self_t *me = self_get();
  if (me->start == 0) me->start = process_start((pid_t)me->pid, NULL);
  return me->start;
}

/* Whether the process that holds a mutex is gone: exited (a zombie
 * counts), or its pid now names another process. */
static bool holder_is_dead(const mutex_t *m, uint32_t word) {
  pid_t pid = (pid_t)(word & MUTEX_PID_MASK);
  if (pid == 0) return false;
  if (kill(pid, 0) < 0 && errno == ESRCH) return true;
  char state = 0;
  uint64_t started = process_start(pid, &state);
  if (state == 'Z' || state == 'X') return true;
  uint64_t stamp = atomic_load(&m->owner_stamp);
  /* Another pid's stamp: the holder is between taking the word and
   * recording itself. */
  if ((pid_t)(stamp >> STAMP_START_BITS) != pid || started == 0) return false;
  return (started & STAMP_START_MASK) != (stamp & STAMP_START_MASK);
}

/* ---- mutex ------------------------------------------------------------------- */

int ff_mutex_init(ff_mutex_t *mutex) {
  if (mutex == NULL) return -EINVAL;
  memset(mutex, 0, sizeof(*mutex));
  return 0;
}

/* The holder's records; ordered by the word's compare-and-swap before and
 * its exchange at release after, so plain relaxed stores do. */
static void mutex_took(mutex_t *m, uint32_t self) {
  atomic_store_explicit(&m->owner_stamp,
                        (uint64_t)self << STAMP_START_BITS |
                            (self_start() & STAMP_START_MASK),
                        memory_order_relaxed);
  atomic_store_explicit(&m->owner_tid, self_get()->tid, memory_order_relaxed);
}

/* Takes the word over from a dead holder, keeping the waiters bit: others
 * may sleep on it. */
static bool mutex_take_over(mutex_t *m, uint32_t seen, uint32_t self) {
  if (!atomic_compare_exchange_strong(&m->word, &seen, self | MUTEX_WAITERS))
    return false;
  mutex_took(m, self);
  return true;
}

int ff_mutex_acquire(ff_mutex_t *mutex, double timeout, pid_t *dead_holder) {
  if (mutex == NULL) return -EINVAL;
  mutex_t *m = (mutex_t *)mutex;
  uint32_t self = self_get()->pid & MUTEX_PID_MASK;
  uint32_t expected = 0;
  if (atomic_compare_exchange_strong(&m->word, &expected, self)) {
    mutex_took(m, self);
    return 0;
  }
  uint64_t deadline = ff__deadline(timeout);
  /* A caller that will not wait looks at once. */
  uint64_t next_check = timeout == 0 ? 0 : ff__now_ns() + FF__SYNC_FIRST_CHECK_NS;
  for (;;) {
    uint32_t word = atomic_load(&m->word);
    if ((word & MUTEX_PID_MASK) == 0) {
      /* Free: take it, and say others may sleep, since they may. */
      if (atomic_compare_exchange_strong(&m->word, &word,
                                         self | MUTEX_WAITERS)) {
        mutex_took(m, self);
        return 0;
      }
      continue;
    }
    uint64_t now = ff__now_ns();
    if (now >= next_check) {
      next_check = now + FF__SYNC_CHECK_NS;
      if (holder_is_dead(m, word)) {
        if (mutex_take_over(m, word, self)) {
          if (dead_holder) *dead_holder = (pid_t)(word & MUTEX_PID_MASK);
          return -EOWNERDEAD;
        }
        continue;
      }
    }
    if (now >= deadline) return -ETIMEDOUT;
    if (!(word & MUTEX_WAITERS) &&
        !atomic_compare_exchange_strong(&m->word, &word, word | MUTEX_WAITERS))
      continue;
    uint64_t until = next_check < deadline ? next_check : deadline;
    int rc = ff__futex_wait_shared(&m->word, word | MUTEX_WAITERS, until);
    if (rc == -EINTR) return -EINTR;
  }
}

int ff_mutex_try_acquire(ff_mutex_t *mutex) {
  if (mutex == NULL) return -EINVAL;
  mutex_t *m = (mutex_t *)mutex;
  uint32_t self = self_get()->pid & MUTEX_PID_MASK;
  uint32_t expected = 0;
  if (!atomic_compare_exchange_strong(&m->word, &expected, self))
    return -EBUSY;
  mutex_took(m, self);
  return 0;
}

int ff_mutex_release(ff_mutex_t *mutex) {
  if (mutex == NULL) return -EINVAL;
  mutex_t *m = (mutex_t *)mutex;
  if ((atomic_load(&m->word) & MUTEX_PID_MASK) == 0) return -EPERM;
  atomic_store_explicit(&m->owner_tid, 0, memory_order_relaxed);
  atomic_store_explicit(&m->owner_stamp, 0, memory_order_relaxed);
  uint32_t was = atomic_exchange(&m->word, 0);
  if ((was & MUTEX_PID_MASK) == 0) return -EPERM; /* released meanwhile */
  if (was & MUTEX_WAITERS) futex_wake(&m->word, 1);
  return 0;
}

pid_t ff_mutex_holder(const ff_mutex_t *mutex) {
  const mutex_t *m = (const mutex_t *)mutex;
  return (pid_t)(atomic_load(&m->word) & MUTEX_PID_MASK);
}

int ff_mutex_held_by_caller(const ff_mutex_t *mutex) {
  const mutex_t *m = (const mutex_t *)mutex;
  self_t *me = self_get();
  return (uint32_t)ff_mutex_holder(mutex) == (me->pid & MUTEX_PID_MASK) &&
         atomic_load_explicit(&m->owner_tid, memory_order_relaxed) == me->tid;
}

/* ---- semaphore --------------------------------------------------------------- */

int ff_semaphore_init(ff_semaphore_t *semaphore, unsigned value,
                      unsigned max) {
  if (semaphore == NULL || value > INT_MAX || (max != 0 && value > max))
    return -EINVAL;
  semaphore_t *s = (semaphore_t *)semaphore;
  memset(s, 0, sizeof(*s));
  atomic_store(&s->value, value);
  s->max = max;
  return 0;
}

int ff_semaphore_acquire(ff_semaphore_t *semaphore, double timeout) {
  if (semaphore == NULL) return -EINVAL;
  semaphore_t *s = (semaphore_t *)semaphore;
  uint64_t deadline = ff__deadline(timeout);
  for (;;) {
    uint32_t value = atomic_load(&s->value);
    while (value > 0) {
      if (atomic_compare_exchange_weak(&s->value, &value, value - 1))
        return 0;
    }
    if (ff__now_ns() >= deadline) return -ETIMEDOUT;
    /* Counted in before the value is checked again, so that a release
     * either sees the sleeper or is seen by it. */
    atomic_fetch_add(&s->sleepers, 1);
    int rc = 0;
    if (atomic_load(&s->value) == 0)
      rc = ff__futex_wait_shared(&s->value, 0, deadline);
    atomic_fetch_sub(&s->sleepers, 1);
    if (rc == -EINTR) return -EINTR;
  }
}

int ff_semaphore_release(ff_semaphore_t *semaphore) {
  if (semaphore == NULL) return -EINVAL;
  semaphore_t *s = (semaphore_t *)semaphore;
  uint32_t value = atomic_load(&s->value);
  do {
    if ((s->max != 0 && value >= s->max) || value >= INT_MAX) return -EOVERFLOW;
  } while (!atomic_compare_exchange_weak(&s->value, &value, value + 1));
  if (atomic_load(&s->sleepers)) futex_wake(&s->value, 1);
  return 0;
}

unsigned ff_semaphore_value(const ff_semaphore_t *semaphore) {
  return atomic_load(&((const semaphore_t *)semaphore)->value);
}

/* ---- event ------------------------------------------------------------------- */

int ff_event_init(ff_event_t *event) {
  if (event == NULL) return -EINVAL;
  memset(event, 0, sizeof(*event));
  return 0;
}

void ff_event_set(ff_event_t *event) {
  event_t *e = (event_t *)event;
  atomic_store(&e->flag, 1);
  if (atomic_load(&e->sleepers)) futex_wake(&e->flag, INT_MAX);
}

void ff_event_clear(ff_event_t *event) {
  atomic_store(&((event_t *)event)->flag, 0);
}

int ff_event_is_set(const ff_event_t *event) {
  return atomic_load(&((const event_t *)event)->flag) != 0;
}

int ff_event_wait(ff_event_t *event, double timeout) {
  event_t *e = (event_t *)event;
  uint64_t deadline = ff__deadline(timeout);
  while (!atomic_load(&e->flag)) {
    if (ff__now_ns() >= deadline) return -ETIMEDOUT;
    atomic_fetch_add(&e->sleepers, 1);
    int rc = 0;
    if (!atomic_load(&e->flag))
      rc = ff__futex_wait_shared(&e->flag, 0, deadline);
    atomic_fetch_sub(&e->sleepers, 1);
    if (rc == -EINTR) return -EINTR;
  }
  return 0;
}

/* ---- condition ----------------------------------------------------------------- */

/* How long a waiter watches for a notify before it sleeps: a partner that
 * answers at once (a ping-pong) is seen without a wake-up through the
 * kernel, and a longer wait costs little more. */
#define FF__COND_SPIN_NS 20000ull

#define COND_TOKEN (UINT64_C(1) << 32)

int ff_cond_init(ff_cond_t *cond) {
  if (cond == NULL) return -EINVAL;
  memset(cond, 0, sizeof(*cond));
  return 0;
}

int ff_cond_prepare(ff_cond_t *cond, ff_cond_waiter_t *waiter) {
  if (cond == NULL || waiter == NULL) return -EINVAL;
  cond_t *c = (cond_t *)cond;
  atomic_fetch_add(&c->waiters, 1);
  atomic_fetch_add(&c->unreserved, 1);
  waiter->since = atomic_load(&c->seq);
  waiter->seen = waiter->since;
  waiter->notified = 0;
  return 0;
}

/* Takes a token whose tag is newer than since (a notify that came after
 * the waiter prepared), if there is one. */
static bool cond_take_token(cond_t *c, uint32_t since) {
  uint64_t tokens = atomic_load(&c->tokens);
  for (;;) {
    uint32_t tag = (uint32_t)tokens;
    /* Wrapping difference: seq moves by one per notify. */
    if ((tokens >> 32) == 0 || (int32_t)(tag - since) <= 0) return false;
    if (atomic_compare_exchange_weak(&c->tokens, &tokens, tokens - COND_TOKEN))
      return true;
  }
}

/* Looks whether seq moved since the waiter last looked, and if so tries
 * for a token; true once the waiter is notified. */
static bool cond_look(cond_t *c, ff_cond_waiter_t *w, uint32_t seq) {
  if (seq == w->seen) return false;
  w->seen = seq;
  if (cond_take_token(c, w->since)) w->notified = 1;
  return w->notified;
}

int ff_cond_sleep(ff_cond_t *cond, ff_cond_waiter_t *waiter, double timeout) {
  if (cond == NULL || waiter == NULL) return -EINVAL;
  cond_t *c = (cond_t *)cond;
  if (waiter->notified) return 0;
  uint64_t deadline = ff__deadline(timeout);
  uint64_t spin_until = timeout == 0 ? 0 : ff__now_ns() + FF__COND_SPIN_NS;
  for (unsigned i = 0;; i++) {
    if (cond_look(c, waiter, atomic_load(&c->seq))) return 0;
    uint64_t now = ff__now_ns();
    if (now >= deadline) return -ETIMEDOUT;
    if (now < spin_until) {
      ff__spin_pause(i);
      continue;
    }
    /* Counted as a sleeper before seq is read again, so that a notify
     * either sees the sleeper or is seen by it. */
    atomic_fetch_add(&c->sleepers, 1);
    int rc = 0;
    if (atomic_load(&c->seq) == waiter->seen)
      rc = ff__futex_wait_shared(&c->seq, waiter->seen, deadline);
    atomic_fetch_sub(&c->sleepers, 1);
    if (rc == -ETIMEDOUT || rc == -EINTR) {
      /* A notify that came with the timeout or the signal still counts. */
      if (cond_look(c, waiter, atomic_load(&c->seq))) return 0;
      return rc;
    }
    if (rc < 0) return rc;
  }
}

int ff_cond_finish(ff_cond_t *cond, ff_cond_waiter_t *waiter) {
  if (cond == NULL || waiter == NULL) return -EINVAL;
  cond_t *c = (cond_t *)cond;
  /* A token that came after the sleep ended is taken now: left there, it
   * would wake a later waiter that no notify meant. */
  if (!waiter->notified && cond_take_token(c, waiter->since))
    waiter->notified = 1;
  if (!waiter->notified) {
    uint32_t unreserved = atomic_load(&c->unreserved);
    if (unreserved > 0) atomic_store(&c->unreserved, unreserved - 1);
  }
  atomic_fetch_sub(&c->waiters, 1);
  return waiter->notified;
}

unsigned ff_cond_notify(ff_cond_t *cond, unsigned count) {
  if (cond == NULL) return 0;
  cond_t *c = (cond_t *)cond;
  uint32_t unreserved = atomic_load(&c->unreserved);
  uint32_t n = count < unreserved ? count : unreserved;
  if (n == 0) return 0;
  atomic_store(&c->unreserved, unreserved - n);
  uint32_t next = atomic_load(&c->seq) + 1;
  /* The tokens are there before seq moves, so that a waiter that sees the
   * new seq sees them; the tag widens to the waiters prepared before this
   * notify, which is right for tokens left over too. */
  uint64_t tokens = atomic_load(&c->tokens);
  uint64_t updated;
  do {
    updated = ((tokens >> 32) + n) << 32 | next;
  } while (!atomic_compare_exchange_weak(&c->tokens, &tokens, updated));
  atomic_store(&c->seq, next);
  if (atomic_load(&c->sleepers))
    futex_wake(&c->seq, n > INT_MAX ? INT_MAX : (int)n);
  return n;
}

unsigned ff_cond_waiters(const ff_cond_t *cond) {
  return atomic_load(&((const cond_t *)cond)->waiters);
}

unsigned ff_cond_pending(const ff_cond_t *cond) {
  return (unsigned)(atomic_load(&((const cond_t *)cond)->tokens) >> 32);
}
