//! Authentication (PROTOCOL.md op 5 `token`): HS256 JWTs with `sub` = name
//! and `exp`, `auth.mode` open and token, the `admin` claim, and 4003
//! after five failed logins.

mod common;

use std::time::Duration;

use common::expect;
use common::*;
use serde_json::json;

const SECRET: &str = "auth-test-secret";
const QUIET: Duration = Duration::from_millis(300);

backend_tests!(
    open_mode_token_is_optional,
    open_mode_invalid_tokens_are_unauthorized,
    token_mode_requires_a_valid_token,
    token_mode_five_failures_close_4003,
    admin_claim_is_needed_for_admin_commands,
);

fn b64url(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token (`alg: none`).
fn unsigned_token(sub: &str) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64url(
        json!({"sub": sub, "exp": now_secs() + 3600, "admin": true})
            .to_string()
            .as_bytes(),
    );
    format!("{header}.{claims}.")
}

async fn open_mode_token_is_optional(backend: Backend) {
    let node = TestNode::start(backend, |c| c.auth.jwt_secret = SECRET.into()).await;
    let mut a = node.connect().await;
    a.identify_with(
        json!({"name": "Tokened", "token": jwt(SECRET, "Tokened", false, 3600)}),
        true,
    )
    .await;
    let mut b = node.connect().await;
    b.identify("NoToken").await;
    let mut c = node.connect().await;
    c.identify_with(json!({"name": "NullToken", "token": null}), true)
        .await;
    let mut d = node.connect().await;
    d.login_op1("OldSchool").await;
}

/// "a token that is given but invalid (bad signature, expired, sub not the
/// name) still gets unauthorized"; a failed login leaves the connection open.
async fn open_mode_invalid_tokens_are_unauthorized(backend: Backend) {
    let node = TestNode::start(backend, |c| c.auth.jwt_secret = SECRET.into()).await;
    let mut w = node.login("Witness").await;
    let cases = [
        (
            "bad signature",
            jwt("another-secret", "Mallory", true, 3600),
        ),
        ("expired", jwt(SECRET, "Mallory", false, -3600)),
        ("sub is not the name", jwt(SECRET, "Someone", false, 3600)),
        ("not a JWT", "not.a.jwt".to_string()),
        ("alg none", unsigned_token("Mallory")),
        ("empty", String::new()),
    ];
    for group in cases.chunks(3) {
        let mut c = node.connect().await;
        for (what, token) in group {
            c.label = format!("token {what}");
            c.send_json(json!({"op": 5, "d": {"name": "Mallory", "token": token}}))
                .await;
            let d = c.expect_notice("unauthorized").await;
            assert_eq!(d["error"], true);
        }
        // Still open; a valid login works on the same connection.
        c.identify_with(
            json!({"name": "Mallory", "token": jwt(SECRET, "Mallory", false, 3600)}),
            true,
        )
        .await;
        w.recv_until(&expect::joined("Mallory", "general")).await;
        c.close().await;
        w.recv_until(&expect::left("Mallory", "general")).await;
    }
    w.roundtrip("witness served").await;
}

/// `auth.mode = "token"`: a missing or invalid token, and the op-1 login,
/// get unauthorized; a valid token logs in.
async fn token_mode_requires_a_valid_token(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        c.auth.mode = swiftchat::config::AuthMode::Token;
        c.auth.jwt_secret = SECRET.into();
    })
    .await;
    let mut c = node.connect().await;
    c.label = "token mode".into();
    c.send_json(json!({"op": 5, "d": {"name": "Strict"}})).await;
    c.expect_notice("unauthorized").await;
    c.send_json(json!({"op": 1, "d": {"content": "Strict"}}))
        .await;
    c.expect_notice("unauthorized").await;
    c.send_json(json!({"op": 5, "d": {"name": "Strict", "token": null}}))
        .await;
    c.expect_notice("unauthorized").await;
    c.send_json(
        json!({"op": 5, "d": {"name": "Strict", "token": jwt("wrong", "Strict", false, 3600)}}),
    )
    .await;
    c.expect_notice("unauthorized").await;
    c.identify_with(
        json!({"name": "Strict", "token": jwt(SECRET, "Strict", false, 3600)}),
        true,
    )
    .await;
    c.roundtrip("authenticated").await;

    let mut d = node.connect().await;
    d.label = "expired".into();
    d.send_json(
        json!({"op": 5, "d": {"name": "Late", "token": jwt(SECRET, "Late", false, -3600)}}),
    )
    .await;
    d.expect_notice("unauthorized").await;
    d.send_json(
        json!({"op": 5, "d": {"name": "Late", "token": jwt(SECRET, "Other", false, 3600)}}),
    )
    .await;
    d.expect_notice("unauthorized").await;
    c.assert_no_frame_within(QUIET).await;
}

/// Five failed logins (here: unauthorized) close with 4003.
async fn token_mode_five_failures_close_4003(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        c.auth.mode = swiftchat::config::AuthMode::Token;
        c.auth.jwt_secret = SECRET.into();
    })
    .await;
    let mut ok = node.connect().await;
    ok.identify_with(
        json!({"name": "Legit", "token": jwt(SECRET, "Legit", false, 3600)}),
        true,
    )
    .await;
    let mut x = node.connect().await;
    x.label = "guesser".into();
    for i in 0..4 {
        if i % 2 == 0 {
            x.send_json(json!({"op": 5, "d": {"name": "Guess"}})).await;
        } else {
            x.send_json(json!({"op": 1, "d": {"content": "Guess"}}))
                .await;
        }
        x.expect_notice("unauthorized").await;
    }
    x.send_json(json!({"op": 5, "d": {"name": "Guess", "token": "x.y.z"}}))
        .await;
    let before = x.expect_close(4003).await;
    assert!(
        before
            .iter()
            .all(|f| expect::notice("unauthorized").matches(f)),
        "{}",
        client::show(&before)
    );
    ok.roundtrip("legit still served").await;
}

/// `"admin": true` makes an admin; no claim, `false`, or no token: not.
async fn admin_claim_is_needed_for_admin_commands(backend: Backend) {
    let node = TestNode::start(backend, |c| c.auth.jwt_secret = SECRET.into()).await;
    let mut plain = node.login("Plain").await;
    plain.command(r"\shutdown").await;
    plain.expect_notice("forbidden").await;
    let mut t = node.connect().await;
    t.identify_with(
        json!({"name": "NotAdmin", "token": jwt(SECRET, "NotAdmin", false, 3600)}),
        true,
    )
    .await;
    t.command(r"\shutdown nope").await;
    t.expect_notice("forbidden").await;
    // `"admin": "true"` (a string) is not the claim `"admin": true`: the
    // token may be refused outright, but if it logs in, it gives no rights.
    let mut s = node.connect().await;
    s.label = "StringAdmin".into();
    let claims = json!({"sub": "StringAdmin", "exp": now_secs() + 3600, "admin": "true"});
    s.send_json(
        json!({"op": 5, "d": {"name": "StringAdmin", "token": jwt_claims(SECRET, &claims)}}),
    )
    .await;
    let first = s.recv_json().await;
    if !expect::notice("unauthorized").matches(&first) {
        let second = s.recv_json().await;
        expect::assert_exactly(
            "StringAdmin",
            &[first, second],
            &[
                expect::cache_me("StringAdmin", "general"),
                expect::joined("StringAdmin", "general"),
            ],
        );
        plain
            .recv_until(&expect::joined("StringAdmin", "general"))
            .await;
        s.command(r"\shutdown nope").await;
        s.expect_notice("forbidden").await;
    }
    // The node is still up.
    plain.roundtrip("still up").await;
    // With the claim, owner commands work in another's room.
    let mut owner = node.login("Owner").await;
    owner.create_room("owned").await;
    let mut adm = node.connect().await;
    adm.identify_with(
        json!({"name": "Boss", "token": jwt(SECRET, "Boss", true, 3600)}),
        true,
    )
    .await;
    adm.join_room("owned", None).await;
    adm.command(r"\lock pw").await;
    adm.expect_all(vec![
        expect::notice("info"),
        expect::room_state("owned", "locked"),
    ])
    .await;
}
