#!/usr/bin/python3
"""test_torch_examples.py: the plugin guide's example cell and policy
(docs/example-plugin/mgu.c, geoseg.c) against PyTorch float64. `bptt grad
--plugin` on random cases of the MGU, written here again from Zhou et al.
(2016)'s equations with torch autograd doing every derivative, unrolled by
reference.py (one graph, the edge into step t detached where xi_t = 0, or
TBPTT's windows). A gradient check cannot catch a wrong equation in a cell
built from host ops (the ops' backward passes follow whatever forward they
are given); this test does.

geoseg is checked through what bptt reports: its xi must be 0 or 1, 1 into
step 0, with at least `min` steps between cuts (the last segment may be cut
short by the end of the sequence), exactly fixed:min's when mean = min; and
bptt's gradients (one window per segment) must equal the reference's single
graph with those edges detached, which holds only if geoseg updates exactly
where it cuts.

usage: test_torch_examples.py BPTT MGU_SO GEOSEG_SO
Exit 0: all agree; 1: a disagreement (each printed); 77: no torch (skipped).
Tolerance as test_torch_diff.py: 1e-9 relative to each tensor's largest
magnitude in the double build; in float 4 x PyTorch float32's own error + a
floor of 16 float32 units."""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from test_torch_diff import FLOAT_FACTOR, FLOAT_FLOOR, DOUBLE_TOL, f32, float32_errors  # noqa: E402

SEED = 20240613
MGU_PARAMS = ["W_x", "b_f", "b_c", "W_hf", "W_hc", "W_hq", "b_q"]


def mgu_step(p, x, s):
    """Zhou et al. (2016), row vectors: f = sigma(x W_xf + h U_f + b_f),
    c = tanh(x W_xc + (f * h) U_c + b_c), h' = (1 - f) h + f c; W_x = [W_xf | W_xc]."""
    h = s[0]
    H = h.shape[1]
    xw = ref.inp(p["W_x"], x)
    f = torch.sigmoid(xw[:, :H] + h @ p["W_hf"] + p["b_f"])
    c = torch.tanh(xw[:, H:] + (f * h) @ p["W_hc"] + p["b_c"])
    hn = (1 - f) * h + f * c
    return (hn,), hn @ p["W_hq"] + p["b_q"]


def mgu_step_interp(p, x, s):
    """The same step with the update in the other form the plugin documents,
    h + f (c - h): its float32 rounding differs, so the float build's
    yardstick is PyTorch float32's worst error over both (as for the GRU)."""
    h = s[0]
    H = h.shape[1]
    xw = ref.inp(p["W_x"], x)
    f = torch.sigmoid(xw[:, :H] + h @ p["W_hf"] + p["b_f"])
    c = torch.tanh(xw[:, H:] + (f * h) @ p["W_hc"] + p["b_c"])
    hn = h + f * (c - h)
    return (hn,), hn @ p["W_hq"] + p["b_q"]


for _name, _loss in (("mgu", "xent"), ("mgu_real", "mse")):
    ref.CELLS[_name] = (MGU_PARAMS, 1, _loss, mgu_step)
    ref.FLOAT_FORMS[_name] = [mgu_step, mgu_step_interp]

# (cell, real X rows, weight scale): token cases from nearly linear to saturated,
# the token cell fed real rows, and the real-input cell with squared error.
CASES = [("mgu", False, 0.1), ("mgu", False, 0.8), ("mgu", False, 2.5), ("mgu", True, 1.0),
         ("mgu_real", True, 0.5), ("mgu_real", True, 1.5)]
POLICIES = ["full", "fixed:3", "tbptt:2,5", "geoseg:mean=3,min=1,seed={s}",
            "geoseg:mean=4,min=2,seed={s}", "geoseg:mean=3,min=3"]


def make_case(cell, real_x, s, rng):
    B, T, H = int(rng.integers(1, 5)), int(rng.integers(8, 20)), int(rng.integers(1, 9))
    V = int(rng.integers(2, 9))
    D = int(rng.integers(1, 6)) if real_x else V
    Q = int(rng.integers(1, 4)) if cell == "mgu_real" else V
    n = lambda *shape, sd=1.0: f32(rng.normal(0, sd, shape))  # noqa: E731
    P = {"W_x": n(D, 2 * H, sd=s), "b_f": n(H, sd=s), "b_c": n(H, sd=s), "W_hf": n(H, H, sd=s),
         "W_hc": n(H, H, sd=s), "W_hq": n(H, Q), "b_q": n(Q, sd=0.5),
         "X": n(B, T, D) if real_x else rng.integers(0, V, (B, T)).astype(np.int32),
         "Y": n(B, T, Q) if cell == "mgu_real" else rng.integers(0, V, (B, T)).astype(np.int32),
         "h0": f32(rng.uniform(-0.9, 0.9, (B, H)))}
    return P, f"B={B} T={T} H={H} {'D' if real_x else 'V'}={D} Q={Q} scale={s}"


def geoseg_xi(policy, xi):
    """A problem with geoseg's reported xi, or None."""
    opts = dict(kv.split("=") for kv in policy.split(":")[1].split(","))
    mean, lo = float(opts["mean"]), int(opts.get("min", 1))
    T = len(xi)
    if any(v not in (0.0, 1.0) for v in xi) or xi[0] != 1.0:
        return f"xi {xi}: geoseg gives 0 or 1, and 1 into step 0"
    cuts = [t for t in range(T) if xi[t] == 0]
    starts = [0] + cuts
    if any(b - a < lo for a, b in zip(starts, cuts)):
        return f"xi {xi}: a segment shorter than min={lo}"
    if mean == lo and xi != ref.fixed_xi(T, lo):
        return f"xi {xi}: geoseg:mean={mean:g},min={lo} is not fixed:{lo} ({ref.fixed_xi(T, lo)})"
    return None


def main():
    if len(sys.argv) != 4:
        print(__doc__.split("\n\n")[2])
        return 2
    bptt, mgu_so, geoseg_so = sys.argv[1:]
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    failures, worst, runs, cuts, prec = [], {}, 0, 0, "?"
    with tempfile.TemporaryDirectory(prefix="bptt-examples-") as tmp:
        for idx, (cell, real_x, scale) in enumerate(CASES):
            P, dims = make_case(cell, real_x, scale, rng)
            pfile = os.path.join(tmp, f"P{idx}.st")
            ref.st_write(pfile, P)
            T = P["X"].shape[1]
            for j, pol in enumerate(POLICIES):
                pol = pol.format(s=10 * idx + j)
                label = f"{cell} case {idx} ({dims}) {pol}"
                out = os.path.join(tmp, f"G{idx}.{j}.st")
                cmd = [bptt, "grad", "--plugin", mgu_so, "--plugin", geoseg_so, "--cell", cell,
                       "--params", pfile, "--truncation", pol, "--out", out]
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    failures.append(f"{label}: exit {p.returncode}: {p.stderr.strip()}")
                    continue
                runs += 1
                G, meta = ref.st_read(out)
                prec = meta.get("precision", "?")
                xi = [float(v) for v in G["xi"]]
                if pol.startswith("geoseg"):
                    bad = geoseg_xi(pol, xi)
                    if bad:
                        failures.append(f"{label}: {bad}")
                        continue
                    spec = ("edges", xi)
                    cuts += xi.count(0.0)
                elif pol == "full":
                    spec = ("edges", [1.0] * T)
                elif pol.startswith("fixed"):
                    spec = ("edges", ref.fixed_xi(T, int(pol.split(":")[1])))
                else:
                    k1, k2 = (int(v) for v in pol.split(":")[1].split(","))
                    spec = ("tbptt", k1, k2)
                R64 = ref.unrolled_grads(cell, P, spec, torch.float64)
                E32 = float32_errors(cell, P, spec, R64) if prec != "double" else None
                for name in sorted(R64):
                    if name not in G:
                        failures.append(f"{label}: bptt wrote no {name}")
                        continue
                    e = ref.rel_err(G[name], R64[name])
                    allowed = DOUBLE_TOL if E32 is None else FLOAT_FACTOR * E32[name] + FLOAT_FLOOR
                    worst[cell] = max(worst.get(cell, 0.0), e)
                    if not e <= allowed:
                        failures.append(f"{label}: {name} differs from the float64 reference "
                                        f"by {e:.3g} (allowed {allowed:.3g})")
    print(f"bptt grad --plugin mgu.so --plugin geoseg.so vs PyTorch float64 ({prec} build): "
          f"{len(CASES)} cases x {len(POLICIES)} policies, {runs} runs, {cuts} geoseg cuts")
    for cell, w in worst.items():
        print(f"  {cell}: worst relative error {w:.3g}")
    if failures:
        print(f"FAIL: {len(failures)} disagreements:")
        for f in failures[:30]:
            print("  " + f)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
