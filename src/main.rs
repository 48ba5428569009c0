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
    // Handlers first: a signal that arrives as soon as the node says it
    // listens must drain it, not kill it.
    let termination = termination()?;
    let node = swiftchat::server::start(config).await?;
    tokio::select! {
        _ = termination => {
            tracing::info!("termination signal: draining");
            node.drain();
        }
        _ = node.stopping() => {}
    }
    node.wait().await
}

/// Resolves on SIGTERM or SIGINT; the handlers are installed when this is
/// called, not when the future is first polled.
#[cfg(unix)]
fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Libraries that log what passes through them at debug or trace level:
/// tungstenite every frame (login tokens, shutdown keys), hyper and axum
/// request heads (Authorization headers), redis-rs its commands (AUTH and
/// the connection URL). They are capped at info whatever RUST_LOG asks.
const CAPPED_LIBRARIES: [&str; 10] = [
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "axum",
    "tower",
    "tower_http",
    "redis",
    "deadpool",
];

/// Whether an event or span passes the cap of [`CAPPED_LIBRARIES`].
fn below_library_cap(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let capped = CAPPED_LIBRARIES.iter().any(|lib| {
        target
            .strip_prefix(lib)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    !capped || *meta.level() <= tracing::Level::INFO
}

fn init_tracing() {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SWIFTCHAT_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let cap = filter_fn(below_library_cap);
    // The EnvFilter goes outermost: its max-level hint (INFO by default) is
    // what `init()` gives the `log` crate, so the `log::trace!` records that
    // tokio-tungstenite emits on every poll stop at one comparison. With the
    // hint-less cap outermost, `log` stayed at TRACE and every such record
    // went through both filters: 9,282 -> 3,342 user-space instructions per
    // delivery (callgrind, bench/results/issue13-memory-cpu.md). An event
    // must pass both filters either way.
    let registry = tracing_subscriber::registry();
    if json {
        let layer = tracing_subscriber::fmt::layer().json().with_target(false);
        registry
            .with(layer.with_filter(cap).with_filter(filter))
            .init();
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi);
        registry
            .with(layer.with_filter(cap).with_filter(filter))
            .init();
    }
}
