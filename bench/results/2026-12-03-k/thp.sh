#!/bin/bash
cd "$(dirname "$0")/../../.."
export BPTT_PLUGIN_PATH=build-dnnl/plugins OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX
B=build-dnnl/bench/bench
for round in 1 2; do
  for thp in 0 1; do
    echo "thp=$thp round $round $(date +%T)"
    if [ $thp = 1 ]; then export GLIBC_TUNABLES=glibc.malloc.hugetlb=1; else unset GLIBC_TUNABLES; fi
    $B ckptpair --hidden 256 --batch 32 --steps-per-seq 100000 --warmup 1 --steps 4 2>&1 | grep -v "^bench: T" 
    grep AnonHuge /proc/meminfo
  done
done
