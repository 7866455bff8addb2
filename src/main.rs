use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cryptovault::telemetry::init_logging();
    let cli = cryptovault::cli::Cli::parse();
    match cryptovault::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            // `{:#}` prints the whole context chain on one line, e.g. the variable at fault.
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
