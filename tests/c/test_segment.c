/* CMocka tests of segments with a header (lib/segment.c): created and
 * mapped with their header written, opened by id with the header checked,
 * mapped in part, the released flag seen by every mapping, and segments
 * whose header is missing or lies refused.
 *
 * Each test arms alarm() so a hang fails instead of stalling. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "forkfarm.h"
#include "test_helpers.h"

static void test_create_writes_the_header(void **state) {
  (void)state;
  uint64_t id;
  void *base;
  assert_int_equal(ff_segment_create_mapped(10000, 0, SIZE_MAX, &id, &base),
                   0);
  assert_int_equal(ff_segment_header_id(base), id);
  assert_int_equal(ff_segment_header_size(base), 10000);
  assert_int_equal(ff_segment_released(base), 0);
  char *bytes = (char *)base + FF_SEGMENT_HEADER;
  bytes[9999] = 5;
  ff_segment_unmap(base, 10000);
  assert_int_equal(ff_segment_forget(id), 0);
}

static void test_open_checks_and_maps(void **state) {
  (void)state;
  uint64_t id;
  void *mine, *again, *part;
  size_t size;
  assert_int_equal(ff_segment_create_mapped(3 * 4096, 0, SIZE_MAX, &id, &mine),
                   0);
  ((char *)mine)[FF_SEGMENT_HEADER + 100] = 42;
  assert_int_equal(ff_segment_open_mapped(id, SIZE_MAX, &again, &size), 0);
  assert_int_equal(size, 3 * 4096);
  assert_int_equal(((char *)again)[FF_SEGMENT_HEADER + 100], 42);
  /* The first page only, and the header still checked. */
  assert_int_equal(ff_segment_open_mapped(id, 4096, &part, &size), 0);
  assert_int_equal(size, 3 * 4096);
  assert_int_equal(((char *)part)[FF_SEGMENT_HEADER + 100], 42);
  /* The creator lets go: every mapping sees it. */
  ff_segment_mark_released(mine);
  assert_int_equal(ff_segment_released(again), 1);
  assert_int_equal(ff_segment_released(part), 1);
  ff_segment_unmap(part, 4096);
  ff_segment_unmap(again, 3 * 4096);
  ff_segment_unmap(mine, 3 * 4096);
  ff_segment_unmap(NULL, 0);
  assert_int_equal(ff_segment_forget(id), 0);
  assert_int_equal(ff_segment_open_mapped(id, SIZE_MAX, &again, &size),
                   -ENOENT);
}

static void test_empty_segment_is_its_header(void **state) {
  (void)state;
  uint64_t id;
  void *base, *again;
  size_t size = 1;
  assert_int_equal(ff_segment_create_mapped(0, 0, SIZE_MAX, &id, &base), 0);
  assert_int_equal(ff_segment_open_mapped(id, SIZE_MAX, &again, &size), 0);
  assert_int_equal(size, 0);
  ff_segment_unmap(again, 0);
  ff_segment_unmap(base, 0);
  assert_int_equal(ff_segment_forget(id), 0);
  assert_int_equal(
      ff_segment_create_mapped(SIZE_MAX - 100, 0, SIZE_MAX, &id, &base),
      -EINVAL);
}

static void test_a_wrong_header_is_refused(void **state) {
  (void)state;
  uint64_t id;
  int fd;
  void *base;
  size_t size;
  /* Made without a header: all zeros. */
  assert_int_equal(ff_segment_create(2 * 4096, 0, &id, &fd), 0);
  close(fd);
  assert_int_equal(ff_segment_open_mapped(id, SIZE_MAX, &base, &size),
                   FF_EPROTOCOL);
  assert_int_equal(ff_segment_forget(id), 0);
  /* Smaller than a header. */
  assert_int_equal(ff_segment_create(100, 0, &id, &fd), 0);
  close(fd);
  assert_int_equal(ff_segment_open_mapped(id, SIZE_MAX, &base, &size),
                   FF_EPROTOCOL);
  assert_int_equal(ff_segment_forget(id), 0);
  /* A header whose size or id lies about the segment. */
  uint64_t fields[2] = {0, 0};
  for (size_t field = 0; field < 2; field++) {
    void *mine;
    assert_int_equal(ff_segment_create_mapped(4096, 0, SIZE_MAX, &id, &mine),
                     0);
    fields[0] = ff_segment_header_id(mine) + 1;
    fields[1] = ff_segment_header_size(mine) + 4096;
    /* id at offset 8, size at 16 (lib/segment.c). */
    memcpy((char *)mine + 8 + 8 * field, &fields[field], sizeof(uint64_t));
    assert_int_equal(ff_segment_open_mapped(id, SIZE_MAX, &base, &size),
                     FF_EPROTOCOL);
    ff_segment_unmap(mine, 4096);
    assert_int_equal(ff_segment_forget(id), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_create_writes_the_header, setup_alarm),
      cmocka_unit_test_setup(test_open_checks_and_maps, setup_alarm),
      cmocka_unit_test_setup(test_empty_segment_is_its_header, setup_alarm),
      cmocka_unit_test_setup(test_a_wrong_header_is_refused, setup_alarm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
