#!/usr/bin/env python3
"""mpi_compare.py ACTUAL EXPECTED [--rtol R | --bitwise] [--skip NAME]...: two
bptt checkpoints, tensor by tensor (tests/test_mpi.sh).

The two files must hold the same tensors with the same shapes and dtypes, and
the same metadata (every key and value: settings, progress, vocabulary; not
the checksums, which cover the history's timings). With
--rtol, the relative difference of a tensor, max|a - e| / max|e| (an exactly
zero tensor must stay zero), must be at most R; with --bitwise the bytes must
be equal. The history is compared column by column, without the columns that
measure the machine (tokens/s, seconds, elapsed seconds, peak arena bytes): its
training and validation losses, gradient norms and update counts must agree
like any tensor. --skip leaves a tensor out. Prints the worst relative
difference and the tensor it is in; exit 0 when all agree, 1 when one does
not, 2 when a file cannot be read."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from safetensors_np import st_read  # noqa: E402

# io/checkpoint.c's history columns: epoch, train_loss, val_loss, tokens_per_s,
# grad_norm_mean, grad_norm_max, updates, skipped, seconds, elapsed, peak_arena.
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "tokens_per_s", "grad_norm_mean",
                   "grad_norm_max", "updates", "skipped", "seconds", "elapsed", "peak_arena"]
MACHINE_COLUMNS = {"tokens_per_s", "seconds", "elapsed", "peak_arena"}


def split_history(tensors):
    """The history tensor replaced by one tensor per column that does not
    depend on the machine ("history.val_loss", ...)."""
    h = tensors.pop("history", None)
    if h is None:
        return
    if h.ndim != 2 or h.shape[1] != len(HISTORY_COLUMNS):
        tensors["history"] = h  # another layout: compared whole
        return
    for i, name in enumerate(HISTORY_COLUMNS):
        if name not in MACHINE_COLUMNS:
            tensors["history." + name] = np.ascontiguousarray(h[:, i])


def main(argv):
    files, rtol, bitwise, skip, i = [], None, False, set(), 0
    while i < len(argv):
        if argv[i] == "--rtol":
            rtol, i = float(argv[i + 1]), i + 2
        elif argv[i] == "--bitwise":
            bitwise, i = True, i + 1
        elif argv[i] == "--skip":
            skip.add(argv[i + 1])
            i += 2
        else:
            files.append(argv[i])
            i += 1
    if len(files) != 2 or (rtol is None) == (not bitwise):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    try:
        act, act_meta = st_read(files[0])
        exp, exp_meta = st_read(files[1])
    except (OSError, ValueError) as e:
        print(f"mpi_compare: {e}", file=sys.stderr)
        return 2
    split_history(act)
    split_history(exp)
    worst, where, bad = 0.0, "", []
    for key in sorted(set(act_meta) | set(exp_meta)):
        # The checksums are of the bytes, timings in the history included.
        if key.startswith("checksum_"):
            continue
        if act_meta.get(key) != exp_meta.get(key):
            bad.append(f"metadata '{key}': {act_meta.get(key)!r} vs {exp_meta.get(key)!r}")
    for name, e in exp.items():
        if name in skip:
            continue
        a = act.get(name)
        if a is None or a.shape != e.shape or a.dtype != e.dtype:
            bad.append(f"{name}: missing or of another shape/dtype")
            continue
        if bitwise:
            if a.tobytes() != e.tobytes():
                n = int(np.sum(a != e))
                bad.append(f"{name}: {n} of {e.size} values differ in their bits")
            continue
        scale = float(np.max(np.abs(e.astype(np.float64)))) if e.size else 0.0
        diff = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if e.size else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        if rel > worst:
            worst, where = rel, name
        if not rel <= rtol:
            bad.append(f"{name}: relative difference {rel:.3g} > {rtol:g}")
    extra = sorted(set(act) - set(exp) - skip)
    if extra:
        bad.append(f"only in {files[0]}: {', '.join(extra)}")
    if bitwise:
        print(f"bitwise: {'equal' if not bad else 'DIFFERENT'} ({len(exp) - len(skip & set(exp))} tensors)")
    else:
        print(f"largest relative difference {worst:.3g}{' in ' + where if where else ''} "
              f"(limit {rtol:g})")
    for b in bad:
        print("FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
