//! Idempotency keys and derived ids.
//!
//! A key is derived from (instance, step, forward or compensation, visit) and never from
//! the attempt number, so every retry of a call, in this process or after a crash on
//! another node, presents the same key to the platform. Keys are `as_` followed by 40 hex
//! characters (43 in all), which fits every platform's limit (Stripe 255, Alipay
//! `out_request_no` 64, WeChat Pay `out_refund_no` 64) and charset.

use sha2::{Digest, Sha256};

/// Which side of the saga a call belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The step's own action.
    Forward,
    /// Its compensation.
    Compensation,
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// The idempotency key of one call.
pub fn idempotency_key(instance: &str, step: &str, dir: Direction, visit: u32) -> String {
    let d = match dir {
        Direction::Forward => "f",
        Direction::Compensation => "c",
    };
    let visit = visit.to_string();
    let bytes = digest(&["key", instance, step, d, &visit]);
    format!("as_{}", hex::encode(&bytes[..20]))
}

/// The id of the child instance a call step starts (so a repeat creates nothing new).
pub fn child_id(instance: &str, step: &str, visit: u32) -> String {
    let visit = visit.to_string();
    let bytes = digest(&["child", instance, step, &visit]);
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid().to_string()
}

/// A deterministic number in [0, 1) for retry jitter, from the key and attempt.
pub fn unit_random(key: &str, attempt: u32) -> f64 {
    let attempt = attempt.to_string();
    let bytes = digest(&["jitter", key, &attempt]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_everything_but_the_attempt() {
        let k = idempotency_key("i-1", "refund", Direction::Forward, 1);
        assert_eq!(k, idempotency_key("i-1", "refund", Direction::Forward, 1));
        assert_ne!(
            k,
            idempotency_key("i-1", "refund", Direction::Compensation, 1)
        );
        assert_ne!(k, idempotency_key("i-1", "refund", Direction::Forward, 2));
        assert_ne!(k, idempotency_key("i-2", "refund", Direction::Forward, 1));
        assert_eq!(k.len(), 43);
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        // Concatenation ambiguity cannot produce the same key.
        assert_ne!(
            idempotency_key("ab", "c", Direction::Forward, 1),
            idempotency_key("a", "bc", Direction::Forward, 1)
        );
    }

    #[test]
    fn jitter_is_deterministic_and_in_range() {
        let r = unit_random("k", 1);
        assert_eq!(r, unit_random("k", 1));
        assert!((0.0..1.0).contains(&r));
        assert_ne!(r, unit_random("k", 2));
    }
}
