/* arena.c: bump allocation for one truncation window.
 * Chunks are kept across resets, so once a window has fitted, later windows
 * of the same size make no heap allocation at all. */
#include <stdint.h>
#include <string.h>

#include "bptt.h"

#define ARENA_ALIGN 64

typedef struct chunk {
    struct chunk *next;
    size_t cap;  /* usable bytes after the header */
    size_t used;
    unsigned char *base; /* aligned start */
} chunk;

/* The chain holds chunks of chunk_bytes, filled in order and refilled from
 * the first after a reset. A block larger than a chunk (a window's lane of
 * step outputs, graph.c) gets a chunk of its own, on one of two short lists
 * of its own: finding one never walks the chain, however long a longer
 * window left it. (When they sat in the chain, each search walked it to its
 * end: every stretch of a checkpointed window after a plain 100,000-step
 * window on the same graph visited about 1,250 chunk headers.) */
struct bt_arena {
    chunk *first;
    chunk *current;
    chunk *own_free;    /* own chunks no block of this window is in */
    chunk *own_taken;   /* own chunks this window took */
    size_t chunk_bytes;
    size_t used_before; /* bytes used in chunks before current */
    size_t own_used;    /* bytes of the blocks in own_taken */
    size_t high_water;
    size_t reserved;
};

static chunk *chunk_new(size_t cap)
{
    unsigned char *raw = bt_malloc(sizeof(chunk) + cap + ARENA_ALIGN);
    if (!raw)
        return NULL;
    chunk *c = (chunk *)raw;
    uintptr_t start = (uintptr_t)(raw + sizeof(chunk));
    start = (start + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    c->next = NULL;
    c->cap = cap;
    c->used = 0;
    c->base = (unsigned char *)start;
    return c;
}

/* Frees a list of chunks; returns the bytes they held (for `reserved`). */
static size_t chunks_free(chunk *c)
{
    size_t held = 0;
    for (chunk *next; c; c = next) {
        next = c->next;
        held += c->cap;
        bt_free(c);
    }
    return held;
}

bt_arena *bt_arena_new(size_t chunk_bytes)
{
    bt_arena *a = bt_calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->chunk_bytes = chunk_bytes ? chunk_bytes : (size_t)1 << 20;
    return a;
}

void bt_arena_free(bt_arena *a)
{
    if (!a)
        return;
    chunks_free(a->first);
    chunks_free(a->own_free);
    chunks_free(a->own_taken);
    bt_free(a);
}

static void note_use(bt_arena *a)
{
    size_t used = bt_arena_used(a);
    if (used > a->high_water)
        a->high_water = used;
}

/* A block larger than a chunk: the smallest free own chunk that holds it
 * (an exact fit ends the search: same-size windows take theirs at once),
 * else a new one. Smallest, so that a small block does not take the chunk a
 * larger one of the same window needs. When none holds it, the free ones
 * are all too small and are freed first: without that, windows that grow (a
 * lane per window, longer each time) would keep one dead chunk per length
 * ever seen, memory quadratic in the window. */
static void *own_block(bt_arena *a, size_t need)
{
    chunk **best = NULL;
    for (chunk **at = &a->own_free; *at && !(best && (*best)->cap == need); at = &(*at)->next)
        if ((*at)->cap >= need && (!best || (*at)->cap < (*best)->cap))
            best = at;
    chunk *c;
    if (best) {
        c = *best;
        *best = c->next;
    } else {
        a->reserved -= chunks_free(a->own_free);
        a->own_free = NULL;
        if (!(c = chunk_new(need)))
            return NULL;
        a->reserved += need;
    }
    c->next = a->own_taken;
    a->own_taken = c;
    a->own_used += need;
    note_use(a);
    return c->base;
}

void *bt_arena_alloc(bt_arena *a, size_t bytes)
{
    if (bytes > SIZE_MAX / 2)
        return NULL; /* no such block; and its rounding below would wrap */
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0)
        need = ARENA_ALIGN;
    if (need > a->chunk_bytes)
        return own_block(a, need);
    chunk *c = a->current;
    size_t before = a->used_before;
    /* Move along the kept chunks until one has room; grow the list if none.
     * The counts change only once the block has a place. */
    while (!c || c->used + need > c->cap) {
        if (c && c->next) {
            before += c->used;
            c = c->next;
            c->used = 0;
            continue;
        }
        chunk *fresh = chunk_new(a->chunk_bytes);
        if (!fresh)
            return NULL;
        a->reserved += a->chunk_bytes;
        if (c) {
            before += c->used;
            fresh->next = c->next;
            c->next = fresh;
        } else {
            fresh->next = a->first;
            a->first = fresh;
        }
        c = fresh;
    }
    a->current = c;
    a->used_before = before;
    void *p = c->base + c->used;
    c->used += need;
    note_use(a);
    return p;
}

void *bt_arena_calloc(bt_arena *a, size_t bytes)
{
    void *p = bt_arena_alloc(a, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void bt_arena_reset(bt_arena *a)
{
    a->current = a->first;
    if (a->first)
        a->first->used = 0;
    a->used_before = 0;
    /* every own chunk is free again: the taken ones join the free list */
    if (a->own_taken) {
        chunk *last = a->own_taken;
        while (last->next)
            last = last->next;
        last->next = a->own_free;
        a->own_free = a->own_taken;
        a->own_taken = NULL;
    }
    a->own_used = 0;
}

size_t bt_arena_used(const bt_arena *a)
{
    return a->used_before + (a->current ? a->current->used : 0) + a->own_used;
}

size_t bt_arena_high_water(const bt_arena *a) { return a->high_water; }
size_t bt_arena_reserved(const bt_arena *a) { return a->reserved; }
