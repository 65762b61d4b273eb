#!/usr/bin/python3
"""torch_convert.py: converts between a PyTorch recurrent model's state_dict
and a bptt parameter file (safetensors, the parameters of `bptt grad`'s P
file), both ways, with the exact mappings of docs/cells.md:

  --module rnn   torch.nn.RNN (tanh)  <->  cell rnn_tanh   W_xh, W_hh, b_h
  --module gru   torch.nn.GRU         <->  cell gru_torch  W_ih, W_hh, b_ih, b_hh
  --module lstm  torch.nn.LSTM        <->  cell lstm       W_x, W_h, b
  and the output layer nn.Linear(H, V)  <->  W_hq = weight^T, b_q = bias

  torch_convert.py to-bptt --module gru model.pt params.safetensors
  torch_convert.py from-bptt --module gru params.safetensors model.pt

from-bptt also reads the parameters of a `bptt train --save` checkpoint
(param.<name>); to-bptt writes a parameter file (with --batch, a complete
`bptt grad` input), not a checkpoint to resume training from.

bptt writes products as x W (rows), PyTorch as W x, so every matrix is
transposed: weight_ih_l0 [kH,D] = W^T with W [D,kH], in the same gate blocks
(k = 1, 3 or 4; nn.GRU's r|z|n, nn.LSTM's i|f|g|o). nn.RNN and nn.LSTM have two
biases where bptt's cells have one: to bptt their sum, from bptt
(bias_ih, bias_hh) = (b, 0). Both carry b's gradient, so losses and
gradients are the same.

Input: bptt's token cells take ids and look up row id of W_xh [V,H] (or W_ih,
W_x). That is the product of a one-hot row with W: a PyTorch model fed
one-hot rows of width V (d2l's F.one_hot(X, V)) has weight_ih [kH,V] = W^T and
converts as it is. A model that embeds ids with an nn.Embedding first has no
bptt counterpart and is refused. Real inputs [B,T,D] map the same way, D for V.

Supported: one layer, one direction, no projection. A state_dict does not
say nn.RNN's nonlinearity: it is taken to be tanh (a whole saved nn.RNN is
checked). batch_first changes no weight. Stacked layers are planned with
bptt names prefixed by layer, l1.W_hh for layer 1 (LAYER_PREFIX); this
version refuses num_layers > 1.

Runs with /usr/bin/python3 (python3-torch, python3-numpy). Exit status 0
when done, 1 when the input cannot be converted (one line says why), 2 for
a usage error."""
import argparse
import os
import sys
from collections import OrderedDict

sys.dont_write_bytecode = True  # no __pycache__ beside the script
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

from safetensors_np import st_read, st_write  # noqa: E402

FORMAT = "bptt-params/1"

# Per module: the bptt cell, the gate blocks k, and the bptt names of
# weight_ih, weight_hh and the biases (one name: bptt's single bias).
MODULES = {
    "rnn": {"cell": "rnn_tanh", "torch": "nn.RNN", "k": 1, "w_ih": "W_xh", "w_hh": "W_hh",
            "bias": ["b_h"]},
    "gru": {"cell": "gru_torch", "torch": "nn.GRU", "k": 3, "w_ih": "W_ih", "w_hh": "W_hh",
            "bias": ["b_ih", "b_hh"]},
    "lstm": {"cell": "lstm", "torch": "nn.LSTM", "k": 4, "w_ih": "W_x", "w_hh": "W_h",
             "bias": ["b"]},
}
HEAD = ["W_hq", "b_q"]
BATCH = ["X", "Y", "h0", "c0", "xi"]  # what --batch copies (bptt grad's data tensors)
MAX_LAYERS = 1


class ConvertError(Exception):
    """Input that cannot be converted: reported in one line, exit status 1."""


def layer_prefix(k):
    """bptt's name prefix of layer k: none for layer 0, 'l1.' for layer 1, ..."""
    return "" if k == 0 else f"l{k}."


def layer_names(module, k):
    """[(torch name without the module prefix, bptt name)] of layer k's
    weights; the biases are handled apart (their number differs)."""
    m = MODULES[module]
    return [(f"weight_ih_l{k}", layer_prefix(k) + m["w_ih"]),
            (f"weight_hh_l{k}", layer_prefix(k) + m["w_hh"])]


def shape(a):
    return "[" + ",".join(str(d) for d in a.shape) + "]"

# ---- reading a PyTorch file -----------------------------------------------------------


def load_torch(path):
    """The state_dict in path (saved with torch.save), as {name: numpy array},
    and the module itself when path holds a whole module (else None)."""
    import torch
    try:
        obj = torch.load(path, map_location="cpu")
    except (AttributeError, ModuleNotFoundError) as e:  # a pickled class we do not have
        raise ConvertError(f"{path}: cannot unpickle the module ({e}); save its state_dict "
                           "instead: torch.save(model.state_dict(), path)") from None
    except Exception as e:  # noqa: BLE001 (torch raises many kinds for a bad file)
        raise ConvertError(f"{path}: not a file torch.load reads ({type(e).__name__}: {e})") \
            from None
    module = obj if isinstance(obj, torch.nn.Module) else None
    sd = obj.state_dict() if module is not None else obj
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConvertError(f"{path}: holds a {type(obj).__name__}, not a state_dict or a "
                           "module (save one with torch.save(model.state_dict(), path))")
    return OrderedDict((k, v.detach().cpu().numpy()) for k, v in sd.items()), module


def check_module_object(module, kind):
    """A whole saved module: its recurrent submodule is the right kind with
    options bptt can take (the state_dict alone cannot show the nonlinearity)."""
    import torch
    rnns = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.RNNBase)]
    want = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    for name, m in rnns:
        label = name or type(m).__name__
        if type(m) is not want:
            raise ConvertError(f"module '{label}' is a {type(m).__name__}, not the "
                               f"{MODULES[kind]['torch']} of --module {kind}")
        if kind == "rnn" and m.nonlinearity != "tanh":
            raise ConvertError(f"module '{label}' is nn.RNN(nonlinearity='{m.nonlinearity}'): "
                               "bptt's rnn_tanh is tanh only")


def find_rnn_prefix(sd, given):
    """The prefix of the recurrent module's names ('rnn.' in d2l's RNNModel)."""
    if given is not None:
        if given + "weight_ih_l0" not in sd:
            raise ConvertError(f"no tensor '{given}weight_ih_l0' (--rnn-prefix '{given}'); "
                               f"the file has {', '.join(sd) or 'no tensors'}")
        return given
    found = [k[:-len("weight_ih_l0")] for k in sd if k.endswith("weight_ih_l0")]
    if not found:
        raise ConvertError("no 'weight_ih_l0': not the state_dict of an nn.RNN, nn.GRU or "
                           f"nn.LSTM (it has {', '.join(list(sd)[:8]) or 'no tensors'})")
    if len(found) > 1:
        raise ConvertError(f"{len(found)} recurrent modules ({', '.join(p or '(top)' for p in found)}"
                           "): name one with --rnn-prefix")
    return found[0]


def check_options(sd, prefix, kind):
    """Refuses what bptt's cells cannot express, naming the option."""
    mine = [k[len(prefix):] for k in sd if k.startswith(prefix)]
    layers = sorted({int(k.rsplit("_l", 1)[1].split("_")[0]) for k in mine
                     if k.startswith("weight_ih_l")})
    if len(layers) > MAX_LAYERS:
        raise ConvertError(f"the {MODULES[kind]['torch']} has num_layers = {len(layers)}: only "
                           "one layer converts (stacked layers are not supported yet)")
    if any(k.endswith("_reverse") for k in mine):
        raise ConvertError(f"the {MODULES[kind]['torch']} is bidirectional: bptt's cells run "
                           "one direction")
    if any(k.startswith("weight_hr_l") for k in mine):
        raise ConvertError("the nn.LSTM has proj_size > 0 (weight_hr_l0): bptt's lstm has no "
                           "projection")
    w_hh = sd[prefix + "weight_hh_l0"]
    w_ih = sd[prefix + "weight_ih_l0"]
    rows, H = w_hh.shape
    if w_ih.ndim != 2 or w_hh.ndim != 2 or rows % H or w_ih.shape[0] != rows:
        raise ConvertError(f"weight_ih_l0 {shape(w_ih)} and weight_hh_l0 {shape(w_hh)} are not "
                           "the shapes of a one-layer nn.RNN, nn.GRU or nn.LSTM")
    k = rows // H
    if k != MODULES[kind]["k"]:
        other = [m for m, v in MODULES.items() if v["k"] == k]
        raise ConvertError(f"weight_hh_l0 is {shape(w_hh)} = [{k}H,H] with H = {H}: the weights "
                           f"of {' or '.join(MODULES[m]['torch'] for m in other) or 'no module bptt knows'}"
                           f", not of an {MODULES[kind]['torch']} ({MODULES[kind]['k']}H rows)"
                           + (f"; use --module {other[0]}" if other else ""))
    return H


def find_head(sd, rnn_prefix, H, given):
    """The output layer nn.Linear(H, V): (weight name, bias name or None)."""
    if given is not None:
        w, b = given + "weight", given + "bias"
        if w not in sd:
            raise ConvertError(f"no tensor '{w}' (--head-prefix '{given}')")
        cands = [(w, b if b in sd else None)]
    else:
        cands = [(k, k[:-6] + "bias" if k[:-6] + "bias" in sd else None) for k in sd
                 if k.endswith("weight") and not k.startswith(rnn_prefix + "weight_")
                 and sd[k].ndim == 2 and sd[k].shape[1] == H]
    if not cands:
        raise ConvertError(f"no output layer: bptt's cells end in W_hq [H,V], b_q [V], PyTorch's "
                           f"nn.Linear(H, V) with weight [V,H] = [V,{H}]; save the model with it "
                           "(or name it with --head-prefix)")
    if len(cands) > 1 and sum(1 for c in cands if c[1]) == 1:  # an embedding [V,H] has no bias
        cands = [c for c in cands if c[1]]
    if len(cands) > 1:
        raise ConvertError(f"{len(cands)} candidate output layers ({', '.join(c[0] for c in cands)}): "
                           "name one with --head-prefix")
    w, b = cands[0]
    if sd[w].ndim != 2 or sd[w].shape[1] != H or (b and sd[b].shape != (sd[w].shape[0],)):
        raise ConvertError(f"output layer {w} {shape(sd[w])}"
                           + (f", {b} {shape(sd[b])}" if b else "")
                           + f": want nn.Linear(H, V) with weight [V,{H}] and bias [V]")
    return w, b

# ---- the two directions ---------------------------------------------------------------


def to_bptt(sd, kind, rnn_prefix=None, head_prefix=None, notes=None):
    """{bptt name: array} from a state_dict (numpy arrays), exactly."""
    notes = notes if notes is not None else []
    m = MODULES[kind]
    p = find_rnn_prefix(sd, rnn_prefix)
    H = check_options(sd, p, kind)
    out, used = OrderedDict(), set()
    for tname, bname in layer_names(kind, 0):
        out[bname] = np.ascontiguousarray(sd[p + tname].T)
        used.add(p + tname)
    b_ih, b_hh = sd.get(p + "bias_ih_l0"), sd.get(p + "bias_hh_l0")
    dt = out[m["w_ih"]].dtype
    if b_ih is None:
        notes.append(f"the {m['torch']} has bias=False: bptt's biases are written as zeros")
        b_ih = b_hh = np.zeros(m["k"] * H, dt)
    used.update({p + "bias_ih_l0", p + "bias_hh_l0"})
    if len(m["bias"]) == 2:
        out[m["bias"][0]], out[m["bias"][1]] = b_ih.copy(), b_hh.copy()
    else:  # one bias in bptt: their sum (what the step uses), rounded once
        out[m["bias"][0]] = (b_ih.astype(np.float64) + b_hh.astype(np.float64)).astype(dt)
    w, b = find_head(sd, p, H, head_prefix)
    out["W_hq"] = np.ascontiguousarray(sd[w].T)
    out["b_q"] = sd[b].copy() if b else np.zeros(sd[w].shape[0], sd[w].dtype)
    if not b:
        notes.append(f"the output layer {w[:-6] or '(top)'} has no bias: b_q is written as zeros")
    used.update({w, b} - {None})
    extra = [f"{k} {shape(v)}" for k, v in sd.items() if k not in used]
    if extra:
        raise ConvertError("tensors with no counterpart in bptt's cell " + m["cell"] + ": "
                           + ", ".join(extra) + " (an nn.Embedding before the RNN cannot be "
                           "converted: bptt looks up rows of W_xh/W_ih/W_x itself)")
    return out


def from_bptt(P, kind, rnn_prefix="rnn.", head_prefix="linear.", grads=False, head=True):
    """A state_dict (numpy arrays, torch names) from bptt's parameters P: a
    parameter file, a `bptt grad` P file or a `bptt train` checkpoint (whose
    parameters are param.<name>). With grads, P is a `bptt grad` output and
    its grad.<name> are mapped instead; a single bias's gradient then goes to
    both of PyTorch's biases."""
    m = MODULES[kind]
    pre = "grad." if grads else ("param." if "param." + m["w_hh"] in P else "")
    stacked = sorted(k for k in P if k.startswith(pre + layer_prefix(1)))
    if stacked:
        raise ConvertError(f"layer-stacked parameters ({', '.join(stacked[:3])}...): only one "
                           "layer converts (stacked layers are not supported yet)")
    names = [m["w_ih"], m["w_hh"]] + m["bias"] + (HEAD if head else [])
    missing = [pre + n for n in names if pre + n not in P]
    if missing:
        raise ConvertError(f"no {', '.join(missing)}: not the parameters of bptt's cell "
                           f"{m['cell']} (it has {', '.join(list(P)[:10])})")
    get = {n: np.asarray(P[pre + n]) for n in names}
    check_bptt_shapes(get, kind, head)
    sd = OrderedDict()
    for tname, bname in layer_names(kind, 0):
        sd[rnn_prefix + tname] = np.ascontiguousarray(get[bname].T)
    if len(m["bias"]) == 2:
        b_ih, b_hh = get[m["bias"][0]], get[m["bias"][1]]
    else:
        b = get[m["bias"][0]]
        b_ih, b_hh = b, (b if grads else np.zeros_like(b))
    sd[rnn_prefix + "bias_ih_l0"], sd[rnn_prefix + "bias_hh_l0"] = b_ih.copy(), b_hh.copy()
    if head:
        sd[head_prefix + "weight"] = np.ascontiguousarray(get["W_hq"].T)
        sd[head_prefix + "bias"] = get["b_q"].copy()
    return sd


def check_bptt_shapes(get, kind, head):
    m = MODULES[kind]
    w_ih, w_hh = get[m["w_ih"]], get[m["w_hh"]]
    k = m["k"]
    H = w_hh.shape[0] if w_hh.ndim == 2 else -1
    want = {m["w_ih"]: (w_ih.shape[0] if w_ih.ndim == 2 else -1, k * H),
            m["w_hh"]: (H, k * H)}
    want.update({b: (k * H,) for b in m["bias"]})
    if head:
        V = get["W_hq"].shape[1] if get["W_hq"].ndim == 2 else -1
        want.update({"W_hq": (H, V), "b_q": (V,)})
    for n, s in want.items():
        if get[n].shape != s or -1 in s:
            raise ConvertError(f"{n} is {shape(get[n])}, cell {m['cell']} wants "
                               f"[{','.join(map(str, s))}] (H = {H} from {m['w_hh']})")

# ---- the command line -----------------------------------------------------------------


def read_batch(path, P):
    """X, Y, h0, c0, xi from a safetensors file, to make params a `bptt grad` P file."""
    B, _ = st_read(path)
    got = {k: v for k, v in B.items() if k in BATCH}
    if "X" not in got:
        raise ConvertError(f"--batch {path}: no tensor X (a batch has X, Y and optionally "
                           "h0, c0, xi; docs/grad-files.md)")
    clash = [k for k in got if k in P]
    if clash:
        raise ConvertError(f"--batch {path}: {', '.join(clash)} clash with parameter names")
    return got


def cmd_to_bptt(a):
    sd, module = load_torch(a.input)
    if module is not None:
        check_module_object(module, a.module)
    notes = []
    P = to_bptt(sd, a.module, a.rnn_prefix, a.head_prefix, notes)
    if a.dtype:
        P = OrderedDict((k, v.astype(np.float32 if a.dtype == "f32" else np.float64))
                        for k, v in P.items())
    if a.batch:
        P.update(read_batch(a.batch, P))
    m = MODULES[a.module]
    st_write(a.output, P, {"format": FORMAT, "cell": m["cell"], "module": m["torch"],
                           "source": os.path.basename(a.input)})
    for n in notes:
        print(f"torch_convert.py: note: {n}", file=sys.stderr)
    H = P[m["w_hh"]].shape[0]
    print(f"{a.output}: cell {m['cell']}, H = {H}, input {P[m['w_ih']].shape[0]}, output "
          f"{P['W_hq'].shape[1]}: {', '.join(f'{k} {shape(v)}' for k, v in P.items())}")


def cmd_from_bptt(a):
    import torch
    P, meta = st_read(a.input)
    m = MODULES[a.module]
    cell = meta.get("cell")
    if cell and cell != m["cell"] and meta.get("format") in (FORMAT, "bptt-grad/1", "bptt-lm-1", "bptt-lm-2"):
        raise ConvertError(f"{a.input} holds cell {cell}'s parameters, not {m['cell']}'s "
                           f"(--module {a.module})")
    sd = from_bptt(P, a.module, a.rnn_prefix, a.head_prefix, a.grads, not a.no_head)
    out = OrderedDict()
    for k, v in sd.items():  # native byte order, writable: what torch.from_numpy takes
        t = torch.from_numpy(np.array(v, dtype=v.dtype.newbyteorder("=")))
        out[k] = t.to({"f32": torch.float32, "f64": torch.float64}[a.dtype]) if a.dtype else t
    torch.save(out, a.output)
    w = sd[a.rnn_prefix + "weight_ih_l0"]
    H = sd[a.rnn_prefix + "weight_hh_l0"].shape[1]
    print(f"{a.output}: state_dict of {m['torch']}({w.shape[1]}, {H})"
          + (f" and nn.Linear({H}, {sd[a.head_prefix + 'weight'].shape[0]})" if not a.no_head
             else "") + f": {', '.join(f'{k} {shape(v)}' for k, v in sd.items())}")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (and exit status 2), as bptt's own commands."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_args(argv):
    ap = OneLineParser(
        prog="torch_convert.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=OneLineParser)
    for name, helptext, src, dst in [
            ("to-bptt", "state_dict (torch.save) to a bptt parameter file", "MODEL.pt",
             "PARAMS.safetensors"),
            ("from-bptt", "bptt parameter file to a state_dict (torch.save)",
             "PARAMS.safetensors", "MODEL.pt")]:
        s = sub.add_parser(name, help=helptext, description=helptext)
        s.add_argument("--module", required=True, choices=sorted(MODULES),
                       help="rnn: nn.RNN (tanh) / rnn_tanh, gru: nn.GRU / gru_torch, "
                            "lstm: nn.LSTM / lstm")
        s.add_argument("--rnn-prefix", default=None if name == "to-bptt" else "rnn.",
                       help="the recurrent module's name prefix in the state_dict ("
                            + ("found when there is one" if name == "to-bptt" else
                               "default 'rnn.'; '' for a bare module") + ")")
        s.add_argument("--head-prefix", default=None if name == "to-bptt" else "linear.",
                       help="the output nn.Linear's prefix ("
                            + ("found when there is one" if name == "to-bptt" else
                               "default 'linear.'") + ")")
        s.add_argument("--dtype", choices=["f32", "f64"],
                       help="the precision written (default: the input's)")
        if name == "to-bptt":
            s.add_argument("--batch", metavar="FILE",
                           help="copy X, Y, h0, c0, xi from this safetensors file, so the "
                                "output is a `bptt grad` P file")
        else:
            s.add_argument("--grads", action="store_true",
                           help="map the grad.<name> tensors of a `bptt grad` output instead "
                                "(one bias's gradient goes to both bias_ih and bias_hh)")
            s.add_argument("--no-head", action="store_true",
                           help="leave out the output layer (for a bare module's load_state_dict)")
        s.add_argument("input", metavar=src)
        s.add_argument("output", metavar=dst)
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"torch_convert.py: cannot import torch ({e}): run it with /usr/bin/python3 "
              "(apt-get install python3-torch)", file=sys.stderr)
        return 1
    try:
        (cmd_to_bptt if a.cmd == "to-bptt" else cmd_from_bptt)(a)
    except ConvertError as e:
        print(f"torch_convert.py {a.cmd}: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"torch_convert.py {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
