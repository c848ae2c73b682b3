"""Sealed files: tensors, arrays and plain data in one file that cannot carry code, with a checksum.

Checkpoints, stored stages, cached datasets and feature stores are read back from disk, possibly
from a store copied from another machine, so they never go through pickle. A sealed file is a
standard safetensors file: tensors (and numpy arrays) are its entries; everything else (dicts,
lists, tuples, numbers, strings) is a JSON tree in its metadata with references to the entries.
The metadata also carries the file's kind and a sha256 of the tree and of every entry's dtype,
shape and bytes, so a truncated, garbled or edited file is refused as DamagedFile, never used.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from bench.atomic import atomic_write
from bench.errors import DamagedFile

FORMAT = "bench-sealed-1"
TREE_IN_HEADER_MAX = 1 << 20  # larger trees (e.g. item texts) go into an entry of their own
_TREE_ENTRY = "__tree__"
_NUMPY_KINDS = "biuf"  # bool, signed, unsigned, float: the arrays safetensors can hold


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$f": repr(obj)}
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # a copy: entries must not share memory (tied weights), and must be on the cpu
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"$t": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NUMPY_KINDS:
            raise TypeError(f"cannot seal a numpy array of dtype {obj.dtype}")
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.array(obj, copy=True, order="C"))
        return {"$a": key}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors)
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(x, tensors) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x, tensors) for x in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"$dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot seal a {type(obj).__name__}")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(x, tensors) for x in node]
    if not isinstance(node, dict):
        raise ValueError(f"unexpected {type(node).__name__} in the tree")
    if len(node) == 1 and next(iter(node)).startswith("$"):
        (tag, value), = node.items()
        if tag == "$t":
            return tensors[value]
        if tag == "$a":
            return tensors[value].numpy()
        if tag == "$f" and value in ("nan", "inf", "-inf"):
            return float(value)
        if tag == "$tuple" and isinstance(value, list):
            return tuple(_decode(x, tensors) for x in value)
        if tag == "$dict" and isinstance(value, list):
            out = {}
            for pair in value:
                key, item = pair  # a malformed pair raises ValueError / TypeError
                key = _decode(key, tensors)
                if not isinstance(key, (str, int, float, bool, type(None), tuple)):
                    raise ValueError("unhashable dict key in the tree")
                out[key] = _decode(item, tensors)
            return out
        raise ValueError(f"unknown tag {tag!r} in the tree")
    if any(k.startswith("$") for k in node):
        raise ValueError("reserved key in the tree")
    return {k: _decode(v, tensors) for k, v in node.items()}


def _digest(kind: str, tree: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(f"{FORMAT}\n{kind}\n".encode())
    h.update(tree.encode())
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"\n{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def dumps(obj: Any, kind: str) -> bytes:
    """The sealed bytes of `obj` (nested dicts / lists / tuples of tensors, arrays and plain data)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps(_encode(obj, tensors), separators=(",", ":"), allow_nan=False)
    if len(tree) > TREE_IN_HEADER_MAX:
        tensors[_TREE_ENTRY] = torch.frombuffer(bytearray(tree.encode()), dtype=torch.uint8)
        tree = ""
    meta = {"format": FORMAT, "kind": kind, "tree": tree, "sha256": _digest(kind, tree, tensors)}
    return st_save(tensors, metadata=meta)


def loads(data: bytes, kind: str, path: Path | str = "<bytes>") -> Any:
    """Parse and verify sealed bytes; DamagedFile (naming `path`) unless they are intact and of `kind`."""
    try:
        if len(data) < 8:
            raise ValueError("too short to be a sealed file")
        n = int.from_bytes(data[:8], "little")
        if n > len(data) - 8:
            raise ValueError("header longer than the file")
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not a sealed bench file")
        if meta.get("kind") != kind:
            raise ValueError(f"holds a {meta.get('kind')!r}, not a {kind!r}")
        tensors = st_load(bytes(data))
        tree = meta.get("tree", "")
        if meta.get("sha256") != _digest(kind, tree, tensors):
            raise ValueError("checksum mismatch")
        if not tree:
            tree = tensors.pop(_TREE_ENTRY).numpy().tobytes().decode()
        return _decode(json.loads(tree), tensors)
    except DamagedFile:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is damaged
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DamagedFile(path, f"damaged {kind} file ({reason})") from None


def write(path: Path, obj: Any, kind: str) -> None:
    data = dumps(obj, kind)
    atomic_write(Path(path), lambda f: f.write(data))


def read(path: Path, kind: str) -> Any:
    """The verified contents of a sealed file; DamagedFile if damaged, OSError if unreadable."""
    return loads(Path(path).read_bytes(), kind, path)
