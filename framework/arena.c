/* arena.c: bump allocation for one truncation window.
 * Chunks are kept across resets, so once a window has fitted, later windows
 * of the same size make no heap allocation at all. */
#include <string.h>

#include "bptt.h"

#define ARENA_ALIGN 64

typedef struct chunk {
    struct chunk *next;
    size_t cap;  /* usable bytes after the header */
    size_t used;
    unsigned char *base; /* aligned start */
} chunk;

struct bt_arena {
    chunk *first;
    chunk *current;
    size_t chunk_bytes;
    size_t used_before; /* bytes used in chunks before current */
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
    for (chunk *c = a->first, *next; c; c = next) {
        next = c->next;
        bt_free(c);
    }
    bt_free(a);
}

/* A block larger than a chunk gets a chunk of its own, put right after c
 * (the chunks after c hold nothing of this window yet). One kept from an
 * earlier window is taken if big enough; kept ones too small for it are
 * freed on the way. Without that, windows that grow (a lane of step outputs
 * per window, graph.c) would keep one dead chunk per length ever seen:
 * memory quadratic in the window. Same-size windows free and make nothing. */
static chunk *own_chunk(bt_arena *a, chunk *c, size_t need)
{
    chunk *found = NULL;
    for (chunk **at = c ? &c->next : &a->first; *at;) {
        chunk *q = *at;
        if (q->cap > a->chunk_bytes && q->cap < need) {
            *at = q->next;
            a->reserved -= q->cap;
            bt_free(q);
        } else if (q->cap >= need && !found) {
            *at = q->next;
            found = q;
        } else {
            at = &q->next;
        }
    }
    if (!found && (found = chunk_new(need)))
        a->reserved += need;
    if (found) {
        chunk **after = c ? &c->next : &a->first;
        found->next = *after;
        *after = found;
        found->used = 0;
    }
    return found;
}

void *bt_arena_alloc(bt_arena *a, size_t bytes)
{
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0)
        need = ARENA_ALIGN;
    chunk *c = a->current;
    size_t before = a->used_before;
    /* Move along the kept chunks until one has room; grow the list if none.
     * The counts change only once the block has a place. */
    if (need > a->chunk_bytes && (!c || c->used + need > c->cap)) {
        chunk *own = own_chunk(a, c, need);
        if (!own)
            return NULL;
        before += c ? c->used : 0;
        c = own;
    }
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
    size_t used = a->used_before + c->used;
    if (used > a->high_water)
        a->high_water = used;
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
}

size_t bt_arena_used(const bt_arena *a)
{
    return a->used_before + (a->current ? a->current->used : 0);
}

size_t bt_arena_high_water(const bt_arena *a) { return a->high_water; }
size_t bt_arena_reserved(const bt_arena *a) { return a->reserved; }
