/* vector_clones.h: BT_VECTOR_CLONES, for the library's elementwise loops
 * (ops/) and the shipped plugins' (the optimizers' steps), which include it
 * as a header only: it declares nothing they would link against. */
#ifndef BPTT_VECTOR_CLONES_H
#define BPTT_VECTOR_CLONES_H

/* An elementwise loop compiled for AVX-512 (x86-64-v4), AVX2 (v3) and the
 * baseline (SSE2), the clone for this CPU picked when the library loads (ELF
 * ifunc): the baseline alone ran the tanh of the fused RNN step 4 floats at a
 * time, an eighth of the classic step at hidden 512. The same operations in
 * every clone, so results do not depend on the CPU: no implicit FMA
 * contraction (-ffp-contract=off), and the polynomials' fused multiply-adds
 * written as fmaf, exactly rounded everywhere (tanh and exp compared over all
 * 2^32 floats, v4 against baseline). In the v3 and v4 clones fmaf is one
 * instruction, and tanh ran 1.35-1.6x faster than with separate multiplies
 * and adds. Where the baseline code runs, fmaf is a libm call and the loop is
 * scalar: tanh took 185 µs per 32 x 256 floats against 27 before. That is
 * x86-64 CPUs without AVX2 and FMA (and VMs that hide them), builds without
 * ifunc clones (not ELF, or BT_NO_VECTOR_CLONES: sanitizer builds, meson.build).
 * Same bits on every CPU was chosen over speed there. */
#if defined(__x86_64__) && defined(__ELF__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(BT_NO_VECTOR_CLONES)
#define BT_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BT_VECTOR_CLONES
#endif

#endif
