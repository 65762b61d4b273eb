/* vector_clones.h: BT_VECTOR_CLONES, for the library's elementwise loops
 * (ops/) and the shipped plugins' (the optimizers' steps), which include it
 * as a header only: it declares nothing they would link against. */
#ifndef BPTT_VECTOR_CLONES_H
#define BPTT_VECTOR_CLONES_H

/* An elementwise loop compiled for AVX-512 (x86-64-v4), AVX2 (v3) and the
 * baseline (SSE2); the clone for this CPU is picked when the library or
 * plugin loads (ELF ifunc). Every clone runs the same operations, so results
 * do not depend on the CPU: the project builds with -ffp-contract=off (no
 * implicit FMA), and a loop that wants a fused multiply-add writes fmaf,
 * exactly rounded everywhere (ops/fastmath.h says what that costs where the
 * baseline runs). Off where ifunc clones are not available (not ELF, not
 * GCC or clang) and with BT_NO_VECTOR_CLONES, which sanitizer builds set
 * (meson.build: clang's instrumented resolvers run before the sanitizer's
 * runtime is up). */
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(BT_NO_VECTOR_CLONES)
#define BT_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BT_VECTOR_CLONES
#endif

#endif
