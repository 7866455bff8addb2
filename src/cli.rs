//! `cryptovault` subcommands.

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{process_env, Config, StoreSettings};
use crate::identity::domain::Email;
use crate::identity::{RequestMeta, Role};
use crate::startup::{connect, shutdown_signal, Application};
use crate::store::{EventStore, StoreConfig};

#[derive(Debug, Parser)]
#[command(
    name = "cryptovault",
    version,
    about = "CryptoVault Ledger: an event-sourced ledger service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Check the hash chain of the whole event log, the ledger's invariants at every position
    /// (no user balance below zero after any event, legal withdrawal transitions, balanced
    /// postings, amounts held exactly) and the final double entry (every asset sums to zero);
    /// exit status 1 names each offending position and kind.
    Verify {
        /// Print the report as JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild read models from position 0 into new collections and swap them in; the service
    /// may keep running (it serves the old copy until the swap).
    Replay {
        /// One of balances, withdrawals, transactions, audit (default: all).
        #[arg(long)]
        projection: Option<String>,
        /// No progress bar (for scripts and logs).
        #[arg(long)]
        quiet: bool,
        /// Take over from a replay of the same projection that died (a live one is refused).
        #[arg(long)]
        force: bool,
    },
    /// Write a user's statement (opening balance, movements, closing balance per asset).
    Export {
        #[arg(long)]
        email: String,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Start of the period (RFC 3339, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// End of the period (RFC 3339, exclusive).
        #[arg(long)]
        to: Option<String>,
        /// One asset (default: every configured asset).
        #[arg(long)]
        asset: Option<String>,
        /// File to write (default: standard output).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Fix the statement at a signed checkpoint (needs CHECKPOINT_SIGNING_KEY): JSON then
        /// carries the checkpoint and each movement's event and inclusion proof; see --digest.
        #[arg(long)]
        verifiable: bool,
        /// With --verifiable: also write the statement's signed digest
        /// (`cryptovault.statement-digest.v1`, for a CSV) to this file.
        #[arg(long, requires = "verifiable")]
        digest: Option<std::path::PathBuf>,
    },
    /// Administration: bootstrap, grant and revoke roles, erase a user's personal data,
    /// rebuild the Merkle tree.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Offline verification with only the log's public key (no MongoDB, no configuration):
    /// receipts, consistency between checkpoints; and generating a checkpoint signing key.
    #[command(subcommand)]
    Audit(crate::audit_cli::AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Grant a role (user, auditor, admin) to the user with this email; records a RoleGranted
    /// event with `granted_by: cli`.
    Grant {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
    /// Revoke a role (auditor, admin) from the user with this email; records a RoleRevoked
    /// event with `revoked_by: cli`. The user's open sessions lose the role from their next
    /// request on. The command line may revoke any admin's role, the last one's too (it is
    /// also the tool that grants one again).
    Revoke {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
    /// Erase a user's personal data (crypto-shredding): appends PersonalDataErased (with
    /// `erased_by: cli` and the reason) to the user stream, deletes the user's data key (every
    /// sealed email, name, ip and user agent of theirs becomes `[erased]`), credentials, TOTP
    /// secret and sessions, and clears the audit read model's copies. The account and its money
    /// stay; nobody can log in to it again. The hash chain still verifies. Safe to rerun.
    EraseUser {
        /// The user's id or email address.
        user: String,
        /// Why (recorded in the event), e.g. the reference of the erasure request.
        #[arg(long)]
        reason: String,
    },
    /// Drop the log's Merkle tree (not its signed checkpoints). Every running instance's
    /// notary rebuilds it from position 1, checking the hash chain as it goes, and signs again
    /// only if the rebuilt tree extends the latest signed checkpoint: a log that was altered,
    /// cut or rewritten is reported (`GET /api/audit/tree`, error logs) and never signed.
    RebuildTree,
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Audit(command) => Ok(crate::audit_cli::run(command)),
        Command::Serve => {
            let config = Config::from_env()?;
            let app = Application::build(config).await?;
            app.run_until(shutdown_signal()).await?;
            Ok(0)
        }
        Command::Verify { json } => {
            let settings = StoreSettings::from_lookup(process_env)?;
            let assets = crate::config::assets_from_lookup(&process_env)?;
            let client = connect(&settings).await?;
            let store = EventStore::open(&client, &settings.db_name, StoreConfig::default())
                .await
                .context("opening the event store")?;
            // Every violation is printed as it is found (the JSON report lists the first
            // thousand, with exact counts).
            let report = store
                .verify_ledger_with(
                    |asset| assets.precision(asset).unwrap_or(0),
                    |violation| {
                        if !json {
                            println!("INVARIANT: {violation}");
                        }
                    },
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                match &report.chain.first_break {
                    Some(broken) => println!(
                        "BROKEN after {} intact events: {broken}",
                        report.chain.events_verified
                    ),
                    None => println!(
                        "OK: {} events, hash chain intact up to position {}",
                        report.chain.events_verified, report.chain.head_position
                    ),
                }
                let summary = &report.invariants.summary;
                let mut firsts: Vec<(&str, u64)> = summary
                    .first_positions
                    .iter()
                    .map(|(kind, position)| (*kind, *position))
                    .collect();
                firsts.sort_by_key(|(_, position)| *position);
                for (kind, position) in firsts {
                    println!(
                        "FIRST {kind} at position {position} ({} in all)",
                        summary.counts[kind]
                    );
                }
                for problem in &report.double_entry_problems {
                    println!("DOUBLE ENTRY: {problem}");
                }
            }
            Ok(if report.intact { 0 } else { 1 })
        }
        Command::Replay {
            projection,
            quiet,
            force,
        } => replay(projection.as_deref(), quiet, force).await,
        Command::Export {
            email,
            format,
            from,
            to,
            asset,
            output,
            verifiable,
            digest,
        } => {
            let request = ExportArgs {
                email,
                format,
                from,
                to,
                asset,
                verifiable,
                digest,
            };
            export(request, output).await
        }
        Command::Admin(AdminCommand::Revoke { email, role }) => {
            let (identity, user_id, role) = role_change(&email, &role).await?;
            let user = identity
                .revoke_role(user_id, role, "cli", None, &RequestMeta::default())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            print_roles(&user);
            Ok(0)
        }
        Command::Admin(AdminCommand::EraseUser { user, reason }) => {
            erase_user(&user, &reason).await
        }
        Command::Admin(AdminCommand::RebuildTree) => {
            let settings = StoreSettings::from_lookup(process_env)?;
            let client = connect(&settings).await?;
            let db = client.database(&settings.db_name);
            crate::store::tree::TreeStore::new(&db).clear_tree().await?;
            eprintln!(
                "the Merkle tree is dropped; running instances rebuild it from the log \
                 (GET /api/audit/tree shows the progress and any refusal)"
            );
            Ok(0)
        }
        Command::Admin(AdminCommand::Grant { email, role }) => {
            let (identity, user_id, role) = role_change(&email, &role).await?;
            let user = identity
                .grant_role(user_id, role, "cli", &RequestMeta::default())
                .await?;
            print_roles(&user);
            Ok(0)
        }
    }
}

/// What the `admin` commands work with: the database, its event store and the identity service.
struct AdminContext {
    client: crate::store::Client,
    db: crate::store::Database,
    store: EventStore,
    identity: crate::identity::Identity,
}

async fn admin_context() -> anyhow::Result<AdminContext> {
    let config = Config::from_env()?;
    let client = connect(&config.store).await?;
    let store = EventStore::open(&client, &config.store.db_name, StoreConfig::default()).await?;
    let db = client.database(&config.store.db_name);
    let identity = crate::startup::identity(&config, store.clone(), &db).await?;
    Ok(AdminContext {
        client,
        db,
        store,
        identity,
    })
}

/// The user with the address `raw` (`field` names the argument in errors).
async fn user_by_email(
    identity: &crate::identity::Identity,
    raw: &str,
    field: &'static str,
) -> anyhow::Result<uuid::Uuid> {
    let email = Email::parse(raw, field).map_err(|e| anyhow::anyhow!("{e}"))?;
    match identity.user_id_by_email(&email).await? {
        Some(id) => Ok(id),
        None => anyhow::bail!("no user with email {}", email.as_str()),
    }
}

/// `admin grant` / `admin revoke`: the identity service, the user and the role.
async fn role_change(
    email: &str,
    role: &str,
) -> anyhow::Result<(crate::identity::Identity, uuid::Uuid, Role)> {
    let identity = admin_context().await?.identity;
    let role = Role::parse(role, "--role").map_err(|e| anyhow::anyhow!("{e}"))?;
    let user_id = user_by_email(&identity, email, "--email").await?;
    Ok((identity, user_id, role))
}

fn print_roles(user: &crate::identity::domain::UserState) {
    let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
    println!("{} now has roles: {}", user.email, roles.join(", "));
}

/// `cryptovault admin erase-user`.
async fn erase_user(user: &str, reason: &str) -> anyhow::Result<i32> {
    use crate::store::read_models::audit::AuditModel;
    use crate::store::read_models::replay::bring_up_to_date;
    let AdminContext {
        client,
        db,
        store,
        identity,
    } = admin_context().await?;
    let user_id = match uuid::Uuid::parse_str(user.trim()) {
        Ok(id) => id,
        Err(_) => user_by_email(&identity, user, "user").await?,
    };
    let before = identity
        .erase_user(user_id, "cli", reason, &RequestMeta::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The audit read model must have applied everything up to the erasure before its copies
    // are cleared (a projector behind would copy them again).
    bring_up_to_date(&client, &db, &store, AuditModel).await?;
    let cleared = crate::store::read_models::ReadModels::new(db)
        .erase_personal(user_id, &[before.email.as_str(), user.trim()])
        .await?;
    println!(
        "erased the personal data of user {user_id}: data key, credentials, sessions deleted; \
         {cleared} audit-log rows redacted; the account and its balances stay"
    );
    Ok(0)
}

/// The projections `replay` knows, by name.
const PROJECTIONS: [&str; 4] = ["balances", "withdrawals", "transactions", "audit"];

fn progress_bar(name: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    bar
}

async fn replay(only: Option<&str>, quiet: bool, force: bool) -> anyhow::Result<i32> {
    use crate::store::read_models::replay::{replay as rebuild, ReplayOptions};
    use crate::store::read_models::{audit, balances, transactions, withdrawals};
    let names: Vec<&str> = match only {
        None => PROJECTIONS.to_vec(),
        Some(name) if PROJECTIONS.contains(&name) => vec![name],
        Some(other) => anyhow::bail!(
            "--projection {other:?} is not one of {}",
            PROJECTIONS.join(", ")
        ),
    };
    let settings = StoreSettings::from_lookup(process_env)?;
    let client = connect(&settings).await?;
    let store = EventStore::open(&client, &settings.db_name, StoreConfig::default())
        .await
        .context("opening the event store")?;
    let db = client.database(&settings.db_name);
    let options = ReplayOptions { force };
    for name in names {
        let bar = progress_bar(name, quiet);
        let progress = |position: u64, head: u64| {
            bar.set_length(head);
            bar.set_position(position);
        };
        let report = match name {
            "balances" => {
                rebuild(
                    &client,
                    &db,
                    &store,
                    balances::BalancesModel,
                    options,
                    progress,
                )
                .await?
            }
            "withdrawals" => {
                rebuild(
                    &client,
                    &db,
                    &store,
                    withdrawals::WithdrawalsModel,
                    options,
                    progress,
                )
                .await?
            }
            "transactions" => {
                rebuild(
                    &client,
                    &db,
                    &store,
                    transactions::TransactionsModel,
                    options,
                    progress,
                )
                .await?
            }
            _ => rebuild(&client, &db, &store, audit::AuditModel, options, progress).await?,
        };
        bar.finish_and_clear();
        println!(
            "{name}: replayed {} events in {:.2} s ({:.0} events/s); live from position {}",
            report.events, report.seconds, report.events_per_second, report.swapped_at
        );
    }
    Ok(0)
}

struct ExportArgs {
    email: String,
    format: String,
    from: Option<String>,
    to: Option<String>,
    asset: Option<String>,
    verifiable: bool,
    digest: Option<std::path::PathBuf>,
}

async fn export(args: ExportArgs, output: Option<std::path::PathBuf>) -> anyhow::Result<i32> {
    use crate::period::period;
    use crate::statement::{Format, StatementRequest};
    use crate::store::read_models::replay::bring_up_to_date;
    use crate::store::read_models::transactions::TransactionsModel;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    let invalid = |e: crate::identity::domain::InvalidInput| anyhow::anyhow!("--{e}");
    let format = Format::parse(&args.format)
        .ok_or_else(|| anyhow::anyhow!("--format must be csv or json"))?;
    let (from, to) = period(args.from.as_deref(), args.to.as_deref()).map_err(invalid)?;
    let config = Config::from_env()?;
    let assets = match args.asset.as_deref() {
        Some(raw) => vec![config.assets.asset(raw, "asset").map_err(invalid)?],
        None => config.assets.iter().map(|(a, _)| a.to_owned()).collect(),
    };
    let client = connect(&config.store).await?;
    let store = EventStore::open(&client, &config.store.db_name, StoreConfig::default()).await?;
    let db = client.database(&config.store.db_name);
    let identity = crate::startup::identity(&config, store.clone(), &db).await?;
    let email = Email::parse(&args.email, "--email").map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(user_id) = identity.user_id_by_email(&email).await? else {
        anyhow::bail!("no user with email {}", email.as_str());
    };
    // The statement must cover the whole log as of now, whether or not a service is running.
    let mut position = bring_up_to_date(&client, &db, &store, TransactionsModel).await?;
    let mut proofs = None;
    if args.verifiable {
        let notary = crate::notary::Notary::start(store.clone(), &db, &config.checkpoints)
            .ok_or_else(|| anyhow::anyhow!("--verifiable needs CHECKPOINT_SIGNING_KEY"))?;
        let checkpoint = match notary.latest().await? {
            Some(latest) if latest.size >= position => latest,
            _ => notary.covering(position).await?,
        };
        if checkpoint.size > position {
            // The read model must hold every entry of the checkpoint's events.
            bring_up_to_date(&client, &db, &store, TransactionsModel).await?;
        }
        position = checkpoint.size;
        proofs = Some(crate::statement::Proofs {
            notary,
            store: store.clone(),
            checkpoint,
        });
    }
    let request = StatementRequest {
        user_id,
        email: Some(email.as_str().to_owned()),
        assets,
        from,
        to,
        format,
        up_to_position: position,
        generated_at: proofs.as_ref().map(|p| p.checkpoint.issued_at),
        proofs,
    };
    let digest_request = request.clone();
    let read_models = crate::store::read_models::ReadModels::new(db);
    let mut chunks = crate::statement::stream(read_models, config.assets.clone(), request);
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        sha2::Digest::update(&mut hasher, &chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    if let Some(path) = &args.digest {
        let sha256 = hex::encode(sha2::Digest::finalize(hasher));
        let digest = crate::statement::signed_digest(&digest_request, sha256)?;
        tokio::fs::write(path, serde_json::to_vec_pretty(&digest)?)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let peak = peak_rss_bytes()
        .map(|b| format!(", peak RSS {b} bytes"))
        .unwrap_or_default();
    match output {
        Some(path) => eprintln!(
            "statement written to {} (ledger up to position {position}{peak})",
            path.display()
        ),
        None => eprintln!("statement covers the ledger up to position {position}{peak}"),
    }
    Ok(0)
}

/// This process's peak resident set size (Linux `VmHWM`), if the platform tells.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}
