#!/usr/bin/env python3
"""bench/run.py: bptt against this machine's GEMM roofline, oneDNN's RNN primitive and PyTorch,
in one run, alternating.

Workloads (step and fullbptt read data/timemachine.txt as d2l's letters tokens, vocabulary 28):
  step        classic char-RNN training step (vocab 28, batch 32, 35 steps, SGD, clip 1,
              state carried and detached), hidden 64/256/512/1024, 1 thread (and 2 with --threads 1,2).
              Per hidden size and pass, four processes in rotating order: bptt (build/bench/bench),
              the roofline (build/bench/roofline: every GEMM shape of the step timed through bptt's
              own bt_gemm, and the tokens/s the step would reach if its products were all it did),
              oneDNN's vanilla RNN primitive on the same step (build/bench/dnnl_rnn, --input narrow:
              bptt's FLOPs minus the embedding lookup), and PyTorch's nn.RNN. With more than one
              thread, the scaling is measured again paired: 1 and N threads alternate in one
              process (bench threadpair), median of the rounds' ratios.
  fullbptt    one sequence of T = 35..2240 steps, hidden 256, batch 32: time per token and memory vs T
  checkpoint  bptt's exact checkpointed full BPTT (O(sqrt T) memory) against plain, up to T = 100,000:
              both in one process (bench ckptpair), alternating; plain at T = 100,000 needs about
              4.5 GB: where that much memory is not free, it is skipped with a line saying so, and
              the checkpointed run is timed alone

Rates: at one thread the tables print tokens per CPU second of the measured process (the median of
per-step CPU times; the roofline's per-batch CPU times), which do not count time spent waiting for a
core when the machine is shared; wall-clock medians are printed beside them. At two threads CPU time
sums both threads, so those rows are wall-clock (median, and the fastest step: what an idle machine
gives). Every child runs with the same OPENBLAS_CORETYPE (the kernel `bptt --version` chooses for
this CPU unless the environment names one: Debian's OpenBLAS 0.3.21 falls back to SSE3 kernels on
CPUs it does not know), OPENBLAS_NUM_THREADS and OMP_NUM_THREADS, printed at the top. Every
one-thread process, of every side, runs on one CPU (--cpu auto: the one where bench/roofline's W_hh
product runs fastest, measured at the start; --cpu N; --cpu none leaves it to the scheduler): the two
virtual CPUs of a KVM guest have differed by 7-23%, at times for every side, at times for bptt's
step alone, and a run whose processes landed on either mixed the two speeds into its ratios. The
probe is neutral, not infallible: when only bptt's step differs, it may pick the slower CPU.

The PyTorch side is the repository's own reference, bench/torch_ref.py, run by the first of this
Python and /usr/bin/python3 that can import torch (--python PATH picks one). Without PyTorch, or
without oneDNN (build/bench/dnnl_rnn is built when libdnnl-dev is installed), one line says so and
the rest runs. The machine may be shared: compare the ratios of one run. Usage:
  python3 bench/run.py [--build build] [--quick] [--threads 1,2] [--passes 2] [--hidden 64,256,512,1024]
                       [--only step,fullbptt,checkpoint] [--python PATH] [--data FILE] [--dnnl-off]
                       [--cpu auto|N|none]
(--dnnl-off, with a -Dblas=dnnl build: bptt also runs with BPTT_DNNL=off, every product on OpenBLAS,
as a fifth side of each pass: the backend's gain in the same run.)
"""
import argparse, json, math, os, re, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORCH_REF = os.path.join(HERE, 'torch_ref.py')
BASE_ENV = dict(os.environ)


def run_json(cmd, env, want=None, progress=False, cpus=None):
    """The last JSON line of cmd's output (the last one with every key in `want`), or None.
    progress: cmd's stderr goes to ours as it comes (long runs say how far they are).
    cpus: the set of CPUs cmd may run on (None: any)."""
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE,
                         text=True, preexec_fn=pin)
    if out.returncode != 0:
        sys.stderr.write(f"failed: {' '.join(cmd)}\n{(out.stderr or '')[-2000:]}\n")
        return None
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith('{')]
    if want:
        lines = [x for x in lines if all(x.get(k) == v for k, v in want.items())]
    return lines[-1] if lines else None


def find_torch(python):
    """(interpreter, torch version) for the PyTorch side, or (None, the interpreters tried)."""
    tried = [python] if python else list(dict.fromkeys([sys.executable, '/usr/bin/python3']))
    for py in tried:
        try:
            r = subprocess.run([py, '-c', 'import torch; print(torch.__version__)'],
                               capture_output=True, text=True)
        except OSError:
            continue
        if r.returncode == 0:
            return py, r.stdout.strip()
    return None, ' or '.join(tried)


def choose_kernel(build):
    """(OPENBLAS_CORETYPE for every child, where it came from)."""
    if BASE_ENV.get('OPENBLAS_CORETYPE'):
        return BASE_ENV['OPENBLAS_CORETYPE'], 'from the environment'
    bptt = os.path.join(build, 'tools', 'bptt')
    try:
        r = subprocess.run([bptt, '--version'], capture_output=True, text=True)
        m = re.search(r'kernel (\S+) \((.*)\), \d+ thread', r.stdout)
    except OSError:
        m = None
    if not m:
        return None, f'not set ({bptt} --version names no OpenBLAS kernel: portable build?)'
    return m.group(1), f'as `bptt --version` chose it: {m.group(2)}'


def env_threads(n, coretype, build):
    env = dict(BASE_ENV)
    env['OPENBLAS_NUM_THREADS'] = str(n)
    env['OMP_NUM_THREADS'] = str(n)
    if coretype:
        env['OPENBLAS_CORETYPE'] = coretype
    env.setdefault('BPTT_PLUGIN_PATH', os.path.join(build, 'plugins'))
    return env


def fmt(x, nd=1):
    return '-' if x is None else f'{x:,.{nd}f}'


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a and b else None


def step_runners(a, H, th, steps, warm, torch_py):
    """name -> command for one measurement of the step at hidden H, th threads."""
    b = a.build
    bptt = [os.path.join(b, 'bench', 'bench'), 'step', '--hidden', str(H), '--warmup', str(warm),
            '--steps', str(steps), '--data', a.data, '--threads', str(th)]
    r = {'bptt': bptt,
         'roofline': [os.path.join(b, 'bench', 'roofline'), '--hidden', str(H), '--threads', str(th),
                      '--reps', '5' if a.quick else '7']}
    dnnl = os.path.join(b, 'bench', 'dnnl_rnn')
    if os.path.exists(dnnl):
        r['onednn'] = [dnnl, 'step', '--hidden', str(H), '--input', 'narrow', '--threads', str(th),
                       '--warmup', str(warm), '--steps', str(steps)]
    if a.dnnl_off:  # the same build with every product on OpenBLAS (framework/packed.c)
        r['bptt-openblas'] = ['env', 'BPTT_DNNL=off'] + bptt
    if torch_py:
        r['torch'] = [torch_py, TORCH_REF, 'step', '--variant', 'nnrnn', '--data', a.data, '--hidden', str(H),
                      '--threads', str(th), '--warmup', str(warm), '--steps', str(steps)]
    return r


WANT = {'roofline': {'kind': 'ceiling'}}


def measure_step(a, H, th, steps, warm, torch_py, coretype):
    """Every side's JSON results at hidden H over the passes, the order rotating per pass."""
    runners = step_runners(a, H, th, steps, warm, torch_py)
    names = list(runners)
    got = {n: [] for n in names}
    for p in range(a.passes):
        for n in names[p % len(names):] + names[:p % len(names)]:
            r = run_json(runners[n], env_threads(th, coretype, a.build), WANT.get(n),
                         cpus=a.pin if th == 1 else None)
            if r:
                got[n].append(r)
    return got


def rates(results, key_cpu, key_wall, cpu):
    """(median, min, max) over passes of the CPU-time rate (cpu) or the wall-clock one."""
    xs = [r.get(key_cpu if cpu else key_wall) for r in results]
    xs = [x for x in xs if x]
    return (statistics.median(xs), min(xs), max(xs)) if xs else (None, None, None)


def mark(x, target):
    """A target beside its figure, and whether the figure meets it (the figure unrounded)."""
    if target is None:
        return ''
    return f">={target:g}" + ('' if x is None else ' ok' if x >= target else ' MISS')


def print_step_row(H, th, got, cpu, targets):
    b = rates(got['bptt'], 'tokens_per_cpu_s', 'tokens_per_s', cpu)
    c = rates(got['roofline'], 'ceiling_cpu_tokens_per_s', 'ceiling_tokens_per_s', cpu)
    cb = rates(got['roofline'], 'ceiling_openblas_cpu_tokens_per_s', 'ceiling_openblas_tokens_per_s', cpu)
    off = rates(got.get('bptt-openblas', []), 'tokens_per_cpu_s', 'tokens_per_s', cpu)
    o = rates(got.get('onednn', []), 'tokens_per_cpu_s', 'tokens_per_s', cpu)
    t = rates(got.get('torch', []), 'tokens_per_cpu_s', 'tokens_per_s', cpu)
    bw = med([r['tokens_per_s'] for r in got['bptt']])
    rss = max((r['peak_rss_mb'] for r in got['bptt']), default=None)
    ft, ot = targets.get(H, (None, None)) if th == 1 else (None, None)
    print(f"{H:>6} | {fmt(b[0], 0):>9} ({fmt(b[1], 0)}-{fmt(b[2], 0)}) | {fmt(c[0], 0):>9} | "
          f"{fmt(ratio(b[0], c[0]), 3):>5} {mark(ratio(b[0], c[0]), ft):>10} | "
          f"{fmt(ratio(b[0], cb[0]), 3):>6} | "
          f"{fmt(o[0], 0):>9} | {fmt(ratio(b[0], o[0]), 3):>5} {mark(ratio(b[0], o[0]), ot):>9} | "
          f"{fmt(t[0], 0):>9} | {fmt(ratio(b[0], t[0]), 2):>5} | {fmt(bw, 0):>10} | {fmt(rss):>7}"
          + (f" | {fmt(off[0], 0):>9} {fmt(ratio(b[0], off[0]), 2):>5}" if off[0] else ''))
    return b[0]


def print_blas(got, coretype):
    """The kernels each side ran on, from their own reports."""
    seen = set()
    for n, rs in got.items():
        for r in rs:
            if n == 'bptt':
                rows = r.get('row_threads', 1)
                seen.add(f"bptt: {r.get('blas')} {r.get('kernel')}, {r.get('threads')} BLAS thread(s)"
                         + (f", rows split over {rows} threads (--threads {rows})" if rows > 1 else ''))
            elif n == 'roofline':
                seen.add(f"roofline: {r.get('libraries')}, OpenBLAS kernel {r.get('corename')}")
            elif n == 'bptt-openblas':
                seen.add(f"bptt with BPTT_DNNL=off: {r.get('blas')} {r.get('kernel')}")
            elif n == 'onednn':
                seen.add(f"oneDNN {r.get('dnnl_version')}: isa {r.get('isa')}, rnn {r.get('rnn_fwd_impl')}"
                         f"/{r.get('rnn_bwd_impl')}, matmul {r.get('matmul_impl')}, {r.get('threads')} thread(s)")
            elif n == 'torch':
                seen.add(f"torch {r.get('torch')}: {r.get('torch_threads')} thread(s), "
                         f"OPENBLAS_CORETYPE={r.get('env', {}).get('OPENBLAS_CORETYPE')}")
    for s in sorted(seen):
        print(f'  {s}')


def section_step(a, torch_py, coretype, steps, warm):
    # (fraction of the roofline, ratio to oneDNN) the issue asks for at one thread
    targets = {256: (0.70, 1.0), 512: (0.85, 1.0), 1024: (0.85, 1.0)}
    by_thread = {}
    for th in [int(x) for x in a.threads.split(',')]:
        cpu = th == 1
        kind = ('tokens per CPU second (median over passes of each run\'s median step; '
                'min-max over passes)' if cpu else
                'wall-clock tokens/s (CPU time counts both threads at 2)')
        print(f'\n## training step, {th} thread(s): {kind}; {a.passes} passes of {steps} steps after {warm} warm-up')
        print(f"{'hidden':>6} | {'bptt':>9} {'(min-max)':>17} | {'roofline':>9} | {'frac':>5} {'target':>10} | "
              f"{'frac_o':>6} | {'oneDNN':>9} | {'vs':>5} {'target':>9} | {'torch':>9} | {'vs':>5} | "
              f"{'bptt wall':>10} | {'RSS MB':>7}" + (f" | {'BPTT_DNNL=off':>13} {'vs':>5}" if a.dnnl_off else ''))
        all_got = {}
        for H in a.hidden:
            got = measure_step(a, H, th, steps, warm, torch_py, coretype)
            by_thread.setdefault(th, {})[H] = got
            print_step_row(H, th, got, cpu, targets)
            for n, rs in got.items():
                all_got.setdefault(n, []).extend(rs)
        print('  roofline: the faster of OpenBLAS and oneDNN per GEMM shape (bench/roofline.c); frac = bptt / roofline;')
        print('  frac_o = bptt / the OpenBLAS-only roofline; vs = bptt / that side. Kernels and threads as reported:')
        print_blas(all_got, coretype)
    if 1 in by_thread and len(by_thread) > 1:
        print('\n## thread scaling of bptt (wall clock): N threads / 1 thread, median step and fastest step')
        for th in sorted(by_thread):
            if th == 1:
                continue
            for H in a.hidden:
                one, many = by_thread[1][H]['bptt'], by_thread[th][H]['bptt']
                m1, mn = med([r['tokens_per_s'] for r in one]), med([r['tokens_per_s'] for r in many])
                b1 = max((r['tokens_per_s_max'] for r in one), default=None)
                bn = max((r['tokens_per_s_max'] for r in many), default=None)
                tgt = mark(ratio(mn, m1), 1.7) if H >= 512 else ''
                print(f'  hidden {H:>5}: {th} threads {fmt(ratio(mn, m1), 2)}x (median), '
                      f'{fmt(ratio(bn, b1), 2)}x (fastest step) {tgt}')
            thread_pairs(a, coretype, th)


def thread_pairs(a, coretype, th):
    """The scaling again, paired: one thread and th alternate in one process
    (bench threadpair), so both see the same machine; median of the rounds."""
    env = env_threads(1, coretype, a.build)  # the lanes ask for their threads; one must mean one
    bench = os.path.join(a.build, 'bench', 'bench')
    rounds = 2 * ((max(a.passes, 12) + 1) // 2)
    print(f'\n## thread scaling, paired (bench threadpair): 1 and {th} threads alternate in one process, '
          f'{rounds} rounds of >= 0.25 s each after 2 warm-up rounds;')
    print('   speedup: median of the rounds\' wall-clock ratios (min-max); cpu/wall: the threads\' use of their cores')
    for H in a.hidden:
        r = run_json([bench, 'threadpair', '--hidden', str(H), '--threads', str(th), '--warmup', '2',
                      '--steps', str(rounds), '--data', a.data], env, progress=True)
        if not r:
            continue
        tgt = mark(r['speedup'], 1.7) if H >= 512 else ''
        print(f"  hidden {H:>5}: {th} threads {fmt(r['speedup'], 3)}x "
              f"({fmt(r['speedup_min'], 2)}-{fmt(r['speedup_max'], 2)}) {tgt:>10}   "
              f"1 thread {fmt(r['one_tokens_per_s'], 0)} tok/s, {th} threads {fmt(r['many_tokens_per_s'], 0)} tok/s, "
              f"cpu/wall {fmt(r['many_cpu_per_wall'], 2)}")


def section_fullbptt(a, torch_py, coretype, steps):
    Ts = (35, 140, 560) if a.quick else (35, 140, 560, 2240)
    env = env_threads(1, coretype, a.build)
    bench = os.path.join(a.build, 'bench', 'bench')
    print('\n## full BPTT over one sequence, hidden 256, batch 32, 1 thread (wall clock)')
    print(f"{'T':>6} | {'bptt us/tok':>11} {'KB/step':>8} {'RSS growth MB':>13} | {'torch us/tok':>12} {'RSS growth MB':>13} | {'speed ratio':>11}")
    for T in Ts:
        n = max(3, min(steps, 20000 // T))
        r = run_json([bench, 'fullbptt', '--hidden', '256', '--steps-per-seq', str(T), '--warmup', '1',
                      '--steps', str(n), '--data', a.data], env, cpus=a.pin)
        t = None
        if torch_py:
            t = run_json([torch_py, TORCH_REF, 'fullbptt', '--variant', 'loop', '--data', a.data,
                          '--hidden', '256', '--threads', '1', '--num-steps', str(T), '--warmup', '1',
                          '--steps', str(n)], env, cpus=a.pin)
        tg = (t['peak_rss_mb'] - t['rss_before_train_mb']) if t else None
        print(f"{T:>6} | {fmt(r and r['us_per_token'], 2):>11} {fmt(r and r['arena_kb_per_step']):>8} "
              f"{fmt(r and r['rss_growth_mb']):>13} | {fmt(t and t['us_per_token'], 2):>12} {fmt(tg):>13} | "
              f"{fmt(t['us_per_token'] / r['us_per_token'] if r and t else None, 2):>11}")


def mem_available_mb():
    """Free memory: MemAvailable, or less under a cgroup (container) limit."""
    avail = None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    avail = int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        with open('/sys/fs/cgroup/memory.max') as f:
            limit = f.read().strip()
        with open('/sys/fs/cgroup/memory.current') as f:
            used = int(f.read())
        if limit != 'max':
            room = (int(limit) - used) / 2**20
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def product_us(a, env, H=256, B=32, cpus=None):
    """Microseconds of one forward W_hh product [B,H] x [H,H] on its own (bench/roofline, the
    faster of OpenBLAS and oneDNN, its best repetition): what recomputing a step costs at the
    least. Its best, not its median: taken in a slow minute, plain+prod would lie above the ratios."""
    r = run_json([os.path.join(a.build, 'bench', 'roofline'), '--hidden', str(H), '--batch', str(B)],
                 env, want={'kind': 'shape', 'name': 'fwd h*W_hh'}, cpus=cpus or a.pin)
    rate = r and max(r.get('gflops_best') or 0, r.get('gflops_onednn_best') or 0)
    return 2.0 * B * H * H / (rate * 1e3) if rate else None


def cpu_choice(text):
    """--cpu's value: auto, none or a CPU number."""
    if text in ('auto', 'none') or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f'{text!r}: auto, none or a CPU number')


def choose_cpu(a, coretype):
    """The CPU every one-thread process runs on (a set of one), or None (--cpu none, or only one
    CPU to run on). With --cpu auto, the one where the W_hh product runs fastest, two rounds
    alternating, each CPU's best: a probe no side owns. Virtual CPUs can differ (2026-12-03, a
    2-vCPU KVM guest: 7-23%, at times for every side, at times for bptt's step alone), and a
    process the scheduler put on the slower one made the ratios of a run swing with its
    placement (bench/results/2026-12-03-m/cpu-placement.txt)."""
    allowed = sorted(os.sched_getaffinity(0))
    if a.cpu == 'none' or len(allowed) < 2:
        return None
    if a.cpu != 'auto':
        c = int(a.cpu)
        if c not in allowed:
            sys.exit(f'--cpu {c}: not among the CPUs this process may use ({allowed})')
        print(f'one-thread processes pinned to CPU {c} (--cpu)')
        return {c}
    env = env_threads(1, coretype, a.build)
    best = {}
    for _ in range(2):
        for c in allowed:
            us = product_us(a, env, cpus={c})
            if us:
                best[c] = min(best.get(c, us), us)
    if not best:
        return None
    c = min(best, key=best.get)
    rates = ', '.join(f'CPU {k} {2 * 32 * 256 * 256 / v / 1e3:.0f}' for k, v in sorted(best.items()))
    print(f'W_hh product [32,256] x [256,256] per CPU, best of two: {rates} GFLOP/s; '
          f'every one-thread process (all sides) runs on CPU {c}')
    return {c}


def section_checkpoint(a, coretype):
    Ts = (2240, 10000) if a.quick else (2240, 10000, 100000)
    env = env_threads(1, coretype, a.build)
    bench = os.path.join(a.build, 'bench', 'bench')
    mm_us = product_us(a, env)
    print('\n## exact full BPTT, plain vs checkpointed (sqrt T), hidden 256, batch 32, 1 thread')
    print('   plain and checkpointed alternate in one process (bench ckptpair), after a warm-up pair;')
    print('   us/token: median CPU time; time ratio: median of the pairs\' ratios (min-max), CPU and wall')
    print('   ckpt MB: its arena (one stretch\'s graph) + its checkpoints (ceil(T / C) + 2 states, C = ceil(sqrt T))')
    print('   plain+prod: the ratio if recomputing a step cost only its W_hh product, [32,256] x [256,256]'
          ' (bench/roofline\'s best,')
    print('          before the table and after each row, the least so far): 1 + C (ceil(T / C) - 1)'
          ' products / plain\'s time')
    print('   untaped: the checkpointed run\'s forward pass without a tape, the work plain does not do'
          ' (us per step, median);')
    print('          plain+pass: median over pairs of 1 + that pass\'s time / plain\'s time (wall): the'
          ' ratio were the rest as fast as plain')
    print('          (the rest can be faster than plain, probably while a stretch\'s graph stays in cache)')
    print(f"{'T':>7} | {'plain us/tok':>12} {'plain arena MB':>14} | {'ckpt us/tok':>11} {'ckpt MB':>13} | "
          f"{'memory ratio':>12} {'time ratio':>10} {'(min-max)':>11} {'(wall)':>6} {'plain+prod':>10} "
          f"{'untaped us/step':>15} {'plain+pass':>10}")
    per_step = None
    for T in Ts:
        # An even number of pairs: plain and checkpointed go first equally often.
        # Pairs at T <= 10,000 take seconds: 16 of them keep the median steady on
        # a noisy machine (single pairs at T = 2,240 ranged 0.97-1.42). At T = 100,000
        # a pair takes about 20 s; 4 of them ranged 1.15-1.32 (2026-12-02-d): 8.
        pairs = 2 * ((max(a.passes, 16 if T <= 10000 else 8) + 1) // 2)
        need = per_step * T * 1.3 if per_step else 0   # plain's graph, from the smaller T
        avail = mem_available_mb()
        if avail is not None and need > avail:
            r = run_json([bench, 'fullbptt', '--hidden', '256', '--steps-per-seq', str(T), '--warmup', '1',
                          '--steps', str(pairs), '--checkpoint-every', '-1'], env, cpus=a.pin)
            print(f"{T:>7} | plain skipped: it needs about {need / 1024:.1f} GB, "
                  f"{avail / 1024:.1f} GB is free | checkpointed "
                  f"{fmt(r and r['us_cpu_per_token'], 2)} us/tok, arena {fmt(r and r['window_arena_mb'], 1)} MB")
            continue
        r = run_json([bench, 'ckptpair', '--hidden', '256', '--steps-per-seq', str(T),
                      '--warmup', '1', '--steps', str(pairs)], env, progress=True, cpus=a.pin)
        again = product_us(a, env)  # the product once more, right after the pairs: the best counts
        mm_us = min(filter(None, (mm_us, again)), default=None)
        if not r:
            continue
        per_step = r['plain_arena_mb'] / T
        C = math.ceil(math.sqrt(T))  # models/unroll.c, window_spacing
        states_mb = (math.ceil(T / C) + 2) * r['batch'] * r['hidden'] * (8 if r['precision'] == 'double' else 4) / 2**20
        ck_mb = r['ckpt_arena_mb'] + states_mb
        # the forward pass that stores checkpoints runs every stretch but the last
        recomputed = C * (math.ceil(T / C) - 1)
        plain_prod = 1 + recomputed * mm_us / (r['plain_us_cpu_per_token'] * r['batch'] * T) if mm_us else None
        print(f"{T:>7} | {fmt(r['plain_us_cpu_per_token'], 2):>12} {fmt(r['plain_arena_mb']):>14} | "
              f"{fmt(r['ckpt_us_cpu_per_token'], 2):>11} {fmt(r['ckpt_arena_mb'], 1) + ' + ' + fmt(states_mb, 1):>13} | "
              f"{fmt(ratio(ck_mb, r['plain_arena_mb']), 3):>12} {fmt(r['ratio_cpu'], 2):>10} "
              f"{fmt(r['ratio_cpu_min'], 2) + '-' + fmt(r['ratio_cpu_max'], 2):>11} {fmt(r['ratio_wall'], 2):>6} "
              f"{fmt(plain_prod, 2):>10} {fmt(r.get('untaped_us_per_step'), 2):>15} {fmt(r.get('untaped_ratio_wall'), 2):>10}")
    if mm_us:
        print(f'   the W_hh product at its best: {mm_us:.1f} us ({2 * 32 * 256 * 256 / mm_us / 1e3:.0f} GFLOP/s)')
    print('   target: time ratio <= 1.25 at T = 2,240 and 100,000')
    eq = run_json([bench, 'ckptcheck', '--hidden', '256', '--steps-per-seq', '2240'], env, cpus=a.pin)
    if eq:
        print(f"gradients at T = 2240, checkpointed vs plain: largest difference {eq['max_rel_diff']:.2g} "
              f"of the largest component ({eq['precision']}; target <= 1e-6)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--threads', default='1')
    ap.add_argument('--hidden', default='64,256,512,1024')
    ap.add_argument('--only', default='step,fullbptt,checkpoint')
    ap.add_argument('--quick', action='store_true', help='fewer steps, smaller T (a smoke run)')
    ap.add_argument('--passes', type=int, default=2, help='alternating passes per workload')
    ap.add_argument('--dnnl-off', action='store_true',
                    help='with a -Dblas=dnnl build: also run bptt with BPTT_DNNL=off (every product on OpenBLAS)')
    ap.add_argument('--python', default=None,
                    help='interpreter for the PyTorch side (default: this one, else /usr/bin/python3)')
    ap.add_argument('--data', default=os.path.join(ROOT, 'data', 'timemachine.txt'),
                    help='the text both sides read (default: data/timemachine.txt)')
    ap.add_argument('--cpu', default='auto', type=cpu_choice,
                    help='where one-thread processes run: auto (the CPU with the fastest product), '
                         'a CPU number, or none (wherever the scheduler puts them)')
    a = ap.parse_args()
    a.pin = None
    a.build = os.path.abspath(a.build)
    a.hidden = [int(x) for x in a.hidden.split(',')]
    bench = os.path.join(a.build, 'bench', 'bench')
    if not os.path.exists(bench):
        sys.exit(f'{bench} not found: build first (meson setup build && meson compile -C build)')
    if not os.path.isfile(a.data):
        sys.exit(f'{a.data} not found (the repository ships data/timemachine.txt)')
    py, torch_version = find_torch(a.python)
    only = a.only.split(',')
    warm, steps = (3, 10) if a.quick else (10, 30)
    coretype, why = choose_kernel(a.build)
    print(f'bptt benchmark: every process runs with OPENBLAS_CORETYPE={coretype or "-"} ({why}), '
          f'OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = the thread count of its table')
    try:
        print(f'load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs')
    except OSError:
        pass
    print(f'PyTorch {torch_version} ({py}, bench/torch_ref.py)' if py else
          f'PyTorch: not available ({torch_version} cannot import torch: apt-get install python3-torch, '
          f'or --python PATH); running without it')
    one_thread = 'fullbptt' in only or 'checkpoint' in only or ('step' in only and 1 in
                                                                    [int(x) for x in a.threads.split(',')])
    a.pin = choose_cpu(a, coretype) if one_thread else None
    dnnl = os.path.join(a.build, 'bench', 'dnnl_rnn')
    if not os.path.exists(dnnl):
        print('oneDNN: not available (build/bench/dnnl_rnn is built when libdnnl-dev is installed)')
    elif 'step' in only:
        chk = run_json([dnnl, 'check'], env_threads(1, coretype, a.build))
        print(f"oneDNN's RNN step against a plain C reference: {'ok' if chk and chk.get('ok') else 'FAILED'}")
    if 'step' in only:
        section_step(a, py, coretype, steps, warm)
    if 'fullbptt' in only:
        section_fullbptt(a, py, coretype, steps)
    if 'checkpoint' in only:
        section_checkpoint(a, coretype)
    try:
        print(f'\nload average at end: {os.getloadavg()[0]:.1f}')
    except OSError:
        pass


if __name__ == '__main__':
    main()
