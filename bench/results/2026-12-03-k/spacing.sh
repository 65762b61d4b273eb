#!/bin/bash
cd "$(dirname "$0")/../../.."
export BPTT_PLUGIN_PATH=build-dnnl/plugins OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX
B=build-dnnl/bench/bench
for round in 1 2; do
  for C in 24 32 40 47 64; do
    echo "T=2240 C=$C round $round $(date +%T)"
    $B ckptpair --hidden 256 --batch 32 --steps-per-seq 2240 --checkpoint-every $C --warmup 1 --steps 16 2>/dev/null
  done
done
for round in 1 2; do
  for C in 150 200 267 317; do
    echo "T=100000 C=$C round $round $(date +%T)"
    $B ckptpair --hidden 256 --batch 32 --steps-per-seq 100000 --checkpoint-every $C --warmup 1 --steps 4 2>/dev/null
  done
done
