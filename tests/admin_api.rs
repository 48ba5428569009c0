//! The admin API (issue 14, OPERATIONS.md "HTTP endpoints"):
//! `GET /admin/api/cluster` and `POST /admin/nodes/{node_id}/drain`, on both
//! backends, plus `GET /admin` (the page itself is tested in
//! tests/browser/test_admin_page.py).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use common::binary::{self, Process};
use common::expect;
use common::http;
use common::*;

const SECRET: &str = "admin-api-test-secret";

backend_tests!(
    cluster_lists_the_node_rooms_and_totals,
    unauthorized_without_an_admin_token,
    unknown_node_is_404,
    drained_node_stops_and_leaves,
);

/// Short heartbeat and TTL so that stats move (and expire) within a test.
fn admin_config(config: &mut swiftchat::config::Config) {
    config.auth.jwt_secret = SECRET.into();
    config.redis.heartbeat_secs = 1;
    config.redis.node_ttl_secs = 3;
    relaxed(config);
}

fn admin_token() -> String {
    jwt(SECRET, "operator", true, 600)
}

async fn get_cluster(addr: SocketAddr, token: &str) -> http::HttpResponse {
    let bearer = format!("Bearer {token}");
    http::request(
        addr,
        "GET",
        "/admin/api/cluster",
        &[("Authorization", &bearer)],
        "",
    )
    .await
    .expect("GET /admin/api/cluster")
}

/// The cluster view, asserting 200 and JSON.
async fn cluster(addr: SocketAddr) -> Value {
    let r = get_cluster(addr, &admin_token()).await;
    assert_eq!(r.status, 200, "GET /admin/api/cluster: {r:?}");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

async fn post_drain(addr: SocketAddr, node_id: &str, token: Option<&str>) -> http::HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    http::post(addr, &format!("/admin/nodes/{node_id}/drain"), &headers, "").await
}

fn node_ids(view: &Value) -> Vec<String> {
    view["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("nodes is not an array: {view}"))
        .iter()
        .map(|n| n["id"].as_str().expect("node id").to_string())
        .collect()
}

fn find_node<'a>(view: &'a Value, id: &str) -> Option<&'a Value> {
    view["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}

/// Polls the cluster view on `addr` until `f` accepts it.
async fn wait_view(addr: SocketAddr, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Not 200 (e.g. 503 while Redis comes back): try again.
        let r = get_cluster(addr, &admin_token()).await;
        let view = if r.status == 200 {
            serde_json::from_str(&r.body).expect("JSON")
        } else {
            Value::String(format!("HTTP {}: {}", r.status, r.body))
        };
        if r.status == 200 && f(&view) {
            return view;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what} not seen within 10 s; last view: {view:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node (standalone: itself; Redis: itself through Redis) with its
/// stats, rooms sorted by users with state and owner, and totals.
async fn cluster_lists_the_node_rooms_and_totals(backend: Backend) {
    let id = unique("adminnode");
    let node = TestNode::start(backend, |c| {
        admin_config(c);
        c.server.node_id = id.clone();
    })
    .await;
    let owner_name = unique("Owner");
    let mut owner = node.login(&owner_name).await;
    let room = unique("hot");
    owner.create_room(&room).await;
    owner.command("\\lock sesame").await;
    owner.settle().await;
    let mut guest = node.login(&unique("Guest")).await;
    guest.join_room(&room, Some("sesame")).await;
    let lonely = node.login(&unique("Lonely")).await;
    for i in 0..20 {
        guest.roundtrip(&format!("traffic {i}")).await;
    }

    // Stats arrive with the next heartbeat (1 s), rates over one interval.
    let view = wait_view(node.addr(), "this node with 3 users and traffic", |v| {
        find_node(v, &id).is_some_and(|n| {
            n["logged_in"] == 3
                && n["connections"] == 3
                && n["messages_in_per_sec"].as_f64().unwrap_or(0.0) > 0.0
                && n["messages_out_per_sec"].as_f64().unwrap_or(0.0) > 0.0
        })
    })
    .await;
    assert_eq!(node_ids(&view), [id.as_str()], "one node: {view:#}");
    let me = find_node(&view, &id).unwrap();
    assert_eq!(me["state"], "ready", "{me}");
    assert_eq!(me["ready"], true, "{me}");
    assert!(
        me["address"]
            .as_str()
            .unwrap()
            .ends_with(&node.addr().port().to_string()),
        "{me}"
    );
    let started = me["started_ms"].as_u64().expect("started_ms");
    let heartbeat = me["last_heartbeat_ms"].as_u64().expect("last_heartbeat_ms");
    assert!(
        started <= heartbeat && heartbeat <= now_millis() as u64 + 1000,
        "{me}"
    );

    let rooms = view["rooms"].as_array().expect("rooms");
    let names: Vec<&str> = rooms.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, [room.as_str(), "general"], "busiest first: {view:#}");
    let hot = &rooms[0];
    assert_eq!(hot["users"], 2, "{hot}");
    assert_eq!(hot["locked"], true, "{hot}");
    assert_eq!(hot["closed"], false, "{hot}");
    assert_eq!(hot["owner"], owner_name.to_lowercase(), "{hot}");
    assert_eq!(rooms[1]["users"], 1);
    assert!(rooms[1]["owner"].is_null(), "the default room has no owner");

    let totals = &view["totals"];
    assert_eq!(totals["nodes"], 1, "{totals}");
    assert_eq!(totals["connections"], 3, "{totals}");
    assert_eq!(totals["logged_in"], 3, "{totals}");
    assert_eq!(totals["rooms"], 2, "{totals}");
    assert!(
        totals["messages_in_per_sec"].as_f64().unwrap() > 0.0,
        "{totals}"
    );

    // The page itself is served by every node.
    let page = http::get(node.addr(), "/admin").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("admin.js"), "{:.300}", page.body);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    for asset in ["/admin/admin.js", "/admin/admin.css"] {
        assert_eq!(http::get(node.addr(), asset).await.status, 200, "{asset}");
    }
    drop((owner, guest, lonely));
}

/// 401 without a token, with a non-admin token, a badly signed or expired
/// admin token, and when no secret is configured at all.
async fn unauthorized_without_an_admin_token(backend: Backend) {
    let id = unique("authnode");
    let node = TestNode::start(backend, |c| {
        admin_config(c);
        c.server.node_id = id.clone();
    })
    .await;
    let r = http::get(node.addr(), "/admin/api/cluster").await;
    assert_eq!(r.status, 401, "no token: {r:?}");
    let refused = [
        ("not admin", jwt(SECRET, "someone", false, 600)),
        ("wrong secret", jwt("another-secret", "operator", true, 600)),
        ("expired", jwt(SECRET, "operator", true, -60)),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (why, token) in &refused {
        let r = get_cluster(node.addr(), token).await;
        assert_eq!(r.status, 401, "{why}: {r:?}");
        assert!(
            !r.body.contains(token.as_str()),
            "{why}: the token is echoed"
        );
        let r = post_drain(node.addr(), &id, Some(token)).await;
        assert_eq!(r.status, 401, "drain, {why}: {r:?}");
    }
    let r = post_drain(node.addr(), &id, None).await;
    assert_eq!(r.status, 401, "drain without a token: {r:?}");
    // Nothing was drained by the refused requests.
    assert!(!node_is_stopping(&node).await);
    let view = cluster(node.addr()).await;
    assert_eq!(node_ids(&view), [id.as_str()]);

    // No secret: no token can be valid.
    let open = TestNode::start(backend, |c| c.auth.jwt_secret = String::new()).await;
    let r = get_cluster(open.addr(), &admin_token()).await;
    assert_eq!(r.status, 401, "no jwt_secret configured: {r:?}");
}

async fn node_is_stopping(node: &TestNode) -> bool {
    http::get(node.addr(), "/readyz").await.status != 200
}

/// 404 for a node id that is not in the cluster; nothing drains.
async fn unknown_node_is_404(backend: Backend) {
    let node = TestNode::start(backend, admin_config).await;
    let mut c = node.login(&unique("Stays")).await;
    let r = post_drain(node.addr(), "no-such-node", Some(&admin_token())).await;
    assert_eq!(r.status, 404, "{r:?}");
    c.assert_no_frame_within(Duration::from_millis(300)).await;
    node.assert_serving().await;
}

/// A drain through the API: the named node tells its clients to reconnect
/// (SHUTDOWN reconnect: true, close 1001) and stops; with Redis the other
/// node keeps serving and stops listing the drained one.
async fn drained_node_stops_and_leaves(backend: Backend) {
    match backend {
        Backend::Memory => {
            let id = unique("solo");
            let mut node = TestNode::start(backend, |c| {
                admin_config(c);
                c.server.node_id = id.clone();
            })
            .await;
            wait_view(node.addr(), "the node", |v| node_ids(v) == [id.clone()]).await;
            let mut c = node.login(&unique("Drained")).await;
            let r = post_drain(node.addr(), &id, Some(&admin_token())).await;
            assert_eq!(r.status, 202, "{r:?}");
            c.recv_until(&expect::shutdown(true)).await;
            c.expect_close(1001).await;
            node.wait_stopped(Duration::from_secs(15))
                .await
                .expect("node stopped cleanly");
        }
        Backend::Redis | Backend::RedisCluster => {
            let shared = common::SharedBackplane::start(backend);
            let (id_a, id_b) = (unique("nodea"), unique("nodeb"));
            let a = shared
                .node(|c| {
                    admin_config(c);
                    c.server.node_id = id_a.clone();
                })
                .await;
            let mut b = shared
                .node(|c| {
                    admin_config(c);
                    c.server.node_id = id_b.clone();
                })
                .await;
            let both = |v: &Value| node_ids(v) == [id_a.clone(), id_b.clone()];
            // Every node answers the same list.
            wait_view(a.addr(), "both nodes on a", both).await;
            wait_view(b.addr(), "both nodes on b", both).await;
            let mut on_a = a.login(&unique("OnA")).await;
            let mut on_b = b.login(&unique("OnB")).await;
            // Rates come from each node's own counters (the metrics are per
            // process, shared by both nodes here): a's client talks, b's does
            // not, b only fans a's messages out.
            let in_rate = |v: &Value, id: &str| {
                find_node(v, id).map_or(-1.0, |n| n["messages_in_per_sec"].as_f64().unwrap())
            };
            let out_rate = |v: &Value, id: &str| {
                find_node(v, id).map_or(-1.0, |n| n["messages_out_per_sec"].as_f64().unwrap())
            };
            for i in 0..10 {
                on_a.roundtrip(&format!("from a {i}")).await;
            }
            let view = wait_view(b.addr(), "a's traffic in a's stats only", |v| {
                in_rate(v, &id_a) > 0.0 && out_rate(v, &id_b) > 0.0
            })
            .await;
            assert_eq!(in_rate(&view, &id_b), 0.0, "b received nothing: {view:#}");
            assert!(
                (view["totals"]["messages_in_per_sec"].as_f64().unwrap() - in_rate(&view, &id_a))
                    .abs()
                    < 1e-9,
                "{view:#}"
            );
            // Asked on a, carried out by b.
            let r = post_drain(a.addr(), &id_b, Some(&admin_token())).await;
            assert_eq!(r.status, 202, "{r:?}");
            on_b.recv_until(&expect::shutdown(true)).await;
            on_b.expect_close(1001).await;
            b.wait_stopped(Duration::from_secs(15))
                .await
                .expect("b stopped cleanly");
            // b removed its stats on the way out: gone at once, not after
            // the TTL.
            let view = cluster(a.addr()).await;
            assert_eq!(node_ids(&view), [id_a.as_str()], "{view:#}");
            let frames = on_a.collect_for(Duration::from_millis(300)).await;
            expect::assert_lacks("OnA", &frames, &expect::shutdown(true));
            expect::assert_lacks("OnA", &frames, &expect::shutdown(false));
            a.assert_serving().await;
            let r = post_drain(a.addr(), &id_b, Some(&admin_token())).await;
            assert_eq!(r.status, 404, "a node that left is unknown: {r:?}");
        }
    }
}

/// Redis down: the API answers 503 (bounded by the command timeout)
/// instead of hanging or answering stale data, and recovers with Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_503_then_recovers() {
    bounded(async {
        let mut node = TestNode::start(Backend::Redis, admin_config).await;
        wait_view(node.addr(), "the node", |v| node_ids(v).len() == 1).await;
        node.redis.as_mut().unwrap().stop();
        let started = std::time::Instant::now();
        let r = get_cluster(node.addr(), &admin_token()).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.body.contains("backplane unavailable"), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        let r = post_drain(node.addr(), "anything", Some(&admin_token())).await;
        assert_eq!(r.status, 503, "{r:?}");
        node.redis.as_mut().unwrap().restart();
        wait_view(node.addr(), "the node back after Redis restarted", |v| {
            node_ids(v).len() == 1
        })
        .await;
    })
    .await
}

/// Redis only (a standalone node has no one else to see it): a node's entry
/// appears with its first heartbeat and, when the process dies without a
/// drain (SIGKILL), disappears once its stats expire (`redis.node_ttl_secs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_disappears_after_its_ttl() {
    bounded(async {
        let redis = RedisServer::start();
        let watcher = TestNode::start_on_redis(&redis, admin_config).await;
        let dir = tempfile::tempdir().unwrap();
        let victim_id = unique("victim");
        let mut cmd = binary::command(dir.path());
        cmd.arg("serve")
            .env("SWIFTCHAT_SERVER__BIND", "127.0.0.1:0")
            .env("SWIFTCHAT_SERVER__NODE_ID", &victim_id)
            .env("SWIFTCHAT_REDIS__URL", redis.url())
            .env("SWIFTCHAT_REDIS__HEARTBEAT_SECS", "1")
            .env("SWIFTCHAT_REDIS__NODE_TTL_SECS", "3");
        let mut victim = Process::spawn(cmd);
        victim.wait_listening(Duration::from_secs(15)).await;
        let seen = wait_view(watcher.addr(), "the victim", |v| {
            find_node(v, &victim_id).is_some()
        })
        .await;
        assert_eq!(find_node(&seen, &victim_id).unwrap()["state"], "ready");
        // Its heartbeat moves on while it lives.
        let first = find_node(&seen, &victim_id).unwrap()["last_heartbeat_ms"]
            .as_u64()
            .unwrap();
        wait_view(watcher.addr(), "a later heartbeat", |v| {
            find_node(v, &victim_id)
                .and_then(|n| n["last_heartbeat_ms"].as_u64())
                .is_some_and(|t| t > first)
        })
        .await;

        victim.signal("KILL");
        victim.wait_exit(Duration::from_secs(5)).await;
        let killed_at = std::time::Instant::now();
        wait_view(watcher.addr(), "the victim gone", |v| {
            find_node(v, &victim_id).is_none()
        })
        .await;
        let gone_after = killed_at.elapsed();
        assert!(
            gone_after <= Duration::from_millis(3_000 + 500),
            "listed {gone_after:?} after SIGKILL (ttl 3 s)"
        );
        // The index forgets it too (no growth with nodes that came and went).
        let index = redis.cmd(&["ZRANGE", "swiftchat:{global}:nodeinfo", "0", "-1"]);
        assert!(
            !format!("{index:?}").contains(&victim_id),
            "index still holds {victim_id}: {index:?}"
        );
    })
    .await
}
