/* alloc.c: the library's only door to the heap.
 * Counting every allocation lets a test prove that a steady-state training
 * step allocates nothing (tests/test_tape.c). */
#include <stdatomic.h>
#include <stdlib.h>

#include "bptt.h"

static _Atomic uint64_t alloc_count;

void *bt_malloc(size_t n)
{
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    return malloc(n ? n : 1);
}

void *bt_calloc(size_t n, size_t size)
{
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    return calloc(n ? n : 1, size ? size : 1);
}

void *bt_realloc(void *p, size_t n)
{
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    return realloc(p, n ? n : 1);
}

void bt_free(void *p) { free(p); }

uint64_t bt_alloc_count(void) { return atomic_load_explicit(&alloc_count, memory_order_relaxed); }
