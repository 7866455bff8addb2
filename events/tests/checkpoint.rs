//! C2SP signed notes and tlog checkpoints, against the vectors of golang.org/x/mod's
//! `sumdb/note/note_test.go` and `sumdb/tlog/note_test.go` (repository golang/mod) and the
//! examples of the C2SP `signed-note.md` and `tlog-checkpoint.md` specifications.

use cryptovault_events::checkpoint::{
    ed25519_key_id, Checkpoint, CheckpointError, NoteError, NoteSignature, SignedNote, SignerKey,
    VerifierKey, MAX_SIGNATURES,
};
use cryptovault_events::merkle::leaf_hash;
use proptest::prelude::*;

// From golang/mod sumdb/note/note_test.go (TestNewVerifier, TestNewSigner, TestSign, TestOpen).
const PETER_SIGNER: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VERIFIER: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter() -> VerifierKey {
    VerifierKey::parse(PETER_VERIFIER).unwrap()
}

fn enoch() -> VerifierKey {
    VerifierKey::parse(ENOCH_VERIFIER).unwrap()
}

fn signed(sigs: &str) -> String {
    format!("{TEXT}\n{sigs}")
}

#[test]
fn go_verifier_key_parses_and_formats_back() {
    let v = peter();
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(v.key_id(), 0xc74f20a3);
    assert_eq!(ed25519_key_id("PeterNeumann", v.public_key()), 0xc74f20a3);
    assert_eq!(v.to_string(), PETER_VERIFIER);
    assert_eq!(enoch().key_id(), 0xaf0cfe78);
    assert_eq!(enoch().to_string(), ENOCH_VERIFIER);
}

#[test]
fn go_signer_key_parses_formats_back_and_matches_the_verifier() {
    let s = SignerKey::parse(PETER_SIGNER).unwrap();
    assert_eq!(s.name(), "PeterNeumann");
    assert_eq!(s.key_id(), 0xc74f20a3);
    assert_eq!(s.to_private_string(), PETER_SIGNER);
    assert_eq!(s.verifier(), peter());
    assert_eq!(s.verifier().to_string(), PETER_VERIFIER);
}

/// TestNewVerifier: every proper substring and every single-byte increment is refused, and
/// the two adjusted-hash keys (wrong length, unknown algorithm).
#[test]
fn mangled_verifier_keys_are_refused() {
    let b = PETER_VERIFIER.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i != 0 || j != b.len() {
                let s = String::from_utf8_lossy(&b[i..j]);
                assert!(VerifierKey::parse(&s).is_err(), "{s}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        let s = String::from_utf8_lossy(&m);
        assert!(VerifierKey::parse(&s).is_err(), "{s}");
    }
    assert!(matches!(
        VerifierKey::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        ),
        Err(NoteError::MalformedKey(_))
    ));
    assert_eq!(
        VerifierKey::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::UnknownAlgorithm(0x65))
    );
}

/// TestNewSigner: every proper substring and every single-byte increment is refused.
#[test]
fn mangled_signer_keys_are_refused() {
    let b = PETER_SIGNER.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i != 0 || j != b.len() {
                let s = String::from_utf8_lossy(&b[i..j]);
                assert!(SignerKey::parse(&s).is_err(), "{s}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        let s = String::from_utf8_lossy(&m);
        assert!(SignerKey::parse(&s).is_err(), "{s}");
    }
}

/// TestSign: the signed note, byte for byte; re-signing replaces the key's old signature.
#[test]
fn go_sign_vector_is_reproduced_byte_for_byte() {
    let signer = SignerKey::parse(PETER_SIGNER).unwrap();
    let want = signed(PETER_SIG);
    let note = SignedNote::sign(TEXT, &[&signer]).unwrap();
    assert_eq!(note.to_string(), want);

    let mut note = SignedNote::parse(&want).unwrap();
    note.add_signature(&signer).unwrap();
    assert_eq!(note.to_string(), want, "same key: replaced, not doubled");

    assert_eq!(
        SignedNote::sign("abc", &[&signer]),
        Err(NoteError::MalformedNote("text does not end in a newline"))
    );
    assert!(SignedNote::sign("a\u{1}b\n", &[&signer]).is_err());
}

/// TestOpen: one known key of two, both known, none known, a duplicated verifier.
#[test]
fn go_open_vectors() {
    let msg = signed(&format!("{PETER_SIG}{ENOCH_SIG}"));
    let note = SignedNote::parse(&msg).unwrap();
    assert_eq!(note.text(), TEXT);
    assert_eq!(note.to_string(), msg);

    let known = [peter()];
    let outcome = note.verify(&known).unwrap();
    assert_eq!(outcome.verified.len(), 1);
    assert_eq!(outcome.verified[0].name, "PeterNeumann");
    assert_eq!(outcome.verified[0].key_id, 0xc74f20a3);
    assert_eq!(outcome.unverified.len(), 1);
    assert_eq!(outcome.unverified[0].name, "EnochRoot");
    assert_eq!(outcome.unverified[0].key_id, 0xaf0cfe78);

    let both = [peter(), enoch()];
    let outcome = note.verify(&both).unwrap();
    assert_eq!(outcome.verified.len(), 2);
    assert!(outcome.unverified.is_empty());

    assert_eq!(note.verify(&[]), Err(NoteError::NoVerifiedSignature));

    let enoch_only = SignedNote::parse(&signed(ENOCH_SIG)).unwrap();
    assert_eq!(
        enoch_only.verify(&[enoch(), peter(), enoch()]),
        Err(NoteError::AmbiguousKey {
            name: "EnochRoot".into(),
            key_id: 0xaf0cfe78
        })
    );
    // An unused duplicated verifier does not matter.
    let peter_only = SignedNote::parse(&signed(PETER_SIG)).unwrap();
    assert!(peter_only.verify(&[enoch(), peter(), enoch()]).is_ok());
}

#[test]
fn go_open_refusals() {
    let known = [peter()];
    // Too many signatures.
    let many = signed(&PETER_SIG.repeat(MAX_SIGNATURES + 1));
    assert_eq!(SignedNote::parse(&many), Err(NoteError::TooManySignatures));
    assert!(SignedNote::parse(&signed(&PETER_SIG.repeat(16))).is_ok());
    // An invalid signature by a known key (ABCD inserted into the base64).
    let (a, b) = PETER_SIG.split_at(60);
    let bad = signed(&format!("{a}ABCD{b}"));
    assert_eq!(
        SignedNote::open(&bad, &known),
        Err(NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            key_id: 0xc74f20a3
        })
    );
    // Malformed notes.
    let bad_msgs = [
        TEXT.to_owned(),
        format!("{TEXT}\n"),
        signed(&PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\u{1}{}", signed(PETER_SIG)),
        signed("— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
        signed(&format!("{PETER_SIG}Unexpected line.\n")),
    ];
    for msg in &bad_msgs {
        assert!(
            matches!(
                SignedNote::open(msg, &known),
                Err(NoteError::MalformedNote(_))
            ),
            "{msg:?}"
        );
    }
    let mut not_utf8 = b"\xff".to_vec();
    not_utf8.extend_from_slice(signed(PETER_SIG).as_bytes());
    assert!(SignedNote::parse_bytes(&not_utf8).is_err());
    // A signature under another name, or another key id, is by an unknown key: ignored, and so
    // nothing verifies.
    let misnamed = signed(&PETER_SIG.replace("PeterNeumann", "CarmenSandiego"));
    assert_eq!(
        SignedNote::open(&misnamed, &known),
        Err(NoteError::NoVerifiedSignature)
    );
    let wrong_id = signed(&PETER_SIG.replace("x08g", "xxxx"));
    assert_eq!(
        SignedNote::open(&wrong_id, &known),
        Err(NoteError::NoVerifiedSignature)
    );
    // A changed text.
    let changed = signed(PETER_SIG).replacen("cryptography", "cryptograph", 1);
    assert!(matches!(
        SignedNote::open(&changed, &known),
        Err(NoteError::InvalidSignature { .. })
    ));
    // \r is a control character.
    let crlf = signed(PETER_SIG).replace("problem,\n", "problem,\r\n");
    assert!(SignedNote::parse(&crlf).is_err());
}

/// The example of C2SP signed-note.md: the text holds a blank line; the last one separates.
#[test]
fn c2sp_signed_note_example_parses() {
    let msg = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
    let note = SignedNote::parse(msg).unwrap();
    assert_eq!(
        note.text(),
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n"
    );
    assert_eq!(note.signatures().len(), 1);
    assert_eq!(note.signatures()[0].name, "quasimodo.example/salvatore");
    assert_eq!(note.signatures()[0].signature.len(), 64);
    assert_eq!(note.to_string(), msg);
    // Its public key is not published: nothing verifies.
    assert_eq!(note.verify(&[peter()]), Err(NoteError::NoVerifiedSignature));
}

/// The example of C2SP tlog-checkpoint.md.
#[test]
fn c2sp_checkpoint_example_parses() {
    let msg = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
    let note = SignedNote::parse(msg).unwrap();
    let cp = Checkpoint::parse(note.text()).unwrap();
    assert_eq!(cp.origin(), "example.com/behind-the-sofa");
    assert_eq!(cp.size(), 20852163);
    assert_eq!(
        hex::encode(cp.root()),
        "0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62"
    );
    assert!(cp.extensions().is_empty());
    assert_eq!(cp.text(), note.text());
    assert_eq!(note.signatures()[0].name, cp.origin());
}

/// golang/mod sumdb/tlog/note_test.go TestFormatTree / TestParseTree: a tree note is a
/// checkpoint whose origin is "go.sum database tree"; its root is RecordHash("hello world"),
/// which is the RFC 6962 leaf hash.
#[test]
fn go_tlog_tree_note_vector() {
    let golden =
        "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n";
    let cp = Checkpoint::new(
        "go.sum database tree",
        123456789012,
        leaf_hash(b"hello world"),
    )
    .unwrap();
    assert_eq!(cp.text(), golden);
    assert_eq!(Checkpoint::parse(golden).unwrap(), cp);
    for bad in [
        "go.sum database tree\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n",
    ] {
        assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
    }
    // Extension lines are kept.
    let with_ext = Checkpoint::parse(&format!("{golden}JOE\n")).unwrap();
    assert_eq!(with_ext.extensions(), ["JOE".to_owned()]);
    assert_eq!(with_ext.text(), format!("{golden}JOE\n"));
}

#[test]
fn malformed_checkpoint_bodies_are_refused() {
    let root = "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=";
    for bad in [
        format!("o\n5\n{root}"),                        // no final newline
        "o\n5\n".to_owned(),                            // two lines
        format!("\n5\n{root}\n"),                       // empty origin
        format!("o\n05\n{root}\n"),                     // leading zero
        format!("o\n+5\n{root}\n"),                     // sign
        format!("o\n\n{root}\n"),                       // empty size
        format!("o\n18446744073709551616\n{root}\n"),   // 2^64
        format!("o\n5\n{}\n", &root[..root.len() - 1]), // unpadded
        format!("o\n5\n{root}\n\n"),                    // empty extension line
        format!("o\n5\n{root}\next\u{7}\n"),            // control character
    ] {
        assert!(
            matches!(
                Checkpoint::parse(&bad),
                Err(CheckpointError::Malformed(_) | CheckpointError::Note(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        Checkpoint::parse(&format!("o\n0\n{root}\n"))
            .unwrap()
            .size(),
        0
    );
    assert!(Checkpoint::new("", 1, [0; 32]).is_err());
    assert!(Checkpoint::new("a\nb", 1, [0; 32]).is_err());
    assert!(Checkpoint::with_extensions("o", 1, [0; 32], vec![String::new()]).is_err());
}

#[test]
fn signed_checkpoint_round_trip_and_log_key_rules() {
    let log = SignerKey::from_seed("ledger.example/log", [42; 32]).unwrap();
    let cp = Checkpoint::new("ledger.example/log", 7, leaf_hash(b"x")).unwrap();
    let msg = cp.sign(&log).unwrap().to_string();
    let (opened, note) = Checkpoint::open(&msg, &log.verifier(), &[]).unwrap();
    assert_eq!(opened, cp);
    assert_eq!(note.signatures().len(), 1);

    // Signed by another key: the log key's signature is missing.
    let other = SignerKey::from_seed("ledger.example/log", [43; 32]).unwrap();
    let msg_other = cp.sign(&other).unwrap().to_string();
    assert_eq!(
        Checkpoint::open(&msg_other, &log.verifier(), &[]),
        Err(CheckpointError::Note(NoteError::NoVerifiedSignature))
    );
    // A witness cosignature by an unknown key is ignored; by a known key it must verify.
    let witness = SignerKey::from_seed("witness.example", [44; 32]).unwrap();
    let mut cosigned = cp.sign(&log).unwrap();
    cosigned.add_signature(&witness).unwrap();
    let cosigned = cosigned.to_string();
    assert!(Checkpoint::open(&cosigned, &log.verifier(), &[]).is_ok());
    assert!(Checkpoint::open(&cosigned, &log.verifier(), &[witness.verifier()]).is_ok());
    let witness_line = cosigned.lines().last().unwrap();
    let mut bad_sig = NoteSignature::parse_line(witness_line).unwrap();
    bad_sig.signature[0] ^= 1;
    let forged = cosigned.replace(&format!("{witness_line}\n"), &bad_sig.line());
    assert_ne!(forged, cosigned);
    assert!(Checkpoint::open(&forged, &log.verifier(), &[witness.verifier()]).is_err());
    // The origin must be the log key's name.
    let elsewhere = Checkpoint::new("other.example/log", 7, leaf_hash(b"x")).unwrap();
    let msg = elsewhere.sign(&log).unwrap().to_string();
    assert!(matches!(
        Checkpoint::open(&msg, &log.verifier(), &[]),
        Err(CheckpointError::OriginMismatch { .. })
    ));
    // A tampered size or root fails the signature.
    let tampered = cp
        .sign(&log)
        .unwrap()
        .to_string()
        .replacen("\n7\n", "\n8\n", 1);
    assert!(matches!(
        Checkpoint::open(&tampered, &log.verifier(), &[]),
        Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
    ));
}

proptest! {
    #[test]
    fn any_checkpoint_signs_parses_and_verifies(
        seed in any::<[u8; 32]>(),
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        exts in prop::collection::vec("[a-z0-9 ./:-]{1,20}", 0..3),
    ) {
        let signer = SignerKey::from_seed("log.example/p", seed).unwrap();
        prop_assert_eq!(SignerKey::parse(&signer.to_private_string()).unwrap().verifier(), signer.verifier());
        prop_assert_eq!(VerifierKey::parse(&signer.verifier().to_string()).unwrap(), signer.verifier());
        let cp = Checkpoint::with_extensions("log.example/p", size, root, exts).unwrap();
        let msg = cp.sign(&signer).unwrap().to_string();
        let (opened, _) = Checkpoint::open(&msg, &signer.verifier(), &[]).unwrap();
        prop_assert_eq!(opened, cp);
    }
}
