//! Redis security (OPERATIONS.md `redis.url`): a password-protected Redis,
//! an ACL user limited to the key prefix, TLS (`rediss://`) against a real
//! redis-server with certificates made here with the openssl CLI, and the
//! start-time warning when Redis may evict keys.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::binary::{self, Process};
use common::redis_server::redis_server_path;
use common::*;

/// A redis-server with extra arguments, killed on drop.
struct CustomRedis {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for CustomRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts redis-server with `args` (the port arguments included) and waits
/// until `port` accepts connections.
fn start_redis(dir: tempfile::TempDir, port: u16, args: &[String]) -> CustomRedis {
    let log = std::fs::File::create(dir.path().join("redis.log")).unwrap();
    let child = Command::new(redis_server_path())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("redis-server");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not listen: {}",
            std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    CustomRedis { child, _dir: dir }
}

/// A node on `url` serves: ready, a login and a message round trip.
async fn assert_node_works(url: String, f: impl FnOnce(&mut swiftchat::config::Config)) {
    let mut config = base_config();
    config.redis.url = url;
    f(&mut config);
    let node = TestNode::start_with_config(config).await;
    let ready = poll_until(Duration::from_secs(10), || async {
        (http::get(node.addr(), "/readyz").await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the node became ready");
    let mut a = node.login(&unique("sec")).await;
    a.roundtrip("through a protected redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_redis() {
    let port = binary::free_port();
    let _redis = start_redis(
        tempfile::tempdir().unwrap(),
        port,
        &[
            "--port".into(),
            port.to_string(),
            "--requirepass".into(),
            "pw-0123456789".into(),
        ],
    );
    assert_node_works(format!("redis://:pw-0123456789@127.0.0.1:{port}"), |_| {}).await;
}

/// docs/deployment.md's ACL user (same rules): keys and channels under the
/// prefix only, no dangerous commands except INFO (for the eviction check) and TIME (scripts read the clock).
const ACL_RULES: &str = "swiftchat on >chat-pw-0123456789 resetkeys ~swiftchat:* resetchannels &swiftchat:* -@all +@read +@write +@pubsub +@scripting +@connection +@transaction -@dangerous +info +time";

/// docs/deployment.md's ACL user: keys and channels under the prefix only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_limited_to_the_key_prefix() {
    let port = binary::free_port();
    let _redis = start_redis(
        tempfile::tempdir().unwrap(),
        port,
        &[
            "--port".to_string(),
            port.to_string(),
            // The default user is off: only the chat user gets in. (Each
            // ACL rule is its own argument.)
            "--user".into(),
            "default".into(),
            "off".into(),
            "--user".into(),
        ]
        .into_iter()
        .chain(ACL_RULES.split(' ').map(String::from))
        .collect::<Vec<String>>(),
    );
    assert_node_works(
        format!("redis://swiftchat:chat-pw-0123456789@127.0.0.1:{port}"),
        |_| {},
    )
    .await;
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=swiftchat test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
}

fn start_tls_redis() -> (CustomRedis, u16, String) {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let ca = dir.path().join("ca.pem");
    // The test keeps its own copy: the server's directory goes with it.
    let ca_copy = std::env::temp_dir().join(format!("swiftchat-test-ca-{}.pem", unique("")));
    std::fs::copy(&ca, &ca_copy).unwrap();
    let port = binary::free_port();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let args = vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        path("server.pem"),
        "--tls-key-file".into(),
        path("server.key"),
        "--tls-ca-cert-file".into(),
        path("ca.pem"),
        "--tls-auth-clients".into(),
        "no".into(),
        "--requirepass".into(),
        "tls-pw-0123456789".into(),
    ];
    let redis = start_redis(dir, port, &args);
    (redis, port, ca_copy.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_a_private_ca() {
    let (_redis, port, ca) = start_tls_redis();
    assert_node_works(
        format!("rediss://:tls-pw-0123456789@127.0.0.1:{port}"),
        |c| c.redis.tls_ca_file = ca.clone(),
    )
    .await;
    let _ = std::fs::remove_file(ca);
}

/// Without the CA the certificate is not trusted: the node never becomes
/// ready (so the test above does verify the certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_an_untrusted_certificate_is_refused() {
    let (_redis, port, ca) = start_tls_redis();
    let _ = std::fs::remove_file(ca);
    let mut config = base_config();
    config.redis.url = format!("rediss://:tls-pw-0123456789@127.0.0.1:{port}");
    config.redis.command_timeout_ms = 300;
    let node = TestNode::start_with_config(config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http::get(node.addr(), "/readyz").await.status, 503);
}

/// A node warns at start when Redis may evict keys; not when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warns_when_redis_evicts_keys() {
    for (policy, warns) in [("allkeys-lru", true), ("noeviction", false)] {
        let port = binary::free_port();
        let _redis = start_redis(
            tempfile::tempdir().unwrap(),
            port,
            &[
                "--port".into(),
                port.to_string(),
                "--maxmemory-policy".into(),
                policy.into(),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = binary::command(dir.path());
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--redis"])
            .arg(format!("redis://127.0.0.1:{port}"))
            .env("RUST_LOG", "info");
        let mut p = Process::spawn(cmd);
        p.wait_listening(Duration::from_secs(20)).await;
        p.signal("TERM");
        p.wait_exit(Duration::from_secs(15)).await;
        let out = p.output();
        assert_eq!(
            out.contains("may evict keys") && out.contains(policy),
            warns,
            "policy {policy}:\n{out}"
        );
    }
}
