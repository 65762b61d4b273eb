#!/usr/bin/env python3
"""test_torch_data.py: the PyTorch reference reads the same tokens as bptt.
bench/torch_data.py's vocabulary and ids must equal, element for element,
those bptt's own reader gives (corpus_ids, built from bt_corpus_load) for the
whole text and its first 10,000 tokens, and the vocabulary `bptt train
--tokens letters` saves in its checkpoint. On The Time Machine the sizes must be
d2l's published ones (170,580 tokens, 28 ids: d2l.ai section 8.2). Needs no torch.
Usage: test_torch_data.py CORPUS_IDS BPTT TEXT
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_data  # noqa: E402

failures = []


def check(ok, what):
    print(('ok    ' if ok else 'FAIL  ') + what)
    if not ok:
        failures.append(what)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f'first difference at {i}: {x!r} vs {y!r}'
    return f'lengths {len(a)} vs {len(b)}' if len(a) != len(b) else 'equal'


def safetensors_metadata(path):
    with open(path, 'rb') as f:
        (n,) = struct.unpack('<Q', f.read(8))
        return json.loads(f.read(n)).get('__metadata__', {})


def main():
    corpus_ids, bptt, text = sys.argv[1:4]
    for max_tokens in (0, 10000):
        c = json.loads(subprocess.run([corpus_ids, text, str(max_tokens)], check=True,
                                      capture_output=True, text=True).stdout)
        ids, vocab = torch_data.load_corpus(text, max_tokens)
        what = f'max_tokens {max_tokens}'
        check(vocab.idx_to_token == c['vocab'],
              f'{what}: vocabulary equals bptt\'s ({first_difference(vocab.idx_to_token, c["vocab"])})')
        check(ids == c['ids'], f'{what}: {len(ids)} ids equal bptt\'s ({first_difference(ids, c["ids"])})')
        if max_tokens == 0 and os.path.basename(text) == 'timemachine.txt':
            check((len(ids), len(vocab)) == (170580, 28),
                  f'd2l\'s sizes for The Time Machine: (170580, 28), got {(len(ids), len(vocab))}')

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, 'm.safetensors')
        subprocess.run([bptt, 'train', '--data', text, '--tokens', 'letters', '--max-tokens', '2000',
                        '--hidden', '8', '--epochs', '1', '--quiet', '--save', model],
                       check=True, capture_output=True, text=True)
        saved = json.loads(safetensors_metadata(model)['vocab'])
    _, vocab = torch_data.load_corpus(text)
    check(vocab.idx_to_token == saved,
          f'vocabulary equals the one `bptt train --tokens letters` saves ({first_difference(vocab.idx_to_token, saved)})')
    if failures:
        print(f'{len(failures)} check(s) failed')
        sys.exit(1)


if __name__ == '__main__':
    main()
