//! Configuration of the real binary (OPERATIONS.md "Configuration"):
//! defaults < TOML file (`--config`, else `./swiftchat.toml`) <
//! `SWIFTCHAT_<SECTION>__<KEY>` < flags; an unknown key or a bad value stops
//! the node with a message naming the key. Also the log format and that
//! logs carry no message contents or secrets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::binary::{self, Process};
use common::client::Client;
use common::expect;
use common::*;
use serde_json::json;

const START: Duration = Duration::from_secs(20);

/// Starts the binary, waits for `listening on`, logs a client in and
/// returns (process, bound address, CACHE_UPDATE d).
async fn start_and_cache(cmd: tokio::process::Command) -> (Process, SocketAddr, serde_json::Value) {
    let mut p = Process::spawn(cmd);
    let addr = p.wait_listening(START).await;
    let mut c = Client::connect(addr).await;
    let cache = c.identify("Probe").await;
    c.close().await;
    (p, addr, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_precedence_toml_env_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (
        binary::free_port(),
        binary::free_port(),
        binary::free_port(),
    );
    let toml = binary::write_file(
        dir.path(),
        "conf.toml",
        &format!("[server]\nbind = \"127.0.0.1:{p1}\"\n"),
    );
    // TOML + env + flag: the flag wins.
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--config"])
        .arg(&toml)
        .args(["--bind", &format!("127.0.0.1:{p3}")])
        .env("SWIFTCHAT_SERVER__BIND", format!("127.0.0.1:{p2}"));
    let (p, addr, _) = start_and_cache(cmd).await;
    assert_eq!(addr.port(), p3, "flag must win over env and TOML");
    drop(p);
    // TOML + env: env wins.
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--config"])
        .arg(&toml)
        .env("SWIFTCHAT_SERVER__BIND", format!("127.0.0.1:{p2}"));
    let (p, addr, _) = start_and_cache(cmd).await;
    assert_eq!(addr.port(), p2, "env must win over TOML");
    drop(p);
    // TOML alone.
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--config"]).arg(&toml);
    let (p, addr, _) = start_and_cache(cmd).await;
    assert_eq!(addr.port(), p1, "TOML must win over the default");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_address_precedence() {
    let dir = tempfile::tempdir().unwrap();
    // Defaults.
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    let (p, _, cache) = start_and_cache(cmd).await;
    assert_eq!(cache["host"], "localhost", "default public.host: {cache}");
    assert_eq!(cache["port"], 8765, "default public.port: {cache}");
    assert_eq!(cache["command_prefix"], "\\", "{cache}");
    drop(p);
    // TOML.
    let toml = binary::write_file(
        dir.path(),
        "public.toml",
        "[public]\nhost = \"toml.example\"\nport = 1111\n\n[server]\ncommand_prefix = \"!\"\n",
    );
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&toml);
    let (p, _, cache) = start_and_cache(cmd).await;
    assert_eq!(cache["host"], "toml.example", "{cache}");
    assert_eq!(cache["port"], 1111, "{cache}");
    assert_eq!(cache["command_prefix"], "!", "{cache}");
    drop(p);
    // TOML + env: env wins for the keys it sets, TOML keeps the others.
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&toml)
        .env("SWIFTCHAT_PUBLIC__HOST", "env.example");
    let (p, _, cache) = start_and_cache(cmd).await;
    assert_eq!(cache["host"], "env.example", "{cache}");
    assert_eq!(cache["port"], 1111, "{cache}");
    drop(p);
    // Env alone, numeric.
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("SWIFTCHAT_PUBLIC__PORT", "2222")
        .env("SWIFTCHAT_PUBLIC__HOST", "env-only.example");
    let (p, _, cache) = start_and_cache(cmd).await;
    assert_eq!(cache["host"], "env-only.example", "{cache}");
    assert_eq!(cache["port"], 2222, "{cache}");
    drop(p);
}

/// `swiftchat.toml` in the working directory is read when `--config` is
/// not given; `--config` replaces it. `serve` is the default subcommand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_directory_toml_and_default_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    binary::write_file(
        dir.path(),
        "swiftchat.toml",
        "[public]\nhost = \"cwd.example\"\n",
    );
    // No subcommand: serve.
    let mut cmd = binary::command(dir.path());
    cmd.env("SWIFTCHAT_SERVER__BIND", "127.0.0.1:0");
    let (p, _, cache) = start_and_cache(cmd).await;
    assert_eq!(
        cache["host"], "cwd.example",
        "./swiftchat.toml must be read: {cache}"
    );
    drop(p);
    let other = binary::write_file(dir.path(), "other.toml", "[public]\nport = 3333\n");
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&other);
    let (p, _, cache) = start_and_cache(cmd).await;
    assert_eq!(cache["port"], 3333, "{cache}");
    assert_eq!(
        cache["host"], "localhost",
        "--config replaces ./swiftchat.toml: {cache}"
    );
    drop(p);
}

/// Runs `serve` with extra setup that must fail; checks a non-zero exit
/// within 15 s, no `listening on`, and a message naming `key`.
async fn expect_start_failure(
    setup: impl FnOnce(&mut tokio::process::Command, &std::path::Path),
    key: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary::command(dir.path());
    cmd.arg("serve");
    setup(&mut cmd, dir.path());
    cmd.args(["--bind", "127.0.0.1:0"]);
    let (status, output) = binary::run_to_exit(cmd, Duration::from_secs(15)).await;
    assert!(
        !status.success(),
        "expected a non-zero exit for bad {key}; output:\n{output}"
    );
    // Case-insensitive: an environment variable's key may be reported in
    // its upper-case form.
    assert!(
        output.to_lowercase().contains(key),
        "the error message must name {key}; output:\n{output}"
    );
    assert!(
        binary::parse_listening(&output).is_none(),
        "the node must not start with bad {key}; output:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_stop_the_node() {
    expect_start_failure(
        |cmd, dir| {
            let f = binary::write_file(dir, "c.toml", "[server]\nbogus_key = 1\n");
            cmd.arg("--config").arg(f);
        },
        "bogus_key",
    )
    .await;
    expect_start_failure(
        |cmd, dir| {
            let f = binary::write_file(dir, "c.toml", "[bogus_section]\nx = 1\n");
            cmd.arg("--config").arg(f);
        },
        "bogus_section",
    )
    .await;
    expect_start_failure(
        |cmd, _| {
            cmd.env("SWIFTCHAT_LIMITS__NO_SUCH_LIMIT", "5");
        },
        "no_such_limit",
    )
    .await;
    // A typo with one underscore is an unknown top-level key.
    expect_start_failure(
        |cmd, _| {
            cmd.env("SWIFTCHAT_REDIS_URL", "redis://127.0.0.1:1");
        },
        "redis_url",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_stop_the_node() {
    expect_start_failure(
        |cmd, dir| {
            let f = binary::write_file(dir, "c.toml", "[limits]\nmax_frame_bytes = \"lots\"\n");
            cmd.arg("--config").arg(f);
        },
        "max_frame_bytes",
    )
    .await;
    expect_start_failure(
        |cmd, _| {
            cmd.env("SWIFTCHAT_LIMITS__LOGIN_TIMEOUT_SECS", "soon");
        },
        "login_timeout_secs",
    )
    .await;
    expect_start_failure(
        |cmd, dir| {
            let f = binary::write_file(dir, "c.toml", "[auth]\nmode = \"sometimes\"\n");
            cmd.arg("--config").arg(f);
        },
        "mode",
    )
    .await;
    expect_start_failure(
        |cmd, dir| {
            let f = binary::write_file(dir, "c.toml", "[public]\nport = 70000\n");
            cmd.arg("--config").arg(f);
        },
        "port",
    )
    .await;
    expect_start_failure(
        |cmd, _| {
            cmd.env("SWIFTCHAT_LIMITS__MAX_FRAME_BYTES", "0");
        },
        "max_frame_bytes",
    )
    .await;
    // A bad flag value.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "not-an-address"]);
    let (status, output) = binary::run_to_exit(cmd, Duration::from_secs(15)).await;
    assert!(
        !status.success(),
        "--bind not-an-address must fail; output:\n{output}"
    );
    assert!(
        output.contains("bind"),
        "message must name bind; output:\n{output}"
    );
}

/// `SWIFTCHAT_LOG_FORMAT=json`: one JSON object per line on stdout; the
/// variable is not taken for a config key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("SWIFTCHAT_LOG_FORMAT", "json");
    let mut p = Process::spawn(cmd);
    let addr = p.wait_listening(START).await;
    let mut c = Client::connect(addr).await;
    c.identify("JsonLogger").await;
    c.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = p.stdout();
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty(),
        "nothing logged on stdout; all output:\n{}",
        p.output()
    );
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|_| panic!("log line is not JSON: {l}\nall output:\n{out}"));
        assert!(v.is_object(), "log line is not a JSON object: {l}");
    }
}

/// "Never log message contents at info level, nor tokens or keys at any
/// level."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_contents_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "jwt-secret-XYZZY-4711";
    let key = "shutdown-key-PLUGH-0815";
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("SWIFTCHAT_AUTH__JWT_SECRET", secret)
        .env("SWIFTCHAT_ADMIN__SHUTDOWN_KEY", key);
    let mut p = Process::spawn(cmd);
    let addr = p.wait_listening(START).await;
    let token = jwt(secret, "Logged", true, 3600);
    let mut c = Client::connect(addr).await;
    c.identify_with(json!({"name": "Logged", "token": token}), true)
        .await;
    let content = "private-content-QUUX-42";
    c.roundtrip(content).await;
    c.send_json(json!({"op": 3, "d": {"key": "wrong-key-FROTZ-9"}}))
        .await;
    c.expect_notice("forbidden").await;
    c.send_json(json!({"op": 3, "d": {"key": key, "reason": "log check"}}))
        .await;
    c.recv_until(&expect::shutdown(false)).await;
    let status = p.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "exit status after shutdown: {status:?}\n{}",
        p.output()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = p.output();
    for (what, s) in [
        ("message content", content),
        ("JWT secret", secret),
        ("shutdown key", key),
        ("wrong shutdown key", "wrong-key-FROTZ-9"),
        ("token", token.as_str()),
    ] {
        assert!(!out.contains(s), "the logs contain the {what}:\n{out}");
    }
}

/// `--redis URL` (flag) wins over `SWIFTCHAT_REDIS__URL` (env): the env
/// URL points nowhere, the flag at a real Redis that then holds the node's
/// keys (all under `redis.key_prefix`, default `swiftchat`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flag_overrides_env() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("redis://127.0.0.1:{}", binary::free_port());
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--redis", &redis.url()])
        .env("SWIFTCHAT_REDIS__URL", &dead);
    let (p, _, cache) = start_and_cache(cmd).await;
    assert_eq!(cache["me"]["name"], "Probe");
    let keys = redis.cmd(&["KEYS", "*"]);
    let common::redis_server::Resp::Array(Some(keys)) = keys else {
        panic!("KEYS answered {keys:?}");
    };
    assert!(
        !keys.is_empty(),
        "the node wrote nothing to the Redis given by --redis"
    );
    for k in &keys {
        let common::redis_server::Resp::Bulk(Some(k)) = k else {
            panic!("{k:?}")
        };
        assert!(
            k.starts_with("swiftchat"),
            "key {k} does not start with redis.key_prefix"
        );
    }
    drop(p);
}
