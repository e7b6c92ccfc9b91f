#!/usr/bin/env python3
"""Holds every example message of schemas/messages.md (section 13 states the
convention) against both decoders: schemas/decode.py and the C decoder, run
through the schema_check program built from tests/schema_check.c.

usage: schema_examples.py SCHEMA_CHECK [MESSAGES_MD]

1. Test keys: each ```key block's public key is the one keys_derive(seed,
   name) makes, computed here (BLAKE2b and PyNaCl, as section 12 of the
   document describes) and by the C library (schema_check --print-public).
2. Examples: each is found (a hex block outside the convention, or a count
   other than the one the document states, fails), each valid one is
   accepted by both decoders, decode.py prints the JSON the document shows
   and the C encoder writes the same bytes back; each invalid one is
   rejected by both with the status it names. A signed example (signed=KEY)
   is a whole broker message: both check its signature with KEY's public
   key (C: envelope_open; Python: PyNaCl), and the signature must be the one
   the C signer and PyNaCl make with the derived secret key. A signed
   example rejected as signature must have a valid body: it shows a
   tampered message, not a malformed one.
3. Variants of every valid example's body (truncated, a byte replaced, a
   field dropped, repeated or given a value of every msgpack kind):
   decode.py must end each with a rejection or a result, never another
   exception, whether told the message type or taking it from the message,
   and both decoders must give the same verdict (accepted, or rejected with
   the same status). They check in the same order, so they agree even when a
   variant has several faults. Variants of every valid signed message
   (truncated, a byte of body or signature replaced, a byte appended, signed
   by another key, the body alone) must be rejected as signature by both.
Exits 0 when everything holds, 1 otherwise, 2 on bad usage.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback

DEBIAN_PYTHON = "/usr/bin/python3"
try:
    import nacl.signing
except ImportError:
    # python3-nacl is installed for Debian's python3; a python3 found first
    # on PATH (pyenv, a venv) may not see it. Run under Debian's if it can.
    if (os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON) and os.access(DEBIAN_PYTHON, os.X_OK)
            and not os.environ.get("SCHEMA_EXAMPLES_REEXEC")
            and subprocess.run([DEBIAN_PYTHON, "-c", "import nacl.signing"], capture_output=True).returncode == 0):
        print(f"schema_examples: PyNaCl is not importable by {sys.executable}; running under {DEBIAN_PYTHON}",
              flush=True)
        os.environ["SCHEMA_EXAMPLES_REEXEC"] = "1"
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
    print(f"schema_examples: FAIL: the signed examples need PyNaCl, which {sys.executable} cannot import "
          "(Debian: apt-get install python3-nacl, as scripts/setup.sh does)")
    sys.exit(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "schemas"))
import decode  # noqa: E402  (schemas/decode.py)

HEX_ROW = re.compile(r"[0-9a-f]{2}( [0-9a-f]{2})*")
STRAY_HEX = re.compile(r"\s*[0-9a-f]{2}( [0-9a-f]{2}){3,}\s*")  # 4+ hex bytes alone on a line
FENCE = re.compile(r"\s*```(.*)")
DECLARED = re.compile(r"Each of the (\d+) examples below")
PUBLIC_LINE = re.compile(r"esgd-ed25519-public ([0-9a-f]{64})")
SIGNATURE_BYTES = decode.SIGNATURE_BYTES

# A value of each msgpack kind, put in place of every field of every example.
OTHER_VALUES = {
    "array": b"\x91\x01", "empty array": b"\x90", "nested array": b"\x91\x91\x01",
    "map": b"\x81\xa1k\x01", "empty map": b"\x80", "bin": b"\xc4\x01\x00", "str": b"\xa1x",
    "empty str": b"\xa0", "nil": b"\xc0", "false": b"\xc2", "true": b"\xc3", "0": b"\x00", "-1": b"\xff",
    "2^32-1": b"\xce\xff\xff\xff\xff", "2^32": b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00",
    "2^64-1": b"\xcf" + b"\xff" * 8, "-2^63": b"\xd3\x80" + b"\x00" * 7, "float32 1.5": b"\xca\x3f\xc0\x00\x00",
    "float64 NaN": b"\xcb\x7f\xf8" + b"\x00" * 6, "ext": b"\xd4\x01\x00",
}
REPLACEMENT_BYTES = (0x00, 0xC1, 0xDF, 0xFF)


class Example:
    def __init__(self, name, decoder, reject, data, line, signer=None):
        self.name, self.decoder, self.reject, self.data, self.line = name, decoder, reject, data, line
        self.signer = signer  # a TestKey for a signed example (the whole broker message), else None

    @property
    def body(self):
        return self.data[:-SIGNATURE_BYTES] if self.signer else self.data


class TestKey:
    """A ```key block: keys_derive(seed, name), its public key as printed."""

    def __init__(self, name, seed, public, line):
        self.name, self.seed, self.public, self.line = name, seed, public, line

    def signing_key(self):
        """keys_derive(seed, name) in Python: the Ed25519 seed is BLAKE2b-256 of
        the seed (8 bytes, little-endian) and the name NUL-padded to 32 bytes."""
        material = self.seed.to_bytes(8, "little") + self.name.encode("ascii")[:31].ljust(32, b"\0")
        return nacl.signing.SigningKey(hashlib.blake2b(material, digest_size=32).digest())


def read_examples(path, problems):
    """Examples, expected JSON and test keys by name; anything outside the
    convention is added to problems."""
    lines = open(path, encoding="utf-8").read().split("\n")
    examples, outputs, keys, heading = [], {}, {}, ""
    i = 0
    while i < len(lines):
        line, where = lines[i], f"{path}:{i + 1}"
        fence = FENCE.fullmatch(line)
        if line.startswith("#"):
            heading = line
        if not fence:
            if STRAY_HEX.fullmatch(line):
                problems.append(f"{where}: hex bytes outside a ```msgpack example block (see section 13)")
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if FENCE.fullmatch(lines[j])), None)
        if end is None:
            problems.append(f"{where}: code block never closed")
            break
        words = fence.group(1).split()
        body = lines[i + 1:end]
        attrs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        if words[:1] == ["key"]:
            public = PUBLIC_LINE.fullmatch(body[0]) if len(body) == 1 else None
            if not public or "name" not in attrs or not attrs.get("seed", "").isdigit() or attrs["name"] in keys:
                problems.append(f"{where}: a key block needs a unique name=NAME, seed=DECIMAL and one line "
                                "'esgd-ed25519-public <64 lowercase hex>'")
            else:
                keys[attrs["name"]] = TestKey(attrs["name"], int(attrs["seed"]), bytes.fromhex(public.group(1)), where)
        elif words[:1] == ["msgpack"]:
            bad = [f"line {i + 2 + k}" for k, row in enumerate(body) if not HEX_ROW.fullmatch(row)]
            signer = keys.get(attrs.get("signed")) if "signed" in attrs else None
            if bad or "example" not in attrs or attrs.get("decoder") not in decode.DECODERS:
                problems.append(f"{where}: a msgpack example needs example=NAME, "
                                "decoder=update|model|config|status|lease"
                                f" and only hex rows{' (not ' + ', '.join(bad) + ')' if bad else ''}")
            elif "signed" in attrs and not signer:
                problems.append(f"{where}: example {attrs['example']} is signed={attrs['signed']}, "
                                "a key that no ```key block above it defines")
            else:
                data = bytes(int(x, 16) for row in body for x in row.split())
                examples.append(Example(attrs["example"], attrs["decoder"], attrs.get("reject"), data, where, signer))
                size = re.search(r"\((\d+) bytes", heading)
                if size and int(size.group(1)) != len(data):
                    problems.append(f"{where}: example {attrs['example']} has {len(data)} bytes, "
                                    f"its heading says {size.group(1)}")
        elif words[:1] == ["json"] and "example" in attrs:
            try:
                outputs[attrs["example"]] = json.loads("\n".join(body))
            except ValueError as e:
                problems.append(f"{where}: JSON of example {attrs['example']} does not parse: {e}")
        else:
            problems.extend(f"{path}:{i + 2 + k}: hex bytes in a code block that is not a ```msgpack example"
                            for k, row in enumerate(body) if STRAY_HEX.fullmatch(row))
        i = end + 1
    declared = [int(m.group(1)) for m in DECLARED.finditer("\n".join(lines))]
    if len(declared) != 1:
        problems.append(f"{path}: states the number of examples {len(declared)} times, expected once "
                        "('Each of the N examples below')")
    elif declared[0] != len(examples):
        problems.append(f"{path}: says it has {declared[0]} examples, the extractor found {len(examples)}")
    names = [e.name for e in examples]
    problems.extend(f"{path}: example name {n} used twice" for n in sorted({n for n in names if names.count(n) > 1}))
    if not any(e.signer and not e.reject for e in examples):
        problems.append(f"{path}: no valid signed example (signed=KEY)")
    if not any(e.signer and e.reject == "signature" for e in examples):
        problems.append(f"{path}: no tampered signed example (signed=KEY reject=signature)")
    return examples, outputs, keys


def check_keys(keys, checker, problems):
    """Each test key printed in the document is keys_derive(seed, name), by
    the Python derivation and by the C library."""
    for k in keys.values():
        line = f"esgd-ed25519-public {k.public.hex()}"
        python = k.signing_key().verify_key.encode()
        run = subprocess.run([checker, "--print-public", str(k.seed), k.name], capture_output=True, text=True)
        print(f"key {k.name} (seed {k.seed}):\n  document: {line}\n"
              f"  C:        {run.stdout.strip() or run.stderr.strip()}\n  Python:   esgd-ed25519-public {python.hex()}")
        if python != k.public:
            problems.append(f"{k.line}: key {k.name}: keys_derive({k.seed}, {k.name}) in Python gives {python.hex()}")
        if run.returncode != 0 or run.stdout.strip() != line:
            problems.append(f"{k.line}: key {k.name}: schema_check --print-public gives {run.stdout.strip()!r} "
                            f"{run.stderr.strip()}")


def python_verdict(data, msg_type, expected_dim=0, key=None, envelope=False):
    """('accepted', msg) or ('rejected', status, reason) for a body, or with
    envelope for a whole broker message (checked with key, or unverified);
    any other exception is a bug in decode.py and comes back as ('crashed',
    text)."""
    try:
        if envelope:
            return ("accepted", decode.decode_message(data, expected_dim, msg_type, key))
        return ("accepted", decode.decode(data, expected_dim, msg_type))
    except decode.WireError as e:
        return ("rejected", e.status, str(e))
    except Exception:  # noqa: BLE001 -- exactly what this test is looking for
        return ("crashed", traceback.format_exc(limit=-1).strip().replace("\n", " | "))


def c_verdicts(checker, msg_type, paths, expected_dim=0, signer=None):
    """The C decoder's verdict line for each path ('accepted',
    'accepted noncanonical: ...' or 'rejected STATUS: reason'); with signer
    (a TestKey) each path is a whole broker message signed by it, checked
    with the public key the document prints."""
    verdicts = {}
    signed = ["--signed", str(signer.seed), signer.name, "--public-key", signer.public.hex()] if signer else []
    for start in range(0, len(paths), 500):  # keep each command line short
        chunk = paths[start:start + 500]
        run = subprocess.run([checker, "--expected-dim", str(expected_dim)] + signed + [msg_type] + chunk,
                             capture_output=True)
        if run.returncode != 0:
            raise SystemExit(f"schema_examples: {checker} {msg_type} failed ({run.returncode}): {run.stderr!r}")
        for line in run.stdout.decode("utf-8", "backslashreplace").splitlines():  # reasons may quote raw bytes
            path, _, verdict = line.partition(": ")
            verdicts[path] = verdict
    missing = [p for p in paths if p not in verdicts]
    if missing:
        raise SystemExit(f"schema_examples: {checker} printed no verdict for {missing[0]}")
    return verdicts


def c_status(verdict):
    """'accepted' or the status of a C rejection."""
    return "accepted" if verdict.startswith("accepted") else verdict.split()[1].rstrip(":")


def check_examples(examples, outputs, checker, tmp, problems):
    paths = {}
    for e in examples:
        paths[e.name] = os.path.join(tmp, f"example-{e.name}.bin")
        with open(paths[e.name], "wb") as f:
            f.write(e.data)
    for e in examples:
        want = f"rejected with {e.reject}" if e.reject else "accepted"
        mode = ["--public-key", e.signer.public.hex()] if e.signer else ["--body"]
        run = subprocess.run([sys.executable, os.path.join(ROOT, "schemas", "decode.py"), "--type", e.decoder] + mode +
                             [paths[e.name]], capture_output=True, text=True)
        got_py = run.stderr.strip() if run.returncode else "accepted"
        c_verdict = c_verdicts(checker, e.decoder, [paths[e.name]], signer=e.signer)[paths[e.name]]
        signed = f", signed by {e.signer.name}" if e.signer else ""
        print(f"{e.name} ({e.decoder}, {len(e.data)} bytes{signed}, {want}):\n  decode.py: {got_py}\n"
              f"  C:         {c_verdict}")
        if e.signer:
            check_signed(e, checker, tmp, problems)
        if e.reject:
            if run.returncode != 1 or not got_py.startswith(f"error: {e.reject}: "):
                problems.append(f"{e.line}: example {e.name}: decode.py should reject it with {e.reject}: {got_py}")
            if not c_verdict.startswith(f"rejected {e.reject}:"):
                problems.append(f"{e.line}: example {e.name}: C should reject it with {e.reject}: {c_verdict}")
            if e.name in outputs:
                problems.append(f"{e.line}: example {e.name} is rejected, so it has no JSON output")
            continue
        if run.returncode != 0:
            problems.append(f"{e.line}: example {e.name}: decode.py rejects it: {got_py}")
        elif e.name not in outputs:
            problems.append(f"{e.line}: example {e.name} has no ```json example={e.name} block after it")
        elif json.loads(run.stdout) != outputs[e.name]:
            problems.append(f"{e.line}: example {e.name}: decode.py prints {json.dumps(json.loads(run.stdout))}, "
                            "not the JSON shown")
        if c_verdict != "accepted":
            problems.append(f"{e.line}: example {e.name}: C decoder and encoder: {c_verdict}")
    problems.extend(f"JSON for example {n}, which does not exist" for n in outputs if n not in paths)


def check_signed(e, checker, tmp, problems):
    """A signed example: its signature is what PyNaCl makes with the derived
    key (Ed25519 is deterministic); without a key decode.py splits it off
    and says so. A tampered one (reject=signature) has a valid body."""
    body, signature = e.body, e.data[-SIGNATURE_BYTES:]
    unverified = python_verdict(e.data, e.decoder, envelope=True)
    if e.reject == "signature":
        path = os.path.join(tmp, f"example-{e.name}-body.bin")
        with open(path, "wb") as f:
            f.write(body)
        py, c = python_verdict(body, e.decoder), c_verdicts(checker, e.decoder, [path])[path]
        print(f"  its body alone: decode.py {py[0]}, C {c}")
        if py[0] != "accepted" or not c.startswith("accepted"):
            problems.append(f"{e.line}: example {e.name}: a tampered message should have a valid body, "
                            f"not: decode.py {py[1:]}, C {c}")
        if unverified[0] != "accepted":
            problems.append(f"{e.line}: example {e.name}: unverified, decode.py should decode its body: {unverified}")
        return
    if e.reject:
        return
    remade = e.signer.signing_key().sign(body).signature
    print(f"  PyNaCl signature with keys_derive({e.signer.seed}, {e.signer.name}): "
          f"{'the same' if remade == signature else remade.hex()}")
    if remade != signature:
        problems.append(f"{e.line}: example {e.name}: its signature is not the one keys_derive({e.signer.seed}, "
                        f"{e.signer.name}) makes: {remade.hex()}")
    verified = python_verdict(e.data, e.decoder, key=e.signer.public, envelope=True)  # reported when rejected
    if unverified[0] != "accepted":
        problems.append(f"{e.line}: example {e.name}: decode.py without a key should decode it (signature "
                        f"unverified): {unverified[1:]}")
    elif verified[0] == "accepted" and {**unverified[1], "signature": "verified"} != verified[1]:
        problems.append(f"{e.line}: example {e.name}: decode.py prints another message without the key "
                        f"({unverified[1]}) than with it ({verified[1]})")


def map_fields(data):
    """The (start, value_start, end) offsets of each key/value pair of the
    top-level map (a fixmap or map16, as the examples are)."""
    r = decode.Reader(data)
    tag = r.take(1)[0]
    n = tag & 0x0F if tag <= 0x8F else r.uint(2)
    assert r.pos == len(map_header(n)), "an example's map header is not a fixmap or map16"
    spans = []
    for _ in range(n):
        start = r.pos
        r.obj()
        middle = r.pos
        r.obj()
        spans.append((start, middle, r.pos))
    return spans


def map_header(n):
    return bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")


def variants(e):
    """(description, bytes) for each variant of a valid example's body."""
    data = e.body
    out = [(f"first {n} bytes", data[:n]) for n in range(len(data))]
    out.append(("a trailing zero byte", data + b"\x00"))
    out += [(f"byte {i} = 0x{b:02x}", data[:i] + bytes([b]) + data[i + 1:])
            for i in range(len(data)) for b in REPLACEMENT_BYTES if data[i] != b]
    spans = map_fields(data)
    n, pairs = len(spans), [data[start:end] for start, _, end in spans]
    for k, (start, middle, end) in enumerate(spans):
        key = decode.Reader(data[start:middle]).obj()
        out += [(f"{key} = {kind}", data[:middle] + value + data[end:]) for kind, value in OTHER_VALUES.items()]
        out.append((f"without {key}", map_header(n - 1) + b"".join(pairs[:k] + pairs[k + 1:])))
        out.append((f"{key} twice", map_header(n + 1) + b"".join(pairs + [pairs[k]])))
    return out


def envelope_variants(e, keys):
    """(description, bytes) for each variant of a valid signed message: none
    carries a valid signature of its signer."""
    data, body = e.data, e.body
    out = [(f"first {n} bytes", data[:n]) for n in range(len(data))]
    out.append(("a trailing zero byte", data + b"\x00"))
    out.append(("the body alone", body))
    out += [(f"byte {i} = 0x{b:02x}", data[:i] + bytes([b]) + data[i + 1:])
            for i in range(len(data)) for b in REPLACEMENT_BYTES if data[i] != b]
    out += [(f"byte {i} ^ 0x{1 << bit:02x}", data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:])
            for i in range(len(data)) for bit in (0, 7)]
    out += [(f"signed by {k.name}", body + k.signing_key().sign(body).signature)
            for k in keys.values() if k.public != e.signer.public]
    out.append(("signed by a key of another seed",
                body + TestKey(e.signer.name, e.signer.seed + 1, None, None).signing_key().sign(body).signature))
    return out


def check_envelope_variants(e, keys, checker, tmp, problems):
    cases = envelope_variants(e, keys)
    paths = []
    for k, (_, data) in enumerate(cases):
        paths.append(os.path.join(tmp, f"{e.name}-signed-{k}.bin"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    c = c_verdicts(checker, e.decoder, paths, signer=e.signer)
    wrong = 0
    for (what, data), path in zip(cases, paths):
        py = python_verdict(data, e.decoder, key=e.signer.public, envelope=True)
        unverified = python_verdict(data, e.decoder, envelope=True)
        if "crashed" in (py[0], unverified[0]):
            problems.append(f"{e.name} (signed) with {what}: decode.py raised instead of rejecting: "
                            f"{py[1] if py[0] == 'crashed' else unverified[1]}")
        elif py[:2] != ("rejected", "signature") or not c[path].startswith("rejected signature:"):
            wrong += 1
            problems.append(f"{e.name} (signed) with {what}: should be rejected as signature: decode.py "
                            f"{py[0]} {py[1] if py[0] == 'rejected' else ''}, C {c[path]}")
    print(f"{e.name}: {len(cases)} signed variants, {wrong} not rejected as signature by both")
    return len(cases)


def check_variants(examples, keys, checker, tmp, problems):
    total = 0
    for e in (e for e in examples if not e.reject):
        base = python_verdict(e.body, e.decoder)
        if base[0] != "accepted":
            continue  # reported by check_examples; its variants would say nothing
        cases = variants(e)
        paths = []
        for k, (_, data) in enumerate(cases):
            paths.append(os.path.join(tmp, f"{e.name}-{k}.bin"))
            with open(paths[-1], "wb") as f:
                f.write(data)
        # A receiver knows d: without it the C decoder's storage would reject a large dim that decode.py takes.
        dim = base[1].get("dim", 0)
        c = c_verdicts(checker, e.decoder, paths, dim)
        disagree = 0
        for (what, data), path in zip(cases, paths):
            py = python_verdict(data, e.decoder, dim)
            py_status = "accepted" if py[0] == "accepted" else py[1]
            untyped = python_verdict(data, None)  # the type taken from the message, as the command line does
            if "crashed" in (py[0], untyped[0]):
                problems.append(f"{e.name} with {what}: decode.py raised instead of rejecting: "
                                f"{py[1] if py[0] == 'crashed' else untyped[1]}")
            elif py_status != c_status(c[path]):
                disagree += 1
                problems.append(f"{e.name} with {what}: decode.py {py_status}"
                                f"{' (' + py[2] + ')' if py[0] == 'rejected' else ''}, C {c[path]}")
        print(f"{e.name}: {len(cases)} variants, {disagree} verdicts differ")
        total += len(cases)
        if e.signer:
            total += check_envelope_variants(e, keys, checker, tmp, problems)
    return total


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    checker = os.path.abspath(sys.argv[1])
    doc = sys.argv[2] if len(sys.argv) == 3 else os.path.join(ROOT, "schemas", "messages.md")
    problems = []
    examples, outputs, keys = read_examples(doc, problems)
    check_keys(keys, checker, problems)
    with tempfile.TemporaryDirectory(prefix="schema_examples.") as tmp:
        check_examples(examples, outputs, checker, tmp, problems)
        total = check_variants(examples, keys, checker, tmp, problems)
    for p in problems[:50]:
        print(f"FAIL: {p}")
    if len(problems) > 50:
        print(f"FAIL: ... and {len(problems) - 50} more")
    print(f"schema_examples: {len(examples)} examples, {total} variants, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
