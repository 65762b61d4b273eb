#!/bin/bash
export BPTT_PLUGIN_PATH=${PLUGINS:-build-dnnl/plugins} OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX
B=${BENCH:-build-dnnl/bench/bench}
for round in 1 2; do for C in 200 317; do
  echo "C=$C round $round $(date +%T)"
  $B ckptpair --hidden 256 --batch 32 --steps-per-seq 100000 --checkpoint-every $C --warmup 1 --steps 3 2>&1
done; done
