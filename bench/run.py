#!/usr/bin/env python3
"""bench/run.py: bptt against PyTorch on this machine, in one run, alternating.

Workloads (step and fullbptt read data/timemachine.txt as d2l's letters tokens, vocabulary 28):
  step        classic char-RNN training step (vocab 28, batch 32, 35 steps, SGD, clip 1,
              state carried and detached), hidden 64/256/512/1024, 1 thread (and 2 with --threads 1,2)
  fullbptt    one sequence of T = 35..2240 steps, hidden 256, batch 32: time per token and memory vs T
  checkpoint  bptt's exact checkpointed full BPTT (O(sqrt T) memory) up to T = 100,000

Each measurement runs in its own process; bptt (build/bench/bench) and PyTorch alternate so that
both see the same machine load. The PyTorch side is the repository's own reference,
bench/torch_ref.py (nn.RNN for the step, d2l's per-step loop for full BPTT; it also trains d2l's
run with `converge`), run by the first of this Python and /usr/bin/python3 that can import torch
(--python PATH picks one). Without PyTorch (apt-get install python3-torch) one line says so and
only bptt runs. The machine may be shared: compare the ratios of one run. Usage:
  python3 bench/run.py [--build build] [--quick] [--threads 1,2] [--only step,fullbptt,checkpoint]
                       [--python PATH] [--data FILE]
"""
import argparse, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORCH_REF = os.path.join(HERE, 'torch_ref.py')


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}\n")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_rates(r):
    """PyTorch's script reports step times; the token-rate range (min, max) from them."""
    if not r or 'step_ms_min' not in r:
        return None, None
    tokens_per_step = r['tokens_per_s'] * r['step_ms_median'] / 1e3
    return tokens_per_step / r['step_ms_max'] * 1e3, tokens_per_step / r['step_ms_min'] * 1e3


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


def env_threads(n):
    env = dict(os.environ)
    env['OPENBLAS_NUM_THREADS'] = str(n)
    env['OMP_NUM_THREADS'] = str(n)
    return env


def fmt(x, nd=1):
    return '-' if x is None else f'{x:,.{nd}f}'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--threads', default='1')
    ap.add_argument('--only', default='step,fullbptt,checkpoint')
    ap.add_argument('--quick', action='store_true', help='fewer steps, smaller T (a smoke run)')
    ap.add_argument('--passes', type=int, default=2, help='alternating passes per workload')
    ap.add_argument('--python', default=None,
                    help='interpreter for the PyTorch side (default: this one, else /usr/bin/python3)')
    ap.add_argument('--data', default=os.path.join(ROOT, 'data', 'timemachine.txt'),
                    help='the text both sides read (default: data/timemachine.txt)')
    a = ap.parse_args()
    bench = os.path.join(a.build, 'bench', 'bench')
    if not os.path.exists(bench):
        sys.exit(f'{bench} not found: build first (meson setup build && meson compile -C build)')
    data = a.data
    if not os.path.isfile(data):
        sys.exit(f'{data} not found (the repository ships data/timemachine.txt)')
    py, torch_version = find_torch(a.python)
    torch_ok = py is not None
    only = a.only.split(',')
    warm, steps = (3, 10) if a.quick else (10, 30)
    print(f"bptt benchmark: OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    print(f'PyTorch {torch_version} ({py}, bench/torch_ref.py)' if torch_ok else
          f'PyTorch: not available ({torch_version} cannot import torch: apt-get install python3-torch, '
          f'or --python PATH); running the bptt side only')

    if 'step' in only:
        targets = {64: 2.0, 256: 1.25, 512: 1.25, 1024: 1.1}
        for th in [int(x) for x in a.threads.split(',')]:
            print(f'\n## training step, {th} thread(s): tokens/s (median of {steps} steps after {warm} warm-up; min-max)')
            print(f"{'hidden':>6} | {'bptt tok/s':>10} {'(min-max)':>17} | {'torch nn.RNN':>12} {'(min-max)':>17} | "
                  f"{'ratio':>5} {'target':>6} | {'bptt RSS MB':>11} {'torch RSS MB':>12}")
            for H in (64, 256, 512, 1024):
                bs, ts = [], []
                for _ in range(a.passes):
                    cmd = [bench, 'step', '--hidden', str(H), '--warmup', str(warm), '--steps', str(steps),
                           '--data', data]
                    r = run_json(cmd, env_threads(th))
                    if r: bs.append(r)
                    if torch_ok:
                        r = run_json([py, TORCH_REF, 'step', '--variant', 'nnrnn', '--data', data,
                                      '--hidden', str(H), '--threads', str(th), '--warmup', str(warm),
                                      '--steps', str(steps)], env_threads(th))
                        if r: ts.append(r)
                # Median over passes of each pass's median; the range spans every step of every pass.
                bt = statistics.median([r['tokens_per_s'] for r in bs]) if bs else None
                tt = statistics.median([r['tokens_per_s'] for r in ts]) if ts else None
                blo = min(r['tokens_per_s_min'] for r in bs) if bs else None
                bhi = max(r['tokens_per_s_max'] for r in bs) if bs else None
                tr = [torch_rates(r) for r in ts]
                tlo = min(x[0] for x in tr) if tr and tr[0][0] else None
                thi = max(x[1] for x in tr) if tr and tr[0][1] else None
                b = bs[0] if bs else None
                t = max(ts, key=lambda r: r['peak_rss_mb']) if ts else None
                if bs:
                    b = max(bs, key=lambda r: r['peak_rss_mb'])
                ratio = bt / tt if bt and tt else None
                print(f"{H:>6} | {fmt(bt, 0):>10} ({fmt(blo, 0)}-{fmt(bhi, 0)}) | "
                      f"{fmt(tt, 0):>12} ({fmt(tlo, 0)}-{fmt(thi, 0)}) | "
                      f"{fmt(ratio, 2):>5} {('>=' + str(targets[H])) if th == 1 else '':>6} | "
                      f"{fmt(b and b['peak_rss_mb']):>11} {fmt(t and t['peak_rss_mb']):>12}")

    if 'fullbptt' in only:
        Ts = (35, 140, 560) if a.quick else (35, 140, 560, 2240)
        print('\n## full BPTT over one sequence, hidden 256, batch 32, 1 thread')
        print(f"{'T':>6} | {'bptt us/tok':>11} {'KB/step':>8} {'RSS growth MB':>13} | {'torch us/tok':>12} {'RSS growth MB':>13} | {'speed ratio':>11}")
        for T in Ts:
            n = max(3, min(steps, 20000 // T))
            r = run_json([bench, 'fullbptt', '--hidden', '256', '--steps-per-seq', str(T), '--warmup', '1',
                          '--steps', str(n), '--data', data], env_threads(1))
            t = None
            if torch_ok:
                t = run_json([py, TORCH_REF, 'fullbptt', '--variant', 'loop', '--data', data,
                              '--hidden', '256', '--threads', '1', '--num-steps', str(T), '--warmup', '1',
                              '--steps', str(n)], env_threads(1))
            tg = (t['peak_rss_mb'] - t['rss_before_train_mb']) if t else None
            print(f"{T:>6} | {fmt(r and r['us_per_token'], 2):>11} {fmt(r and r['arena_kb_per_step']):>8} "
                  f"{fmt(r and r['rss_growth_mb']):>13} | {fmt(t and t['us_per_token'], 2):>12} {fmt(tg):>13} | "
                  f"{fmt(t['us_per_token'] / r['us_per_token'] if r and t else None, 2):>11}")

    if 'checkpoint' in only:
        Ts = (2240, 10000) if a.quick else (2240, 10000, 100000)
        print('\n## exact full BPTT, plain vs checkpointed (sqrt T), hidden 256, batch 32, 1 thread')
        print(f"{'T':>7} | {'plain us/tok':>12} {'plain arena MB':>14} | {'ckpt us/tok':>11} {'ckpt arena MB':>13} | "
              f"{'memory ratio':>12} {'time ratio':>10}")
        per_step = plain_us = None
        for T in Ts:
            # Both sides warm up once (the first pass pays page faults for the
            # arena); T = 100,000 runs once, cold, and is compared with the
            # warm plain time per token, which is flat in T.
            warm_up, n = ('1', '2') if T <= 10000 else ('0', '1')
            plain = None
            if T <= 10000:
                plain = run_json([bench, 'fullbptt', '--hidden', '256', '--steps-per-seq', str(T), '--warmup', warm_up,
                                  '--steps', n], env_threads(1))
                if plain:
                    per_step = plain['window_arena_mb'] / T
                    plain_us = plain['us_per_token']
            ck = run_json([bench, 'fullbptt', '--hidden', '256', '--steps-per-seq', str(T), '--warmup', warm_up,
                           '--steps', n, '--checkpoint-every', '-1'], env_threads(1))
            plain_mb = plain['window_arena_mb'] if plain else (per_step * T if per_step else None)
            tag = '' if plain else ' (plain extrapolated)'
            print(f"{T:>7} | {fmt(plain and plain['us_per_token'], 2):>12} {fmt(plain_mb):>14} | "
                  f"{fmt(ck and ck['us_per_token'], 2):>11} {fmt(ck and ck['window_arena_mb'], 2):>13} | "
                  f"{fmt(ck['window_arena_mb'] / plain_mb if ck and plain_mb else None, 3):>12} "
                  f"{fmt(ck['us_per_token'] / plain_us if ck and plain_us else None, 2):>10}{tag}")
        eq = run_json([bench, 'ckptcheck', '--hidden', '256', '--steps-per-seq', '2240'], env_threads(1))
        if eq:
            print(f"gradients at T = 2240, checkpointed vs plain: largest difference {eq['max_rel_diff']:.2g} "
                  f"of the largest component ({eq['precision']}; target <= 1e-6)")


if __name__ == '__main__':
    main()
