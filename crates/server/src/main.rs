use clap::Parser;
use convene::{App, Cli, Command, init_tracing, open_database, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.serve.resolve()?;
    init_tracing(config.log_format);
    match cli.command {
        Some(Command::Migrate) => {
            open_database(&config).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(Command::Serve) | None => App::build(config).await?.run_until_stopped(shutdown_signal()).await,
    }
}
