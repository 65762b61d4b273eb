"""bench/torch_data.py: the benchmark's text data for its PyTorch reference,
d2l.ai's Time Machine pipeline (chapter "Recurrent Neural Networks", d2l 0.17).

Tokens are `bptt train --tokens letters`: per line, every run of characters
other than A-Z/a-z becomes one space, the line is stripped and lowercased, and
the lines are joined with nothing between them. The vocabulary is "<unk>" (id 0)
then the tokens by descending count, ties in order of first appearance (d2l's
stable sort over a Counter), then any of ' ', 'a'..'z' the text lacks, in that
order, so V is always 28 (d2l would leave those out; The Time Machine has all
of them, so there the two agree). bench/test_torch_data.py checks that the ids
and vocabulary equal bptt's own on data/timemachine.txt.

Dimension letters: B rows (batch), T steps.
"""
import collections
import os
import random
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEXT = os.path.join(ROOT, 'data', 'timemachine.txt')
LETTERS = ' abcdefghijklmnopqrstuvwxyz'


def read_lines(path=DEFAULT_TEXT):
    """d2l's read_time_machine: one cleaned string per line of the file."""
    with open(path, 'r', encoding='utf-8') as f:
        lines = f.readlines()
    return [re.sub('[^A-Za-z]+', ' ', line).strip().lower() for line in lines]


class Vocab:
    """id <-> token for the letters tokens (see the file header for the order)."""

    def __init__(self, text):
        counts = collections.Counter(text)  # insertion order = first appearance
        by_count = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)  # stable
        self.idx_to_token = ['<unk>'] + [tok for tok, _ in by_count]
        self.idx_to_token += [c for c in LETTERS if c not in counts]
        self.token_to_idx = {tok: i for i, tok in enumerate(self.idx_to_token)}

    def __len__(self):
        return len(self.idx_to_token)

    def __getitem__(self, token):
        return self.token_to_idx.get(token, 0)


def load_corpus(path=DEFAULT_TEXT, max_tokens=0):
    """(ids, vocab): the vocabulary comes from the whole text, then the first
    max_tokens ids are kept when max_tokens > 0 (d2l's load_corpus_time_machine)."""
    text = ''.join(read_lines(path))
    vocab = Vocab(text)
    ids = [vocab[c] for c in text]
    if max_tokens > 0:
        ids = ids[:max_tokens]
    return ids, vocab


def seq_data_iter_sequential(ids, batch, steps, rng=random):
    """d2l's sequential partitioning: skip a random offset in [0, steps], cut the
    rest into `batch` rows and walk them `steps` at a time, so row b of one
    minibatch continues row b of the previous one. Yields (X, Y), int64 [B, T]."""
    import torch
    offset = rng.randint(0, steps)
    n = ((len(ids) - offset - 1) // batch) * batch
    Xs = torch.tensor(ids[offset:offset + n]).reshape(batch, -1)
    Ys = torch.tensor(ids[offset + 1:offset + 1 + n]).reshape(batch, -1)
    for i in range(0, (Xs.shape[1] // steps) * steps, steps):
        yield Xs[:, i:i + steps], Ys[:, i:i + steps]


def require_minibatches(ids, batch, steps):
    """Raises ValueError unless every offset leaves at least one minibatch."""
    if (len(ids) - steps - 1) // batch < steps:
        raise ValueError(f'{len(ids)} tokens leave no minibatch of {batch} x {steps} at some offsets: '
                         f'use a longer text or a smaller batch or number of steps')


def one_sequence(ids, batch, steps):
    """The text cut into `batch` rows; the first `steps` columns of each, as one
    long sequence (X, Y), int64 [B, T] (the full-BPTT workload)."""
    import torch
    n = (len(ids) - 1) // batch * batch
    Xs = torch.tensor(ids[:n]).reshape(batch, -1)
    Ys = torch.tensor(ids[1:1 + n]).reshape(batch, -1)
    if Xs.shape[1] < steps:
        raise ValueError(f'the text gives {Xs.shape[1]} steps per row for batch {batch}, fewer than {steps}')
    return Xs[:, :steps], Ys[:, :steps]
