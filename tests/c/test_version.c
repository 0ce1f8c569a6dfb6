/* CMocka tests of the version: ff_version() and the FF_VERSION macros
 * forkfarm.h includes are the project version of meson.build, which
 * tests/c/meson.build passes in as FF_TEST_PROJECT_VERSION. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "forkfarm.h"

#ifndef FF_TEST_PROJECT_VERSION
#error "tests/c/meson.build defines FF_TEST_PROJECT_VERSION"
#endif

static void test_ff_version_is_the_project_version(void **state) {
  (void)state;
  assert_non_null(ff_version());
  assert_string_equal(ff_version(), FF_TEST_PROJECT_VERSION);
}

static void test_the_macros_make_the_version_string(void **state) {
  (void)state;
  char text[64];
  snprintf(text, sizeof(text), "%d.%d.%d", FF_VERSION_MAJOR, FF_VERSION_MINOR,
           FF_VERSION_PATCH);
  assert_string_equal(text, FF_TEST_PROJECT_VERSION);
  assert_string_equal(FF_VERSION_STRING, FF_TEST_PROJECT_VERSION);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ff_version_is_the_project_version),
      cmocka_unit_test(test_the_macros_make_the_version_string),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
