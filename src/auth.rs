//! Login tokens: HS256 JWTs whose `sub` is the user name.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

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
pub fn secret_matches(configured: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    !configured.is_empty() && bool::from(configured.as_bytes().ct_eq(presented.as_bytes()))
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
        assert!(!secret_matches("", ""));
    }
}
