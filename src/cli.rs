//! The command line: `swiftchat [serve] …`, `swiftchat shutdown …`,
//! `swiftchat client …`. Flags override configuration files and environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use figment::providers::Serialized;
use figment::Figment;
use http_body_util::{BodyExt, Full};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "swiftchat",
    version,
    about = "A horizontally scalable WebSocket chat gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, which is what runs without a subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the default).
    Serve(ServeArgs),
    /// Shut the whole cluster down.
    Shutdown(ShutdownArgs),
    /// A line-oriented terminal chat client.
    Client(ClientArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (default: ./swiftchat.toml if present).
    #[arg(long, env = "SWIFTCHAT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on (server.bind).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Redis URL (redis.url); empty runs a standalone node.
    #[arg(long)]
    pub redis: Option<String>,
}

impl ServeArgs {
    /// These flags, falling back to the ones given before the subcommand.
    pub fn merged(self, outer: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config.or(outer.config),
            bind: self.bind.or(outer.bind),
            redis: self.redis.or(outer.redis),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ShutdownArgs {
    /// Reason shown to clients.
    #[arg(long)]
    pub reason: Option<String>,
    /// Call this node's POST /admin/shutdown instead of publishing to Redis,
    /// e.g. http://127.0.0.1:8765.
    #[arg(long)]
    pub url: Option<String>,
    /// The shutdown key for --url (default: admin.shutdown_key from the
    /// configuration, which keeps it out of the process list).
    #[arg(long)]
    pub key: Option<String>,
    /// Redis URL (redis.url) to publish the shutdown to.
    #[arg(long)]
    pub redis: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL, e.g. ws://127.0.0.1:8765/ws.
    pub url: String,
    /// Name to log in with.
    #[arg(long)]
    pub name: String,
    /// Optional JWT.
    #[arg(long)]
    pub token: Option<String>,
}

/// Loads the configuration: defaults < TOML < environment < flags.
pub fn load_config(
    file: Option<&std::path::Path>,
    bind: Option<SocketAddr>,
    redis: Option<&str>,
) -> anyhow::Result<Config> {
    let mut figment: Figment = Config::figment(file);
    if let Some(bind) = bind {
        figment = figment.merge(Serialized::default("server.bind", bind.to_string()));
    }
    if let Some(url) = redis {
        figment = figment.merge(Serialized::default("redis.url", url));
    }
    Ok(Config::from_figment(figment)?)
}

/// `swiftchat shutdown`.
pub async fn shutdown(
    config_file: Option<&std::path::Path>,
    args: ShutdownArgs,
) -> anyhow::Result<()> {
    let config = load_config(config_file, None, args.redis.as_deref())?;
    if let Some(url) = &args.url {
        let key = args
            .key
            .clone()
            .unwrap_or(config.admin.shutdown_key.clone());
        if key.is_empty() {
            bail!("--url needs --key (or admin.shutdown_key in the configuration)");
        }
        return post_shutdown(url, &key, args.reason.as_deref()).await;
    }
    if config.redis.url.is_empty() {
        bail!("no Redis configured: pass --redis URL, set SWIFTCHAT_REDIS__URL, or use --url and --key");
    }
    crate::backplane::redis::publish_shutdown(&config, args.reason).await?;
    println!("shutdown published");
    Ok(())
}

/// POST /admin/shutdown on one node.
async fn post_shutdown(url: &str, key: &str, reason: Option<&str>) -> anyhow::Result<()> {
    let uri: hyper::Uri = format!("{}/admin/shutdown", url.trim_end_matches('/'))
        .parse()
        .context("bad --url")?;
    let host = uri.host().context("--url needs a host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .context("timed out connecting")?
    .with_context(|| format!("connecting to {host}:{port}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let body = serde_json::json!({ "reason": reason }).to_string();
    let request = hyper::Request::post(uri.path())
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sender.send_request(request),
    )
    .await
    .context("timed out waiting for the node")??;
    let status = response.status();
    let text = response.into_body().collect().await?.to_bytes();
    if status == hyper::StatusCode::ACCEPTED {
        println!("shutdown accepted");
        Ok(())
    } else {
        bail!(
            "the node answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        )
    }
}
