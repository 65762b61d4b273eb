"""safetensors_np.py: read and write safetensors files with numpy alone, for
tools/torch_convert.py and the PyTorch tests (Debian's torch 1.13 comes with
no safetensors package). The format: 8 bytes little-endian header length, a
JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
then the raw little-endian bytes of every tensor (docs/grad-files.md)."""
import json
import struct

import numpy as np

ST_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
ST_NAMES = {np.dtype(v).name: k for k, v in ST_DTYPES.items()}


def st_write(path, tensors, metadata=None):
    """Writes {name: numpy array} as safetensors (little-endian, the data
    8-aligned), with optional string metadata."""
    head, off, blobs = {}, 0, []
    if metadata:
        head["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        if a.dtype.name not in ST_NAMES:
            raise ValueError(f"tensor '{name}': dtype {a.dtype.name} is not one of "
                             f"{', '.join(sorted(ST_NAMES))}")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        head[name] = {"dtype": ST_NAMES[a.dtype.name], "shape": list(a.shape),
                      "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def st_read(path):
    """({name: numpy array}, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
    n = struct.unpack("<Q", raw[:8])[0]
    if n > len(raw) - 8:
        raise ValueError(f"{path}: not a safetensors file (header size {n} beyond the file)")
    head = json.loads(raw[8:8 + n])
    meta = head.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, v in head.items():
        if v["dtype"] not in ST_DTYPES:
            raise ValueError(f"{path}: tensor '{name}' has dtype {v['dtype']}, not one of "
                             f"{', '.join(ST_DTYPES)}")
        a, b = v["data_offsets"]
        dt = np.dtype(ST_DTYPES[v["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(data[a:b], dt).reshape(v["shape"])
    return out, meta
