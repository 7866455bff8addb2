#!/usr/bin/env python3
"""Verify a CryptoVault Ledger receipt offline, with only the log's verifier key.

  python3 verify_receipt.py RECEIPT.json VERIFIER_KEY
  python3 verify_receipt.py --consistency OLD NEW.json VERIFIER_KEY

VERIFIER_KEY is "<name>+<key id>+<base64>" (GET /api/audit/public-key) or @FILE holding it.
A receipt (cryptovault.receipt.v1 or .inclusion.v1) verifies when its checkpoint is signed by
that key and each event hashes to its own hash, sits at leaf position - 1 and has an RFC 9162
inclusion proof to the signed root. --consistency: OLD is a checkpoint note you kept (or a
consistency bundle, whose new checkpoint is taken), NEW a cryptovault.consistency.v1 bundle.
Exit 0 verified, 1 a check failed (printed), 2 unusable input. Needs `cryptography`.
"""
import base64, hashlib, json, re, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

class Failed(Exception):
    """A check failed."""

def sha256(*parts):
    return hashlib.sha256(b"".join(parts)).digest()

def b64(text):  # standard padded base64; non-canonical encodings are refused
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise ValueError(f"not canonical base64: {text!r}")
    return raw

def parse_key(text):  # <name>+<hex key id>+<base64(0x01 || 32-byte Ed25519 public key)>
    name, key_id, key = text.strip().split("+", 2)  # the base64 may hold "+" too
    raw = b64(key)
    if len(raw) != 33 or raw[0] != 1 or sha256(name.encode(), b"\n", raw)[:4].hex() != key_id:
        raise ValueError("not an Ed25519 verifier key with a matching key id")
    return name, bytes.fromhex(key_id), Ed25519PublicKey.from_public_bytes(raw[1:])

def open_checkpoint(note, key, which="checkpoint"):
    """C2SP signed note: text, blank line, lines "— <name> <base64(key id || signature)>"."""
    name, key_id, public = key
    text, blank, signatures = note.rpartition("\n\n")
    if not blank or not signatures.endswith("\n"):
        raise Failed(f"{which} is not a signed note")
    text += "\n"  # the signed text ends in its own newline, not the blank line
    signed = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise Failed(f"{which} is not a signed note")
        signer, _, signature = line[2:].partition(" ")
        raw = b64(signature)
        if signer == name and raw[:4] == key_id:
            try:
                public.verify(raw[4:], text.encode())
            except InvalidSignature:
                raise Failed(f"{which} signature does not verify under key {name}")
            signed = True
    if not signed:
        raise Failed(f"{which} signature does not verify under key {name}: no signature by it")
    lines = text[:-1].split("\n")  # tlog-checkpoint body: origin, size, base64 root, extensions
    if len(lines) < 3 or not re.fullmatch(r"0|[1-9][0-9]*", lines[1]) or len(b64(lines[2])) != 32:
        raise Failed(f"{which} is not a checkpoint")
    if lines[0] != name:
        raise Failed(f"{which} origin differs: {lines[0]!r} is not the key's log {name!r}")
    return lines[0], int(lines[1]), b64(lines[2])

def event_hash(event):
    """hex SHA-256 of the canonical JSON of the envelope without `hash` (events/src/canonical.rs)."""
    fields = ("event_id", "stream_id", "stream_version", "position", "event_type",
              "schema_version", "occurred_at", "payload", "prev_hash")
    hashed = {name: event[name] for name in fields}
    hashed["metadata"] = {name: event["metadata"].get(name) for name in
                          ("request_id", "correlation_id", "causation_id", "actor", "ip", "user_agent")}
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()

def node(left, right):
    return sha256(b"\x01", left, right)

def verify_inclusion(leaf_hash, index, size, proof, root):  # RFC 9162 section 2.1.3.2
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root

def verify_consistency(first, second, first_hash, second_hash, proof):  # RFC 9162 2.1.4.2
    if first == 0 or first == second:  # from the empty tree / to the same size: nothing to prove
        return not proof and first_hash == (sha256() if first == 0 else second_hash)
    if first > second or not proof:
        return False
    if first & (first - 1) == 0:  # an exact power of two: the old root is the first node
        proof = [first_hash] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_hash and sr == second_hash

def verify_receipt(receipt, key):
    if receipt["format"] not in ("cryptovault.receipt.v1", "cryptovault.inclusion.v1"):
        raise ValueError(f"unknown format {receipt['format']!r}")
    entries = receipt["entries"]
    if not entries or (receipt["format"] == "cryptovault.inclusion.v1" and len(entries) != 1):
        raise ValueError(f"{receipt['format']} with {len(entries)} entries")
    origin, size, root = open_checkpoint(receipt["checkpoint"], key)
    for i, entry in enumerate(entries):
        event, index = entry["event"], entry["leaf_index"]
        where = f"entry {i} (position {event['position']})"
        computed = event_hash(event)
        if computed != event["hash"]:
            raise Failed(f"{where}: event altered: stored hash {event['hash']}, computed {computed}")
        if index != event["position"] - 1:
            raise Failed(f"{where}: leaf index {index} is not position {event['position']} - 1")
        if not 0 <= index < size:
            raise Failed(f"{where}: leaf index {index} is not below the checkpoint's tree size {size}")
        leaf_hash = sha256(b"\x00", bytes.fromhex(event["hash"]))
        if not verify_inclusion(leaf_hash, index, size, [b64(p) for p in entry["inclusion_proof"]], root):
            raise Failed(f"{where}: inclusion proof does not lead to the checkpoint root")
    positions = ", ".join(str(e["event"]["position"]) for e in entries)
    return f"OK: event(s) at position(s) {positions} are in the log {origin} signed at size {size}"

def verify_consistency_files(old_text, bundle, key):
    if old_text.lstrip().startswith("{"):
        old_text = json.loads(old_text)["new_checkpoint"]
    if bundle["format"] != "cryptovault.consistency.v1":
        raise ValueError(f"unknown format {bundle['format']!r}")
    _, old_size, old_root = open_checkpoint(old_text, key, "old checkpoint")
    origin, new_size, new_root = open_checkpoint(bundle["new_checkpoint"], key, "new checkpoint")
    if (bundle["old_size"], bundle["new_size"]) != (old_size, new_size):
        raise Failed("bundle's sizes are not its checkpoints' tree sizes")
    if not verify_consistency(old_size, new_size, old_root, new_root, [b64(p) for p in bundle["proof"]]):
        raise Failed(f"consistency proof from size {old_size} to {new_size} does not verify")
    return f"OK: the log {origin} at size {old_size} is an unchanged prefix of its tree at size {new_size}"

def main(args):
    if len(args) not in (2, 4) or (len(args) == 4) != (args[0] == "--consistency"):
        print(__doc__, file=sys.stderr)
        return 2
    read = lambda path: open(path, encoding="utf-8").read()
    try:
        key = parse_key(read(args[-1][1:]) if args[-1].startswith("@") else args[-1])
        if len(args) == 4:
            print(verify_consistency_files(read(args[1]), json.loads(read(args[2])), key))
        else:
            print(verify_receipt(json.loads(read(args[0])), key))
        return 0
    except Failed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    except Exception as error:  # unreadable file, not JSON, not such a bundle, a bad key
        print(f"error: unusable input: {error!r}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
