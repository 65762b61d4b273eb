/* bt_clock.h: seconds on the monotonic clock, for the durations a run
 * reports (epochs, windows' passes, collectives). Header-only, as
 * bt_assert.h, so every layer and the program can use it without the
 * library exporting a symbol for it; not installed. */
#ifndef BPTT_CLOCK_H
#define BPTT_CLOCK_H

#include <time.h>

static inline double bt_monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
