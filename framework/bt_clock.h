/* bt_clock.h: seconds on a clock, for the durations a run reports (epochs,
 * windows' passes, collectives, progress) and the benchmarks time.
 * Header-only, as bt_assert.h, so every layer, the program and the
 * benchmarks can use it without the library exporting a symbol for it; not
 * installed. */
#ifndef BPTT_CLOCK_H
#define BPTT_CLOCK_H

#include <time.h>

static inline double bt_clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double bt_monotonic_s(void) { return bt_clock_s(CLOCK_MONOTONIC); }

/* The process's CPU time, all threads: blind to time spent waiting for a
 * core on a shared machine (a steadier rate at one thread; at N threads it
 * counts every thread's time and is no measure of speed). */
static inline double bt_process_cpu_s(void) { return bt_clock_s(CLOCK_PROCESS_CPUTIME_ID); }

#endif
