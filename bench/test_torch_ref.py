#!/usr/bin/env python3
"""test_torch_ref.py: the benchmark reference's hand-written `loop` model is
the model torch.nn.RNN computes. A 2-layer LoopModel and nn.RNN(num_layers=2)
given the same weights (nn.RNN keeps them transposed and has a second bias,
set to 0) must give the same logits, loss and gradients in double precision on
a window of the text, and train_step must leave the parameters one clipped SGD
step gives. Exits 77 (skip) when neither this Python nor /usr/bin/python3
has torch. Usage: test_torch_ref.py TEXT
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_data  # noqa: E402
import torch_ref  # noqa: E402

SYSTEM_PYTHON = '/usr/bin/python3'
TOL = 1e-10  # float64 sums of the same terms in a different order
failures = []


def rel_diff(a, b):
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-300))


def check(name, a, b):
    d = rel_diff(a, b)
    print(f"{'ok  ' if d <= TOL else 'FAIL'}  {name}: largest difference {d:.2g} of the largest component")
    if d > TOL:
        failures.append(name)


def pairs(loop, mod):
    """(name, loop tensor, the nn.RNN tensor in loop's layout)."""
    for l, (W_xh, W_hh, b_h) in enumerate(loop.layers):
        rnn = mod.rnn
        yield f'W_xh{l}', W_xh, lambda g, n=f'weight_ih_l{l}': g(getattr(rnn, n)).T
        yield f'W_hh{l}', W_hh, lambda g, n=f'weight_hh_l{l}': g(getattr(rnn, n)).T
        yield f'b_h{l}', b_h, lambda g, n=f'bias_ih_l{l}': g(getattr(rnn, n))
        yield f'b_h{l} (bias_hh)', b_h, lambda g, n=f'bias_hh_l{l}': g(getattr(rnn, n))
    yield 'W_hq', loop.W_hq, lambda g: g(mod.out.weight).T
    yield 'b_q', loop.b_q, lambda g: g(mod.out.bias)


def main():
    if not torch_ref.import_torch():
        if os.path.exists(SYSTEM_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON):
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
        print('skip: no Python with torch (apt-get install python3-torch)')
        sys.exit(77)
    torch = torch_ref.torch
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    V, H, L, B, T = 28, 16, 2, 4, 12
    ids, vocab = torch_data.load_corpus(sys.argv[1], 2000)
    X, Y = next(torch_data.seq_data_iter_sequential(ids, B, T, random.Random(0)))

    loop = torch_ref.LoopModel(len(vocab), H, L, 0.3)
    mod = torch_ref.ModuleModel('nnrnn', len(vocab), H, L, 0.3)
    with torch.no_grad():
        for p in loop.params:  # nonzero biases, so the bias paths count
            p.normal_(0.0, 0.3)
        for l, (W_xh, W_hh, b_h) in enumerate(loop.layers):
            getattr(mod.rnn, f'weight_ih_l{l}').copy_(W_xh.T)
            getattr(mod.rnn, f'weight_hh_l{l}').copy_(W_hh.T)
            getattr(mod.rnn, f'bias_ih_l{l}').copy_(b_h)
            getattr(mod.rnn, f'bias_hh_l{l}').zero_()
        mod.out.weight.copy_(loop.W_hq.T)
        mod.out.bias.copy_(loop.b_q)
    h0 = torch.randn(L, B, H) * 0.5

    logits_loop, state_loop = loop.forward(X, tuple(h0))
    logits_mod, state_mod = mod.forward(X, (h0,))
    check('logits', logits_loop, logits_mod)
    check('final state', torch.stack(state_loop), state_mod[0])
    for logits in (logits_loop, logits_mod):
        torch_ref.F.cross_entropy(logits, Y.T.reshape(-1)).backward()
    for name, a, b in pairs(loop, mod):
        check(f'gradient {name}', a.grad, b(lambda t: t.grad))

    # One step of the benchmark's update from the same start: SGD on the
    # gradients above scaled by theta/norm (norm of all of them concatenated).
    theta, lr = 0.5, 0.7
    for model in (loop, mod):
        grads = [p.grad.clone() for p in model.params]
        norm = float(torch.cat([g.flatten() for g in grads]).norm())
        assert norm > theta, f'clipping must be active for this check (norm {norm})'
        before = [p.detach().clone() for p in model.params]
        torch_ref.train_step(model, X, Y, tuple(h0) if model is loop else (h0,), lr, theta)
        expected = torch.cat([(b - lr * theta / norm * g).flatten() for b, g in zip(before, grads)])
        check(f'{type(model).__name__}: parameters after one clipped SGD step',
              torch.cat([p.detach().flatten() for p in model.params]), expected)
    if failures:
        print(f'{len(failures)} check(s) failed')
        sys.exit(1)


if __name__ == '__main__':
    main()
