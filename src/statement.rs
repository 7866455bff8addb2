//! Account statements (`POST /api/transactions/export`, `cryptovault export`): per asset an
//! opening balance, every movement with the running balance, and the closing balance.
//!
//! - **Balance** means the *total* balance (`available + held`). Movements are the entries
//!   that change it: deposits, transfers in and out, completed withdrawals. A withdrawal
//!   request's hold and a rejection's release move money between `available` and `held` only,
//!   so they are not statement lines (the withdrawals list shows them).
//! - **Period**: `from` inclusive, `to` exclusive, on the events' `occurred_at`. The opening
//!   balance is the sum of every entry before `from`; all sums are exact: MongoDB `$sum`s the
//!   entries' integer limbs (exact below 34 digits, see `ReadModels::sum_entries`), they are recombined
//!   into `Units` here, and the running balance is carried by the pure [`RunningBalance`] fold
//!   (checked `Units`), so opening + movements = closing to the last decimal. A sum or balance
//!   that cannot be held exactly ends the statement with an error, never a rounded figure.
//! - **Consistency**: the statement covers the ledger entries up to one position, fixed when it
//!   starts (`up_to_position`), so rows projected while it streams cannot make it disagree with
//!   itself.
//! - **Memory**: rows are read with a cursor and written in ~64 KiB chunks to a bounded
//!   channel, so memory stays flat whatever the number of rows; a client that goes away stops
//!   the export.
//! - **Verifiable** (issue 16, [`Proofs`]): the statement is fixed at a signed checkpoint
//!   (`up_to_position` = its size, `generated_at` = its `issued_at`, so the same request at the
//!   same checkpoint gives the same bytes). A JSON statement is then a
//!   `cryptovault.statement.v1` document: `format` and `checkpoint` (the signed note) before
//!   `statement`, and each movement carries `leaf_index`, `inclusion_proof` and `event` (the
//!   envelope it comes from). Proofs are fetched per batch of [`PROOF_BATCH`] movements: the
//!   batch's events in one query and the stored subtrees of all its proofs in one more, so
//!   memory stays bounded. A CSV statement is unchanged: its digest is signed separately
//!   (`http::transactions`). The checks are in `cryptovault_projections::statement_proof`.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use cryptovault_events::Units;
use cryptovault_projections::entries::RunningBalance;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::ledger::amount::Assets;
use crate::notary::{Notary, NotaryError};
pub use crate::store::read_models::SumError;
use crate::store::read_models::{EntriesBefore, EntryError, Movement, ReadModels};
use crate::store::tree::StoredCheckpoint;
use crate::store::{EventStore, StoreError};

/// Output format of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row (see [`CSV_HEADER`]).
    Csv,
    /// One JSON document (see the README for its shape).
    Json,
}

impl Format {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }
}

/// Columns of a CSV statement. Opening and closing balances are rows of type
/// `opening_balance` / `closing_balance` with an empty amount.
pub const CSV_HEADER: [&str; 8] = [
    "asset",
    "type",
    "occurred_at",
    "position",
    "reference",
    "counterparty_id",
    "amount",
    "balance",
];

/// What to put in a statement.
#[derive(Debug, Clone)]
pub struct StatementRequest {
    pub user_id: Uuid,
    pub email: Option<String>,
    /// Assets to include, in this order.
    pub assets: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub format: Format,
    /// Ledger entries up to this position are included.
    pub up_to_position: u64,
    /// The statement's `generated_at` (and a CSV's closing row time when there is no `to`);
    /// `None`: now.
    pub generated_at: Option<DateTime<Utc>>,
    /// Inclusion proofs for a verifiable JSON statement (`up_to_position` must be the
    /// checkpoint's size).
    pub proofs: Option<Proofs>,
}

/// What a verifiable JSON statement's proofs come from.
#[derive(Clone)]
pub struct Proofs {
    pub notary: Notary,
    pub store: EventStore,
    pub checkpoint: StoredCheckpoint,
}

impl std::fmt::Debug for Proofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proofs")
            .field("checkpoint_size", &self.checkpoint.size)
            .finish_non_exhaustive()
    }
}

/// The `format` of a verifiable JSON statement.
pub const STATEMENT_FORMAT: &str = cryptovault_projections::statement_proof::STATEMENT_FORMAT;

/// The signed digest (`cryptovault.statement-digest.v1`) of a verifiable statement of
/// `request` whose bytes have the lowercase hex SHA-256 `sha256`: the digest note (see
/// `cryptovault_projections::statement_proof::DigestFacts`) signed by the checkpoint key.
pub fn signed_digest(
    request: &StatementRequest,
    sha256: String,
) -> anyhow::Result<cryptovault_projections::statement_proof::DigestFile> {
    use cryptovault_projections::statement_proof::{DigestFacts, DigestFile, DIGEST_FORMAT};
    let proofs = request
        .proofs
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("a digest is of a verifiable statement"))?;
    let facts = DigestFacts {
        format: request.format.extension().to_owned(),
        user_id: request.user_id,
        assets: request.assets.clone(),
        from: request.from.map(time),
        to: request.to.map(time),
        size: proofs.checkpoint.size,
        root: cryptovault_events::bundle::hash_to_base64(&proofs.checkpoint.root),
        sha256,
    };
    let text = facts.note_text(proofs.notary.origin())?;
    let note = cryptovault_events::checkpoint::SignedNote::sign(&text, &[proofs.notary.signer()])?;
    Ok(DigestFile {
        format: DIGEST_FORMAT.to_owned(),
        checkpoint: proofs.checkpoint.note.clone(),
        digest: note.to_string(),
    })
}

/// Movements whose proofs are fetched together.
pub const PROOF_BATCH: usize = 256;

/// Bytes buffered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// The statement as a stream of byte chunks (a producer task reads MongoDB; see the module
/// docs). A failure mid-stream ends the stream with an error after what was written.
pub fn stream(
    read_models: ReadModels,
    assets: Assets,
    request: StatementRequest,
) -> ReceiverStream<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut out = Output {
            tx: tx.clone(),
            buffer: Vec::with_capacity(CHUNK_BYTES * 2),
        };
        if let Err(error) = write_statement(&read_models, &assets, &request, &mut out).await {
            if !matches!(error, WriteError::Gone) {
                tracing::error!(error = %error, "statement export failed");
                let _ = tx
                    .send(Err(std::io::Error::other("statement export failed")))
                    .await;
            }
        }
    });
    ReceiverStream::new(rx)
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("the reader went away")]
    Gone,
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error(transparent)]
    Csv(#[from] csv::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Sum(#[from] SumError),
    #[error(transparent)]
    Overflow(#[from] cryptovault_projections::entries::BalanceOverflow),
    #[error(transparent)]
    Notary(#[from] NotaryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("proofs: {0}")]
    Proof(String),
}

struct Output {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl Output {
    async fn maybe_flush(&mut self) -> Result<(), WriteError> {
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES * 2),
        ));
        self.tx.send(Ok(chunk)).await.map_err(|_| WriteError::Gone)
    }
}

/// A time as statements write it (RFC 3339, milliseconds, `Z`).
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn write_statement(
    read_models: &ReadModels,
    assets: &Assets,
    request: &StatementRequest,
    out: &mut Output,
) -> Result<(), WriteError> {
    let generated_at = request.generated_at.unwrap_or_else(Utc::now);
    let proofs = match request.format {
        Format::Json => request.proofs.as_ref(),
        Format::Csv => None,
    };
    let mut csv = csv_writer();
    match request.format {
        Format::Csv => csv.write_record(CSV_HEADER)?,
        Format::Json => {
            if let Some(proofs) = proofs {
                // `{"format":…,"checkpoint":…,` then the statement as usual.
                out.buffer.extend_from_slice(b"{\"format\":");
                serde_json::to_writer(&mut out.buffer, STATEMENT_FORMAT)?;
                out.buffer.extend_from_slice(b",\"checkpoint\":");
                serde_json::to_writer(&mut out.buffer, &proofs.checkpoint.note)?;
                out.buffer.push(b',');
            } else {
                out.buffer.push(b'{');
            }
            let header = json!({
                "user_id": request.user_id,
                "email": request.email,
                "from": request.from.map(time),
                "to": request.to.map(time),
                "up_to_position": request.up_to_position,
                "generated_at": time(generated_at),
            });
            let header = serde_json::to_string(&header)?;
            // `"statement":{<header fields>,"assets":[` …
            out.buffer.extend_from_slice(b"\"statement\":");
            out.buffer
                .extend_from_slice(&header.as_bytes()[..header.len() - 1]);
            out.buffer.extend_from_slice(b",\"assets\":[");
        }
    }
    for (index, asset) in request.assets.iter().enumerate() {
        let fmt = |amount: Units| assets.format_units(amount, asset);
        let opening = match request.from {
            None => Units::ZERO,
            Some(from) => {
                let sums = read_models
                    .sum_entries(
                        request.user_id,
                        Some(asset),
                        EntriesBefore::Exclusive(from),
                        request.up_to_position,
                    )
                    .await?;
                let mut opening = Units::ZERO;
                for (_, available, held) in sums {
                    opening = available
                        .checked_add(held)
                        .and_then(|total| opening.checked_add(total))
                        .ok_or_else(|| SumError::NotExact {
                            asset: asset.clone(),
                            why: "the opening balance is beyond ±1.7e20".into(),
                        })?;
                }
                opening
            }
        };
        let mut running = RunningBalance::new(opening);
        let opened_at = request.from.map(time).unwrap_or_default();
        match request.format {
            Format::Csv => {
                csv.write_record([
                    asset,
                    "opening_balance",
                    &opened_at,
                    "",
                    "",
                    "",
                    "",
                    &fmt(opening),
                ])?;
            }
            Format::Json => {
                if index > 0 {
                    out.buffer.push(b',');
                }
                out.buffer.extend_from_slice(b"{\"asset\":");
                serde_json::to_writer(&mut out.buffer, asset)?;
                out.buffer.extend_from_slice(b",\"opening_balance\":");
                serde_json::to_writer(&mut out.buffer, &fmt(opening))?;
                out.buffer.extend_from_slice(b",\"movements\":[");
            }
        }
        let mut movements = read_models
            .movements(
                request.user_id,
                asset,
                (request.from, request.to),
                request.up_to_position,
            )
            .await
            .map_err(EntryError::from)?;
        let mut pending: Vec<(u64, serde_json::Value)> = Vec::new();
        let mut written: u64 = 0;
        while let Some(line) = movements.next().await? {
            if !line.kind.is_movement() {
                continue;
            }
            let balance = running.add(line.amount)?;
            if let Some(proofs) = proofs {
                let position = u64::try_from(line.position)
                    .map_err(|_| WriteError::Proof(format!("position {}", line.position)))?;
                pending.push((position, json_line(&line, balance, &fmt)));
                if pending.len() >= PROOF_BATCH {
                    write_proven(proofs, &mut pending, &mut written, out).await?;
                    out.maybe_flush().await?;
                }
                continue;
            }
            match request.format {
                Format::Csv => {
                    write_csv_line(&mut csv, asset, &line, balance, &fmt)?;
                    if csv.get_ref().len() >= CHUNK_BYTES {
                        out.buffer.append(&mut drain(&mut csv)?);
                    }
                }
                Format::Json => {
                    if running.movements > 1 {
                        out.buffer.push(b',');
                    }
                    serde_json::to_writer(&mut out.buffer, &json_line(&line, balance, &fmt))?;
                }
            }
            out.maybe_flush().await?;
        }
        let closed_at = time(request.to.unwrap_or(generated_at));
        let closing = fmt(running.closing());
        match request.format {
            Format::Csv => {
                csv.write_record([
                    asset,
                    "closing_balance",
                    &closed_at,
                    "",
                    "",
                    "",
                    "",
                    &closing,
                ])?;
                out.buffer.append(&mut drain(&mut csv)?);
            }
            Format::Json => {
                if let Some(proofs) = proofs {
                    write_proven(proofs, &mut pending, &mut written, out).await?;
                }
                out.buffer.extend_from_slice(b"],\"closing_balance\":");
                serde_json::to_writer(&mut out.buffer, &closing)?;
                out.buffer.extend_from_slice(b",\"movement_count\":");
                serde_json::to_writer(&mut out.buffer, &running.movements)?;
                out.buffer.push(b'}');
            }
        }
        out.maybe_flush().await?;
    }
    if request.format == Format::Json {
        out.buffer.extend_from_slice(b"]}}");
    }
    out.flush().await
}

/// Writes the movements `pending` (position, JSON line) with their events and inclusion
/// proofs in the checkpoint's tree: two queries for the whole batch. `written` counts the
/// movements of the asset written so far (for the separators).
async fn write_proven(
    proofs: &Proofs,
    pending: &mut Vec<(u64, serde_json::Value)>,
    written: &mut u64,
    out: &mut Output,
) -> Result<(), WriteError> {
    if pending.is_empty() {
        return Ok(());
    }
    let size = proofs.checkpoint.size;
    let mut positions: Vec<u64> = pending.iter().map(|(p, _)| *p).collect();
    positions.sort_unstable();
    positions.dedup();
    if positions.iter().any(|p| *p == 0 || *p > size) {
        return Err(WriteError::Proof(format!(
            "a movement is beyond the checkpoint of {size} events"
        )));
    }
    let events = proofs.store.read_positions(&positions).await?;
    let indices: Vec<u64> = positions.iter().map(|p| p - 1).collect();
    let paths = proofs.notary.inclusion_proofs(&indices, size).await?;
    let mut paths: std::collections::BTreeMap<u64, Vec<_>> =
        positions.iter().copied().zip(paths).collect();
    let mut by_position = std::collections::BTreeMap::new();
    for event in events {
        if let Some(path) = paths.remove(&event.position) {
            by_position.insert(event.position, (event, path));
        }
    }
    for (position, mut line) in pending.drain(..) {
        let (event, path) = by_position
            .get(&position)
            .ok_or_else(|| WriteError::Proof(format!("the log lacks position {position}")))?;
        if let serde_json::Value::Object(fields) = &mut line {
            fields.insert("leaf_index".into(), json!(position - 1));
            fields.insert(
                "inclusion_proof".into(),
                json!(path
                    .iter()
                    .map(cryptovault_events::bundle::hash_to_base64)
                    .collect::<Vec<_>>()),
            );
            fields.insert("event".into(), serde_json::to_value(event)?);
        }
        if *written > 0 {
            out.buffer.push(b',');
        }
        serde_json::to_writer(&mut out.buffer, &line)?;
        *written += 1;
    }
    Ok(())
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::Writer::from_writer(Vec::with_capacity(CHUNK_BYTES * 2))
}

/// Everything the CSV writer has produced so far (the writer starts over, empty).
fn drain(csv: &mut csv::Writer<Vec<u8>>) -> Result<Vec<u8>, WriteError> {
    std::mem::replace(csv, csv_writer())
        .into_inner()
        .map_err(|e| WriteError::Csv(csv::Error::from(e.into_error())))
}

fn write_csv_line(
    csv: &mut csv::Writer<Vec<u8>>,
    asset: &str,
    line: &Movement<'_>,
    balance: Units,
    fmt: &impl Fn(Units) -> String,
) -> Result<(), csv::Error> {
    csv.write_record([
        asset,
        line.kind.as_str(),
        &time(line.occurred_at),
        &line.position.to_string(),
        line.reference,
        line.counterparty.unwrap_or_default(),
        &fmt(line.amount),
        &fmt(balance),
    ])
}

fn json_line(
    line: &Movement<'_>,
    balance: Units,
    fmt: &impl Fn(Units) -> String,
) -> serde_json::Value {
    json!({
        "type": line.kind.as_str(),
        "occurred_at": time(line.occurred_at),
        "position": line.position,
        "reference": line.reference,
        "counterparty_id": line.counterparty,
        "amount": fmt(line.amount),
        "balance": fmt(balance),
    })
}
