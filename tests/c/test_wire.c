/* Tests of the wire framing: headers, incremental parsing, large frames and
 * corrupt input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../lib/internal.h"

static void feed(ff__wire_reader_t *r, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    size_t room;
    char *space = ff__wire_reader_space(r, &room);
    assert_true(room > 0);
    size_t n = len < room ? len : room;
    memcpy(space, p, n);
    ff__wire_reader_commit(r, n);
    p += n;
    len -= n;
  }
}

static size_t make_frame(char *out, uint16_t type, uint64_t id,
                         const void *payload, size_t len) {
  ff__wire_encode_header(out, type, 0, id, len);
  memcpy(out + FF__WIRE_HEADER_SIZE, payload, len);
  return FF__WIRE_HEADER_SIZE + len;
}

static void test_header_round_trip(void **state) {
  (void)state;
  unsigned char buf[FF__WIRE_HEADER_SIZE];
  ff__wire_encode_header(buf, FF__FRAME_RESULT, FF__FRAME_FLAG_FAILED,
                         0x0102030405060708ull, 12345);
  ff__frame_header_t h;
  assert_int_equal(ff__wire_decode_header(buf, &h), 0);
  assert_int_equal(h.type, FF__FRAME_RESULT);
  assert_int_equal(h.flags, FF__FRAME_FLAG_FAILED);
  assert_true(h.id == 0x0102030405060708ull);
  assert_true(h.length == 12345);
}

static void test_header_rejects_corruption(void **state) {
  (void)state;
  unsigned char buf[FF__WIRE_HEADER_SIZE];
  ff__frame_header_t h;
  ff__wire_encode_header(buf, FF__FRAME_TASK, 0, 1, 10);
  buf[0] ^= 0xff; /* magic */
  assert_int_equal(ff__wire_decode_header(buf, &h), FF_EPROTOCOL);
  ff__wire_encode_header(buf, 99, 0, 1, 10); /* type */
  assert_int_equal(ff__wire_decode_header(buf, &h), FF_EPROTOCOL);
  ff__wire_encode_header(buf, FF__FRAME_TASK, 0x80, 1, 10); /* flags */
  assert_int_equal(ff__wire_decode_header(buf, &h), FF_EPROTOCOL);
  ff__wire_encode_header(buf, FF__FRAME_TASK, 0, 1, UINT64_MAX); /* length */
  assert_int_equal(ff__wire_decode_header(buf, &h), FF_EPROTOCOL);
  ff__wire_encode_header(buf, FF__FRAME_STOP, 0, 1, 3); /* STOP has none */
  assert_int_equal(ff__wire_decode_header(buf, &h), FF_EPROTOCOL);
}

/* Many frames fed one byte at a time come out whole and in order. */
static void test_reader_byte_by_byte(void **state) {
  (void)state;
  ff__wire_reader_t r;
  assert_int_equal(ff__wire_reader_init(&r), 0);
  char frame[64];
  int got = 0;
  for (int i = 0; i < 100; i++) {
    char payload[16];
    int len = snprintf(payload, sizeof(payload), "msg-%d", i);
    size_t n = make_frame(frame, FF__FRAME_TASK, (uint64_t)i, payload,
                          (size_t)len);
    for (size_t b = 0; b < n; b++) {
      feed(&r, frame + b, 1);
      ff__frame_t f;
      int rc = ff__wire_reader_next(&r, &f);
      assert_true(rc >= 0);
      if (rc == 1) {
        assert_int_equal(b, n - 1);
        assert_true(f.header.id == (uint64_t)i);
        assert_int_equal(f.header.length, (uint64_t)len);
        assert_memory_equal(f.payload, payload, (size_t)len);
        free(f.payload);
        got++;
      }
    }
  }
  assert_int_equal(got, 100);
  assert_false(ff__wire_reader_partial(&r));
  ff__wire_reader_free(&r);
}

/* A frame larger than the staging buffer arrives intact, between two small
 * ones, fed in odd-sized pieces. */
static void test_reader_large_frame(void **state) {
  (void)state;
  ff__wire_reader_t r;
  assert_int_equal(ff__wire_reader_init(&r), 0);
  size_t big = 5 * 1024 * 1024 + 7;
  char *payload = malloc(big);
  assert_non_null(payload);
  for (size_t i = 0; i < big; i++) payload[i] = (char)(i * 31 + 7);
  char *stream = malloc(big + 3 * FF__WIRE_HEADER_SIZE + 8);
  assert_non_null(stream);
  size_t n = make_frame(stream, FF__FRAME_TASK, 1, "ab", 2);
  n += make_frame(stream + n, FF__FRAME_TASK, 2, payload, big);
  n += make_frame(stream + n, FF__FRAME_TASK, 3, "cd", 2);
  size_t off = 0, piece = 777;
  uint64_t expect = 1;
  while (off < n) {
    /* Like a read(2): never more than the reader has room for. */
    size_t room;
    char *space = ff__wire_reader_space(&r, &room);
    assert_true(room > 0);
    size_t len = n - off < piece ? n - off : piece;
    if (len > room) len = room;
    memcpy(space, stream + off, len);
    ff__wire_reader_commit(&r, len);
    off += len;
    piece = piece * 3 % 100003 + 1;
    ff__frame_t f;
    int rc;
    while ((rc = ff__wire_reader_next(&r, &f)) == 1) {
      assert_true(f.header.id == expect);
      if (expect == 2) {
        assert_int_equal(f.header.length, big);
        assert_memory_equal(f.payload, payload, big);
      } else {
        assert_int_equal(f.header.length, 2);
      }
      free(f.payload);
      expect++;
    }
    assert_int_equal(rc, 0);
  }
  assert_int_equal(expect, 4);
  assert_false(ff__wire_reader_partial(&r));
  free(stream);
  free(payload);
  ff__wire_reader_free(&r);
}

static void test_reader_rejects_garbage(void **state) {
  (void)state;
  ff__wire_reader_t r;
  assert_int_equal(ff__wire_reader_init(&r), 0);
  char junk[FF__WIRE_HEADER_SIZE];
  memset(junk, 0x5a, sizeof(junk));
  feed(&r, junk, sizeof(junk));
  ff__frame_t f;
  assert_int_equal(ff__wire_reader_next(&r, &f), FF_EPROTOCOL);
  ff__wire_reader_free(&r);
}

static void test_reader_truncated(void **state) {
  (void)state;
  ff__wire_reader_t r;
  assert_int_equal(ff__wire_reader_init(&r), 0);
  char frame[64];
  size_t n = make_frame(frame, FF__FRAME_RESULT, 9, "hello", 5);
  feed(&r, frame, n - 2);
  ff__frame_t f;
  assert_int_equal(ff__wire_reader_next(&r, &f), 0);
  assert_true(ff__wire_reader_partial(&r));
  ff__wire_reader_free(&r);
}

/* Frames written with ff__wire_write_frame to a pipe read back whole. */
static void test_write_and_fill(void **state) {
  (void)state;
  int p[2];
  assert_int_equal(pipe(p), 0);
  assert_int_equal(
      ff__wire_write_frame(p[1], FF__FRAME_RESULT, 0, 42, "payload", 7), 0);
  assert_int_equal(ff__wire_write_frame(p[1], FF__FRAME_STOP, 0, 0, NULL, 0),
                   0);
  close(p[1]);
  ff__wire_reader_t r;
  assert_int_equal(ff__wire_reader_init(&r), 0);
  ff__frame_t f;
  int frames = 0;
  for (;;) {
    int rc = ff__wire_reader_next(&r, &f);
    assert_true(rc >= 0);
    if (rc == 1) {
      if (frames == 0) {
        assert_int_equal(f.header.type, FF__FRAME_RESULT);
        assert_memory_equal(f.payload, "payload", 7);
      } else {
        assert_int_equal(f.header.type, FF__FRAME_STOP);
        assert_null(f.payload);
      }
      free(f.payload);
      frames++;
      continue;
    }
    ssize_t n = ff__wire_reader_fill(&r, p[0]);
    assert_true(n >= 0);
    if (n == 0) break;
  }
  assert_int_equal(frames, 2);
  close(p[0]);
  ff__wire_reader_free(&r);
}

static int setup_alarm(void **state) {
  (void)state;
  alarm(60); /* a hang fails the test run instead of stalling it */
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_header_round_trip, setup_alarm),
      cmocka_unit_test_setup(test_header_rejects_corruption, setup_alarm),
      cmocka_unit_test_setup(test_reader_byte_by_byte, setup_alarm),
      cmocka_unit_test_setup(test_reader_large_frame, setup_alarm),
      cmocka_unit_test_setup(test_reader_rejects_garbage, setup_alarm),
      cmocka_unit_test_setup(test_reader_truncated, setup_alarm),
      cmocka_unit_test_setup(test_write_and_fill, setup_alarm),
  };
  /* FF_TEST_FILTER=name_pattern runs a subset, for debugging. */
  const char *filter = getenv("FF_TEST_FILTER");
  if (filter) cmocka_set_test_filter(filter);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
