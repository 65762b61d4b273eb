#!/usr/bin/env python3
"""bench/torch_ref.py: the benchmark's PyTorch reference, the char-level
language model of d2l.ai's RNN chapter on data/timemachine.txt (bench/run.py
runs it beside bptt; it also runs on its own). Each mode prints JSON lines.

  step      the classic training step, timed: carried state detached, one-hot
            inputs, forward over T steps, mean cross-entropy, backward, global
            gradient-norm clipping (theta 1), SGD (lr 1), loss.item(). After
            --warmup steps, --steps are timed; one JSON line with step_ms
            min/median/max, tokens/s and peak RSS.
  fullbptt  the same step over one sequence of --num-steps T (fresh zero state
            every step, no detach inside): time per token, RSS growth and the
            bytes autograd keeps for backward (measured on an untimed pass).
  converge  d2l's training run: the first --max-tokens tokens, sequential
            partitioning with a random offset per epoch, state zero at each
            epoch start and detached per minibatch; one JSON line per epoch
            with the training perplexity (exp of the mean cross-entropy over
            the epoch's tokens), then one with a greedy sample.

Variants: loop (d2l's rnn-scratch: a hand-written tanh cell run step by step
in Python), nnrnn, nnlstm, nngru (torch.nn.RNN/LSTM/GRU over the whole window);
--layers N stacks N of them (num_layers=N; loop stacks N hand-written cells).
Initialisation (--init): normal:SIGMA (default normal:0.01, d2l's: every weight
N(0, SIGMA^2), every bias 0) or torch (the modules' own). Threads: --threads N
sets torch's threads and, unless already set, OPENBLAS_NUM_THREADS and
OMP_NUM_THREADS (torch's products go to OpenBLAS, whose pool ignores torch).

Dimension letters: B batch, T steps, H hidden, V vocabulary (28), L layers.
Examples:
  python3 bench/torch_ref.py step --variant nnrnn --hidden 512 --warmup 10 --steps 50
  python3 bench/torch_ref.py fullbptt --variant loop --hidden 256 --num-steps 2240 --steps 3
  python3 bench/torch_ref.py converge --variant loop --epochs 10
  python3 bench/torch_ref.py converge --variant nnlstm --layers 2 --hidden 256 --epochs 100
"""
import argparse
import json
import math
import os
import random
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_data  # noqa: E402

VARIANTS = ('loop', 'nnrnn', 'nnlstm', 'nngru')
ENV_KEYS = ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE')
torch = F = nn = None  # imported by import_torch(), after the thread variables are set


def import_torch():
    """Imports torch into this module; False when this Python has none."""
    global torch, F, nn
    try:
        import torch
        import torch.nn.functional as F
        from torch import nn
    except ImportError:
        return False
    return True


def parse_init(spec):
    """'normal:SIGMA' -> SIGMA, 'torch' -> None (the modules' own init)."""
    if spec == 'torch':
        return None
    kind, _, sigma = spec.partition(':')
    try:
        if kind == 'normal' and float(sigma) > 0:
            return float(sigma)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"--init {spec}: use normal:SIGMA (e.g. normal:0.01) or torch")


class LoopModel:
    """d2l's rnn-scratch, stacked: per layer l and step t,
    h_t^l = tanh(x_t^l W_xh^l + h_{t-1}^l W_hh^l + b_h^l), x_t^{l+1} = h_t^l,
    output o_t = h_t^L W_hq + b_q. Weights stored [in, out] as d2l does."""

    def __init__(self, V, H, L, sigma):
        def weight(shape):
            if sigma is None:  # what nn.RNN would draw: U(-1/sqrt(H), 1/sqrt(H))
                return (torch.rand(shape) * 2 - 1) / math.sqrt(H)
            return torch.randn(shape) * sigma

        def bias(n):
            return weight((n,)) if sigma is None else torch.zeros(n)
        self.V, self.H, self.L = V, H, L
        self.layers = [(weight((V if l == 0 else H, H)), weight((H, H)), bias(H)) for l in range(L)]
        self.W_hq, self.b_q = weight((H, V)), bias(V)
        self.params = [p for layer in self.layers for p in layer] + [self.W_hq, self.b_q]
        for p in self.params:
            p.requires_grad_(True)

    def begin_state(self, B):
        return tuple(torch.zeros(B, self.H) for _ in range(self.L))

    def forward(self, X, state):
        """X [B, T] ids, state L x [B, H] -> logits [T*B, V] (row t*B + b), state."""
        hs = list(state)
        outputs = []
        for x in F.one_hot(X.T, self.V).to(torch.get_default_dtype()):  # x [B, V]
            for l, (W_xh, W_hh, b_h) in enumerate(self.layers):
                hs[l] = torch.tanh(torch.mm(x, W_xh) + torch.mm(hs[l], W_hh) + b_h)
                x = hs[l]
            outputs.append(torch.mm(x, self.W_hq) + self.b_q)
        return torch.cat(outputs, dim=0), tuple(hs)


class ModuleModel:
    """torch.nn.RNN (tanh) / LSTM / GRU with num_layers=L over one-hot inputs
    [T, B, V], then nn.Linear(H, V) on every step's top-layer output."""

    def __init__(self, variant, V, H, L, sigma):
        cls = {'nnrnn': nn.RNN, 'nnlstm': nn.LSTM, 'nngru': nn.GRU}[variant]
        self.V, self.H, self.L, self.lstm = V, H, L, variant == 'nnlstm'
        self.rnn, self.out = cls(V, H, num_layers=L), nn.Linear(H, V)
        self.params = list(self.rnn.parameters()) + list(self.out.parameters())
        if sigma is not None:
            with torch.no_grad():
                for name, p in list(self.rnn.named_parameters()) + list(self.out.named_parameters()):
                    if name.startswith('weight'):
                        p.normal_(0.0, sigma)
                    else:
                        p.zero_()

    def begin_state(self, B):
        return tuple(torch.zeros(self.L, B, self.H) for _ in range(2 if self.lstm else 1))

    def forward(self, X, state):
        """X [B, T] ids, state (h [L, B, H],) or (h, c) -> logits [T*B, V], state."""
        x = F.one_hot(X.T, self.V).to(torch.get_default_dtype())  # [T, B, V]
        Y, st = self.rnn(x, state if self.lstm else state[0])
        return self.out(Y.reshape(-1, self.H)), (st if self.lstm else (st,))


def make_model(a, V):
    sigma = parse_init(a.init)
    if a.variant == 'loop':
        return LoopModel(V, a.hidden, a.layers, sigma)
    return ModuleModel(a.variant, V, a.hidden, a.layers, sigma)


def train_step(model, X, Y, state, lr, theta):
    """One minibatch: forward, mean cross-entropy, backward, d2l's clipping
    (scale every gradient by theta/norm when the global norm exceeds theta),
    SGD. Returns (loss, state)."""
    for p in model.params:
        p.grad = None
    logits, state = model.forward(X, state)
    loss = F.cross_entropy(logits, Y.T.reshape(-1))
    loss.backward()
    with torch.no_grad():
        if theta > 0:
            norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in model.params))
            if norm > theta:
                for p in model.params:
                    p.grad.mul_(theta / norm)
        for p in model.params:
            p.add_(p.grad, alpha=-lr)
    return loss.item(), state


def detach(state):
    return tuple(s.detach() for s in state)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def autograd_saved_mb(model, X, Y, B):
    """Bytes of the tensors autograd keeps for backward over one sequence
    (distinct storages, parameters excluded), from an untimed forward."""
    param_storages = {p.storage().data_ptr() for p in model.params}
    seen = {}

    def pack(t):
        st = t.storage()
        if st.data_ptr() not in param_storages:
            seen[st.data_ptr()] = st.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, _ = model.forward(X, model.begin_state(B))
        F.cross_entropy(logits, Y.T.reshape(-1))
    return sum(seen.values()) / 2 ** 20


def run_timed(a):
    """step and fullbptt: one measurement, one JSON line."""
    ids, vocab = torch_data.load_corpus(a.data)  # the whole text
    V, B, T = len(vocab), a.batch, a.num_steps
    model = make_model(a, V)
    n = a.warmup + a.steps
    if a.mode == 'fullbptt':
        batches = [torch_data.one_sequence(ids, B, T)] * n
    else:
        torch_data.require_minibatches(ids, B, T)
        rng, batches = random.Random(a.seed), []
        while len(batches) < n:
            batches.extend(torch_data.seq_data_iter_sequential(ids, B, T, rng))
        batches = batches[:n]
    state = model.begin_state(B)
    rss_before = peak_rss_mb()
    times, cpu, losses = [], [], []
    for X, Y in batches:
        t0, c0 = time.perf_counter(), time.process_time()
        state = model.begin_state(B) if a.mode == 'fullbptt' else detach(state)
        loss, state = train_step(model, X, Y, state, a.lr, a.clip)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # all threads; a speed measure at 1 thread only
        losses.append(loss)
    timed = times[a.warmup:]
    med, tok = statistics.median(timed), B * T
    cpu_med = statistics.median(cpu[a.warmup:])
    out = dict(mode=a.mode, variant=a.variant, layers=a.layers, hidden=a.hidden, threads=a.threads,
               batch=B, num_steps=T, warmup=a.warmup, steps=len(timed),
               step_ms_median=med * 1e3, step_ms_min=min(timed) * 1e3, step_ms_max=max(timed) * 1e3,
               tokens_per_s=tok / med, tokens_per_s_min=tok / max(timed), tokens_per_s_max=tok / min(timed),
               us_per_token=med / tok * 1e6, tokens_per_cpu_s=tok / cpu_med if cpu_med > 0 else None,
               peak_rss_mb=peak_rss_mb(), rss_before_train_mb=rss_before,
               first_loss=losses[0], last_loss=losses[-1])
    if a.mode == 'fullbptt':
        out['autograd_saved_mb'] = autograd_saved_mb(model, *batches[0], B)
    out.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
               env={k: os.environ.get(k) for k in ENV_KEYS})
    print(json.dumps(out), flush=True)


def greedy(model, vocab, prefix, n):
    """d2l's predict_ch8: warm the state on the prefix, then n argmax tokens."""
    with torch.no_grad():
        state = model.begin_state(1)
        out = [vocab[prefix[0]]]
        for c in prefix[1:]:
            _, state = model.forward(torch.tensor([[out[-1]]]), state)
            out.append(vocab[c])
        for _ in range(n):
            logits, state = model.forward(torch.tensor([[out[-1]]]), state)
            out.append(int(logits.argmax(dim=1)))
        return ''.join(vocab.idx_to_token[i] for i in out)


def run_converge(a):
    ids, vocab = torch_data.load_corpus(a.data, a.max_tokens)
    torch_data.require_minibatches(ids, a.batch, a.num_steps)
    rng = random.Random(a.seed)
    model = make_model(a, len(vocab))
    print(json.dumps(dict(mode='converge', variant=a.variant, layers=a.layers, hidden=a.hidden,
                          batch=a.batch, num_steps=a.num_steps, lr=a.lr, clip=a.clip, init=a.init,
                          seed=a.seed, tokens=len(ids), vocab=len(vocab), threads=a.threads,
                          torch=torch.__version__, env={k: os.environ.get(k) for k in ENV_KEYS})), flush=True)
    start = time.perf_counter()
    epoch = 0
    while epoch < a.epochs and (a.budget <= 0 or time.perf_counter() - start < a.budget):
        epoch += 1
        t0 = time.perf_counter()
        state, total, count = None, 0.0, 0
        for X, Y in torch_data.seq_data_iter_sequential(ids, a.batch, a.num_steps, rng):
            state = model.begin_state(a.batch) if state is None else detach(state)
            loss, state = train_step(model, X, Y, state, a.lr, a.clip)
            total, count = total + loss * Y.numel(), count + Y.numel()
        secs = time.perf_counter() - t0
        print(json.dumps(dict(epoch=epoch, train_ppl=math.exp(total / count), tokens_per_s=count / secs,
                              epoch_s=secs, elapsed_s=time.perf_counter() - start)), flush=True)
    print(json.dumps(dict(done=epoch, sample=greedy(model, vocab, 'time traveller ', 50),
                          peak_rss_mb=peak_rss_mb())), flush=True)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 2, as the bptt commands do
        sys.stderr.write(f'torch_ref: {message} (--help for usage)\n')
        sys.exit(2)


def main():
    ap = Parser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('mode', choices=('step', 'fullbptt', 'converge'))
    ap.add_argument('--variant', choices=VARIANTS, default=None,
                    help='loop, nnrnn, nnlstm, nngru (default: nnrnn for step, loop otherwise)')
    ap.add_argument('--layers', type=int, default=1, help='stacked layers (default 1)')
    ap.add_argument('--hidden', type=int, default=None, help='H (default 512; fullbptt 256)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--num-steps', type=int, default=35, help='T: steps per minibatch or sequence (default 35)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--warmup', type=int, default=10, help='untimed steps first (step, fullbptt)')
    ap.add_argument('--steps', type=int, default=50, help='timed steps (step, fullbptt)')
    ap.add_argument('--epochs', type=int, default=10, help='converge: epochs (default 10)')
    ap.add_argument('--budget', type=float, default=0, help='converge: stop after this many seconds (0: no limit)')
    ap.add_argument('--max-tokens', type=int, default=10000, help='converge: first N tokens (0: all; default 10000)')
    ap.add_argument('--lr', type=float, default=1.0)
    ap.add_argument('--clip', type=float, default=1.0, help='global gradient-norm clipping (0: none)')
    ap.add_argument('--init', default='normal:0.01', help='normal:SIGMA (default normal:0.01) or torch')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--data', default=torch_data.DEFAULT_TEXT, help='text (default data/timemachine.txt)')
    a = ap.parse_args()
    a.variant = a.variant or ('nnrnn' if a.mode == 'step' else 'loop')
    a.hidden = a.hidden or (256 if a.mode == 'fullbptt' else 512)
    try:
        parse_init(a.init)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    if min(a.layers, a.hidden, a.batch, a.num_steps, a.threads, a.steps) < 1 or a.warmup < 0:
        ap.error('--layers, --hidden, --batch, --num-steps, --threads and --steps must be >= 1, --warmup >= 0')
    if not os.path.isfile(a.data):
        sys.exit(f'torch_ref: {a.data} not found (the repository ships data/timemachine.txt)')

    os.environ.setdefault('OPENBLAS_NUM_THREADS', str(a.threads))
    os.environ.setdefault('OMP_NUM_THREADS', str(a.threads))
    if not import_torch():
        sys.exit(f'torch_ref: PyTorch is not installed for {sys.executable} (apt-get install python3-torch)')
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    try:
        run_converge(a) if a.mode == 'converge' else run_timed(a)
    except ValueError as e:  # a text too short for the minibatches asked for
        sys.exit(f'torch_ref: {e}')


if __name__ == '__main__':
    main()
