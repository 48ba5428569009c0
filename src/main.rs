//! The `swiftchat` binary: parses the command line and hands over to the
//! library.

use clap::Parser;
use swiftchat::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args.merged(cli.serve)).await,
        Some(Command::Shutdown(args)) => cli::shutdown(cli.serve.config.as_deref(), args).await,
        Some(Command::Client(args)) => {
            swiftchat::client::run(&args.url, &args.name, args.token.as_deref()).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("swiftchat: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: cli::ServeArgs) -> anyhow::Result<()> {
    let config = cli::load_config(args.config.as_deref(), args.bind, args.redis.as_deref())?;
    let node = swiftchat::server::start(config).await?;
    tokio::select! {
        _ = termination() => {
            tracing::info!("termination signal: draining");
            node.drain();
        }
        _ = node.stopping() => {}
    }
    node.wait().await
}

/// SIGTERM or SIGINT.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SWIFTCHAT_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
