//! `cryptovault audit …`: the offline verifier (issue 16). Needs only files and the log's
//! verifier key: no MongoDB, no configuration, no network. The checks themselves are pure, in
//! `cryptovault_events::bundle`; this module reads the inputs, runs them and reports.
//!
//! Exit codes: 0 verified, 1 a check failed (the message names it, and the entry and position),
//! 2 unusable input (an unreadable file, JSON that is not such a bundle, a malformed key).
//!
//! Adding a `verify-…` command: a variant of [`AuditCommand`], its arm in [`run`], and a
//! function returning `Result<Verified, Failure>` (read inputs with [`read_file`] and
//! [`KeyArg::load`], map a failed check to [`Failure::Check`]).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use cryptovault_events::bundle::{self, BundleError, ConsistencyBundle, Receipt};
use cryptovault_events::checkpoint::{SignerKey, VerifierKey};
use cryptovault_projections::statement_proof::{
    self, DigestFile, StatementError, VerifiableStatement,
};
use serde::de::DeserializeOwned;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify a receipt (`cryptovault.receipt.v1`) or an inclusion bundle
    /// (`cryptovault.inclusion.v1`): the checkpoint's signature, each event's hash, leaf index
    /// and inclusion proof.
    VerifyReceipt {
        /// The receipt's JSON file.
        file: PathBuf,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Verify that the log only grew since a checkpoint you kept: OLD is that signed note (a
    /// text file, or a consistency bundle whose new checkpoint is taken), NEW a consistency
    /// bundle (`cryptovault.consistency.v1`) from OLD's size to a newer one.
    VerifyConsistency {
        old: PathBuf,
        new: PathBuf,
        #[command(flatten)]
        key: KeyArg,
        /// Across a key rotation: the retired verifier key that signed OLD (string or @FILE);
        /// `--key` is then the key of the newer checkpoint.
        #[arg(long = "old-key", value_name = "VERIFIER_KEY_OR_@FILE")]
        old_key: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Verify a user's liabilities bundle (`cryptovault.liabilities.v1`): the note's signature
    /// and origin, the asset's line, and that the user's balance is a leaf of the sum tree with
    /// that root and total.
    VerifyLiabilities {
        /// The bundle's JSON file (`GET /api/wallet/liabilities-proof`).
        file: PathBuf,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Verify a statement. Without --digest, FILE is a verifiable JSON statement
    /// (`cryptovault.statement.v1`): the checkpoint's signature, every movement's event hash
    /// and inclusion proof, each movement's figures against its event, and that the balances
    /// add up. With --digest, FILE is any statement (the CSV) and DIGEST its
    /// `cryptovault.statement-digest.v1`: both signatures, and the SHA-256 of FILE's bytes.
    /// Neither proves the statement is complete (a movement can be left out) nor anything about
    /// the opening balance or prices.
    VerifyStatement {
        file: PathBuf,
        /// The statement's digest file (for a CSV statement).
        #[arg(long, value_name = "DIGEST")]
        digest: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print a new checkpoint signing key for the log ORIGIN (the value of
    /// CHECKPOINT_SIGNING_KEY) on standard output, from the operating system's randomness, and
    /// its verifier key (the one auditors pin) on standard error.
    GenerateKey {
        /// The log's origin, which is the key's name (e.g. cryptovault.local/ledger).
        #[arg(long)]
        name: String,
    },
}

/// `--key`: the log's verifier key.
#[derive(Debug, Args)]
pub struct KeyArg {
    /// The log's verifier key (`<name>+<key id>+<base64>`, as GET /api/audit/public-key
    /// serves it), or `@FILE` to read it from a file.
    #[arg(long = "key", value_name = "VERIFIER_KEY_OR_@FILE")]
    pub key: String,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct OutputArg {
    /// Print the report as JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// A verification that held: a one-line summary and the JSON report.
pub struct Verified {
    pub summary: String,
    pub report: serde_json::Value,
}

/// Why a verification did not hold.
pub enum Failure {
    /// A check failed (exit 1); the message names it.
    Check(String),
    /// The input cannot be verified at all (exit 2).
    Unusable(String),
}

impl From<BundleError> for Failure {
    fn from(e: BundleError) -> Self {
        if e.is_unusable_input() {
            Failure::Unusable(e.to_string())
        } else {
            Failure::Check(e.to_string())
        }
    }
}

/// Runs an `audit` command; returns the exit code.
pub fn run(command: AuditCommand) -> i32 {
    match command {
        AuditCommand::VerifyReceipt { file, key, output } => {
            report(output.json, verify_receipt(&file, &key))
        }
        AuditCommand::VerifyConsistency {
            old,
            new,
            key,
            old_key,
            output,
        } => report(
            output.json,
            verify_consistency(&old, &new, &key, old_key.map(|key| KeyArg { key }).as_ref()),
        ),
        AuditCommand::VerifyLiabilities { file, key, output } => report(
            output.json,
            crate::liabilities::offline::verify_file(&file, &key),
        ),
        AuditCommand::VerifyStatement {
            file,
            digest,
            key,
            output,
        } => report(
            output.json,
            verify_statement(&file, digest.as_deref(), &key),
        ),
        AuditCommand::GenerateKey { name } => generate_key(&name),
    }
}

/// Prints the outcome (stdout when verified, stderr otherwise; JSON on stdout with `json`) and
/// returns the exit code.
pub fn report(json: bool, outcome: Result<Verified, Failure>) -> i32 {
    let (code, message, report) = match outcome {
        Ok(v) => (0, v.summary, Some(v.report)),
        Err(Failure::Check(m)) => (1, format!("FAILED: {m}"), None),
        Err(Failure::Unusable(m)) => (2, format!("error: {m}"), None),
    };
    if json {
        let value = match report {
            Some(report) => serde_json::json!({ "verified": true, "report": report }),
            None => serde_json::json!({ "verified": false, "exit_code": code, "error": message }),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else if code == 0 {
        println!("{message}");
    } else {
        eprintln!("{message}");
    }
    code
}

/// The whole text of `path`.
pub fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Unusable(format!("cannot read {}: {e}", path.display())))
}

/// `path` parsed as JSON of type `T`, naming the field at fault.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, Failure> {
    let text = read_file(path)?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Failure::Unusable(format!("{} is not a {what}: {e}", path.display())))
}

impl KeyArg {
    /// The verifier key, from the argument or the `@file` it names.
    pub fn load(&self) -> Result<VerifierKey, Failure> {
        let text = match self.key.strip_prefix('@') {
            Some(path) => read_file(Path::new(path))?,
            None => self.key.clone(),
        };
        VerifierKey::parse(text.trim())
            .map_err(|e| Failure::Unusable(format!("--key is not a verifier key: {e}")))
    }
}

fn to_json<T: serde::Serialize>(report: &T) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or(serde_json::Value::Null)
}

fn verify_receipt(file: &Path, key: &KeyArg) -> Result<Verified, Failure> {
    let key = key.load()?;
    let receipt: Receipt = read_json(file, "receipt")?;
    let report = bundle::verify_receipt(&receipt, &key)?;
    let positions: Vec<String> = report
        .entries
        .iter()
        .map(|e| e.position.to_string())
        .collect();
    Ok(Verified {
        summary: format!(
            "OK: {} event(s) at position(s) {} unaltered and included in the log {} signed at \
             size {} (root {}) by key {}",
            report.entries.len(),
            positions.join(", "),
            report.origin,
            report.tree_size,
            report.root,
            report.key
        ),
        report: to_json(&report),
    })
}

/// OLD: a signed note, or a consistency bundle whose new checkpoint is the one kept.
fn old_checkpoint(path: &Path) -> Result<String, Failure> {
    let text = read_file(path)?;
    if !text.trim_start().starts_with('{') {
        return Ok(text);
    }
    let bundle: ConsistencyBundle = read_json(path, "checkpoint note or consistency bundle")?;
    Ok(bundle.new_checkpoint)
}

fn verify_consistency(
    old: &Path,
    new: &Path,
    key: &KeyArg,
    old_key: Option<&KeyArg>,
) -> Result<Verified, Failure> {
    let key = key.load()?;
    let old_key = match old_key {
        Some(old_key) => old_key.load()?,
        None => key.clone(),
    };
    let old_note = old_checkpoint(old)?;
    let bundle: ConsistencyBundle = read_json(new, "consistency bundle")?;
    let report = bundle::verify_consistency_across_keys(&old_note, &old_key, &bundle, &key)?;
    Ok(Verified {
        summary: format!(
            "OK: the log {} at size {} (root {}) is an unchanged prefix of the log at size {} \
             (root {}), both signed by key {}",
            report.origin,
            report.old_size,
            report.old_root,
            report.new_size,
            report.new_root,
            report.key
        ),
        report: to_json(&report),
    })
}

impl From<StatementError> for Failure {
    fn from(e: StatementError) -> Self {
        if e.is_unusable_input() {
            Failure::Unusable(e.to_string())
        } else {
            Failure::Check(e.to_string())
        }
    }
}

fn verify_statement(file: &Path, digest: Option<&Path>, key: &KeyArg) -> Result<Verified, Failure> {
    let key = key.load()?;
    let Some(digest) = digest else {
        let statement: VerifiableStatement = read_json(
            file,
            "verifiable JSON statement (a CSV statement needs --digest)",
        )?;
        let report = statement_proof::verify_statement(&statement, &key)?;
        let assets: Vec<String> = report
            .assets
            .iter()
            .map(|a| {
                format!(
                    "{} {} movement(s) {} → {}",
                    a.asset, a.movements, a.opening_balance, a.closing_balance
                )
            })
            .collect();
        return Ok(Verified {
            summary: format!(
                "OK: statement of user {} ({}) at the log {} signed at size {} (root {}) by key                  {}: every movement's event is unaltered and included, its figures are the                  event's, and the balances add up. Not proven: {}",
                report.user_id,
                assets.join("; "),
                report.origin,
                report.tree_size,
                report.root,
                report.key,
                report.not_proven
            ),
            report: to_json(&report),
        });
    };
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::Unusable(format!("cannot read {}: {e}", file.display())))?;
    let digest: DigestFile = read_json(digest, "statement digest")?;
    let report = statement_proof::verify_digest(&bytes, &digest, &key)?;
    Ok(Verified {
        summary: format!(
            "OK: {} ({} bytes, sha256 {}) is the {} statement of user {} ({}) the key {} signed              at the log {} of size {} (root {}). Not proven: {}",
            file.display(),
            report.bytes,
            report.facts.sha256,
            report.facts.format,
            report.facts.user_id,
            report.facts.assets.join(","),
            report.key,
            report.origin,
            report.tree_size,
            report.root,
            report.not_proven
        ),
        report: to_json(&report),
    })
}

fn generate_key(name: &str) -> i32 {
    use rand::TryRng as _;
    let mut seed = [0u8; 32];
    if let Err(e) = rand::rngs::SysRng.try_fill_bytes(&mut seed) {
        eprintln!("error: no randomness from the operating system: {e}");
        return 2;
    }
    match SignerKey::from_seed(name, seed) {
        Ok(signer) => {
            println!("{}", signer.to_private_string());
            eprintln!("verifier key: {}", signer.verifier());
            0
        }
        Err(e) => {
            eprintln!("error: --name: {e}");
            2
        }
    }
}
