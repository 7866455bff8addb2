//! `cryptovault` subcommands.

use anyhow::Context;
use clap::{Parser, Subcommand};

use cryptovault_projections::balances::Balances;

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
    /// Check the hash chain of the whole event log and the double-entry invariants (every asset
    /// sums to zero, no negative user balance); exit status 1 names what is broken.
    Verify {
        /// Print the report as JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Administration: bootstrap roles.
    #[command(subcommand)]
    Admin(AdminCommand),
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
}

/// Ledger invariants over the folded log: every asset sums to zero; no user balance is
/// negative.
fn double_entry_problems(balances: &Balances) -> Vec<String> {
    let mut problems: Vec<String> = balances
        .sums()
        .into_iter()
        .filter(|(_, sum)| !sum.is_zero())
        .map(|(asset, sum)| format!("{asset} sums to {sum} over all accounts, not 0"))
        .collect();
    for ((owner, asset), row) in &balances.rows {
        if !owner.starts_with("system:")
            && (row.available.is_sign_negative() && !row.available.is_zero()
                || row.held.is_sign_negative() && !row.held.is_zero())
        {
            problems.push(format!(
                "{owner} {asset}: available {} held {}",
                row.available, row.held
            ));
        }
    }
    problems
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = Config::from_env()?;
            let app = Application::build(config).await?;
            app.run_until(shutdown_signal()).await?;
            Ok(0)
        }
        Command::Verify { json } => {
            let settings = StoreSettings::from_lookup(process_env)?;
            let client = connect(&settings).await?;
            let store = EventStore::open(&client, &settings.db_name, StoreConfig::default())
                .await
                .context("opening the event store")?;
            let mut balances = Balances::default();
            let report = store.verify_with(|event| balances.apply(event)).await?;
            let ledger = double_entry_problems(&balances);
            if json {
                let out = serde_json::json!({ "chain": report, "double_entry_problems": ledger });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                match &report.first_break {
                    Some(broken) => println!(
                        "BROKEN after {} intact events: {broken}",
                        report.events_verified
                    ),
                    None => println!(
                        "OK: {} events, hash chain intact up to position {}",
                        report.events_verified, report.head_position
                    ),
                }
                for problem in &ledger {
                    println!("DOUBLE ENTRY: {problem}");
                }
            }
            Ok(if report.is_intact() && ledger.is_empty() {
                0
            } else {
                1
            })
        }
        Command::Admin(AdminCommand::Grant { email, role }) => {
            let config = Config::from_env()?;
            let client = connect(&config.store).await?;
            let store =
                EventStore::open(&client, &config.store.db_name, StoreConfig::default()).await?;
            let db = client.database(&config.store.db_name);
            let identity = crate::startup::identity(&config, store, &db).await?;
            let role = Role::parse(&role, "--role").map_err(|e| anyhow::anyhow!("{e}"))?;
            let email = Email::parse(&email, "--email").map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(user_id) = identity.user_id_by_email(&email).await? else {
                anyhow::bail!("no user with email {}", email.as_str());
            };
            let meta = RequestMeta::default();
            let user = identity.grant_role(user_id, role, "cli", &meta).await?;
            let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
            println!("{} now has roles: {}", user.email, roles.join(", "));
            Ok(0)
        }
    }
}
