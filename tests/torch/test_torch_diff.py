#!/usr/bin/python3
"""test_torch_diff.py: `bptt grad` against an independent PyTorch float64
implementation (reference.py), for every shipped cell under every policy,
with and without checkpointed windows, and against torch.nn.RNN / nn.GRU /
nn.LSTM where their conventions match bptt's (rnn_tanh, gru_torch, lstm).
Also `bptt grad --estimator rtrl` (real-time recurrent learning, issue 16) on
every case: against the reference's full-BPTT gradient (torch float64
autograd), and against bptt's own `--truncation full` (1e-10 relative in the
double build).

usage: test_torch_diff.py BPTT [--only CELL] [--verbose]
Exit 0: every tensor agrees; 1: a disagreement (each is printed); 77: no torch
(meson counts it as skipped).

The cases are random from a fixed seed: several B, T, H and vocabulary sizes,
weight scales from nearly linear to saturated (tanh pre-activations far above
1), nonzero h0 and c0, ids as I32 and I64, parameters as F32 and F64, and a
token cell fed real rows X [B,T,D]. Every real value is a float32 number, so
the float and the double build read the same P.

Error metric, per output tensor: max |bptt - ref| / max |ref| (the error
relative to the tensor's largest magnitude; absolute if ref is all zeros).
Tolerance: double build 1e-9. Float build: 4 x the same error of PyTorch's own
float32 evaluation of the reference on the same case, plus FLOAT_FLOOR."""
import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

SEED = 20240611
# gru_torch last: the cases are drawn cell after cell from one generator, so
# appending a cell leaves the other cells' cases as they were.
CELLS = ["rnn_tanh", "linear", "gru", "lstm", "influence", "gru_torch"]
N_CASES = 6
# Weight scale ladder (standard deviation of the core weights), case by case:
# nearly linear to deep saturation; 1.5 for the case with real X rows.
SCALES = [0.05, 0.3, 1.0, 3.0, 6.0, 1.5]
# linear: the spectral scale of W_hh instead (contracting to expanding).
RHOS = [0.3, 0.7, 0.95, 1.1, 1.25, 0.9]
POLICIES = ["full", "fixed:1", "fixed:3", "random:0.5,seed={s}", "random:0.8,seed={s}",
            "tbptt:2,5", "tbptt:3,3", "tbptt:1,4", "xi"]
# Checkpointed windows: these policies under --checkpoint 2 and sqrt, on every
# case with T >= 5; plus --memory-budget on full.
CKPT_POLICIES = ["full", "fixed:3", "random:0.8,seed={s}", "tbptt:2,5", "xi"]
CKPT_OPTIONS = [["--checkpoint", "2"], ["--checkpoint", "sqrt"]]
BUDGET_OPTION = ["--memory-budget", "0.001"]

DOUBLE_TOL = 1e-9
# rtrl against bptt's own full BPTT: the same gradient summed in another order.
RTRL_VS_FULL_TOL = 1e-10
# Float floor: 16 float32 units in the last place at the tensor's largest
# magnitude (2^-24 relative each). Two correct float32 evaluations that sum in
# different orders (BLAS blocking, one fused GEMM per window) differ by a few
# such units even where PyTorch's float32 happens to be exact (a tensor of few
# terms, or a bias gradient that is a plain mean); a wrong sign, gate or index
# is off by order 1, five orders of magnitude above this.
FLOAT_FLOOR = 16 * 2.0 ** -24
FLOAT_FACTOR = 4.0


def f32(a):
    """Rounds to float32 values (kept as float64 arrays)."""
    return np.asarray(a, np.float32).astype(np.float64)


def make_case(cell, idx, rng):
    """P for case idx of cell: (tensors, dims text)."""
    B = int(rng.integers(1, 6))
    T = int(rng.integers(1, 4)) if idx == 0 else int(rng.integers(5, 25))
    H = int(rng.integers(1, 17))
    V = int(rng.integers(2, 13))
    s = SCALES[idx]
    n = lambda *shape, sd=1.0: f32(rng.normal(0, sd, shape))  # noqa: E731
    ids = np.int32 if idx % 2 == 0 else np.int64
    P = {}
    if cell in ("rnn_tanh", "gru", "lstm", "gru_torch"):
        real_x = idx == N_CASES - 1  # a token cell fed real rows [B,T,D]
        D = int(rng.integers(1, 7)) if real_x else V
        k = {"rnn_tanh": 1, "gru": 3, "lstm": 4, "gru_torch": 3}[cell]
        win = {"rnn_tanh": "W_xh", "gru_torch": "W_ih"}.get(cell, "W_x")
        P[win] = n(D, k * H, sd=s)
        if cell == "rnn_tanh":
            P.update(W_hh=n(H, H, sd=s), b_h=n(H, sd=s))
        elif cell == "gru":
            P.update(b=n(3 * H, sd=s), W_hzr=n(H, 2 * H, sd=s), W_hh=n(H, H, sd=s))
        elif cell == "gru_torch":
            P.update(W_hh=n(H, 3 * H, sd=s), b_ih=n(3 * H, sd=s), b_hh=n(3 * H, sd=s))
        else:
            P.update(W_h=n(H, 4 * H, sd=s), b=n(4 * H, sd=s))
        P.update(W_hq=n(H, V), b_q=n(V, sd=0.5))
        P["X"] = n(B, T, D) if real_x else rng.integers(0, V, (B, T)).astype(ids)
        P["Y"] = rng.integers(0, V, (B, T)).astype(ids)
        P["h0"] = f32(rng.uniform(-0.95, 0.95, (B, H)))
        if cell == "lstm":
            P["c0"] = n(B, H, sd=1.5)
        dims = f"B={B} T={T} H={H} V={V}" + (f" D={D}" if real_x else "") + f" scale={s}"
    elif cell == "linear":
        D, Q = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        P.update(W_hx=n(H, D, sd=D ** -0.5), W_hh=n(H, H, sd=RHOS[idx] * H ** -0.5),
                 W_qh=n(Q, H, sd=H ** -0.5), X=n(B, T, D), Y=n(B, T, Q), h0=n(B, H))
        dims = f"B={B} T={T} H={H} D={D} Q={Q} rho~{RHOS[idx]}"
    else:  # influence: N units (hidden, from h0), P positive signs (input width)
        N = max(H // 2, 2)
        Pp = int(rng.integers(1, N + 1))
        P.update(theta=n(1), X=n(B, T, Pp), Y=n(B, T, 1), h0=n(B, N))
        dims = f"B={B} T={T} N={N} P={Pp}"
    if idx % 2 == 1:  # parameters and real data as F32 (same values as F64)
        P = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in P.items()}
    return P, dims


def given_xi(T, rng):
    """A given xi: cuts, keeps and scales (exact binary fractions), xi_0 included."""
    return f32(rng.choice([0.0, 0.25, 0.5, 1.0, 1.0, 1.0, 1.5, 3.0], T))


class Run:
    """One `bptt grad` invocation and what it is compared with."""

    def __init__(self, cell, idx, policy, opts, P, pfile, out):
        self.cell, self.idx, self.policy, self.opts = cell, idx, policy, opts
        self.P, self.pfile, self.out = P, pfile, out
        self.rc, self.stderr, self.cmd = None, "", ""


def run_bptt(bptt, r):
    cmd = [bptt, "grad", "--cell", r.cell, "--params", r.pfile, "--out", r.out] + r.opts
    if r.policy == "rtrl":
        cmd += ["--estimator", "rtrl"]
    elif r.policy != "xi":
        cmd += ["--truncation", r.policy]
    p = subprocess.run(cmd, capture_output=True, text=True)
    r.rc, r.stderr = p.returncode, (p.stderr + p.stdout).strip()
    r.cmd = " ".join(cmd)
    return r


def float32_errors(cell, P, spec, R64):
    """PyTorch float32's own error per tensor on this case: the reference run
    in float32, worst over the algebraic forms the cell's documentation gives
    for its step (GRU: z h + (1 - z) h~ and h~ + z (h - h~); bptt computes the
    second). On saturated, ill-conditioned cases the two forms' float32 errors
    differ by up to ~6x either way, so one form alone is no yardstick for the
    other; the float64 reference, the truth, is the first form throughout."""
    errs = {}
    for step in ref.FLOAT_FORMS.get(cell, [None]):
        R32 = ref.unrolled_grads(cell, P, spec, torch.float32, step_fn=step)
        for k in R64:
            errs[k] = max(errs.get(k, 0.0), ref.rel_err(R32[k], R64[k]))
    return errs


def policy_spec(policy, T, G):
    """The reference's policy: ("edges", xi) or ("tbptt", K1, K2), and a
    problem with bptt's xi output if its form is not the documented one."""
    name, _, opts = policy.partition(":")
    xi_out = [float(v) for v in G["xi"]]
    if name == "full":
        return ("edges", [1.0] * T), None
    if name == "fixed":
        return ("edges", ref.fixed_xi(T, int(opts))), None
    if name == "tbptt":
        k1, k2 = (int(v) for v in opts.split(","))
        return ("tbptt", k1, k2), None
    if name == "random":
        # Replay the draws bptt made; their form is checked: xi_0 = 1 (the edge
        # from h0), every other xi is 0 or 1/PI. The value replayed is 1/PI in
        # double (the float build's xi output is 1/PI rounded to float32).
        pi = float(opts.split(",")[0])
        xi, bad = [], None
        for t, v in enumerate(xi_out):
            if t == 0:
                ok, want = v == 1.0, 1.0
            else:
                want = 0.0 if v == 0 else 1.0 / pi
                ok = v == 0 or abs(v - want) <= 1e-6 * want
            if not ok:
                bad = f"xi[{t}] = {v!r}: random:{pi} draws 0 or 1/PI = {1 / pi!r} (xi_0 = 1)"
            xi.append(want)
        return ("edges", xi), bad
    raise ValueError(policy)


def build_runs(cells, tmp):
    """Writes every case's P files and lists the runs: ([Run], {(cell, idx): dims})."""
    rng = np.random.default_rng(SEED)
    runs, cases = [], {}
    for cell in CELLS:  # every cell's cases are drawn, so --only gives the same cases
        for idx in range(N_CASES):
            P, dims = make_case(cell, idx, rng)
            xi = given_xi(P["X"].shape[1], rng)
            if cell not in cells:
                continue
            cases[cell, idx] = dims
            base = os.path.join(tmp, f"{cell}{idx}")
            Pxi = dict(P, xi=xi.astype(P["h0"].dtype))
            ref.st_write(base + ".P.st", P)
            ref.st_write(base + ".Pxi.st", Pxi)
            T = P["X"].shape[1]
            for j, pol in enumerate(POLICIES):
                spec = pol.format(s=100 * idx + j)
                PP, pf = (Pxi, base + ".Pxi.st") if pol == "xi" else (P, base + ".P.st")
                opts = [[]]
                if T >= 5 and pol in CKPT_POLICIES:
                    opts += CKPT_OPTIONS
                if T >= 5 and pol == "full":
                    opts.append(BUDGET_OPTION)
                for c, o in enumerate(opts):
                    runs.append(Run(cell, idx, spec, o, PP, pf, f"{base}.{j}.{c}.G.st"))
            runs.append(Run(cell, idx, "rtrl", [], P, base + ".P.st", f"{base}.rtrl.G.st"))
    return runs, cases


class Tally:
    """Failures and the figures of the summary."""

    def __init__(self, cells):
        self.failures = []  # (run label, problem)
        self.worst = {c: {"plain": 0.0, "ckpt": 0.0} for c in cells}  # bptt vs reference
        self.ratio = {c: {"plain": 0.0, "ckpt": 0.0} for c in cells}  # float: err / allowed
        self.worst_nn = 0.0   # torch.nn vs the equations, both float64
        self.bptt_vs_nn = {}  # cell: worst bptt vs its torch.nn module (mapped weights)
        self.worst_ckpt = 0.0  # checkpointed vs plain bptt
        self.tensors = 0
        self.edges = {"cut": 0, "scaled": 0}  # xi values other than 1 exercised
        self.rtrl_ref = {c: 0.0 for c in cells}   # rtrl vs the float64 reference
        self.rtrl_full = {c: 0.0 for c in cells}  # rtrl vs bptt's own full BPTT

    def fail(self, label, what):
        self.failures.append((label, what))


def references(r, spec, prec):
    """The float64 reference, PyTorch float32's own errors (float build), and
    the torch.nn evaluations where the convention matches."""
    R64 = ref.unrolled_grads(r.cell, r.P, spec, torch.float64)
    E32 = float32_errors(r.cell, r.P, spec, R64) if prec == "float" else None
    extra = []
    if r.cell in ref.NN_MODULES:
        extra.append(("nn-step", ref.unrolled_grads(r.cell, r.P, spec, nn_cell=True)))
        if r.policy == "full":
            extra.append(("nn-seq", ref.unrolled_grads(r.cell, r.P, spec, nn_cell=True,
                                                       nn_sequence=True)))
    return R64, E32, extra


def compare_run(r, G, meta, refs, label, tally, verbose):
    """Every tensor of one bptt output against the references."""
    R64, E32, extra = refs
    prec = meta.get("precision")
    expected = set(R64) - {"nn_bias_gap"}
    missing = expected - set(G)
    if missing:
        tally.fail(label, f"bptt wrote no {sorted(missing)}")
    if r.policy == "xi" and meta.get("xi_source") != "given":
        tally.fail(label, f"xi_source is {meta.get('xi_source')!r}, not 'given'")
    kind = "ckpt" if r.opts else "plain"
    for name in sorted(expected & set(G)):
        e = ref.rel_err(G[name], R64[name])
        allowed = DOUBLE_TOL if prec == "double" else FLOAT_FACTOR * E32[name] + FLOAT_FLOOR
        tally.tensors += 1
        tally.worst[r.cell][kind] = max(tally.worst[r.cell][kind], e)
        tally.ratio[r.cell][kind] = max(tally.ratio[r.cell][kind], e / allowed)
        if verbose:
            print(f"  {label} {name}: {e:.3g} (allowed {allowed:.3g})")
        if not e <= allowed:
            tally.fail(label, f"{name} differs from the float64 reference by {e:.3g} (relative "
                       f"to its max {np.abs(R64[name]).max():.4g}; allowed {allowed:.3g})")
        for what, Rn in extra:  # the same tensor from torch.nn's cell
            if name not in Rn or name == "xi":
                continue
            en, e_nn = ref.rel_err(G[name], Rn[name]), ref.rel_err(Rn[name], R64[name])
            tally.worst_nn = max(tally.worst_nn, e_nn)
            tally.bptt_vs_nn[r.cell] = max(tally.bptt_vs_nn.get(r.cell, 0.0), en)
            if e <= allowed and not en <= allowed + e_nn:
                tally.fail(label, f"{name} differs from torch.nn ({what}) by {en:.3g} "
                           f"(allowed {allowed:.3g})")
            if e_nn > 1e-10:
                tally.fail(label, f"reference check: torch.nn ({what}) and the equations "
                           f"disagree on {name} by {e_nn:.3g}")
    for what, Rn in extra:
        if Rn.get("nn_bias_gap", 0) > 1e-12:
            tally.fail(label, f"reference check: torch.nn's ({what}) two bias gradients differ")


def compare_rtrl(r, G, meta, R64, E32, Gfull, label, tally):
    """rtrl's G: loss, grad.<param> and grad.<state> (no xi, no grad_norm_h)
    against the float64 reference's full BPTT and bptt's own full-BPTT run."""
    prec = meta.get("precision")
    expected = {k for k in R64 if k == "loss" or k.startswith("grad.")}
    if set(G) != expected:
        tally.fail(label, f"rtrl wrote {sorted(G)}, expected {sorted(expected)}")
    if meta.get("estimator", "").split(",")[0] != "rtrl" or "policy" in meta:
        tally.fail(label, f"rtrl's metadata: {meta}")
    for name in sorted(expected & set(G)):
        e = ref.rel_err(G[name], R64[name])
        allowed = DOUBLE_TOL if prec == "double" else FLOAT_FACTOR * E32[name] + FLOAT_FLOOR
        tally.tensors += 1
        tally.rtrl_ref[r.cell] = max(tally.rtrl_ref[r.cell], e)
        if not e <= allowed:
            tally.fail(label, f"rtrl's {name} differs from the float64 reference's full BPTT by "
                       f"{e:.3g} (allowed {allowed:.3g})")
        if Gfull is None or name not in Gfull:
            tally.fail(label, f"no full-BPTT run of bptt to compare rtrl's {name} with")
            continue
        ef = ref.rel_err(G[name], Gfull[name])
        tally.rtrl_full[r.cell] = max(tally.rtrl_full[r.cell], ef)
        allowed_f = RTRL_VS_FULL_TOL if prec == "double" else allowed
        if not ef <= allowed_f:
            tally.fail(label, f"rtrl's {name} differs from bptt's full BPTT by {ef:.3g} "
                       f"(allowed {allowed_f:.3g})")


def summary(args, cells, cases, done, tally, precision, seconds):
    n_rtrl = sum(1 for r in done if r.policy == "rtrl")
    n_plain = sum(1 for r in done if not r.opts) - n_rtrl
    print(f"bptt grad vs PyTorch float64 ({precision} build, {args.bptt}):")
    print(f"  {len(cases) // len(cells)} cases x {len(POLICIES)} policies x {len(cells)} cells = "
          f"{n_plain} runs, plus {len(done) - n_plain - n_rtrl} checkpointed runs "
          f"({', '.join(map(' '.join, CKPT_OPTIONS))} on {len(CKPT_POLICIES)} policies, "
          f"{' '.join(BUDGET_OPTION)} on full; cases with T >= 5) and {n_rtrl} runs of "
          f"--estimator rtrl")
    print(f"  {tally.tensors} tensors compared; tolerance: "
          + ("1e-9 relative to each tensor's largest magnitude" if precision == "double" else
             f"{FLOAT_FACTOR:g} x PyTorch float32's own error + {FLOAT_FLOOR:.3g}"))
    print(f"  coverage: {tally.edges['cut']} cut and {tally.edges['scaled']} scaled recurrent "
          f"edges; largest |tanh pre-activation| in rnn_tanh cases {ref.STATS['max_preact']:.3g}")
    print("  worst relative error against the float64 reference, plain | checkpointed runs:")
    for c in cells:
        w, q = tally.worst[c], tally.ratio[c]
        print(f"    {c:10s} {w['plain']:.3g} | {w['ckpt']:.3g}"
              + (f"  (worst error / allowed {q['plain']:.3g} | {q['ckpt']:.3g})"
                 if precision == "float" else ""))
    print(f"  checkpointed vs plain bptt: worst relative difference {tally.worst_ckpt:.3g}")
    print("  --estimator rtrl, worst relative error against the reference's full BPTT | against "
          "bptt's --truncation full:")
    for c in cells:
        print(f"    {c:10s} {tally.rtrl_ref[c]:.3g} | {tally.rtrl_full[c]:.3g}")
    if tally.bptt_vs_nn:
        print("  bptt against torch.nn with mapped weights (float64), worst relative error: "
              + ", ".join(f"{c} vs nn.{ {'rnn_tanh': 'RNN', 'gru_torch': 'GRU', 'lstm': 'LSTM'}[c]} "
                          f"{e:.3g}" for c, e in tally.bptt_vs_nn.items()))
    print(f"  torch.nn.RNN/GRU/LSTM (rnn_tanh, gru_torch, lstm) vs the float64 equations: "
          f"worst {tally.worst_nn:.3g} (gru: no nn.GRU mapping, d2l/Cho reset gate)")
    print(f"  {seconds:.1f} s")
    if not tally.failures:
        print("PASS")
        return 0
    by_run = {}  # one line per run that disagrees (its first problem), then the count
    for label, what in tally.failures:
        by_run.setdefault(label, []).append(what)
    print(f"FAIL: {len(tally.failures)} disagreements in {len(by_run)} runs:")
    for i, (label, whats) in enumerate(by_run.items()):
        if i == 30 and not args.verbose:
            print(f"  ... and {len(by_run) - 30} more runs (--verbose lists all)")
            break
        more = f" (+{len(whats) - 1} more tensors)" if len(whats) > 1 else ""
        print(f"  {label}: {whats[0]}{more}")
    return 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bptt")
    ap.add_argument("--only", choices=CELLS, help="one cell")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()
    cells = [args.only] if args.only else CELLS
    tmp = tempfile.TemporaryDirectory(prefix="bptt-torch-")
    runs, cases = build_runs(cells, tmp.name)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:  # 2 cores at most
        done = list(ex.map(lambda r: run_bptt(args.bptt, r), runs))

    tally, refs, plain, precision = Tally(cells), {}, {}, None
    for r in done:
        label = f"{r.cell} case {r.idx} ({cases[r.cell, r.idx]}) {r.policy} {' '.join(r.opts)}"
        if r.rc != 0:
            tally.fail(label, f"exit {r.rc}: {r.stderr} ({r.cmd})")
            continue
        G, meta = ref.st_read(r.out)
        precision = precision or meta.get("precision")
        if r.policy == "rtrl":  # after the plain full run of its case (run order)
            key = (r.cell, r.idx, "full")
            if key not in refs:
                refs[key] = references(r, ("edges", [1.0] * r.P["X"].shape[1]), precision)
            compare_rtrl(r, G, meta, refs[key][0], refs[key][1], plain.get(key), label, tally)
            continue
        if r.policy == "xi":
            spec, bad = ("edges", [float(v) for v in r.P["xi"]]), None
        else:
            spec, bad = policy_spec(r.policy, r.P["X"].shape[1], G)
        if bad:
            tally.fail(label, bad)
        if spec[0] == "edges" and not r.opts:
            tally.edges["cut"] += sum(1 for v in spec[1] if v == 0)
            tally.edges["scaled"] += sum(1 for v in spec[1] if v not in (0, 1))
        key = (r.cell, r.idx, r.policy)
        if key not in refs:
            refs[key] = references(r, spec, meta.get("precision"))
        compare_run(r, G, meta, refs[key], label, tally, args.verbose)
        if not r.opts:
            plain[key] = G
        elif key in plain:  # plain runs come first in the list
            tally.worst_ckpt = max([tally.worst_ckpt] + [ref.rel_err(G[k], v)
                                                         for k, v in plain[key].items()])
    return summary(args, cells, cases, done, tally, precision, time.time() - t_start)


if __name__ == "__main__":
    sys.exit(main())
