/* status.c: names of status codes and the library version. */
#include "bptt.h"

const char *bt_status_name(bt_status s)
{
    switch (s) {
    case BT_OK: return "ok";
    case BT_ERR_ARG: return "invalid argument";
    case BT_ERR_SHAPE: return "shape mismatch";
    case BT_ERR_NOMEM: return "out of memory";
    case BT_ERR_IO: return "i/o error";
    case BT_ERR_FORMAT: return "malformed file";
    case BT_ERR_PLUGIN: return "plugin error";
    case BT_ERR_NUMERIC: return "non-finite value";
    case BT_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

const char *bt_version(void) { return BT_VERSION; }
