/* Names for the runtime's return codes. */
#include "internal.h"

#include <string.h>

const char *ff_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
#define XX(name, value, text)                                                  \
  case FF_E##name:                                                             \
    return text;
    FF_ERRNO_MAP(XX)
#undef XX
  default:
    break;
  }
  if (FF_SPAWN_ERRNO(code) != 0)
    return "a process of the pool could not be started";
  /* strerror() of a valid errno returns a string that lives as long as the
   * process in glibc; the error codes here are all errno values. */
  if (code < 0 && code > -4096) return strerror(-code);
  return "unknown error";
}
