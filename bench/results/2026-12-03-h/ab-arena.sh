#!/bin/bash
# A/B: old (20c3a9c) vs new build, alternating, classic step 1 thread H=1024 and 256, threadpair H=512
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX
D=/work/main/data/timemachine.txt
[ -f $D ] || D=$(ls /work/main/data/*.txt | head -1)
for r in 1 2 3 4 5 6; do
  for side in $( ((r % 2)) && echo "old new" || echo "new old"); do
    root=/work/$([ $side = old ] && echo old || echo main)
    for H in 1024 256; do
      BPTT_PLUGIN_PATH=$root/build-dnnl/plugins $root/build-dnnl/bench/bench step --hidden $H --warmup 10 --steps 30 --data $D --threads 1 2>/dev/null \
        | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print('$r $side H=$H', round(d['tokens_per_cpu_s']))"
    done
  done
done
for r in 1 2; do
  for side in $( ((r % 2)) && echo "old new" || echo "new old"); do
    root=/work/$([ $side = old ] && echo old || echo main)
    BPTT_PLUGIN_PATH=$root/build-dnnl/plugins $root/build-dnnl/bench/bench threadpair --hidden 512 --threads 2 --warmup 2 --steps 12 --data $D 2>/dev/null \
      | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print('$r $side threadpair512', {k:v for k,v in d.items() if 'speed' in k or 'ratio' in k})"
  done
done
