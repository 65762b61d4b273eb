#!/usr/bin/python3
"""test_torch_train.py: whole `bptt train` runs against a training loop
written here in PyTorch float64, for the language model's cells.

The other torch suites check one window's gradients (`bptt grad`) and the
optimizers on given gradients; this one checks what a user runs: several
epochs of `bptt train --data`, where the minibatches, the carried state, the
loss, the clipping and the optimizer all meet. The reference is written
from the documentation (docs/commands.md "Minibatches", "Loss", "Clipping";
README "Truncation, exactly"; the fixed policy's description in
docs/cells.md) and d2l's sequential partitioning, with the cells' equations
from reference.py and torch.optim doing the steps:
  - each epoch skips an offset o in [0, T], cuts B rows from the text and
    walks them T steps at a time; the state starts at zero each epoch and is
    carried across minibatches in value (detached);
  - each step's loss is the mean cross-entropy over the B rows and weighs
    1/T; `full` updates once per minibatch, `fixed:K` after each stretch of
    K steps (a stretch starts from the previous one's state, detached, and
    runs on the parameters as they are then); the gradient's global norm is
    clipped to theta when above it (g *= theta / ||g||). An epoch's loss is
    the mean of its steps' losses.
The offsets come from bptt's random number generator, which the reference
does not copy: a first run with `sgd:lr=0` (the parameters stay at their
initial values) gives the initial parameters and each epoch's mean loss at
them, and the reference tries every o in [0, T] for each epoch. In the
double build exactly one must give that loss (to 1e-12); in float32 two may
come within its rounding when the loss at the initial parameters hardly
depends on the offset, and the run that matches picks among them. Then the real run is compared with the reference's:
every parameter, the carried state, the optimizer's buffers, and each
epoch's mean loss and mean and largest gradient norm (before clipping).
Two cases also split the rows over two threads (--threads 2) or recompute
stretches (--checkpoint 2): the same run, so the same reference (the test
checks that each took effect). Every case's clip fires on some updates and
not on others (checked), so both branches of the rule run.
The float build's tolerance cannot see epsilon-sized differences (where
Adam adds eps, an epsilon in the clip); the double build's pins them.

usage: test_torch_train.py BPTT [--verbose]
Exit 0: all agree; 1: a disagreement (each printed); 77: no torch (skipped).
Error metric, per tensor: max |bptt - ref| / max |ref|. Tolerance: double
build 1e-12 (the same arithmetic in another order, over the run's 300-odd
updates: 2.1e-15 at worst when written); float build 1e-5 (float32's
rounding carried through them: 9.2e-7 at worst). The worst check, as a
fraction of its tolerance, is printed at the end."""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TEXT = ("The Time Traveller (for so it will be convenient to speak of him) was "
        "expounding a recondite matter to us. His grey eyes shone and twinkled, "
        "and his usually pale face was flushed and animated. The fire burned "
        "brightly, and the soft radiance of the incandescent lights in the lilies "
        "of silver caught the bubbles that flashed and passed in our glasses.\n"
        "You must follow me carefully. I shall have to controvert one or two ideas "
        "that are almost universally accepted. The geometry, for instance, they "
        "taught you at school is founded on a misconception.\n")
B, T, H, EPOCHS, SEED = 3, 5, 6, 3, 7
TOL = {"double": 1e-12, "float": 1e-5}
LOSS_MATCH = {"double": 1e-12, "float": 2e-6}  # an epoch's loss at the initial parameters

# (cell, bptt optimizer, torch optimizer from its parameter list, clip, truncation, init,
#  more bptt options: none of them changes the run beyond rounding)
CASES = [
    ("rnn_tanh", "sgd:lr=1", lambda ps: torch.optim.SGD(ps, lr=1.0), 0.6, "full", "normal:0.5", []),
    ("rnn_tanh", "sgd:lr=0.5", lambda ps: torch.optim.SGD(ps, lr=0.5), 0.5, "fixed:2",
     "normal:0.8", []),
    ("gru", "momentum:lr=0.3,mu=0.9", lambda ps: torch.optim.SGD(ps, lr=0.3, momentum=0.9), 0.5,
     "full", "normal:0.5", []),
    ("gru_torch", "adam:lr=0.01", lambda ps: torch.optim.Adam(ps, lr=0.01), 0.5, "full",
     "normal:0.5", ["--threads", "2"]),
    ("lstm", "adam:lr=0.02,beta1=0.8,beta2=0.95,eps=1e-6",
     lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-6), 0.4, "full",
     "normal:0.5", ["--checkpoint", "2"]),
    ("lstm", "sgd:lr=1", lambda ps: torch.optim.SGD(ps, lr=1.0), 0.2, "fixed:3", "normal:0.3", []),
]
STATE_NAMES = {"sgd": [], "momentum": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"]}
HIST_LOSS, HIST_NORM_MEAN, HIST_NORM_MAX, HIST_UPDATES = 1, 4, 5, 6  # io/checkpoint.c add_history


def bptt_train(bptt, tmp, case, optimizer, clip, out):
    cell, _, _, _, truncation, init, more = case
    cmd = [bptt, "train", "--data", os.path.join(tmp, "text.txt"), "--cell", cell,
           "--hidden", str(H), "--batch", str(B), "--steps", str(T), "--epochs", str(EPOCHS),
           "--seed", str(SEED), "--init", init, "--truncation", truncation,
           "--optimizer", optimizer, "--clip", str(clip), "--save", out, "--quiet"] + more
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    return ref.st_read(out) + (r.stdout,)


def minibatches(ids, o):
    """d2l's sequential partitioning of the token ids from offset o: B rows, T steps at a time."""
    n = (len(ids) - o - 1) // B * B
    X = torch.tensor(ids[o:o + n]).reshape(B, -1)
    Y = torch.tensor(ids[o + 1:o + 1 + n]).reshape(B, -1)
    return [(X[:, i:i + T], Y[:, i:i + T]) for i in range(0, X.shape[1] // T * T, T)]


def windows_of(truncation):
    """The stretches of a minibatch's steps, each ending in an update."""
    k = T if truncation == "full" else int(truncation.split(":")[1])
    return [(a, min(a + k, T) - 1) for a in range(0, T, k)]


def stretch(step, p, X, Y, states, a, b):
    """Steps a..b from `states`: their losses (each the mean over rows) and the last states."""
    losses = []
    for t in range(a, b + 1):
        states, o = step(p, X[:, t], states)
        losses.append(F.cross_entropy(o, Y[:, t]))
    return losses, states


def zero_states(n_states):
    return tuple(torch.zeros(B, H, dtype=torch.float64) for _ in range(n_states))


def epoch_loss_at(cell, p, batches):
    """The epoch's mean step loss without training (the parameters as they are)."""
    _, n_states, _, step = ref.CELLS[cell]
    states, losses = zero_states(n_states), []
    with torch.no_grad():
        for X, Y in batches:
            ls, states = stretch(step, p, X, Y, states, 0, T - 1)
            losses += [float(v) for v in ls]
    return float(np.mean(losses))


def find_offsets(cell, p, ids, hist0, precision, problems):
    """Each epoch's candidate offsets: the o in [0, T] whose loss at the initial parameters
    is bptt's (to LOSS_MATCH), closest first. An LSTM's loss at its initial parameters can
    hardly depend on the offset: float32 then leaves two, and the whole run decides."""
    cands = []
    for e in range(EPOCHS):
        want = hist0[e, HIST_LOSS]
        rel = [abs(epoch_loss_at(cell, p, minibatches(ids, o)) - want) / abs(want)
               for o in range(T + 1)]
        hits = sorted((o for o in range(T + 1) if rel[o] <= LOSS_MATCH[precision]),
                      key=lambda o: rel[o])
        if not hits:
            problems.append(f"{cell}: epoch {e + 1}: no offset in [0, {T}] gives bptt's loss at "
                            f"the initial parameters {want:.17g} (closest: {min(rel):.3g} "
                            "relative): the minibatches are not d2l's")
            hits = [int(np.argmin(rel))]
        if precision == "double" and len(hits) > 1:
            problems.append(f"{cell}: epoch {e + 1}: offsets {hits} all give bptt's loss at the "
                            f"initial parameters to {LOSS_MATCH[precision]:g}")
        cands.append(hits)
    return cands


def train_reference(case, p, ids, offsets):
    """The whole run in float64: per-epoch (mean loss, mean norm, max norm, updates), the
    final states, the optimizer."""
    cell, _, make_opt, clip, truncation = case[:5]
    names, n_states, _, step = ref.CELLS[cell]
    opt = make_opt([p[k] for k in names])
    hist, clipped = [], 0
    for o in offsets:
        states, losses, norms = zero_states(n_states), [], []
        for X, Y in minibatches(ids, o):
            for a, b in windows_of(truncation):
                states = tuple(s.detach() for s in states)
                ls, states = stretch(step, p, X, Y, states, a, b)
                opt.zero_grad()
                (sum(ls) / T).backward()
                grads = [p[k].grad for k in names]
                norm = float(torch.sqrt(sum((g * g).sum() for g in grads)))
                if clip > 0 and norm > clip:
                    clipped += 1
                    for g in grads:
                        g.mul_(clip / norm)
                opt.step()
                losses += [float(v) for v in ls]
                norms.append(norm)
        hist.append((np.mean(losses), np.mean(norms), np.max(norms), len(norms)))
    return hist, [s.detach() for s in states], opt, clipped


def compare(got_t, case, p0, ids, offsets):
    """The reference run with these offsets against bptt's run: [(what, relative error)] and
    the count mismatches."""
    cell, optimizer = case[0], case[1]
    names = ref.CELLS[cell][0]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    hist, states, opt, clipped = train_reference(case, p, ids, offsets)
    checks, counts = [], []
    for k in names:
        checks.append((f"param {k}", ref.rel_err(got_t["param." + k], p[k].detach().numpy())))
    for i, s in enumerate(states):
        checks.append((f"carried state {i}", ref.rel_err(got_t[f"state.{i}"], s.numpy())))
    for i, sname in enumerate(STATE_NAMES[optimizer.split(":")[0]]):
        flat = np.concatenate([opt.state[p[k]][sname].detach().numpy().ravel() for k in names])
        checks.append((f"optimizer {sname} (opt.{i})", ref.rel_err(got_t[f"opt.{i}"], flat)))
    h = got_t["history"]
    for e, (loss, nmean, nmax, n) in enumerate(hist):
        checks.append((f"epoch {e + 1} loss", ref.rel_err(h[e, HIST_LOSS], loss)))
        checks.append((f"epoch {e + 1} mean gradient norm",
                       ref.rel_err(h[e, HIST_NORM_MEAN], nmean)))
        checks.append((f"epoch {e + 1} largest gradient norm",
                       ref.rel_err(h[e, HIST_NORM_MAX], nmax)))
        if int(h[e, HIST_UPDATES]) != n:
            counts.append(f"epoch {e + 1}: {int(h[e, HIST_UPDATES])} updates, the reference "
                          f"made {n}")
    n = sum(h[3] for h in hist)
    if case[3] > 0 and not 0 < clipped < n:
        counts.append(f"the clip fired on {clipped} of {n} updates: choose one that fires on "
                      "some and not on others")
    return checks, counts, hist[0][3]


def run_case(bptt, tmp, case, verbose):
    cell, optimizer, _, clip, truncation, _, more = case
    names = ref.CELLS[cell][0]
    tag = " ".join([cell, optimizer, f"clip {clip}", truncation] + more)
    zero_t, zero_m, _ = bptt_train(bptt, tmp, case, "sgd:lr=0", 0, os.path.join(tmp, "zero.st"))
    precision = zero_m["precision"]
    vocab = json.loads(zero_m["vocab"])
    ids = [vocab.index(ch) for ch in TEXT]
    p0 = {k: zero_t["param." + k].astype(np.float64) for k in names}
    problems = []
    with torch.no_grad():
        p = {k: torch.tensor(v) for k, v in p0.items()}
        cands = find_offsets(cell, p, ids, zero_t["history"], precision, problems)
    got_t, got_m, out = bptt_train(bptt, tmp, case, optimizer, clip, os.path.join(tmp, "run.st"))
    # The options that must not change the run: did they take effect?
    if "--threads" in more and f"split over {more[more.index('--threads') + 1]} threads" not in out:
        problems.append(f"{tag}: the run does not say it split its rows over threads")
    if "--checkpoint" in more and got_m["checkpoint_every"] != more[more.index("--checkpoint") + 1]:
        problems.append(f"{tag}: the checkpoint says checkpoint_every {got_m['checkpoint_every']}")
    # Where float32 left two offsets of an epoch, the run that matches decides.
    best = None
    for offsets in itertools.product(*cands):
        checks, counts, updates = compare(got_t, case, p0, ids, list(offsets))
        worst = max(checks, key=lambda c: c[1])
        if best is None or worst[1] < best[1][1]:
            best = (list(offsets), worst, checks, counts, updates)
    offsets, worst, checks, counts, updates = best
    problems += [f"{tag}: {c}" for c in counts]
    tol = TOL[precision]
    for what, err in checks:
        if not err <= tol:
            problems.append(f"{tag}: {what}: relative error {err:.3g} > {tol:g}")
    if verbose or problems:
        print(f"{tag}: offsets {offsets} (candidates {cands}), {updates} updates per epoch; "
              f"worst {worst[0]}: {worst[1]:.3g}")
    return problems, worst[1] / tol, precision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bptt")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    problems, worst, precision = [], 0.0, "?"
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "text.txt"), "w", encoding="utf-8") as f:
            f.write(TEXT)
        for case in CASES:
            pr, w, precision = run_case(os.path.abspath(a.bptt), tmp, case, a.verbose)
            problems += pr
            worst = max(worst, w)
    for pr in problems:
        print("FAIL:", pr)
    print(f"{len(CASES)} whole runs ({EPOCHS} epochs, B {B}, T {T}, H {H}, {precision}): "
          f"{'all agree' if not problems else f'{len(problems)} disagreement(s)'}; "
          f"worst check at {worst:.3g} of its tolerance ({TOL[precision]:g})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
