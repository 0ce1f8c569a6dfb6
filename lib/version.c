/* The library's version: the project version meson.build sets, through the
 * generated forkfarm_version.h. */
#include "forkfarm.h"

const char *ff_version(void) { return FF_VERSION_STRING; }
