#!/usr/bin/env python3
"""Reference decoder for the eSGD wire messages (version 2), written from
schemas/messages.md alone: the Python standard library for the body (its own
msgpack reader) and PyNaCl (Debian python3-nacl) to check signatures.

    python3 schemas/decode.py MESSAGE_FILE      (or the bytes on stdin)
    python3 schemas/decode.py --public-key agent-1.pub MESSAGE_FILE
    python3 schemas/decode.py --public-key 6610273c...42ce1c7 MESSAGE_FILE
    python3 schemas/decode.py --body BODY_FILE  (a bare body, no signature)
    python3 schemas/decode.py --expected-dim 61706 update.bin
    python3 schemas/decode.py --type status status.bin   (mismatch if not one)

By default the input is a whole broker message, BODY || SIGNATURE: the last
64 bytes are the Ed25519 signature of the rest. With --public-key (a .pub
file, "esgd-ed25519-public <64 hex>", or the 64 hex digits) the signature is
checked before a byte of the body is decoded, and the output says
"signature": "verified"; without one it says "unverified" (and a note goes
to stderr). Prints the decoded message as JSON. On a malformed message it
prints "error: <status>: <reason>" to stderr and exits with status 1;
<status> is the same name the C decoder reports (format, truncated, version,
type, missing, range, nonfinite, dimension, mismatch, argument, signature).
Every malformed input, whatever msgpack types it holds where, ends as such a
rejection, never as a Python exception. A file or key that cannot be read,
or a key given without PyNaCl installed, exits with status 2.
"""
import argparse
import json
import math
import re
import struct
import sys

VERSION = 2
SIGNATURE_BYTES = 64
JOB_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
MAX_DEPTH = 16
MAX_KEYS = 64
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
LEASE_HOLDER_MAX = 200  # bytes
PUBLIC_KEY = re.compile(r"(?:esgd-ed25519-public )?([0-9a-fA-F]{64})\n?\Z")


class WireError(Exception):
    def __init__(self, status, reason):
        super().__init__(f"{status}: {reason}")
        self.status = status


class Bin(bytes):
    """A msgpack bin (str decodes to Python str)."""


class Map(list):
    """A msgpack map, kept as a list of (key, value) pairs so duplicates show."""


# ------------------------------------------------------------ msgpack reader

class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if n > len(self.data) - self.pos:
            raise WireError("truncated", f"message ends {n - (len(self.data) - self.pos)} bytes early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n):
        return int.from_bytes(self.take(n), "big")

    def sint(self, n):
        return int.from_bytes(self.take(n), "big", signed=True)

    def container_len(self, n, per_item):
        # Every element needs at least one byte: a longer claim is truncation.
        if n * per_item > len(self.data) - self.pos:
            raise WireError("truncated", f"container of {n} elements in {len(self.data) - self.pos} bytes")
        return n

    def obj(self, depth=0):
        b = self.take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return self.array(b & 0x0F, depth)
        if 0xA0 <= b <= 0xBF:
            return self.str(b & 0x1F)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return simple[b]
        if b in (0xC4, 0xC5, 0xC6):
            return Bin(self.take(self.uint({0xC4: 1, 0xC5: 2, 0xC6: 4}[b])))
        if b in (0xD9, 0xDA, 0xDB):
            return self.str(self.uint({0xD9: 1, 0xDA: 2, 0xDB: 4}[b]))
        if b == 0xCA:
            return ("f32", struct.unpack(">f", self.take(4))[0])
        if b == 0xCB:
            return ("f64", struct.unpack(">d", self.take(8))[0])
        if 0xCC <= b <= 0xCF:
            return self.uint(1 << (b - 0xCC))
        if 0xD0 <= b <= 0xD3:
            return self.sint(1 << (b - 0xD0))
        if b in (0xDC, 0xDD):
            return self.array(self.container_len(self.uint(2 if b == 0xDC else 4), 1), depth)
        if b in (0xDE, 0xDF):
            return self.map(self.container_len(self.uint(2 if b == 0xDE else 4), 2), depth)
        if b in (0xC7, 0xC8, 0xC9):
            n = self.uint({0xC7: 1, 0xC8: 2, 0xC9: 4}[b])
            self.take(1 + n)
            return ("ext", None)
        if 0xD4 <= b <= 0xD8:
            self.take(1 + (1 << (b - 0xD4)))
            return ("ext", None)
        raise WireError("format", f"byte 0x{b:02x} at offset {self.pos - 1} is not msgpack")

    def str(self, n):
        # Invalid UTF-8 is kept byte for byte (as lone surrogates), so two
        # different keys never compare equal; it never matches a valid name.
        return self.take(n).decode("utf-8", "surrogateescape")

    def nested(self, depth):
        if depth + 1 > MAX_DEPTH:
            raise WireError("format", f"containers nested deeper than {MAX_DEPTH}")
        return depth + 1

    def array(self, n, depth):
        self.container_len(n, 1)
        d = self.nested(depth)
        return [self.obj(d) for _ in range(n)]

    def map(self, n, depth):
        self.container_len(n, 2)
        d = self.nested(depth)
        return Map((self.obj(d), self.obj(d)) for _ in range(n))


def parse(data):
    if not data:
        raise WireError("format", "empty message")
    r = Reader(data)
    root = r.obj()
    if r.pos != len(data):
        raise WireError("format", f"{len(data) - r.pos} trailing bytes after the message")
    return root


# ------------------------------------------------------------ field access

def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def show(v):
    """A received string for an error message: at most 40 characters, with
    anything but printable ASCII as '?' so hostile bytes cannot forge log lines."""
    return "".join(c if " " <= c <= "~" else "?" for c in v[:40])


class Fields:
    def __init__(self, root):
        if not isinstance(root, Map):
            raise WireError("type", "message is not a msgpack map")
        if len(root) > MAX_KEYS:
            raise WireError("format", f"map has {len(root)} keys, at most {MAX_KEYS} allowed")
        self.values = {}
        for key, value in root:
            if not isinstance(key, str):
                raise WireError("format", "map key is not a string")
            if key in self.values:
                raise WireError("format", f"duplicate key '{show(key)}'")
            self.values[key] = value

    def has(self, key):
        return key in self.values

    def get(self, key):
        if key not in self.values:
            raise WireError("missing", f"missing field {key}")
        return self.values[key]

    def uint(self, key, maximum=UINT32_MAX):
        v = self.get(key)
        if not is_int(v):
            raise WireError("type", f"field {key} is not an unsigned integer")
        if v < 0 or v > maximum:
            raise WireError("range", f"field {key} = {v} outside 0..{maximum}")
        return v

    def float(self, key, nil_ok=False):
        v = self.get(key)
        if v is None and nil_ok:
            return None
        if not (isinstance(v, tuple) and v[0] in ("f32", "f64")):
            raise WireError("type", f"field {key} is not a float")
        x = v[1]
        if math.isfinite(x):  # the value is used as float32
            try:
                x = struct.unpack("<f", struct.pack("<f", x))[0]
            except OverflowError:
                x = math.inf
        if not math.isfinite(x):
            raise WireError("nonfinite", f"field {key} is not finite")
        if x < 0:
            raise WireError("range", f"field {key} = {x} < 0")
        return x

    def bool(self, key, nil_ok=False):
        v = self.get(key)
        if v is None and nil_ok:
            return None
        if not isinstance(v, bool):
            raise WireError("type", f"field {key} is not a bool")
        return v

    def str(self, key):
        v = self.get(key)
        if not isinstance(v, str):
            raise WireError("type", f"field {key} is not a string")
        return v

    def enum(self, key, allowed):
        v = self.str(key)
        if v not in allowed:
            raise WireError("range", f"field {key} = '{show(v)}' is not one of {allowed}")
        return v

    def bin(self, key):
        v = self.get(key)
        if not isinstance(v, Bin):
            raise WireError("type", f"field {key} is not a bin")
        return bytes(v)

    def job(self):
        v = self.str("job")
        if not JOB_NAME.match(v):
            raise WireError("range", "job name must be 1..64 of [A-Za-z0-9_.-]")
        return v


def check_header(f, msg_type, allowed_keys):
    v = f.get("v")
    if not is_int(v):
        raise WireError("type", "field v is not an integer")
    if v == 1:
        raise WireError("version", "version 1 (unsigned, no run id) is no longer accepted: upgrade the "
                                   f"coordinator and every agent to version {VERSION} together")
    if v != VERSION:
        raise WireError("version", f"version {v}, expected {VERSION}")
    t = f.str("type")
    if t != msg_type:
        raise WireError("mismatch", f"message type '{show(t)}', expected '{msg_type}'")
    if allowed_keys is not None:
        for key in f.values:
            if key not in allowed_keys:
                raise WireError("format", f"unknown key '{show(key)}'")


# ------------------------------------------------------------ vectors

def dims(f, expected_dim):
    dim = f.uint("dim")
    count = f.uint("count")
    if dim == 0:
        raise WireError("range", "dim must be > 0")
    if expected_dim and dim != expected_dim:
        raise WireError("dimension", f"dim {dim}, expected {expected_dim}")
    if count > dim:
        raise WireError("range", f"count {count} > dim {dim}")
    return dim, count


def rice_indices(data, b, dim, count):
    nbits = len(data) * 8
    pos = 0

    def bit():
        nonlocal pos
        if pos >= nbits:
            raise WireError("format", "rice idx ends inside a code")
        value = (data[pos >> 3] >> (7 - (pos & 7))) & 1
        pos += 1
        return value

    indices = []
    nxt = 0
    for i in range(count):
        if nxt >= dim:
            raise WireError("range", f"rice index {i} past dim {dim}")
        limit = (dim - 1 - nxt) >> b
        q = 0
        while bit():
            q += 1
            if q > limit:
                raise WireError("range", "rice unary run goes past dim")
        low = 0
        for _ in range(b):
            low = (low << 1) | bit()
        index = nxt + (q << b) + low
        if index >= dim:
            raise WireError("range", f"rice index {i} = {index} >= dim {dim}")
        indices.append(index)
        nxt = index + 1
    if (pos + 7) // 8 != len(data):
        raise WireError("format", f"rice idx has {len(data)} bytes, its codes fill {(pos + 7) // 8}")
    if pos & 7 and data[-1] & ((1 << (8 - (pos & 7))) - 1):
        raise WireError("format", "rice idx padding bits are not zero")
    return indices


def bitmap_indices(data, dim, count):
    if len(data) != (dim + 7) // 8:
        raise WireError("format", f"bitmap idx has {len(data)} bytes, dim {dim} needs {(dim + 7) // 8}")
    indices = []
    for j in range(len(data) * 8):
        if data[j >> 3] >> (j & 7) & 1:
            if j >= dim:
                raise WireError("range", f"bitmap bit {j} >= dim {dim}")
            if len(indices) == count:  # reported where it is found, as the C decoder does
                raise WireError("format", f"bitmap has more than count = {count} bits set")
            indices.append(j)
    if len(indices) != count:
        raise WireError("format", f"bitmap has {len(indices)} bits set, count = {count}")
    return indices


def indices(f, dim, count):
    enc = f.enum("idx_enc", ("all", "bitmap", "rice"))
    if enc != "rice" and f.has("rice_b"):
        raise WireError("format", f"rice_b present with idx_enc {enc}")
    if enc == "all":
        if f.has("idx"):
            raise WireError("format", "idx present with idx_enc all")
        if count != dim:
            raise WireError("format", f"idx_enc all with count {count} != dim {dim}")
        return enc, range(dim)  # a list only once val has shown that count values are really there
    data = f.bin("idx")
    if enc == "bitmap":
        return enc, bitmap_indices(data, dim, count)
    return enc, rice_indices(data, f.uint("rice_b", 31), dim, count)


def values(f, count, fmt):
    data = f.bin("val")
    width = 2 if fmt == "f16" else 4
    if len(data) != width * count:
        raise WireError("format", f"val has {len(data)} bytes, count {count} of {fmt} needs {width * count}")
    out = list(struct.unpack(f"<{count}{'e' if fmt == 'f16' else 'f'}", data))
    for i, x in enumerate(out):
        if not math.isfinite(x):
            raise WireError("nonfinite", f"value {i} is not finite")
    return out


# ------------------------------------------------------------ messages

def decode_update(f, expected_dim):
    check_header(f, "update", {"v", "type", "job", "run", "round", "agent", "samples", "loss", "dim", "count",
                               "idx_enc", "idx", "rice_b", "val_fmt", "val"})
    msg = {"type": "update", "job": f.job(), "run": f.uint("run", UINT64_MAX), "round": f.uint("round"),
           "agent": f.uint("agent"),
           "samples": f.uint("samples"), "loss": f.float("loss")}
    fmt = f.enum("val_fmt", ("f32", "f16"))
    dim, count = dims(f, expected_dim)
    if msg["samples"] == 0:
        raise WireError("range", "samples must be > 0")
    enc, idx = indices(f, dim, count)
    vals = values(f, count, fmt)
    msg.update(dim=dim, count=count, idx_enc=enc, val_fmt=fmt, indices=list(idx), values=vals)
    return msg


def decode_model(f, expected_dim):
    check_header(f, "model", {"v", "type", "job", "run", "gen", "round", "base_round", "lr", "prev_loss",
                              "loss_fell", "done", "form", "dim", "count", "idx_enc", "idx", "rice_b", "val"})
    msg = {"type": "model", "job": f.job(), "run": f.uint("run", UINT64_MAX), "gen": f.uint("gen"),
           "round": f.uint("round"), "base_round": f.uint("base_round"),
           "lr": f.float("lr"), "prev_loss": f.float("prev_loss", nil_ok=True),
           "loss_fell": f.bool("loss_fell", nil_ok=True), "done": f.bool("done"),
           "form": f.enum("form", ("full", "delta"))}
    dim, count = dims(f, expected_dim)
    if msg["form"] == "full":
        if msg["base_round"] != msg["round"]:
            raise WireError("range", "full model base_round != round")
        if count != dim:
            raise WireError("range", "full model count != dim")
        if f.has("idx_enc") or f.has("idx") or f.has("rice_b"):
            raise WireError("format", "full model carries index fields")
        idx = None
    else:
        if msg["round"] == 0 or msg["base_round"] != msg["round"] - 1:
            raise WireError("range", "model delta needs round >= 1 and base_round == round - 1")
        msg["idx_enc"], idx = indices(f, dim, count)
    msg.update(dim=dim, count=count, values=values(f, count, "f32"))
    if idx is not None:
        msg["indices"] = list(idx)
    return msg


def decode_status(f, _expected_dim):
    check_header(f, "status", {"v", "type", "job", "run", "agent", "state", "round", "gen", "shard", "shards",
                               "data_fp"})
    msg = {"type": "status", "job": f.job(), "run": f.uint("run", UINT64_MAX), "agent": f.uint("agent"),
           "state": f.enum("state", ("online", "offline", "done", "syncing")), "round": f.uint("round"), "gen": f.uint("gen")}
    # What the agent trains on: all three keys or none (one alone: the others are missing).
    if f.has("shard") or f.has("shards") or f.has("data_fp"):
        msg.update(shard=f.uint("shard"), shards=f.uint("shards"), data_fp=f.uint("data_fp", UINT64_MAX))
        if msg["shard"] >= msg["shards"]:
            raise WireError("range", f"shard {msg['shard']} of {msg['shards']}: needs shard < shards")
    return msg


def decode_lease(f, _expected_dim):
    check_header(f, "lease", {"v", "type", "job", "run", "gen", "state", "holder"})
    msg = {"type": "lease", "job": f.job(), "run": f.uint("run", UINT64_MAX), "gen": f.uint("gen"),
           "state": f.enum("state", ("live", "released")), "holder": f.str("holder")}
    size = len(msg["holder"].encode("utf-8", "surrogateescape"))  # the bytes as received
    if size > LEASE_HOLDER_MAX:
        raise WireError("range", f"field holder is {size} bytes, at most {LEASE_HOLDER_MAX}")
    return msg


# The v2 config option keys, their msgpack types and ranges, as listed in messages.md:
# (name, "str" | "uint" | "float" | tuple of allowed names, min, max).
CONFIG_OPTIONS = [
    ("job", "str", None, None),
    ("model", "text", 1, 1024),
    ("input", "text", 1, 31),
    ("classes", "uint", 2, 256),
    ("method", ("dense", "threshold", "esgd", "topk", "randk", "dgc"), None, None),
    ("drop", "float", 0.0, 0.999999),
    ("threshold", "float", 0.0, 1e30),
    ("loss-signal", ("global", "local"), None, None),
    ("h-increment", ("one", "absgrad"), None, None),
    ("eps", "float", 1e-30, 1e30),
    ("beta", "float", 0.0, 1.0),
    ("value-mode", ("grad", "grad+residual"), None, None),
    ("tau-mode", ("mean", "fixed"), None, None),
    ("tau", "float", 0.0, 1e30),
    ("dgc-momentum", "float", 0.0, 0.9999),
    ("dgc-clip", "float", 0.0, 1e30),
    ("dgc-warmup-rounds", "uint", 0, 4000000000),
    ("down-drop", "float", 0.0, 0.999999),
    ("agents", "uint", 1, 100000),
    ("batch", "uint", 1, 4096),
    ("lr", "float", 1e-12, 1e6),
    ("lr-decay", "float", 1e-12, 1.0),
    ("lr-schedule", ("step", "constant", "cosine"), None, None),
    ("warmup-rounds", "uint", 0, 4000000000),
    ("epochs", "uint", 0, 100000),
    ("rounds", "uint", 0, 4000000000),
    ("seed", "uint", 0, 2**64 - 1),
    ("partition", ("iid", "noniid"), None, None),
    ("alpha", "float", 1e-6, 1e6),
    ("values", ("f32", "f16"), None, None),
    ("train-samples", "uint", 1, 4000000000),
    ("eval-every", "uint", 0, 4000000000),
]
MODEL_PRESETS = {
    "lenet": "conv 6 5 same, relu, maxpool 2, conv 16 5, relu, maxpool 2, flatten, dense 120, relu, dense 84, relu, "
             "dense 10",
    "mlp": "dense 128, relu, dense 10",
}


def spec_params(spec, input_text, classes):
    """d of a model spec (messages.md, section 6) for an input shape, written
    from the document alone; a spec that does not build is `argument`."""
    try:
        dims = [int(x) for x in input_text.split("x")]
    except ValueError:
        raise WireError("argument", f"input '{show(input_text)}' is not sizes joined by x")
    if not 1 <= len(dims) <= 3 or min(dims) < 1:
        raise WireError("argument", f"input '{show(input_text)}' needs 1 to 3 positive sizes")
    layers = [l.split() for l in MODEL_PRESETS.get(spec, spec).lower().split(",")]
    signal = any(l and l[0] == "conv1d" for l in layers)
    if signal:
        if len(dims) == 3:
            raise WireError("argument", "conv1d needs an input of rank 1 or 2")
        shape = (dims[0] if len(dims) == 2 else 1, 1, dims[-1], 1)
    elif len(dims) == 1:
        shape = (dims[0], 1, 1, 0)
    else:
        shape = (dims[0] if len(dims) == 3 else 1, dims[-2], dims[-1], 2)
    total = 0
    for words in layers:
        if not words:
            raise WireError("argument", "empty layer in the model spec")
        name, args = words[0], words[1:]
        nums = [int(a) for a in args if a.isdigit()]
        c, h, w, spatial = shape
        if name == "dense" and len(args) == 1 and len(nums) == 1:
            total += c * h * w * nums[0] + nums[0]
            shape = (nums[0], 1, 1, 0)
        elif name in ("conv", "conv2d", "conv1d") and len(nums) == 2 and (len(args) == 2 or args[2:] in (["same"], ["valid"])):
            f, k = nums
            kh = 1 if name == "conv1d" else k
            if spatial != (1 if name == "conv1d" else 2):
                raise WireError("argument", f"{name} does not fit its input")
            if args[2:] != ["same"]:
                h, w = h - kh + 1, w - k + 1
                if h < 1 or w < 1:
                    raise WireError("argument", f"{name} kernel larger than its input")
            total += f * c * kh * k + f
            shape = (f, h, w, spatial)
        elif name == "maxpool" and len(args) == 1 and len(nums) == 1:
            k = nums[0]
            if spatial == 0:
                raise WireError("argument", "maxpool on a vector")
            kh = k if spatial == 2 else 1
            if h // kh < 1 or w // k < 1:
                raise WireError("argument", "maxpool window larger than its input")
            shape = (c, h // kh, w // k, spatial)
        elif name == "flatten" and not args:
            shape = (c * h * w, 1, 1, 0)
        elif name in ("relu", "tanh") and not args:
            pass
        else:
            raise WireError("argument", f"model spec layer '{show(' '.join(words))}' is not understood")
    if shape[3] != 0 or shape[0] != classes:
        raise WireError("argument", f"the network does not end in {classes} values")
    return total


def total_rounds(cfg):
    """job_total_rounds: rounds, or epochs times ceil(train-samples / (agents x batch)), capped at 2^32-1."""
    if cfg["rounds"] > 0:
        return cfg["rounds"]
    per_round = cfg["agents"] * cfg["batch"]
    per_epoch = max(1, (cfg["train-samples"] + per_round - 1) // per_round)
    return min(cfg["epochs"] * per_epoch, 2**32 - 1)


def decode_config(f, _expected_dim):
    check_header(f, "config", {"v", "type", "run", "dim"} | {opt[0] for opt in CONFIG_OPTIONS})
    msg = {"type": "config", "run": None}  # printed in the encoder's key order; run is read after dim
    for name, kind, lo, hi in CONFIG_OPTIONS:
        if kind == "str":
            msg[name] = f.job()
        elif kind == "text":
            v = f.str(name)
            if not lo <= len(v.encode("utf-8", "surrogateescape")) <= hi or any(not 0x20 <= ord(ch) <= 0x7E for ch in v):
                raise WireError("range", f"option {name}: 1..{hi} bytes of printable ASCII")
            msg[name] = v
        elif kind == "uint":
            v = f.get(name)
            if not is_int(v):
                raise WireError("type", f"option {name} is not an unsigned integer")
            if not lo <= v <= hi:
                raise WireError("range", f"option {name} = {v} outside [{lo}, {hi}]")
            msg[name] = v
        elif kind == "float":
            v = f.get(name)
            if not (isinstance(v, tuple) and v[0] in ("f32", "f64")):
                raise WireError("type", f"option {name} is not a float")
            if not math.isfinite(v[1]):
                raise WireError("nonfinite", f"option {name} is not finite")
            if not lo <= v[1] <= hi:
                raise WireError("range", f"option {name} = {v[1]} outside [{lo}, {hi}]")
            msg[name] = v[1]
        else:
            msg[name] = f.enum(name, kind)
    msg["dim"] = f.uint("dim")
    msg["run"] = f.uint("run", UINT64_MAX)
    if msg["agents"] > msg["train-samples"]:
        raise WireError("argument", "agents must be <= train-samples")
    if msg["epochs"] == 0 and msg["rounds"] == 0:
        raise WireError("argument", "epochs or rounds must be > 0")
    d = spec_params(msg["model"], msg["input"], msg["classes"])
    if msg["warmup-rounds"] > 0 and msg["warmup-rounds"] >= total_rounds(msg):
        raise WireError("argument", f"warmup-rounds must be less than the job's {total_rounds(msg)} rounds")
    if msg["dim"] != d:
        raise WireError("dimension", f"config dim {msg['dim']}, model {show(msg['model'])} has {d}")
    return msg


DECODERS = {"update": decode_update, "model": decode_model, "status": decode_status, "config": decode_config,
            "lease": decode_lease}


def decode(data, expected_dim=0, msg_type=None):
    """The body as a dict, or WireError. With msg_type (a DECODERS key) the
    message must be of that type (else mismatch), as with the C decoders."""
    f = Fields(parse(data))
    if msg_type is None:
        t = f.values.get("type")  # any msgpack value, a list or a map too
        msg_type = t if isinstance(t, str) and t in DECODERS else "update"
    check_header(f, msg_type, None)  # version first, then the type
    return DECODERS[msg_type](f, expected_dim)


# ------------------------------------------------------------ the envelope

def public_key(text):
    """The 32-byte Ed25519 public key of a .pub line ("esgd-ed25519-public
    <64 hex>") or of the 64 hex digits alone; ValueError otherwise."""
    m = PUBLIC_KEY.match(text.strip() + "\n")
    if not m:
        raise ValueError("is neither 'esgd-ed25519-public <64 hex digits>' nor 64 hex digits")
    return bytes.fromhex(m.group(1))


def verify(body, signature, key):
    """WireError('signature') unless signature is key's Ed25519 signature of
    body. Needs PyNaCl (ImportError when it is not installed)."""
    import nacl.exceptions
    import nacl.signing
    try:
        nacl.signing.VerifyKey(key).verify(body, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        # BadSignatureError is a CryptoError; a key that is no curve point fails the same way.
        raise WireError("signature", "the signature does not verify") from None


def open_envelope(data, key=None):
    """(body, verified) of a broker message BODY || SIGNATURE. With key (32
    bytes) the signature is checked before anything else; without, it is
    split off and left unchecked. WireError('signature') when the message is
    too short to hold a body and a signature, or the signature is bad."""
    if len(data) <= SIGNATURE_BYTES:
        what = "an empty payload (a cleared retained topic, not a message)" if not data else f"{len(data)} bytes"
        raise WireError("signature", f"{what}: too short to hold a message and its signature")
    body, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    if key is not None:
        verify(body, signature, key)
    return body, key is not None


def decode_message(data, expected_dim=0, msg_type=None, key=None):
    """A whole broker message as a dict with "signature": "verified" (key
    given and the signature checks) or "unverified" (no key); WireError
    otherwise."""
    body, verified = open_envelope(data, key)
    msg = decode(body, expected_dim, msg_type)
    msg["signature"] = "verified" if verified else "unverified"
    return msg


def dimension(text):
    d = int(text)
    if not 0 <= d <= UINT32_MAX:
        raise argparse.ArgumentTypeError(f"{d} is not in 0..{UINT32_MAX}")
    return d


def read_public_key(arg):
    """The key of --public-key: a .pub file, or the hex digits themselves."""
    try:
        return public_key(arg)
    except ValueError:
        pass
    try:
        with open(arg, encoding="ascii", errors="replace") as fh:
            text = fh.read(4096)
    except OSError as e:
        raise ValueError(f"--public-key {arg}: neither 64 hex digits nor a readable file ({e.strerror})") from None
    try:
        return public_key(text)
    except ValueError as e:
        raise ValueError(f"--public-key {arg}: {e}") from None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?", help="message file (default: stdin)")
    ap.add_argument("--expected-dim", type=dimension, default=0, help="reject update/model of another dim")
    ap.add_argument("--type", choices=sorted(DECODERS), help="reject a message of another type (mismatch)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--public-key", metavar="FILE|HEX",
                       help="check the signature with this key (.pub file or 64 hex digits): the signer of the topic")
    group.add_argument("--body", action="store_true", help="the input is a bare body, without a signature")
    args = ap.parse_args()
    key = None
    if args.public_key is not None:
        try:
            key = read_public_key(args.public_key)
            import nacl.signing  # noqa: F401  (fail here, not on the first message)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except ImportError:
            print("error: cannot check signatures: PyNaCl is not installed for this Python "
                  f"({sys.executable}); on Debian: apt-get install python3-nacl", file=sys.stderr)
            return 2
    try:
        if args.file:
            with open(args.file, "rb") as fh:
                data = fh.read()
        else:
            data = sys.stdin.buffer.read()
    except OSError as e:
        print(f"error: cannot read {args.file or 'stdin'}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        msg = decode(data, args.expected_dim, args.type) if args.body else \
            decode_message(data, args.expected_dim, args.type, key)
    except WireError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if msg.get("signature") == "unverified":
        print("decode.py: the signature (last 64 bytes) was not checked: give --public-key of the signer",
              file=sys.stderr)
    print(json.dumps(msg, indent=1 if len(data) < 4096 else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
