#!/bin/bash
export OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
for i in 1 2; do for b in /tmp/old-dnnl /work/main/build-dnnl; do
  r=$(BPTT_PLUGIN_PATH=$b/plugins $b/bench/bench ckptpair --hidden 256 --steps-per-seq $1 --warmup 1 --steps $2 2>/dev/null)
  echo "$b $(echo "$r" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['ratio_cpu'], d['ratio_cpu_min'], d['ratio_cpu_max'], d['plain_us_cpu_per_token'], d['ckpt_us_cpu_per_token'], d['ckpt_arena_mb'])")"
done; done
