//! The offline verifier in separate processes, with only the verifier key and no MongoDB or
//! configuration (the environment is cleared): `cryptovault audit verify-receipt` /
//! `verify-consistency` / `generate-key`, and the README's Python script
//! (`scripts/verify_receipt.py`, run with the Python of `CV_AUDIT_PYTHON` that scripts/test.sh
//! sets up). Both accept what the pure Rust code builds and refuse each tampering with exit 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{Duration, TimeZone, Utc};
use cryptovault_events::bundle::{event_leaf_hash, ConsistencyBundle, Receipt, ReceiptEntry};
use cryptovault_events::canonical::event_hash;
use cryptovault_events::checkpoint::{Checkpoint, SignerKey, VerifierKey};
use cryptovault_events::merkle::{consistency_proof, inclusion_proof, tree_root, MemoryTree};
use cryptovault_events::{EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
use serde_json::json;
use uuid::Uuid;

const ORIGIN: &str = "cryptovault.test/ledger";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `n` chained events whose payloads hold what canonical JSON must escape alike in Rust and
/// Python: quotes, backslashes, control characters, non-ASCII, a character beyond the BMP.
fn log(n: u64) -> Vec<EventEnvelope> {
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    (1..=n)
        .map(|position| {
            let event = NewEvent::new(
                Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(position)),
                "TransferSent",
                1,
                start + Duration::milliseconds(position as i64 * 1_234),
                EventMetadata {
                    actor: Some(format!("user-{}", position % 3)),
                    ip: (position % 2 == 0).then(|| "203.0.113.7".to_owned()),
                    ..EventMetadata::default()
                },
                json!({
                    "asset": "ETH",
                    "amount": format!("{position}.000000000000000001"),
                    "memo": "loyer \"mars\" \\ dépôt\n\t\u{1}€ 🦀 日本",
                    "zeta": [position, null, true, {"b": 1, "a": -2}],
                }),
            );
            let envelope = EventEnvelope::seal(
                event,
                format!("account-{}", position % 3),
                position.div_ceil(3),
                position,
                prev.clone(),
            );
            prev = envelope.hash.clone();
            envelope
        })
        .collect()
}

fn signer() -> SignerKey {
    SignerKey::from_seed(ORIGIN, [42; 32]).unwrap()
}

fn key() -> VerifierKey {
    signer().verifier()
}

fn tree(events: &[EventEnvelope]) -> MemoryTree {
    MemoryTree::from_leaf_hashes(events.iter().map(|e| event_leaf_hash(e).unwrap()))
}

fn note(tree: &MemoryTree, size: u64, signer: &SignerKey, origin: &str) -> String {
    Checkpoint::new(origin, size, tree_root(tree, size).unwrap())
        .unwrap()
        .sign(signer)
        .unwrap()
        .to_string()
}

fn receipt(events: &[EventEnvelope], size: u64, positions: &[u64]) -> Receipt {
    let tree = tree(events);
    let entries = positions
        .iter()
        .map(|&p| {
            let proof = inclusion_proof(&tree, p - 1, size).unwrap();
            ReceiptEntry::new(events[(p - 1) as usize].clone(), proof)
        })
        .collect();
    Receipt::new(note(&tree, size, &signer(), ORIGIN), entries)
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> PathBuf {
    write(dir, name, &serde_json::to_string_pretty(value).unwrap())
}

/// The `cryptovault` binary with an empty environment: no MONGO_URL, no configuration.
fn cryptovault(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryptovault"))
        .args(args)
        .env_clear()
        .output()
        .expect("the cryptovault binary runs")
}

/// The README's Python verifier, run by the Python scripts/test.sh prepared.
fn python(args: &[&str]) -> Output {
    let interpreter = std::env::var("CV_AUDIT_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CV_AUDIT_PYTHON is not set: run the tests with scripts/test.sh, or set it to the \
             Python that scripts/audit-venv.sh prints (it has the `cryptography` package)"
        )
    });
    Command::new(interpreter)
        .arg(root().join("scripts/verify_receipt.py"))
        .args(args)
        .output()
        .expect("the Python verifier runs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts `output` exited with `code` and, for failures, that its message contains `needle`.
fn expect(output: &Output, code: i32, needle: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", text(output));
    assert!(
        text(output).contains(needle),
        "no {needle:?} in {}",
        text(output)
    );
}

/// The tampered receipts both verifiers must refuse with exit 1, and the words naming the check.
fn tampered_receipts(events: &[EventEnvelope]) -> Vec<(&'static str, Receipt, &'static str)> {
    let good = receipt(events, 20, &[3, 11, 20]);
    let mut cases = Vec::new();

    let mut r = good.clone();
    r.entries[1].event.payload["amount"] = json!("1100.000000000000000001");
    cases.push(("changed payload", r, "entry 1 (position 11): event altered"));

    let mut r = good.clone();
    let event = &mut r.entries[1].event;
    event.metadata.actor = Some("someone-else".into());
    event.hash = event_hash(event);
    cases.push((
        "changed and rehashed event",
        r,
        "entry 1 (position 11): inclusion proof does not lead to the checkpoint root",
    ));

    let mut r = good.clone();
    r.entries[2].inclusion_proof[0][31] ^= 0x80;
    cases.push((
        "changed sibling",
        r,
        "entry 2 (position 20): inclusion proof does not lead to the checkpoint root",
    ));

    let mut r = good.clone();
    r.entries[0].leaf_index = 3;
    cases.push((
        "wrong leaf index",
        r,
        "entry 0 (position 3): leaf index 3 is not position 3 - 1",
    ));

    let tree = tree(events);
    let mut r = good.clone();
    r.checkpoint = note(
        &tree,
        20,
        &SignerKey::from_seed(ORIGIN, [1; 32]).unwrap(),
        ORIGIN,
    );
    cases.push((
        "another key's note",
        r,
        "checkpoint signature does not verify under key",
    ));

    let mut r = good.clone();
    r.checkpoint = note(&tree, 20, &signer(), "elsewhere.example/log");
    cases.push(("another origin", r, "origin differs"));

    let mut r = good.clone();
    r.checkpoint = note(&tree, 24, &signer(), ORIGIN);
    cases.push((
        "another size",
        r,
        "entry 0 (position 3): inclusion proof does not lead to the checkpoint root",
    ));
    cases
}

#[test]
fn the_cli_verifies_a_receipt_with_only_the_key_and_refuses_tampered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let events = log(24);
    let good = write_json(dir.path(), "good.json", &receipt(&events, 20, &[3, 11, 20]));
    let key = key().to_string();
    let key_file = write(dir.path(), "key.txt", &format!("{key}\n"));
    let good = good.to_str().unwrap();

    let out = cryptovault(&["audit", "verify-receipt", good, "--key", &key]);
    expect(&out, 0, "OK: 3 event(s) at position(s) 3, 11, 20");
    let at_key = format!("@{}", key_file.display());
    expect(
        &cryptovault(&["audit", "verify-receipt", good, "--key", &at_key]),
        0,
        "OK",
    );
    let out = cryptovault(&["audit", "verify-receipt", good, "--key", &key, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["report"]["tree_size"], 20);
    assert_eq!(report["report"]["entries"][2]["position"], 20);

    for (what, receipt, needle) in tampered_receipts(&events) {
        let path = write_json(dir.path(), "bad.json", &receipt);
        let out = cryptovault(&[
            "audit",
            "verify-receipt",
            path.to_str().unwrap(),
            "--key",
            &key,
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(text(&out).contains(needle), "{what}: {}", text(&out));
        let out = cryptovault(&[
            "audit",
            "verify-receipt",
            path.to_str().unwrap(),
            "--key",
            &key,
            "--json",
        ]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["verified"], false, "{what}");
        assert_eq!(report["exit_code"], 1, "{what}");
    }

    // Unusable input: exit 2.
    let not_json = write(dir.path(), "not.json", "{\"format\": ");
    let mut bad_b64 = serde_json::to_value(receipt(&events, 20, &[3])).unwrap();
    bad_b64["entries"][0]["inclusion_proof"][0] = json!("AAAA");
    let bad_b64 = write_json(dir.path(), "b64.json", &bad_b64);
    let mut other_format = serde_json::to_value(receipt(&events, 20, &[3])).unwrap();
    other_format["format"] = json!("cryptovault.statement.v1");
    let other_format = write_json(dir.path(), "format.json", &other_format);
    for path in [
        &not_json,
        &bad_b64,
        &other_format,
        &dir.path().join("missing.json"),
    ] {
        let out = cryptovault(&[
            "audit",
            "verify-receipt",
            path.to_str().unwrap(),
            "--key",
            &key,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    }
    let out = cryptovault(&["audit", "verify-receipt", good, "--key", "not-a-key"]);
    expect(&out, 2, "--key is not a verifier key");
    let out = cryptovault(&[
        "audit",
        "verify-receipt",
        good,
        "--key",
        "@/nonexistent/key",
    ]);
    expect(&out, 2, "cannot read");
}

#[test]
fn the_cli_verifies_consistency_from_a_kept_note_or_an_earlier_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let events = log(40);
    let tree = tree(&events);
    let key = key().to_string();
    let bundle = |old: u64, new: u64| {
        ConsistencyBundle::new(
            old,
            new,
            None,
            note(&tree, new, &signer(), ORIGIN),
            consistency_proof(&tree, old, new).unwrap(),
        )
    };
    let old_note = write(dir.path(), "old.note", &note(&tree, 13, &signer(), ORIGIN));
    let earlier = write_json(dir.path(), "earlier.json", &bundle(5, 13));
    let newer = write_json(dir.path(), "newer.json", &bundle(13, 40));
    let (old_note, earlier, newer) = (
        old_note.to_str().unwrap(),
        earlier.to_str().unwrap(),
        newer.to_str().unwrap(),
    );
    for old in [old_note, earlier] {
        let out = cryptovault(&["audit", "verify-consistency", old, newer, "--key", &key]);
        expect(&out, 0, "at size 13");
    }

    let mut wrong = bundle(13, 40);
    wrong.proof[1][0] ^= 1;
    let wrong = write_json(dir.path(), "wrong.json", &wrong);
    let out = cryptovault(&[
        "audit",
        "verify-consistency",
        old_note,
        wrong.to_str().unwrap(),
        "--key",
        &key,
    ]);
    expect(
        &out,
        1,
        "consistency proof from size 13 to 40 does not verify",
    );

    // A note of a rewritten history of the same size.
    let mut rewritten = events[..13].to_vec();
    rewritten[6].payload["amount"] = json!("0.1");
    rewritten[6].hash = event_hash(&rewritten[6]);
    let forged = write(
        dir.path(),
        "forged.note",
        &note(&self::tree(&rewritten), 13, &signer(), ORIGIN),
    );
    let out = cryptovault(&[
        "audit",
        "verify-consistency",
        forged.to_str().unwrap(),
        newer,
        "--key",
        &key,
    ]);
    expect(&out, 1, "old checkpoint root");
}

#[test]
fn generate_key_prints_a_signer_and_its_verifier_without_configuration() {
    let out = cryptovault(&["audit", "generate-key", "--name", ORIGIN]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let private = String::from_utf8(out.stdout.clone()).unwrap();
    let signer = SignerKey::parse(private.trim()).expect("a signer key on stdout");
    assert_eq!(signer.name(), ORIGIN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&signer.verifier().to_string()), "{stderr}");
    assert!(!stderr.contains("PRIVATE"), "{stderr}");

    let again = cryptovault(&["audit", "generate-key", "--name", ORIGIN]);
    assert_ne!(again.stdout, out.stdout, "a fresh key each time");
    expect(
        &cryptovault(&["audit", "generate-key", "--name", "two words"]),
        2,
        "invalid key name",
    );
}

#[test]
fn the_python_verifier_agrees_with_the_rust_one() {
    let dir = tempfile::tempdir().unwrap();
    let events = log(37);
    let key = key().to_string();
    let key_file = write(dir.path(), "key.txt", &format!("{key}\n"));

    // Every position of one log in one receipt, and an inclusion bundle.
    let positions: Vec<u64> = (1..=37).collect();
    let every = write_json(dir.path(), "every.json", &receipt(&events, 37, &positions));
    let out = python(&[every.to_str().unwrap(), &key]);
    expect(&out, 0, "OK");
    let tree = tree(&events);
    let one = Receipt::inclusion(
        note(&tree, 30, &signer(), ORIGIN),
        ReceiptEntry::new(events[16].clone(), inclusion_proof(&tree, 16, 30).unwrap()),
    );
    let one = write_json(dir.path(), "one.json", &one);
    let at_key = format!("@{}", key_file.display());
    expect(
        &python(&[one.to_str().unwrap(), &at_key]),
        0,
        "position(s) 17",
    );

    for (what, receipt, needle) in tampered_receipts(&events[..24]) {
        let path = write_json(dir.path(), "bad.json", &receipt);
        let out = python(&[path.to_str().unwrap(), &key]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(text(&out).contains(needle), "{what}: {}", text(&out));
    }

    let not_json = write(dir.path(), "not.json", "[1, 2");
    expect(&python(&[not_json.to_str().unwrap(), &key]), 2, "unusable");
    expect(&python(&[every.to_str().unwrap(), "nokey"]), 2, "unusable");

    // Consistency between every pair of a few sizes, and tampered proofs.
    let sizes = [0u64, 1, 2, 3, 4, 7, 8, 9, 16, 21, 37];
    for &old in &sizes {
        let old_note = write(dir.path(), "old.note", &note(&tree, old, &signer(), ORIGIN));
        for &new in sizes.iter().filter(|&&n| n >= old) {
            let mut bundle = ConsistencyBundle::new(
                old,
                new,
                None,
                note(&tree, new, &signer(), ORIGIN),
                consistency_proof(&tree, old, new).unwrap(),
            );
            let path = write_json(dir.path(), "new.json", &bundle);
            let args = [
                "--consistency",
                old_note.to_str().unwrap(),
                path.to_str().unwrap(),
                &key,
            ];
            expect(&python(&args), 0, "OK");
            if let Some(hash) = bundle.proof.last_mut() {
                hash[3] ^= 4;
                let path = write_json(dir.path(), "new.json", &bundle);
                let args = [
                    "--consistency",
                    old_note.to_str().unwrap(),
                    path.to_str().unwrap(),
                    &key,
                ];
                expect(&python(&args), 1, "does not verify");
            }
        }
    }
}

#[test]
fn the_readme_shows_the_python_verifier_verbatim() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let script = std::fs::read_to_string(root().join("scripts/verify_receipt.py")).unwrap();
    let marker = "<!-- verify_receipt.py -->";
    let parts: Vec<&str> = readme.split(marker).collect();
    assert_eq!(
        parts.len(),
        3,
        "README.md must hold scripts/verify_receipt.py between two {marker} lines"
    );
    let shown = parts[1]
        .trim_start_matches('\n')
        .strip_prefix("```python\n")
        .and_then(|s| s.trim_end_matches('\n').strip_suffix("```"))
        .expect("the script in a ```python block between the markers");
    assert!(
        shown == script,
        "README.md's copy of scripts/verify_receipt.py differs from the script: copy it again"
    );
}
