//! The idempotency key every mutating call carries.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest key accepted: Alipay `out_request_no` and WeChat Pay `out_refund_no` both
/// take at most 64 characters.
pub const MAX_KEY_LEN: usize = 64;

/// A key that makes a mutating call effectively-once.
///
/// The engine derives it from (instance, step, direction, iteration), never from the
/// attempt, so every retry of one logical call carries the same key. Adapters pass it to
/// the platform unchanged (Stripe `Idempotency-Key`, Alipay `out_request_no`, WeChat Pay
/// `out_refund_no`, ShipBob `reference_id`), and a repeat with the same key must return the
/// first result without acting twice.
///
/// Only `[A-Za-z0-9_-]`, 1 to [`MAX_KEY_LEN`] characters: the intersection of what the
/// payment platforms accept.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

/// A string that cannot be an [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKey {
    /// The key is empty.
    #[error("idempotency key is empty")]
    Empty,
    /// The key is longer than 64 characters.
    #[error("idempotency key is {len} characters long; at most {MAX_KEY_LEN} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The key holds a character outside `[A-Za-z0-9_-]`.
    #[error("idempotency key contains {found:?}; only A-Z, a-z, 0-9, `_` and `-` are allowed")]
    BadChar {
        /// The first offending character.
        found: char,
    },
}

impl IdempotencyKey {
    /// Validates and wraps a key.
    pub fn new(key: impl Into<String>) -> Result<IdempotencyKey, InvalidKey> {
        let key = key.into();
        if key.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if let Some(found) = key
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(InvalidKey::BadChar { found });
        }
        if key.len() > MAX_KEY_LEN {
            return Err(InvalidKey::TooLong { len: key.len() });
        }
        Ok(IdempotencyKey(key))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = InvalidKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdempotencyKey::new(s)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IdempotencyKey::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_platform_safe_keys() {
        let k = IdempotencyKey::new("inst_42-refund-fwd-0").unwrap();
        assert_eq!(k.as_str(), "inst_42-refund-fwd-0");
        assert!(IdempotencyKey::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_what_alipay_or_wechat_would_refuse() {
        assert_eq!(IdempotencyKey::new(""), Err(InvalidKey::Empty));
        assert_eq!(
            IdempotencyKey::new("a".repeat(65)),
            Err(InvalidKey::TooLong { len: 65 })
        );
        assert_eq!(
            IdempotencyKey::new("a.b"),
            Err(InvalidKey::BadChar { found: '.' })
        );
        assert_eq!(
            IdempotencyKey::new("退款").unwrap_err().to_string(),
            "idempotency key contains '退'; only A-Z, a-z, 0-9, `_` and `-` are allowed"
        );
        assert_eq!(
            IdempotencyKey::new("a".repeat(70)).unwrap_err().to_string(),
            "idempotency key is 70 characters long; at most 64 are allowed"
        );
        assert!(serde_json::from_str::<IdempotencyKey>("\"a b\"").is_err());
    }
}
