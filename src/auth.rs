//! Login tokens: HS256 JWTs whose `sub` is the user name.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

/// What a valid token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub admin: bool,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Only the JSON value `true` grants admin rights; any other value
    /// (`"true"`, 1) is a valid token without them.
    #[serde(default)]
    admin: serde_json::Value,
}

/// Why a token was refused. Never carries the token itself, so it is safe to
/// log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no secret is configured")]
    NoSecret,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token's subject is not the name")]
    WrongSubject,
}

/// Verifies tokens with one secret.
#[derive(Clone)]
pub struct TokenVerifier {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        Self {
            key: (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes())),
            validation,
        }
    }

    /// Checks signature, expiry and that `sub` is `name` (compared
    /// case-insensitively, like names).
    pub fn verify(&self, token: &str, name: &str) -> Result<Grant, TokenError> {
        let key = self.key.as_ref().ok_or(TokenError::NoSecret)?;
        let data = decode::<Claims>(token, key, &self.validation)
            .map_err(|e| TokenError::Invalid(e.kind_name()))?;
        if !data.claims.sub.eq_ignore_ascii_case(name) {
            return Err(TokenError::WrongSubject);
        }
        Ok(Grant {
            admin: data.claims.admin == serde_json::Value::Bool(true),
        })
    }

    /// Checks signature and expiry of a token presented without a name (the
    /// admin API's bearer token): what it grants, whatever its subject.
    pub(crate) fn grant(&self, token: &str) -> Result<Grant, TokenError> {
        let key = self.key.as_ref().ok_or(TokenError::NoSecret)?;
        let data = decode::<Claims>(token, key, &self.validation)
            .map_err(|e| TokenError::Invalid(e.kind_name()))?;
        Ok(Grant {
            admin: data.claims.admin == serde_json::Value::Bool(true),
        })
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::ExpiredSignature => "expired".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
            _ => "malformed".into(),
        }
    }
}

/// Compares a presented secret with the configured one in constant time. An
/// empty configured secret matches nothing.
///
/// Both are hashed first and the digests compared: comparing the raw bytes
/// returns at once on a length mismatch, which tells an attacker the key's
/// length.
pub fn secret_matches(configured: &str, presented: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let configured_digest = Sha256::digest(configured.as_bytes());
    let presented_digest = Sha256::digest(presented.as_bytes());
    let equal: bool = configured_digest.ct_eq(&presented_digest).into();
    !configured.is_empty() && equal
}

/// Shortest `admin.shutdown_key` a node starts with.
pub const MIN_SHUTDOWN_KEY_CHARS: usize = 16;

/// Longest a shutdown-key attempt waits for its turn; beyond it the attempt
/// is refused unchecked (someone is guessing; `swiftchat shutdown` through
/// Redis still works).
const MAX_KEY_QUEUE: Duration = Duration::from_secs(5);

/// Longest spacing between two checks after many wrong keys.
const MAX_KEY_SPACING: Duration = Duration::from_secs(2);

/// Node-wide backoff for shutdown keys, shared by every connection and by
/// `POST /admin/shutdown`: after a wrong key, the next check on this node
/// waits `base × 2^(wrong keys - 1)` (at most 2 s) after the previous one,
/// so opening more connections does not guess faster. A right key resets it.
#[derive(Debug)]
pub struct KeyGuard {
    state: Mutex<KeyGuardState>,
}

#[derive(Debug)]
struct KeyGuardState {
    consecutive_wrong: u32,
    next_check: Instant,
}

impl Default for KeyGuard {
    fn default() -> Self {
        Self {
            state: Mutex::new(KeyGuardState {
                consecutive_wrong: 0,
                next_check: Instant::now(),
            }),
        }
    }
}

/// What a shutdown-key attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    Accepted,
    Wrong,
    /// Too many attempts queued: refused without checking.
    Refused,
}

impl KeyGuard {
    /// Checks `presented` in its turn and logs the attempt with `actor` (who
    /// asked: a user name, "-" before login, "http") and `peer`. Never logs
    /// either key.
    pub async fn check(
        &self,
        configured: &str,
        presented: &str,
        base_spacing: Duration,
        actor: &str,
        peer: IpAddr,
    ) -> KeyCheck {
        let now = Instant::now();
        let turn = {
            let mut state = self.lock();
            let turn = state.next_check.max(now);
            if turn - now > MAX_KEY_QUEUE {
                drop(state);
                tracing::warn!(actor, %peer, "shutdown key attempt refused unchecked: too many attempts on this node");
                return KeyCheck::Refused;
            }
            state.next_check = turn + spacing(base_spacing, state.consecutive_wrong);
            turn
        };
        tokio::time::sleep_until(turn).await;
        if secret_matches(configured, presented) {
            let mut state = self.lock();
            state.consecutive_wrong = 0;
            state.next_check = state.next_check.min(Instant::now());
            drop(state);
            tracing::info!(actor, %peer, "shutdown key accepted");
            KeyCheck::Accepted
        } else {
            let wrong = {
                let mut state = self.lock();
                state.consecutive_wrong = state.consecutive_wrong.saturating_add(1);
                // The next check waits for this failure's spacing too.
                let after = Instant::now() + spacing(base_spacing, state.consecutive_wrong);
                state.next_check = state.next_check.max(after);
                state.consecutive_wrong
            };
            tracing::warn!(actor, %peer, consecutive_wrong = wrong, "wrong shutdown key");
            KeyCheck::Wrong
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyGuardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn spacing(base: Duration, consecutive_wrong: u32) -> Duration {
    if consecutive_wrong == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (consecutive_wrong - 1).min(16);
    base.saturating_mul(factor).min(MAX_KEY_SPACING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde::Serialize;

    #[derive(Serialize)]
    struct C<'a> {
        sub: &'a str,
        exp: u64,
        admin: bool,
    }

    fn token(secret: &str, sub: &str, exp: u64, admin: bool) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &C { sub, exp, admin },
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn verifies_tokens() {
        let v = TokenVerifier::new("s3cret");
        let good = token("s3cret", "Jim", now() + 60, true);
        assert_eq!(v.verify(&good, "jim"), Ok(Grant { admin: true }));
        assert_eq!(v.verify(&good, "bob"), Err(TokenError::WrongSubject));
        let forged = token("other", "Jim", now() + 60, true);
        assert!(v.verify(&forged, "Jim").is_err());
        let expired = token("s3cret", "Jim", now() - 10, false);
        assert!(v.verify(&expired, "Jim").is_err());
        assert_eq!(
            TokenVerifier::new("").verify(&good, "Jim"),
            Err(TokenError::NoSecret)
        );
    }

    #[test]
    fn grants_without_a_name() {
        let v = TokenVerifier::new("s3cret");
        let admin = token("s3cret", "anyone", now() + 60, true);
        assert_eq!(v.grant(&admin), Ok(Grant { admin: true }));
        let user = token("s3cret", "anyone", now() + 60, false);
        assert_eq!(v.grant(&user), Ok(Grant { admin: false }));
        assert!(v
            .grant(&token("other", "anyone", now() + 60, true))
            .is_err());
        assert!(v
            .grant(&token("s3cret", "anyone", now() - 10, true))
            .is_err());
        assert_eq!(
            TokenVerifier::new("").grant(&admin),
            Err(TokenError::NoSecret)
        );
    }

    #[test]
    fn secrets() {
        assert!(secret_matches("k", "k"));
        assert!(!secret_matches("k", "K"));
        assert!(!secret_matches("k", "kk"));
        assert!(!secret_matches("", ""));
    }

    #[tokio::test]
    async fn wrong_keys_space_out_later_checks_node_wide() {
        let guard = KeyGuard::default();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let base = Duration::from_millis(40);
        let key = "0123456789abcdef";
        let start = Instant::now();
        // Wrong keys (as from different connections): each waits for the
        // one before, with doubling spacing: 0, 40, 80, 160 ms.
        for _ in 0..4 {
            assert_eq!(
                guard.check(key, "nope", base, "-", peer).await,
                KeyCheck::Wrong
            );
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(280), "{elapsed:?}");
        // The right key waits its turn (320 ms after the last), then resets.
        let before = Instant::now();
        assert_eq!(
            guard.check(key, key, base, "admin", peer).await,
            KeyCheck::Accepted
        );
        assert!(
            before.elapsed() >= Duration::from_millis(300),
            "{:?}",
            before.elapsed()
        );
        let before = Instant::now();
        assert_eq!(
            guard.check(key, key, base, "admin", peer).await,
            KeyCheck::Accepted
        );
        assert!(before.elapsed() < Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_long_queue_is_refused_unchecked() {
        let guard = std::sync::Arc::new(KeyGuard::default());
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let base = Duration::from_secs(1);
        let key = "0123456789abcdef";
        assert_eq!(
            guard.check(key, "x", base, "-", peer).await,
            KeyCheck::Wrong
        );
        // Ten attempts at once: turns 1 s apart; those more than 5 s ahead
        // are refused at once, without waiting.
        let mut attempts = Vec::new();
        for _ in 0..10 {
            let guard = guard.clone();
            attempts.push(tokio::spawn(async move {
                guard.check(key, key, base, "-", peer).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = attempts.iter().filter(|a| a.is_finished()).count();
        for a in &attempts {
            if !a.is_finished() {
                a.abort();
            }
        }
        let mut results = Vec::new();
        for a in attempts {
            if let Ok(result) = a.await {
                results.push(result);
            }
        }
        assert!(refused >= 4, "refused at once: {refused}");
        assert!(
            results.iter().all(|r| *r == KeyCheck::Refused),
            "{results:?}"
        );
    }
}
