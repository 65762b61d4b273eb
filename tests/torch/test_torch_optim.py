#!/usr/bin/python3
"""test_torch_optim.py: the shipped optimizer plugins and global-norm clipping
against torch.optim in float64, through libbptt's C API (ctypes).

Each case runs STEPS updates on a block of five parameter tensors (1,186
scalars: the plugins' AVX-512 and AVX2 loops run their bodies and their
tails) with bt_optimizer_update, the call `bptt train` makes, on one thread
and on two. PyTorch runs the same updates with torch.optim.SGD, Adam and
AdamW on the same gradients. Compared after every step: each parameter
tensor, each tensor's update (p_t - p_{t-1}, on its own scale, so a small step
cannot hide behind large parameters), and the gradient norm bptt reports
before clipping; after the last step each state buffer (momentum_buffer,
exp_avg, exp_avg_sq). One and two threads must give the same bits in all of
it (the update's own promise), and every update must leave the gradients
zeroed.

Clipping is written here from bptt's documented rule (g *= theta / ||g||
when ||g|| > theta), since torch.nn.utils.clip_grad_norm_ divides by
||g|| + 1e-6 instead; some steps' gradients are scaled far above theta and
some below, so both branches run.

usage: test_torch_optim.py LIBBPTT float|double [--verbose]
Exit 0: every tensor agrees; 1: a disagreement (each is printed); 77: no
torch (meson counts it as skipped).

Error metric, per tensor: max |bptt - ref| / max |ref|. Tolerance: double
build 1e-12 (the same arithmetic in another order). Float build 2e-6: the
plugins keep parameters and state in float32, so each step rounds them
(2^-24 relative, 6e-8) and the rounding carries on. The updates have their
own tolerances (STEP_TOL). The worst check, as a fraction of its tolerance,
is printed at the end."""
import ctypes
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402  (exits 77, skipped, without torch)
import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPES = [(37, 29), (29,), (1,), (16, 3), (5, 7)]
STEPS = 12
SEED = 20261202
TOL = {"double": 1e-12, "float": 2e-6}
# Each step's update p_t - p_{t-1} against torch's, relative to the update's
# own size, after taking off what rounding the new parameter may do (float:
# half a unit in the last place, at most 2^-24 of the tensor's largest
# magnitude, counted 8 times over): an update wrong by 1e-4 of itself fails
# even where it is too small for the parameters' own check to see.
STEP_TOL = {"double": 1e-10, "float": 1e-4}
ROUNDING = {"double": 0.0, "float": 2.0 ** -21}

# (bptt spec, torch optimizer, its arguments, clip theta; 0 = no clipping)
CASES = [
    ("sgd:lr=0.05", torch.optim.SGD, dict(lr=0.05), 0),
    ("sgd:0.05,weight_decay=0.1", torch.optim.SGD, dict(lr=0.05, weight_decay=0.1), 1.0),
    ("momentum:lr=0.05,mu=0.9", torch.optim.SGD, dict(lr=0.05, momentum=0.9), 0),
    ("momentum:lr=0.05,mu=0.8,weight_decay=0.01", torch.optim.SGD,
     dict(lr=0.05, momentum=0.8, weight_decay=0.01), 1.0),
    ("momentum:0.03,mu=0.9,nesterov=1,weight_decay=0.02", torch.optim.SGD,
     dict(lr=0.03, momentum=0.9, nesterov=True, weight_decay=0.02), 2.5),
    ("adam:lr=0.01", torch.optim.Adam, dict(lr=0.01), 0),
    ("adam:0.01,beta1=0.9,beta2=0.999,eps=1e-8", torch.optim.Adam, dict(lr=0.01), 1.0),
    ("adam:0.02,beta1=0.8,beta2=0.95,eps=1e-6,weight_decay=0.1", torch.optim.AdamW,
     dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1), 1.0),
]
# bptt's state buffers, in order, by the names torch.optim keeps them under
STATE_NAMES = {"sgd": [], "momentum": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"]}


class Lib:
    """The few calls of libbptt this test makes."""

    def __init__(self, path, precision):
        self.real = ctypes.c_double if precision == "double" else ctypes.c_float
        self.np_real = np.float64 if precision == "double" else np.float32
        # a bare name would be looked up on the library path, not here
        L = self.L = ctypes.CDLL(os.path.abspath(path) if os.path.exists(path) else path)
        vp, real_p = ctypes.c_void_p, ctypes.POINTER(self.real)
        sig = {
            "bt_registry_new": (vp, []),
            "bt_registry_load_default": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_size_t]),
            "bt_registry_free": (None, [vp]),
            "bt_params_new": (vp, []),
            "bt_params_add": (vp, [vp, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
            "bt_params_finalize": (ctypes.c_int, [vp]),
            "bt_params_total": (ctypes.c_size_t, [vp]),
            "bt_params_data": (real_p, [vp]),
            "bt_params_grad": (real_p, [vp]),
            "bt_params_free": (None, [vp]),
            "bt_optimizer_new": (ctypes.c_int, [vp, ctypes.c_char_p, vp, ctypes.POINTER(vp),
                                                ctypes.c_char_p, ctypes.c_size_t]),
            "bt_optimizer_update": (ctypes.c_int, [vp, ctypes.c_double, ctypes.c_int,
                                                   ctypes.POINTER(ctypes.c_double)]),
            "bt_optimizer_state_count": (ctypes.c_int, [vp]),
            "bt_optimizer_state": (real_p, [vp, ctypes.c_int]),
            "bt_optimizer_free": (None, [vp]),
        }
        for name, (res, args) in sig.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args
        self.err = ctypes.create_string_buffer(1024)
        self.reg = L.bt_registry_new()
        if L.bt_registry_load_default(self.reg, self.err, len(self.err)) != 0:
            sys.exit(f"test_torch_optim: plugins: {self.err.value.decode()}")

    def view(self, ptr, n):
        """A numpy view of n reals at ptr (no copy)."""
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(self.real)), shape=(n,))


def draws(rng, theta):
    """Initial parameters and STEPS gradients, float32 values (so both builds
    and the reference read the same numbers). Every third step's gradient is
    scaled 40x, far above any theta here; with clipping, every fourth other
    one has the norm 1.25 theta (just above), and the rest stay below."""
    p0 = [rng.normal(0, 0.5, s).astype(np.float32) for s in SHAPES]
    grads = []
    for t in range(STEPS):
        scale = 40.0 if t % 3 == 2 else 0.01
        g = [rng.normal(0, scale, s) * rng.uniform(0.2, 2.0) for s in SHAPES]
        g[1][::4] = 0  # exact zeros: Adam's v stays 0 there on the first steps
        if theta > 0 and t % 4 == 1 and t % 3 != 2:
            norm = np.sqrt(sum((a ** 2).sum() for a in g))
            g = [a * (1.25 * theta / norm) for a in g]
        grads.append([a.astype(np.float32) for a in g])
    return p0, grads


def run_bptt(lib, spec, theta, threads, p0, grads):
    """bptt's parameters after each step, the norms it reported, its state."""
    L = lib.L
    p = L.bt_params_new()
    for i, s in enumerate(SHAPES):
        if not L.bt_params_add(p, f"t{i}".encode(), len(s), (ctypes.c_int * len(s))(*s)):
            sys.exit("test_torch_optim: bt_params_add failed")
    if L.bt_params_finalize(p) != 0:
        sys.exit("test_torch_optim: bt_params_finalize failed")
    n = L.bt_params_total(p)
    data, grad = lib.view(L.bt_params_data(p), n), lib.view(L.bt_params_grad(p), n)
    data[:] = np.concatenate([a.ravel() for a in p0])
    o = ctypes.c_void_p()
    if L.bt_optimizer_new(lib.reg, spec.encode(), p, ctypes.byref(o), lib.err, len(lib.err)) != 0:
        sys.exit(f"test_torch_optim: {spec}: {lib.err.value.decode()}")
    params, norms, zeroed = [], [], True
    for g in grads:
        grad[:] = np.concatenate([a.ravel() for a in g])
        norm = ctypes.c_double()
        st = L.bt_optimizer_update(o, theta, threads, ctypes.byref(norm))
        if st != 0:
            sys.exit(f"test_torch_optim: {spec}: bt_optimizer_update returned {st}")
        params.append(data.astype(np.float64))
        norms.append(norm.value)
        zeroed = zeroed and not grad.any()  # the update zeroes the gradients
    state = [lib.view(L.bt_optimizer_state(o, k), n).astype(np.float64)
             for k in range(L.bt_optimizer_state_count(o))]
    L.bt_optimizer_free(o)
    L.bt_params_free(p)
    return params, norms, state, zeroed


def run_torch(make, kwargs, theta, p0, grads):
    """torch.optim's parameters after each step (flat, float64), the gradient
    norms before clipping, and its state buffers by name."""
    ps = [torch.nn.Parameter(torch.tensor(a, dtype=torch.float64)) for a in p0]
    opt = make(ps, **kwargs)
    params, norms = [], []
    for g in grads:
        for q, a in zip(ps, g):
            q.grad = torch.tensor(a, dtype=torch.float64)
        norm = torch.sqrt(sum((q.grad ** 2).sum() for q in ps)).item()
        if theta > 0 and norm > theta:
            for q in ps:
                q.grad.mul_(theta / norm)
        opt.step()
        params.append(torch.cat([q.detach().reshape(-1) for q in ps]).numpy().copy())
        norms.append(norm)
    state = {k: torch.cat([opt.state[q][k].reshape(-1) for q in ps]).numpy()
             for k, v in opt.state[ps[0]].items() if k != "step" and v is not None}
    return params, norms, state


def split(flat):
    out, at = [], 0
    for s in SHAPES:
        k = int(np.prod(s))
        out.append(flat[at:at + k])
        at += k
    return out


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in TOL:
        sys.exit("usage: test_torch_optim.py LIBBPTT float|double [--verbose]")
    lib, precision, verbose = Lib(sys.argv[1], sys.argv[2]), sys.argv[2], "--verbose" in sys.argv
    tol, failures, worst, n_checks, case_worst = TOL[precision], 0, (0.0, "", 0.0), 0, 0.0
    rng = np.random.default_rng(SEED)

    def check(label, err, limit=None):
        """err against limit (the parameters' tolerance by default); the worst
        is kept as a fraction of its own tolerance."""
        nonlocal failures, worst, n_checks, case_worst
        limit = limit or tol
        n_checks += 1
        used = err / limit
        case_worst = max(case_worst, used) if used == used else used
        if not err <= limit:
            failures += 1
            print(f"FAIL {label}: relative error {err:.3g} > {limit:g}")
        if used > worst[0] or used != used:
            worst = (used, label, err)

    for spec, make, kwargs, theta in CASES:
        case_worst = 0.0
        p0, grads = draws(rng, theta)
        ref_p, ref_n, ref_s = run_torch(make, kwargs, theta, p0, grads)
        one = run_bptt(lib, spec, theta, 1, p0, grads)
        two = run_bptt(lib, spec, theta, 2, p0, grads)
        same = (all(np.array_equal(a, b) for a, b in zip(one[0], two[0])) and one[1] == two[1]
                and all(np.array_equal(a, b) for a, b in zip(one[2], two[2])))
        if not same:
            failures += 1
            print(f"FAIL {spec}: 1 and 2 threads differ (parameters, norms or state)")
        params, norms, state, zeroed = one
        if not (zeroed and two[3]):
            failures += 1
            print(f"FAIL {spec}: a gradient was not zeroed by the update")
        before, ref_before = np.concatenate([a.ravel() for a in p0]).astype(np.float64), None
        for t in range(STEPS):
            ref_before = before if ref_before is None else ref_p[t - 1]
            mine_before = before if t == 0 else params[t - 1]
            for i, (a, b) in enumerate(zip(split(params[t]), split(ref_p[t]))):
                check(f"{spec} clip {theta:g}: step {t + 1}, tensor {SHAPES[i]}", ref.rel_err(a, b))
            # the step itself, on its own scale: a small update is not hidden by
            # the parameters' size (float: plus the rounding of two parameters)
            steps = zip(split(params[t] - mine_before), split(ref_p[t] - ref_before),
                        split(ref_p[t]))
            for i, (d, dref, p_ref) in enumerate(steps):
                excess = np.abs(d - dref).max() - ROUNDING[precision] * np.abs(p_ref).max()
                check(f"{spec} clip {theta:g}: step {t + 1}, update of tensor {SHAPES[i]}",
                      max(excess, 0.0) / np.abs(dref).max(), STEP_TOL[precision])
            check(f"{spec}: step {t + 1}, gradient norm",
                  abs(norms[t] - ref_n[t]) / ref_n[t])
        names = STATE_NAMES[spec.split(":")[0]]
        if len(names) != len(state):
            failures += 1
            print(f"FAIL {spec}: {len(state)} state buffers, torch keeps {names}")
        for name, buf in zip(names, state):
            for i, (a, b) in enumerate(zip(split(buf), split(ref_s[name]))):
                check(f"{spec}: {name}, tensor {SHAPES[i]}", ref.rel_err(a, b))
        clipped = sum(theta > 0 and n > theta for n in ref_n)
        if verbose:
            print(f"{spec}, clip {theta:g} ({clipped} of {STEPS} steps clipped): worst check "
                  f"at {case_worst:.3g} of its tolerance")
    print(f"{len(CASES)} optimizer cases x {STEPS} steps x {sum(int(np.prod(s)) for s in SHAPES)} "
          f"parameters, {precision}: {n_checks} checks against torch.optim; the worst, "
          f"{worst[1]}, relative error {worst[2]:.3g} = {worst[0]:.3g} of its tolerance; "
          f"{failures} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
