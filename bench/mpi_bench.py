#!/usr/bin/env python3
"""bench/mpi_bench.py: data-parallel `bptt train` against one process (issue 14).

Layouts, at each hidden size (batch 64, 35 steps, full BPTT, SGD lr 1, clip 1, the
first --max-tokens characters of data/timemachine.txt, no validation):
  1p x 1t   one process, one BLAS thread
  1p x 2t   one process, two BLAS threads
  2p x 1t   mpirun -np 2, one BLAS thread each (32 rows of each minibatch per process)
  2 x solo  control: two independent one-process, one-thread runs at once (no MPI); the
            sum of their tokens/s is what the machine gives two processes at that moment,
            the ceiling for 2p x 1t (on a quiet 2-core machine, twice 1p x 1t)
Each run trains --epochs epochs and reports the last epoch's tokens/s (training only:
from the --metrics file) and, for 2 processes, the time spent inside MPI_Allreduce per
update and its share of the training time (the program's `all-reduce:` line; the time
includes waiting for the slower process). Layouts alternate within each repeat so that
all see the same load on a shared machine; the table gives the median and best of the
repeats. Scaling efficiency of 2 processes = tokens/s(2p x 1t) / (2 x tokens/s(1p x 1t));
against the control it is tokens/s(2p x 1t) / tokens/s(2 x solo).
The floor column is bench/allreduce (built with MPI): the same all-reduce of P values on
2 processes that enter it together, i.e. the transfer without the waiting.

OpenBLAS's kernel: --coretype NAME sets OPENBLAS_CORETYPE for every process (mpirun's
children inherit it); without it each bptt picks one itself (bptt --version says which).
Usage:
  python3 bench/mpi_bench.py [--build build] [--hidden 256,512] [--repeats 3] [--epochs 2]
                             [--max-tokens 60000] [--coretype SkylakeX] [--quick]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# (name, processes, threads each, independent runs instead of one MPI job)
LAYOUTS = [("1p x 1t", 1, 1, False), ("1p x 2t", 1, 2, False), ("2p x 1t", 2, 1, False),
           ("2 x solo", 2, 1, True)]
ALLREDUCE = re.compile(r"all-reduce: (\d+) updates, ([0-9.]+) ms each \(([0-9.]+)% of the ([0-9.]+) s")


def train_cmd(args, hidden, threads, metrics):
    return [args.bptt, "train", "--data", args.data, "--max-tokens", str(args.max_tokens),
            "--hidden", str(hidden), "--batch", "64", "--steps", "35", "--truncation", "full",
            "--optimizer", "sgd:lr=1", "--clip", "1", "--val-fraction", "0",
            "--epochs", str(args.epochs), "--threads", str(threads), "--metrics", metrics,
            "--quiet"]


def last_tps(metrics):
    with open(metrics) as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    return float(rows[-1][3])


def run_one(args, hidden, procs, threads, alone, tmp):
    """(tokens/s of the last epoch, all-reduce ms per update or None, share % or None,
    parameter count)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    if args.coretype:
        env["OPENBLAS_CORETYPE"] = args.coretype
    metrics = [os.path.join(tmp, f"m-{hidden}-{procs}-{threads}-{i}.csv")
               for i in range(procs if alone else 1)]
    cmds = [train_cmd(args, hidden, threads, m) for m in metrics]
    if procs > 1 and not alone:
        cmds[0] = ["mpirun", "-q", "-np", str(procs), "--bind-to", "none"] + \
                  (["--allow-run-as-root"] if os.geteuid() == 0 else []) + cmds[0]
    runs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for c in cmds]
    outs = [r.communicate() for r in runs]
    for c, r, (so, se) in zip(cmds, runs, outs):
        if r.returncode != 0:
            sys.exit(f"failed ({r.returncode}): {' '.join(c)}\n{so[-1500:]}{se[-1500:]}")
    tps = sum(last_tps(m) for m in metrics)
    m = ALLREDUCE.search(outs[0][0])
    p = re.search(r"\((\d+) parameters\)", outs[0][0])
    return (tps, (float(m.group(2)) if m else None), (float(m.group(3)) if m else None),
            int(p.group(1)) if p else 0)


def allreduce_floor(args, P):
    """Median ms of MPI_Allreduce of P values on 2 processes entering together, or None."""
    exe = os.path.join(args.build, "bench", "allreduce")
    if not os.path.exists(exe):
        return None
    cmd = ["mpirun", "-q", "-np", "2", "--bind-to", "none"] + \
          (["--allow-run-as-root"] if os.geteuid() == 0 else []) + [exe, str(P), "200"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"median ([0-9.]+) ms", out.stdout)
    return float(m.group(1)) if m else None


def fmt(values, best):
    if not values:
        return "-"
    return f"{statistics.median(values):.4g} / {best(values):.4g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "timemachine.txt"))
    ap.add_argument("--hidden", default="256,512")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=60000)
    ap.add_argument("--coretype", default=os.environ.get("OPENBLAS_CORETYPE"))
    ap.add_argument("--quick", action="store_true", help="one repeat, 1 epoch, 12000 tokens")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.epochs, args.max_tokens = 1, 1, 12000
    args.bptt = os.path.join(args.build, "tools", "bptt")
    version = subprocess.run([args.bptt, "--version"], capture_output=True, text=True,
                             env=dict(os.environ, **({"OPENBLAS_CORETYPE": args.coretype}
                                                     if args.coretype else {}))).stdout
    print(version.strip())
    hiddens = [int(h) for h in args.hidden.split(",")]
    res = {(h, name): {"tps": [], "ms": [], "share": []} for h in hiddens for name, *_ in LAYOUTS}
    n_params = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for h in hiddens:
                for name, procs, threads, alone in LAYOUTS:
                    tps, ms, share, n_params[h] = run_one(args, h, procs, threads, alone, tmp)
                    r = res[(h, name)]
                    r["tps"].append(tps)
                    if ms is not None:
                        r["ms"].append(ms)
                        r["share"].append(share)
                    print(f"  repeat {rep + 1}: hidden {h} {name}: {tps:.0f} tok/s"
                          + (f", all-reduce {ms:.3f} ms/update ({share:.1f}%)" if ms else ""),
                          flush=True)
    print(f"\nbatch 64 x 35 steps, full BPTT, {args.epochs} epoch(s) of {args.max_tokens} chars, "
          f"{args.repeats} repeat(s): median / best")
    floors = {h: allreduce_floor(args, n_params[h]) for h in hiddens}
    print(f"{'hidden':>6} {'params':>8} {'KB/update':>9}  {'layout':8} {'tokens/s':>17} "
          f"{'all-reduce ms':>15} {'share %':>13} {'floor ms':>8} {'vs 1p x 1t':>10}")
    for h in hiddens:
        P = n_params[h]
        real = 8 if "double" in version else 4
        base = statistics.median(res[(h, "1p x 1t")]["tps"])
        for name, procs, _, alone in LAYOUTS:
            r = res[(h, name)]
            speed = statistics.median(r["tps"]) / base
            floor = f"{floors[h]:.3f}" if procs > 1 and not alone and floors[h] is not None else "-"
            print(f"{h:>6} {P:>8} {P * real / 1024:>9.0f}  {name:8} {fmt(r['tps'], max):>17} "
                  f"{fmt(r['ms'], min):>15} {fmt(r['share'], min):>13} {floor:>8} {speed:>9.2f}x")
        two = statistics.median(res[(h, "2p x 1t")]["tps"])
        ceiling = statistics.median(res[(h, "2 x solo")]["tps"])
        print(f"{'':>6} scaling efficiency of 2 processes over 1 (medians): {100 * two / (2 * base):.0f}%;"
              f" against two solo runs at once: {100 * two / ceiling:.0f}%")


if __name__ == "__main__":
    main()
