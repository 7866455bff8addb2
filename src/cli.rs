//! `cryptovault` subcommands.

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{process_env, Config, StoreSettings};
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
    /// Check the hash chain of the whole event log; exit status 1 names the first broken position.
    Verify {
        /// Print the report as JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
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
            let report = store.verify().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if let Some(broken) = &report.first_break {
                println!(
                    "BROKEN after {} intact events: {broken}",
                    report.events_verified
                );
            } else {
                println!(
                    "OK: {} events, hash chain intact up to position {}",
                    report.events_verified, report.head_position
                );
            }
            Ok(if report.is_intact() { 0 } else { 1 })
        }
    }
}
