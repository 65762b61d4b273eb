#!/usr/bin/python3
"""test_torch_stack.py: `bptt grad --layers` on a 2-layer stack against
PyTorch float64 nn.LSTM(num_layers=2) and nn.RNN(num_layers=2, tanh) with
an nn.Linear head, dropout 0, under full BPTT, fixed:K truncation (the state
of every layer detached between chunks) and given factors xi (a custom
gradient-scale node on every layer's recurrent edge, xi = 0 a cut); and
`bptt grad --estimator rtrl` (forward-mode, exact) against the full gradient.

The weight mapping (docs/stacks.md): for layer k = 1, 2 (torch index k-1)
  lstm:     l<k>.W_x = weight_ih_l<k-1>^T, l<k>.W_h = weight_hh_l<k-1>^T,
            l<k>.b = bias_ih_l<k-1> + bias_hh_l<k-1>
  rnn_tanh: l<k>.W_xh, l<k>.W_hh, l<k>.b_h likewise
  out.W_hq = Linear.weight^T, out.b_q = Linear.bias
and the initial states l<k>.h0 = h0[k-1] (l<k>.c0 = c0[k-1]).
Loss: the mean over steps of the mean over rows of the cross-entropy of
one-hot inputs' next token, as bptt grad (docs/grad-files.md).

usage: test_torch_stack.py BPTT   |   test_torch_stack.py --fixture PATH
Error per tensor: max |bptt - torch| / max |torch|; double build 1e-9, float
build 1e-4 (every input is a float32 number, so both builds read the same P).
Exit 0 when all agree, 1 otherwise, 77 without torch."""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402  (exits 77, skipped, without torch)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors_np import st_read, st_write  # noqa: E402  (tools/, on the path reference set)

MODULES = {"lstm": ("lstm", ["W_x", "W_h", "b"]), "rnn": ("rnn_tanh", ["W_xh", "W_hh", "b_h"])}


class GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, xi):
        ctx.xi = xi
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.xi, None


def edge(x, xi):
    return x.detach() if xi == 0 else x if xi == 1 else GradScale.apply(x, xi)


def f32(a):
    return np.asarray(a, np.float32).astype(np.float64)


def make_model(kind, V, H, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    rnn = (torch.nn.LSTM if kind == "lstm" else torch.nn.RNN)(V, H, num_layers=2,
                                                              batch_first=True).double()
    head = torch.nn.Linear(H, V).double()
    with torch.no_grad():  # float32 values, so the float build reads them exactly
        for p in list(rnn.parameters()) + list(head.parameters()):
            p.copy_(torch.from_numpy(f32(rng.normal(0, 0.6, tuple(p.shape)))))
    return rnn, head


def to_bptt(kind, rnn, head):
    names = MODULES[kind][1]
    P = {}
    for k in (1, 2):
        sd = {n: getattr(rnn, f"{n}_l{k - 1}").detach().numpy() for n in
              ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        P[f"l{k}.{names[0]}"] = sd["weight_ih"].T.copy()
        P[f"l{k}.{names[1]}"] = sd["weight_hh"].T.copy()
        P[f"l{k}.{names[2]}"] = sd["bias_ih"] + sd["bias_hh"]
    P["out.W_hq"] = head.weight.detach().numpy().T.copy()
    P["out.b_q"] = head.bias.detach().numpy().copy()
    return P


def torch_grads(kind, rnn, head, X, Y, h0, c0, policy, xi):
    """{bptt name: gradient} from torch autograd, and the loss."""
    V = head.weight.shape[0]
    B, T = X.shape
    x = F.one_hot(torch.from_numpy(X).long(), V).double()
    y = torch.from_numpy(Y).long()
    h0t = torch.from_numpy(h0).requires_grad_()
    c0t = torch.from_numpy(c0).requires_grad_() if kind == "lstm" else None
    rnn.zero_grad()
    head.zero_grad()
    state = (h0t, c0t) if kind == "lstm" else h0t

    def cut(s, xi_t):
        return tuple(edge(u, xi_t) for u in s) if kind == "lstm" else edge(s, xi_t)

    outs = []
    if policy == "full":
        o, _ = rnn(x, state)
        outs.append(o)
    elif policy.startswith("fixed:"):
        K = int(policy.split(":")[1])
        for a in range(0, T, K):
            if a > 0:
                state = cut(state, 0)
            o, state = rnn(x[:, a:a + K], state)
            outs.append(o)
    else:  # given xi, step by step
        for t in range(T):
            state = cut(state, float(xi[t]))
            o, state = rnn(x[:, t:t + 1], state)
            outs.append(o)
    logits = head(torch.cat(outs, 1))  # [B,T,V]
    loss = F.cross_entropy(logits.reshape(B * T, V), y.reshape(B * T))
    loss.backward()
    names = MODULES[kind][1]
    G = {}
    for k in (1, 2):
        G[f"l{k}.{names[0]}"] = getattr(rnn, f"weight_ih_l{k - 1}").grad.numpy().T
        G[f"l{k}.{names[1]}"] = getattr(rnn, f"weight_hh_l{k - 1}").grad.numpy().T
        G[f"l{k}.{names[2]}"] = getattr(rnn, f"bias_ih_l{k - 1}").grad.numpy()
        G[f"l{k}.h0"] = grad_of(h0t)[k - 1]
        if kind == "lstm":
            G[f"l{k}.c0"] = grad_of(c0t)[k - 1]
    G["out.W_hq"] = head.weight.grad.numpy().T
    G["out.b_q"] = head.bias.grad.numpy()
    return G, float(loss)


def grad_of(t):
    """t's gradient, zeros where none reached it (a cut before step 0)."""
    return t.grad.numpy() if t.grad is not None else np.zeros(tuple(t.shape))


def same_with_checkpoints(bptt, tmp, P, cell, H):
    """With dropout (no torch counterpart: its masks are bptt's), checkpointed
    windows recompute each stretch with the same masks: --checkpoint 2 gives
    the gradients of the plain windows. Returns the number of failures."""
    pfile = os.path.join(tmp, "Pd.st")
    st_write(pfile, P)
    G = []
    for extra in ([], ["--checkpoint", "2"]):
        gfile = os.path.join(tmp, f"Gd{len(G)}.st")
        cmd = [bptt, "grad", "--layers", f"{cell}:{H},{cell}:{H}", "--dropout", "0.4",
               "--truncation", "tbptt:2,5", "--seed", "7", "--params", pfile, "--out",
               gfile] + extra
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"FAIL {' '.join(cmd)}\n{p.stderr}{p.stdout}")
            return 1
        G.append(st_read(gfile)[0])
    tol = 1e-12 if st_read(gfile)[1].get("precision") == "double" else 1e-5
    errs = {n: ref.rel_err(G[1][n], G[0][n]) for n in G[0]}
    worst = max(errs.values())
    print(f"{'ok  ' if worst <= tol else 'FAIL'} {cell} dropout 0.4 tbptt:2,5: --checkpoint 2 "
          f"= plain windows, largest relative difference {worst:.3g}")
    return 0 if worst <= tol else 1


def write_fixture(path):
    """tests/fixtures/stack_lstm_params.safetensors: P of a stack lstm:3,lstm:3
    (V = 4, B = 2, T = 5) for the option table test (numpy only, fixed seed)."""
    rng = np.random.default_rng(15)
    P = {}
    for k, d in ((1, 4), (2, 3)):
        P[f"l{k}.W_x"] = f32(rng.normal(0, 0.5, (d, 12)))
        P[f"l{k}.W_h"] = f32(rng.normal(0, 0.5, (3, 12)))
        P[f"l{k}.b"] = f32(rng.normal(0, 0.5, 12))
    P["out.W_hq"] = f32(rng.normal(0, 0.5, (3, 4)))
    P["out.b_q"] = f32(rng.normal(0, 0.5, 4))
    P["X"] = rng.integers(0, 4, (2, 5)).astype(np.int32)
    P["Y"] = rng.integers(0, 4, (2, 5)).astype(np.int32)
    st_write(path, P)


def main():
    if sys.argv[1] == "--fixture":
        write_fixture(sys.argv[2])
        return 0
    bptt = sys.argv[1]
    rng = np.random.default_rng(20261201)
    precision = None
    failures = checks = 0
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(6):
            kind = ["lstm", "rnn"][case % 2]
            B, T, H, V = int(rng.integers(1, 5)), int(rng.integers(4, 13)), \
                int(rng.integers(2, 9)), int(rng.integers(3, 10))
            rnn, head = make_model(kind, V, H, rng)
            P = to_bptt(kind, rnn, head)
            X = rng.integers(0, V, (B, T)).astype(np.int32)
            Y = rng.integers(0, V, (B, T)).astype(np.int32)
            h0 = f32(rng.uniform(-0.9, 0.9, (2, B, H)))
            c0 = f32(rng.normal(0, 1, (2, B, H)))
            xi = f32(rng.choice([0.0, 0.5, 1.0, 1.0, 2.0], T))
            P.update(X=X, Y=Y)
            for k in (1, 2):
                P[f"l{k}.h0"] = h0[k - 1]
                if kind == "lstm":
                    P[f"l{k}.c0"] = c0[k - 1]
            cell = MODULES[kind][0]
            failures += same_with_checkpoints(bptt, tmp, P, cell, H)
            for policy in ["full", "fixed:3", "xi", "rtrl"]:
                Pp = dict(P, xi=xi) if policy == "xi" else P
                pfile, gfile = os.path.join(tmp, "P.st"), os.path.join(tmp, "G.st")
                st_write(pfile, Pp)
                cmd = [bptt, "grad", "--layers", f"{cell}:{H},{cell}:{H}", "--params", pfile,
                       "--out", gfile] + ([] if policy == "xi" else ["--estimator", "rtrl"]
                                          if policy == "rtrl" else ["--truncation", policy])
                p = subprocess.run(cmd, capture_output=True, text=True)
                label = f"case {case} {kind} B={B} T={T} H={H} V={V} {policy}"
                if p.returncode != 0:
                    print(f"FAIL {label}: {' '.join(cmd)}\n{p.stderr}{p.stdout}")
                    failures += 1
                    continue
                Gb, meta = st_read(gfile)
                precision = meta.get("precision", "float")
                tol = 1e-9 if precision == "double" else 1e-4
                Gt, loss = torch_grads(kind, rnn, head, X, Y, h0, c0,
                                       "full" if policy == "rtrl" else policy, xi)
                errs = {"loss": ref.rel_err(Gb["loss"].reshape(()), np.float64(loss))}
                for n, g in Gt.items():
                    errs[n] = ref.rel_err(Gb["grad." + n], g) if "grad." + n in Gb else float("inf")
                for n, e in errs.items():
                    checks += 1
                    worst = max(worst, e)
                    if not e <= tol:
                        failures += 1
                        print(f"FAIL {label}: {n} relative error {e:.3g} > {tol:g}")
                print(f"ok   {label}: {len(errs)} tensors, largest relative error "
                      f"{max(errs.values()):.3g}")
    print(f"{checks} tensors compared ({precision} build), largest relative error {worst:.3g}, "
          f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
