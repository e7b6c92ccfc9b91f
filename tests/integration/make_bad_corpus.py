#!/usr/bin/env python3
"""Writes a corpus of hostile or malformed messages for bad_input.sh.

usage: make_bad_corpus.py OUT_DIR JOB DIM AGENTS ROUND TOTAL_ROUNDS RUN KEYS_DIR

Each case is OUT_DIR/<name>.bin plus a line in OUT_DIR/cases.tsv:
name, topic (with the job and round filled in), and what the coordinator
must do with it (a rejection reason from schemas/messages.md), or late /
early, or "agent" for messages aimed at the agents. Built from
schemas/messages.md alone, with a small msgpack encoder of our own and
PyNaCl for the Ed25519 signatures.

Two kinds of attacker: one without any key (unsigned, forged or replayed
messages: all must fail as "signature") and agent 1 gone rogue, which signs
malformed bodies with its own key, so that the decoder behind the
signature check is reached. RUN is the live run id (hex), KEYS_DIR the
job's key folder (agent-1.key is the rogue agent's).
"""
import math
import os
import struct
import sys

import nacl.signing


def pack(x):
    if x is None:
        return b"\xc0"
    if x is True:
        return b"\xc3"
    if x is False:
        return b"\xc2"
    if isinstance(x, Raw):
        return x.data
    if isinstance(x, int):
        if 0 <= x < 128:
            return bytes([x])
        if 0 <= x < 2**32:
            return b"\xce" + struct.pack(">I", x)
        if 0 <= x < 2**64:
            return b"\xcf" + struct.pack(">Q", x)
        return b"\xd3" + struct.pack(">q", x)
    if isinstance(x, float):
        return b"\xca" + struct.pack(">f", x)
    if isinstance(x, str):
        b = x.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(x, bytes):
        return b"\xc6" + struct.pack(">I", len(x)) + x
    if isinstance(x, dict):
        out = b"\xde" + struct.pack(">H", len(x))
        for k, v in x.items():
            out += pack(k) + pack(v)
        return out
    raise TypeError(type(x))


class Raw:
    """Bytes inserted as they are (to declare lengths that are not there)."""

    def __init__(self, data):
        self.data = data


def rice(indices, b):
    bits = []
    prev = -1
    for i in indices:
        gap = i - prev - 1
        bits += [1] * (gap >> b) + [0] + [(gap >> (b - 1 - k)) & 1 for k in range(b)]
        prev = i
    bits += [0] * (-len(bits) % 8)
    return bytes(int("".join(map(str, bits[n:n + 8])), 2) for n in range(0, len(bits), 8))


def update(job, dim, rnd, agent, indices, values, **override):
    msg = {"v": 2, "type": "update", "job": job, "run": RUN, "round": rnd, "agent": agent, "samples": 32,
           "loss": 0.5,
           "dim": dim, "count": len(indices), "idx_enc": "rice", "idx": rice(indices, 4), "rice_b": 4,
           "val_fmt": "f32", "val": b"".join(struct.pack("<f", v) for v in values)}
    for k, v in override.items():
        if v is DROP:
            del msg[k]
        else:
            msg[k] = v
    return pack(msg)


DROP = object()
RUN = 0


def secret_key(keys_dir, name):
    """The signing key in a .key file ("esgd-ed25519-secret <seed||public, hex>")."""
    with open(os.path.join(keys_dir, name + ".key")) as f:
        tag, hexkey = f.read().split()
    assert tag == "esgd-ed25519-secret"
    return nacl.signing.SigningKey(bytes.fromhex(hexkey)[:32])


def signed(key, body):
    return body + key.sign(body).signature


def main():
    global RUN
    out, job, dim, agents, rnd, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6])
    RUN, keys_dir = int(sys.argv[7], 16), sys.argv[8]
    os.makedirs(out, exist_ok=True)
    rogue = secret_key(keys_dir, "agent-1")
    stranger = nacl.signing.SigningKey.generate()
    grad = f"esgd/{job}/round/{rnd}/grad/1"
    ok_idx, ok_val = [2, 40, 41], [0.1, -0.2, 0.3]
    good = update(job, dim, rnd, 1, ok_idx, ok_val)
    good_signed = signed(rogue, good)
    replayed = bytearray(good_signed)
    at = replayed.index(b"\xa5round") + 6  # the round's value: a positive fixint or uint32
    replayed[at:at + 1] = bytes([replayed[at] ^ 1])
    model_body = pack({"v": 2, "type": "model", "job": job, "run": RUN, "round": rnd + 2, "base_round": rnd + 2,
                       "lr": 0.1, "prev_loss": None, "loss_fell": None, "done": True, "form": "full", "dim": dim,
                       "count": dim, "val": bytes(4 * dim)})
    # Without a key: everything must fail its signature check.
    unsigned = [
        ("unsigned_update", good, grad, "signature"),
        ("stranger_signed_update", signed(stranger, good), grad, "signature"),
        ("replayed_round_rewritten", bytes(replayed), grad, "signature"),
        ("on_another_agents_topic", good_signed, f"esgd/{job}/round/{rnd}/grad/2", "signature"),
        ("short_of_a_signature", good_signed[:40], grad, "signature"),
        ("v1_unsigned", update(job, dim, rnd, 1, ok_idx, ok_val, v=1), grad, "signature"),
        ("agent_forged_done_model", signed(stranger, model_body), f"esgd/{job}/round/{rnd + 2}/model", "agent"),
        ("agent_forged_latest_model", signed(stranger, model_body), f"esgd/{job}/model", "agent"),
        ("agent_forged_config", signed(stranger, b"\x81\xa1v\x02"), f"esgd/{job}/config", "agent"),
    ]
    # Agent 1 gone rogue: its own signature on bodies that must still fail.
    rogue_cases = [
        # name, payload, topic, expected coordinator outcome
        ("garbage", b"\x00\xff\x13\x37not msgpack", grad, "format"),
        ("not_a_map", b"\x93\x01\x02\x03", grad, "type"),
        ("truncated_half", good[: len(good) // 2], grad, "truncated"),
        ("truncated_one_byte", good[:-1], grad, "truncated"),
        ("huge_declared_bin", good[:20] + b"\xc6\x7f\xff\xff\xff", grad, "truncated"),
        ("huge_declared_map", b"\xdf\x7f\xff\xff\xff", grad, "truncated"),
        ("unknown_version", update(job, dim, rnd, 1, ok_idx, ok_val, v=3), grad, "version"),
        ("version_1", update(job, dim, rnd, 1, ok_idx, ok_val, v=1), grad, "version"),
        ("claims_another_agent", update(job, dim, rnd, 2, ok_idx, ok_val), grad, "mismatch"),
        ("claims_another_round", update(job, dim, rnd + 1, 1, ok_idx, ok_val), grad, "mismatch"),
        ("another_run", update(job, dim, rnd, 1, ok_idx, ok_val, run=RUN ^ 1), grad, "stale"),
        ("missing_loss", update(job, dim, rnd, 1, ok_idx, ok_val, loss=DROP), grad, "missing"),
        ("round_as_string", update(job, dim, rnd, 1, ok_idx, ok_val, round="7"), grad, "type"),
        ("loss_as_string", update(job, dim, rnd, 1, ok_idx, ok_val, loss="low"), grad, "type"),
        ("nan_value", update(job, dim, rnd, 1, ok_idx, [0.1, math.nan, 0.3]), grad, "nonfinite"),
        ("inf_value", update(job, dim, rnd, 1, ok_idx, [math.inf, 0.2, 0.3]), grad, "nonfinite"),
        ("nan_loss", update(job, dim, rnd, 1, ok_idx, ok_val, loss=math.nan), grad, "nonfinite"),
        ("index_out_of_range", update(job, dim, rnd, 1, [2, 40, dim + 5], ok_val), grad, "range"),
        ("count_over_dim", update(job, dim, rnd, 1, ok_idx, ok_val, count=dim + 1), grad, "range"),
        ("wrong_dimension", update(job, dim + 1, rnd, 1, ok_idx, ok_val), grad, "dimension"),
        ("values_short", update(job, dim, rnd, 1, ok_idx, ok_val, val=b"\x00\x00\x80\x3f"), grad, "format"),
        ("wrong_job", update("other-job", dim, rnd, 1, ok_idx, ok_val), grad, "mismatch"),
        ("agent_not_in_job", update(job, dim, rnd, agents + 7, ok_idx, ok_val),
         f"esgd/{job}/round/{rnd}/grad/{agents + 7}", "range"),
        ("round_far_past", update(job, dim, 0, 1, ok_idx, ok_val), f"esgd/{job}/round/0/grad/1", "late"),
        ("round_far_future", update(job, dim, rnd + 100000, 1, ok_idx, ok_val),
         f"esgd/{job}/round/{rnd + 100000}/grad/1", "early"),
        ("over_size_limit", b"\xc6" + struct.pack(">I", 3_000_000) + bytes(3_000_000), grad, "too_large"),
        ("empty_payload_not_retained", b"\xc0", grad, "type"),
        # Aimed at the agents: only the coordinator may sign these, so the
        # rogue agent's signature must not make them count.
        ("agent_garbage_model", b"\xde\x00\x01\xa1v", f"esgd/{job}/round/{rnd + 1}/model", "agent"),
        ("agent_garbage_config", b"\x81\xa1v\x05", f"esgd/{job}/config", "agent"),
        ("agent_model_far_future", pack({"v": 2, "type": "model", "job": job, "run": RUN, "round": total + 1000,
                                         "base_round": total + 1000, "lr": 0.1, "prev_loss": None,
                                         "loss_fell": None, "done": False, "form": "full", "dim": dim,
                                         "count": dim, "val": bytes(4 * dim)}),
         f"esgd/{job}/round/{total + 1000}/model", "agent"),
    ]
    # The size check comes before the signature, so that one stays raw.
    cases = unsigned + [(n, p if e == "too_large" else signed(rogue, p), t, e) for n, p, t, e in rogue_cases]
    with open(os.path.join(out, "cases.tsv"), "w") as tsv:
        for name, payload, topic, expect in cases:
            with open(os.path.join(out, name + ".bin"), "wb") as f:
                f.write(payload)
            tsv.write(f"{name}\t{topic}\t{expect}\n")
    # A status of agent 1's own, claiming a coordinator generation no start
    # ever made: followed, it would push the coordinator's to the top.
    beyond = pack({"v": 2, "type": "status", "job": job, "run": RUN, "agent": 1, "state": "online", "round": rnd,
                   "gen": 0xFFFFFFFF})
    with open(os.path.join(out, "status_beyond_generation.bin"), "wb") as f:
        f.write(signed(rogue, beyond))


if __name__ == "__main__":
    main()
