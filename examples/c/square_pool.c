/* A C program that uses forkfarm directly: a pool of workers that square
 * numbers sent as text, with results collected through a completion queue
 * in the order they finish.
 *
 *   square_pool [WORKERS] [COUNT]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forkfarm.h"

static int square(void *arg, void *context, const void *input, size_t len,
                  ff_buf_t *out) {
  (void)context;
  (void)arg;
  char text[32];
  if (len >= sizeof(text)) return -EINVAL;
  memcpy(text, input, len);
  text[len] = 0;
  long long n = atoll(text);
  char result[32];
  int k = snprintf(result, sizeof(result), "%lld", n * n);
  return ff_buf_set(out, result, (size_t)k);
}

int main(int argc, char **argv) {
  unsigned workers = argc > 1 ? (unsigned)atoi(argv[1]) : 2;
  int count = argc > 2 ? atoi(argv[2]) : 1000;

  ff_pool_options_t options;
  ff_pool_options_init(&options);
  options.workers = workers;
  options.work = square;
  ff_pool_t *pool;
  int rc = ff_pool_create(&pool, &options);
  if (rc < 0) {
    fprintf(stderr, "ff_pool_create: %s\n", ff_strerror(rc));
    return 1;
  }
  ff_queue_t *done;
  if ((rc = ff_queue_create(&done)) < 0) {
    fprintf(stderr, "ff_queue_create: %s\n", ff_strerror(rc));
    ff_pool_destroy(pool);
    return 1;
  }
  for (intptr_t i = 0; i < count; i++) {
    char msg[32];
    int k = snprintf(msg, sizeof(msg), "%ld", (long)i);
    ff_task_t *task;
    rc = ff_pool_submit(pool, NULL, msg, (size_t)k, 0, done, (void *)i, &task);
    if (rc < 0) {
      fprintf(stderr, "ff_pool_submit: %s\n", ff_strerror(rc));
      break;
    }
    ff_task_release(task); /* the completion queue hands it back */
  }
  long long sum = 0, expected = 0;
  int failures = 0;
  for (int n = 0; n < count && rc == 0; n++) {
    ff_task_t *task;
    if ((rc = ff_queue_pop(done, 30.0, &task)) < 0) {
      fprintf(stderr, "ff_queue_pop: %s\n", ff_strerror(rc));
      break;
    }
    size_t len;
    const char *result = ff_task_result(task, &len);
    if (ff_task_status(task) == 0) {
      char text[32] = {0};
      memcpy(text, result, len < 31 ? len : 31);
      sum += atoll(text);
    } else {
      failures++;
    }
    ff_task_release(task);
  }
  for (long long i = 0; i < count; i++) expected += i * i;
  ff_pool_close(pool);
  ff_pool_join(pool, -1);
  ff_pool_destroy(pool);
  ff_queue_destroy(done);
  printf("%d squares on %u workers: sum %lld (expected %lld), %d failed\n",
         count, workers, sum, expected, failures);
  return rc == 0 && failures == 0 && sum == expected ? 0 : 1;
}
