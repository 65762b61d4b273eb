#!/usr/bin/python3
"""test_torch_convert.py: tools/torch_convert.py against PyTorch itself.

For nn.RNN (tanh), nn.GRU and nn.LSTM, each inside d2l's model (the module
`rnn` fed one-hot rows, then `linear` = nn.Linear(H, V)), on token and
real-valued inputs, with weights from small to saturating and nonzero
biases on both sides:
  1. torch.save(state_dict) -> `torch_convert.py to-bptt --batch` -> `bptt
     grad` (full BPTT) gives PyTorch float64 autograd's loss and gradients on
     the same batch; bptt's gradients go back with `from-bptt --grads` and
     are compared under PyTorch's names (the converter's both directions,
     each run as its own process, as a user runs it);
  2. bptt -> torch -> bptt is exact (every tensor bit for bit), and
     torch -> bptt -> torch is exact for nn.GRU and for every weight, and
     keeps bias_ih + bias_hh for nn.RNN / nn.LSTM (bptt has one bias); the
     model loads the result with load_state_dict(strict=True) and computes
     the same outputs; the same in float32; a `bptt train` checkpoint
     converts too, every tensor exactly;
  (2 and 3 call the converter's main() in this process, to save an
  interpreter start per call)
  3. what bptt's cells cannot express is refused with one line and exit 1
     (num_layers 2, bidirectional, proj_size, nonlinearity relu, an
     nn.Embedding, no output layer, the wrong --module, stacked bptt
     layers), a usage error with one line and exit 2.

usage: test_torch_convert.py BPTT [--verbose]
Exit 0 when all agree, 1 otherwise, 77 without torch (meson: skipped).
Tolerance: double build 1e-9 relative to each tensor's largest magnitude;
float build 4 x PyTorch float32's own error on the case + 16 float32 units
(as tests/torch/test_torch_diff.py)."""
import argparse
import concurrent.futures
import contextlib
import io
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
CONVERT = os.path.join(HERE, "..", "..", "tools", "torch_convert.py")
sys.path.insert(0, HERE)
import reference as ref  # noqa: E402  (st_read, st_write from tools/safetensors_np.py)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SEED = 20240612
DOUBLE_TOL = 1e-9
FLOAT_FLOOR = 16 * 2.0 ** -24
FLOAT_FACTOR = 4.0
KINDS = {"rnn": (torch.nn.RNN, "rnn_tanh"), "gru": (torch.nn.GRU, "gru_torch"),
         "lstm": (torch.nn.LSTM, "lstm")}
# (weight scale, real-valued input width or None for token ids)
CASES = [(0.4, None), (2.0, 4)]


class Model(torch.nn.Module):
    """d2l's RNNModel: the recurrent module on one-hot (or real) rows, then a
    linear output layer; inputs [T,B,D] as d2l feeds them."""

    def __init__(self, kind, D, H, V, **kw):
        super().__init__()
        self.rnn = KINDS[kind][0](D, H, **kw)
        self.linear = torch.nn.Linear(H, V)

    def forward(self, x, state):
        out, _ = self.rnn(x, state)
        return self.linear(out)  # [T,B,V]


def f32(a):
    """Float32 values kept as float64, so both builds read the same numbers."""
    return np.asarray(a, np.float32).astype(np.float64)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def convert_cli(*args):
    """The converter as a user runs it: its own process (the paths of step 1)."""
    return run([sys.executable, CONVERT] + [str(a) for a in args])


sys.path.insert(0, os.path.dirname(CONVERT))
import torch_convert  # noqa: E402


def convert(*args):
    """The same command in this process (round trips and refusals: no
    interpreter start per call). Not thread-safe: main thread only."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = torch_convert.main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


class Case:
    """One model and batch, its files and the PyTorch float64 (and float32) answer."""

    def __init__(self, kind, idx, scale, D_real, rng, tmp):
        self.kind, self.cell = kind, KINDS[kind][1]
        B, T, H, V = (int(rng.integers(lo, hi)) for lo, hi in [(1, 5), (3, 9), (2, 9), (3, 9)])
        D = D_real or V
        self.label = f"{kind} case {idx} (B={B} T={T} H={H} V={V}" \
                     + (f" D={D} real" if D_real else " tokens") + f" scale={scale})"
        self.base = os.path.join(tmp, f"{kind}{idx}")
        m = Model(kind, D, H, V).double()
        with torch.no_grad():  # every weight and bias nonzero, float32 numbers
            for p in m.parameters():
                p.copy_(torch.tensor(f32(rng.normal(0, scale, tuple(p.shape)))))
        self.model = m
        X = rng.normal(0, 1, (B, T, D)) if D_real else rng.integers(0, V, (B, T))
        self.batch = {"X": f32(X) if D_real else X.astype(np.int64 if idx % 2 else np.int32),
                      "Y": rng.integers(0, V, (B, T)).astype(np.int32),
                      "h0": f32(rng.uniform(-0.9, 0.9, (B, H)))}
        if kind == "lstm":
            self.batch["c0"] = f32(rng.normal(0, 1, (B, H)))
        self.V, self.D_real = V, D_real
        torch.save(m.state_dict(), self.base + ".pt")
        torch.save(OrderedDict((k, v.float()) for k, v in m.state_dict().items()),
                   self.base + ".f32.pt")
        ref.st_write(self.base + ".batch.st", self.batch)
        self.R64 = self.torch_grads(torch.float64)
        self.R32 = self.torch_grads(torch.float32)

    def torch_grads(self, dtype):
        """PyTorch autograd's loss and gradients (state_dict names) in dtype:
        bptt's L, the mean over steps and rows of the cross-entropy."""
        m = Model(self.kind, self.model.rnn.input_size, self.model.rnn.hidden_size, self.V)
        m.load_state_dict(self.model.state_dict())
        m = m.to(dtype)
        b = self.batch
        X = torch.tensor(b["X"], dtype=dtype) if self.D_real else \
            F.one_hot(torch.tensor(b["X"]).long(), self.V).to(dtype)
        h0 = torch.tensor(b["h0"], dtype=dtype).unsqueeze(0)
        state = (h0, torch.tensor(b["c0"], dtype=dtype).unsqueeze(0)) if self.kind == "lstm" else h0
        out = m(X.transpose(0, 1), state)  # [T,B,V]
        Y = torch.tensor(b["Y"]).long()
        T = Y.shape[1]
        loss = sum(F.cross_entropy(out[t], Y[:, t]) for t in range(T)) / T
        loss.backward()
        g = {k: p.grad.double().numpy() for k, p in m.named_parameters()}
        g["loss"] = np.array(float(loss))
        return g


class Check:
    def __init__(self, verbose):
        self.failures, self.verbose = [], verbose
        self.worst = {}  # what: worst relative error

    def fail(self, label, what):
        self.failures.append(f"{label}: {what}")

    def record(self, what, e):
        self.worst[what] = max(self.worst.get(what, 0.0), e)


def check_grads(c, bptt, chk, precision_box):
    """Steps 1: convert, run bptt grad, map its gradients back, compare."""
    P, G, Gpt = c.base + ".P.st", c.base + ".G.st", c.base + ".grads.pt"
    rc, _, err = convert_cli("to-bptt", "--module", c.kind, "--batch", c.base + ".batch.st",
                         c.base + ".pt", P)
    if rc != 0:
        return chk.fail(c.label, f"to-bptt exit {rc}: {err.strip()}")
    rc, _, err = run([bptt, "grad", "--cell", c.cell, "--params", P, "--out", G])
    if rc != 0:
        return chk.fail(c.label, f"bptt grad exit {rc}: {err.strip()}")
    rc, _, err = convert_cli("from-bptt", "--module", c.kind, "--grads", G, Gpt)
    if rc != 0:
        return chk.fail(c.label, f"from-bptt --grads exit {rc}: {err.strip()}")
    Gb, meta = ref.st_read(G)
    precision_box.append(meta.get("precision"))
    got = {k: v.double().numpy() for k, v in torch.load(Gpt).items()}
    got["loss"] = Gb["loss"]
    if set(got) != set(c.R64):
        return chk.fail(c.label, f"names {sorted(got)} are not PyTorch's {sorted(c.R64)}")
    for name in sorted(c.R64):
        e = ref.rel_err(got[name], c.R64[name])
        if meta.get("precision") == "double":
            allowed = DOUBLE_TOL
        else:
            allowed = FLOAT_FACTOR * ref.rel_err(c.R32[name], c.R64[name]) + FLOAT_FLOOR
        chk.record(f"bptt grad vs PyTorch float64 autograd ({meta.get('precision')} build)", e)
        if chk.verbose:
            print(f"  {c.label} {name}: {e:.3g} (allowed {allowed:.3g})")
        if not e <= allowed:
            chk.fail(c.label, f"{name} differs from PyTorch by {e:.3g} (allowed {allowed:.3g})")


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_round_trips(c, chk, suffix):
    """Step 2 for the float64 (suffix '') or float32 ('.f32') model."""
    pt = c.base + suffix + ".pt"
    P1, M2, P2 = (c.base + suffix + x for x in (".rt1.st", ".rt2.pt", ".rt3.st"))
    for args in (("to-bptt", pt, P1), ("from-bptt", P1, M2), ("to-bptt", M2, P2)):
        rc, _, err = convert(args[0], "--module", c.kind, *args[1:])
        if rc != 0:
            return chk.fail(c.label, f"{args[0]} {suffix} exit {rc}: {err.strip()}")
    prec = "float32" if suffix else "float64"
    A, _ = ref.st_read(P1)
    Bb, _ = ref.st_read(P2)
    worst = max(ref.rel_err(Bb[k], A[k]) if k in Bb else float("inf") for k in A)
    chk.record(f"bptt -> torch -> bptt ({prec})", worst)
    if set(A) != set(Bb) or not all(same_bits(A[k], Bb[k]) for k in A):
        chk.fail(c.label, f"bptt -> torch -> bptt ({prec}) is not exact (worst {worst:.3g})")
    orig, back = torch.load(pt), torch.load(M2)
    if set(orig) != set(back):
        return chk.fail(c.label, f"torch -> bptt -> torch: names {sorted(back)} != {sorted(orig)}")
    for k in orig:
        a, b = orig[k].numpy(), back[k].numpy()
        if "bias_ih" in k and c.kind != "gru":
            # bptt keeps one bias, the sum rounded once: it comes back as
            # (sum, 0), which computes the same function.
            hh = k.replace("bias_ih", "bias_hh")
            a = (a.astype(np.float64) + orig[hh].numpy()).astype(a.dtype)
            ok = same_bits(b, a) and not back[hh].numpy().any()
        elif "bias_hh" in k and c.kind != "gru":
            continue
        else:
            ok = same_bits(a, b)
        chk.record(f"torch -> bptt -> torch ({prec})", ref.rel_err(b, a))
        if not ok:
            chk.fail(c.label, f"torch -> bptt -> torch ({prec}): {k} changed")
    dt = orig["rnn.weight_ih_l0"].dtype
    models = []
    for sd in (orig, back):  # strict: every name and shape of d2l's model
        m = Model(c.kind, c.model.rnn.input_size, c.model.rnn.hidden_size, c.V).to(dt)
        m.load_state_dict(sd)
        models.append(m)
    x = torch.tensor(np.random.default_rng(1).normal(0, 1, (4, 2, c.model.rnn.input_size)),
                     dtype=dt)
    with torch.no_grad():
        e = ref.rel_err(models[1](x, None).double().numpy(), models[0](x, None).double().numpy())
    chk.record(f"outputs after torch -> bptt -> torch ({prec})", e)
    if e > (1e-12 if not suffix else 1e-5):
        chk.fail(c.label, f"the round-tripped model's outputs differ by {e:.3g} ({prec})")


def check_checkpoints(bptt, tmp, chk):
    """A `bptt train --save` checkpoint (parameters param.<name>) converts
    with from-bptt, every tensor exactly the mapped checkpoint tensor."""
    for kind, (_, cell) in KINDS.items():
        ck, pt = os.path.join(tmp, f"ck_{kind}.st"), os.path.join(tmp, f"ck_{kind}.pt")
        rc, _, err = run([bptt, "train", "--task", "copy:5,3", "--cell", cell, "--hidden", "4",
                          "--epochs", "1", "--save", ck, "--quiet"])
        if rc != 0:
            chk.fail(f"checkpoint {cell}", f"bptt train exit {rc}: {err.strip()}")
            continue
        rc, _, err = convert("from-bptt", "--module", kind, ck, pt)
        if rc != 0:
            chk.fail(f"checkpoint {cell}", f"from-bptt exit {rc}: {err.strip()}")
            continue
        P, _ = ref.st_read(ck)
        sd = torch.load(pt)
        names = torch_convert.MODULES[kind]
        want = {"rnn.weight_ih_l0": P["param." + names["w_ih"]].T,
                "rnn.weight_hh_l0": P["param." + names["w_hh"]].T,
                "linear.weight": P["param.W_hq"].T, "linear.bias": P["param.b_q"]}
        b = [P["param." + n] for n in names["bias"]]
        want["rnn.bias_ih_l0"] = b[0]
        want["rnn.bias_hh_l0"] = b[1] if len(b) == 2 else np.zeros_like(b[0])
        bad = [k for k, v in want.items() if k not in sd or not same_bits(sd[k].numpy(), v)]
        if bad or len(sd) != len(want):
            chk.fail(f"checkpoint {cell}", f"from-bptt gave {sorted(sd)}; differing: {bad}")


def refusals(tmp, chk):
    """Step 3: (label, args, exit status, words the one line must hold)."""
    def save(name, obj):
        path = os.path.join(tmp, name)
        torch.save(obj, path)
        return path
    torch.manual_seed(0)
    emb = Model("gru", 5, 3, 5)
    emb.emb = torch.nn.Embedding(5, 3)
    stacked = os.path.join(tmp, "stacked.st")
    P, _ = ref.st_read(os.path.join(tmp, "gru0.P.st"))
    ref.st_write(stacked, dict(P, **{"l1.W_hh": P["W_hh"]}))
    out = os.path.join(tmp, "refused.out")
    cases = [
        ("num_layers 2", ["to-bptt", "--module", "lstm",
                          save("l2.pt", Model("lstm", 5, 3, 5, num_layers=2).state_dict())],
         1, ["num_layers = 2"]),
        ("bidirectional", ["to-bptt", "--module", "gru",
                           save("bi.pt", Model("gru", 5, 3, 5, bidirectional=True).state_dict())],
         1, ["bidirectional"]),
        ("proj_size", ["to-bptt", "--module", "lstm",
                       save("proj.pt", Model("lstm", 5, 3, 5, proj_size=2).state_dict())],
         1, ["proj_size"]),
        ("relu", ["to-bptt", "--module", "rnn",
                  save("relu.pt", torch.nn.RNN(5, 3, nonlinearity="relu"))], 1, ["relu"]),
        ("embedding", ["to-bptt", "--module", "gru", save("emb.pt", emb.state_dict())], 1,
         ["emb.weight", "nn.Embedding"]),
        ("no output layer", ["to-bptt", "--module", "gru",
                             save("bare.pt", torch.nn.GRU(5, 3).state_dict())], 1,
         ["no output layer"]),
        ("wrong module", ["to-bptt", "--module", "lstm", os.path.join(tmp, "gru0.pt")], 1,
         ["nn.GRU", "--module gru"]),
        ("stacked bptt layers", ["from-bptt", "--module", "gru", stacked], 1, ["l1.W_hh"]),
        ("wrong cell", ["from-bptt", "--module", "rnn", os.path.join(tmp, "gru0.P.st")], 1,
         ["gru_torch"]),
        ("usage", ["to-bptt", "--module", "transformer", "a", "b"], 2, ["--module"]),
    ]
    for label, args, want_rc, words in cases:
        rc, _, err = convert(*args, out)
        lines = err.strip().splitlines()
        ok = rc == want_rc and len(lines) == 1 and all(w in err for w in words)
        if chk.verbose or not ok:
            print(f"  refusal {label}: exit {rc}: {err.strip()}")
        if not ok:
            chk.fail(f"refusal {label}", f"want exit {want_rc} and one line with {words}; got "
                     f"exit {rc}: {err.strip()!r}")
        if os.path.exists(out):
            chk.fail(f"refusal {label}", "an output file was written")
            os.remove(out)
    return len(cases)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bptt")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    tmp = tempfile.TemporaryDirectory(prefix="bptt-convert-")
    cases = [Case(kind, i, s, d, rng, tmp.name) for kind in KINDS
             for i, (s, d) in enumerate(CASES)]
    chk, precision = Check(args.verbose), []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:  # 2 cores at most
        jobs = [ex.submit(check_grads, c, args.bptt, chk, precision) for c in cases]
        for j in jobs:
            j.result()
    for c in cases:
        for sfx in ("", ".f32"):
            check_round_trips(c, chk, sfx)
    check_checkpoints(args.bptt, tmp.name, chk)
    n_ref = refusals(tmp.name, chk)
    prec = precision[0] if precision else "?"
    print(f"torch_convert.py and bptt grad vs PyTorch ({prec} build, {args.bptt}):")
    print(f"  {len(cases)} models ({', '.join(KINDS)} x token and real input), "
          f"{len(KINDS)} bptt train checkpoints, {n_ref} refusals; tolerance "
          + ("1e-9" if prec == "double" else f"{FLOAT_FACTOR:g} x PyTorch float32's error + "
             f"{FLOAT_FLOOR:.3g}"))
    for what, e in chk.worst.items():
        print(f"  worst relative error, {what}: {e:.3g}")
    if chk.failures:
        print(f"FAIL: {len(chk.failures)} problems:")
        for f in chk.failures:
            print("  " + f)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
