#!/usr/bin/env bash
# make_seeds.sh BPTT: rewrites the committed seed corpora in tests/fuzz/corpus
# from small valid inputs the project itself makes: tiny checkpoints written
# by `bptt train` (BPTT is a float build's program, e.g. build/tools/bptt), the
# safetensors fixtures of tests/fixtures, vocabularies taken from those
# checkpoints, texts cut from data/, and spec strings. Run it when a format
# changes; the fuzzers themselves never write into these folders.
set -euo pipefail
bptt=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
corpus=$here/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in safetensors checkpoint spec vocab corpus; do
    rm -rf "$corpus/fuzz_$t"
    mkdir -p "$corpus/fuzz_$t"
done

# ---- texts: a stretch of The Time Machine, the compat fixture's text, and
# the corners of the tokenizers (CRLF and CR, a BOM, non-ASCII, few tokens) ----
head -c 700 "$root/data/timemachine.txt" | tail -c 400 >"$work/tm.txt"
cp "$root/tests/fixtures/ckpt_v1.txt" "$work/v1.txt"
printf 'Line one\r\nline two\rline three\n\n  Caf\xc3\xa9 na\xc3\xafve 123 --- end.\r\n' >"$work/crlf.txt"
printf '\xef\xbb\xbfA BOM, then \xf0\x9f\x98\x80 and \xe2\x82\xac; tabs\tand\tspaces.\n' >"$work/bom.txt"
printf 'ab' >"$work/two.txt"

# ---- checkpoints: every shipped cell, both tokenizers, each task kind ----
ck=$corpus/fuzz_checkpoint
train() { # NAME ARGS...: a one-epoch run, quiet, into $ck/NAME.safetensors
    local name=$1; shift
    "$bptt" train --epochs 1 --batch 2 --hidden 3 --quiet --save "$ck/$name.safetensors" "$@" >/dev/null
}
train rnn_tanh_chars --data "$work/tm.txt" --steps 5
train rnn_tanh_letters_adam --data "$work/tm.txt" --tokens letters --steps 4 --optimizer adam:lr=0.01
train gru_chars_random --data "$work/v1.txt" --cell gru --steps 3 --sampling random --val-fraction 0.2
train lstm_chars_momentum --data "$work/crlf.txt" --cell lstm --steps 3 --optimizer momentum:lr=0.1,mu=0.9 --truncation tbptt:2,3
train linear_adding --task adding:6,batches=2 --cell linear
train lstm_copy --task copy:2,2,alphabet=3,batches=2 --cell lstm
train influence --task influence:3,2,len=4,batches=2 --cell influence
# Checkpoints carry CRC-32s of their header and data (io/safetensors.c), so
# almost every mutation of one is refused at the checksum. Two kinds of seed
# reach further: edited ones, sealed again with correct checksums, and
# "unsealed" copies of each checkpoint (format bptt-lm-1, which predates
# checksums and still loads, and no checksum entries), whose mutations the
# loader reads as settings and tensors rather than as damage.
python3 - "$ck" <<'PY'
import json, os, struct, sys, zlib
ck = sys.argv[1]
def parts(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]
def write(path, header, data, seal):
    meta = header.setdefault("__metadata__", {})
    for k in ("checksum_data", "checksum_header"):
        meta.pop(k, None)
    if seal:
        meta["checksum_data"] = "crc32:%08x" % zlib.crc32(data)
        meta["checksum_header"] = "crc32:00000000"
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    head = struct.pack("<Q", len(h)) + h
    if seal: # the header's own digits count as zeros (see io/safetensors.c)
        zero = b'"checksum_header":"crc32:00000000"'
        head = head.replace(zero, zero[:-9] + b'%08x"' % zlib.crc32(head), 1)
    open(path, "wb").write(head + data)
trained = sorted(f for f in os.listdir(ck) if not f.startswith("v1_"))
# A 2 KB file whose settings claim hidden 30000 (3.6 GB of parameters): the
# loader must refuse it from the tensor shapes, before allocating.
header, data = parts(os.path.join(ck, "rnn_tanh_chars.safetensors"))
header["__metadata__"]["hidden"] = "30000"
write(os.path.join(ck, "claims_huge_hidden.safetensors"), header, data, True)
for f in trained:
    header, data = parts(os.path.join(ck, f))
    header["__metadata__"]["format"] = "bptt-lm-1"
    write(os.path.join(ck, "unsealed_" + f), header, data, False)
PY
for f in ckpt_v1_chars_float ckpt_v1_letters_float ckpt_v1_task_float; do
    cp "$root/tests/fixtures/$f.safetensors" "$ck/v1_$f.safetensors"
done

# ---- safetensors: the fixtures, two checkpoints, and every dtype and shape
# corner (scalar, empty, 3-D, metadata only), written by Python's struct ----
st=$corpus/fuzz_safetensors
for f in "$root"/tests/fixtures/*.safetensors; do
    case $(basename "$f") in ckpt_v1_chars_double.*) continue ;; esac # 17 KB: the others cover it
    cp "$f" "$st/"
done
cp "$ck/rnn_tanh_chars.safetensors" "$ck/linear_adding.safetensors" "$st/"
python3 - "$st" <<'PY'
import json, struct, sys
def write(path, tensors, meta=None):
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
d = sys.argv[1]
write(d + "/dtypes.safetensors", [
    ("f32", "F32", [2], struct.pack("<2f", 1.5, -2.0)),
    ("f64", "F64", [1, 1], struct.pack("<d", 3.25)),
    ("i32", "I32", [3], struct.pack("<3i", -1, 0, 7)),
    ("i64", "I64", [], struct.pack("<q", 2**40)),
    ("u8", "U8", [2, 2, 1], bytes([0, 1, 254, 255])),
    ("empty", "F32", [0, 4], b""),
], {"format": "bptt-lm-1", "note": "caf\u00e9 \ud83d\ude00"})
write(d + "/meta_only.safetensors", [], {"k": "v"})
write(d + "/empty.safetensors", [])
# The header checksum's key spelled inside a metadata key, behind an escaped
# quote: the writer once took it for its own placeholder and asserted.
write(d + "/spelled_checksum_key.safetensors", [("w", "F32", [1], struct.pack("<f", 1.0))],
      {'x"checksum_header': "crc32:00000000"})
PY

# ---- vocabularies: the JSON a checkpoint stores (first byte: 'c' chars,
# 'l' letters), and a few by hand ----
vc=$corpus/fuzz_vocab
python3 - "$ck" "$vc" <<'PY'
import json, struct, sys, os
ck, out = sys.argv[1], sys.argv[2]
for f in sorted(x for x in os.listdir(ck) if not x.startswith(("claims_", "unsealed_"))):
    raw = open(os.path.join(ck, f), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    meta = json.loads(raw[8:8 + n]).get("__metadata__", {})
    if "vocab" in meta:
        kind = b"l" if meta.get("tokens") == "letters" else b"c"
        open(os.path.join(out, f.replace(".safetensors", ".json")), "wb").write(kind + meta["vocab"].encode())
open(os.path.join(out, "escapes.json"), "wb").write(b'c["\\n","\\t","\\u00e9","\\ud83d\\ude00","\\"","\\\\"]')
open(os.path.join(out, "letters_min.json"), "wb").write(b'l["<unk>"," ","a"]')
PY

# ---- corpus: 4 setting bytes (tokens and sampling; B; T; validation and
# max_tokens, see fuzz_corpus.c), then the text ----
co=$corpus/fuzz_corpus
seed_text() { # NAME SETTINGS(4 bytes as \x escapes) FILE
    { printf "$2"; cat "$3"; } >"$co/$1"
}
seed_text tm_chars_seq '\x00\x01\x04\x00' "$work/tm.txt"
seed_text tm_letters_random '\x03\x02\x06\x01' "$work/tm.txt"
seed_text v1_chars_val '\x00\x03\x02\x02' "$work/v1.txt"
seed_text crlf_letters_max '\x01\x00\x03\x08' "$work/crlf.txt"
seed_text crlf_chars_random '\x02\x01\x01\x05' "$work/crlf.txt"
seed_text bom_chars '\x00\x00\x00\x00' "$work/bom.txt"
seed_text two_tokens '\x00\x00\x00\x00' "$work/two.txt"

# ---- specs: first byte picks the parser (see fuzz_spec.c) ----
sp=$corpus/fuzz_spec
n=0
spec() { # TEXT (printf format: \n and \0 separate command-line words)
    n=$((n + 1))
    printf "$1" >"$sp/$(printf '%02d' $n)"
}
spec 'Ok=5,lr=0.1,seed=3,free=-2.5'
spec 'O 7 , 0.5 '
spec 'Pfull'
spec 'Pfixed:35'
spec 'Prandom:0.1,seed=3'
spec 'Ptbptt:5,35'
spec 'Xsgd:lr=1'
spec 'Xmomentum:lr=0.1,mu=0.9,nesterov=1'
spec 'Xadam:lr=0.002,beta1=0.9,beta2=0.98,eps=1e-8,weight_decay=0.01'
spec 'Inormal:0.01'
spec 'Iorthogonal'
spec 'Iidentity:0.5'
spec 'Ispectral:1.2'
spec 'Tadding:50'
spec 'Tcopy:10,3,alphabet=4,batches=5'
spec 'Tinfluence:23,10,len=20'
spec 'Lfull,fixed:35,random:0.1,seed=3,tbptt:5,35'
spec 'Lrandom:0.5,fixed:2'
spec 'C--data\ntext.txt\n--hidden\n8\n--optimizer=adam:lr=0.01\n--truncation\ntbptt:2,4\n--init\nspectral:1.1'
spec 'C--task\ncopy:4,2\n--batch\n2\n--cell\nlstm\n--clip\n0\n--checkpoint\nsqrt\n--quiet'
spec 'C--data\x00a.txt\x00--tokens\x00letters\x00--sampling\x00random\x00--val-fraction\x000.1\x00--memory-budget\x001'
spec 'C--task\ninfluence:3,2,len=4\n--cell\ninfluence\n--batch\n1\n--estimator\nuoro,seed=3\n--update-every\n2'
echo "seeds: $(find "$corpus" -type f | wc -l) files, $(du -sk "$corpus" | cut -f1) KB in $corpus"
