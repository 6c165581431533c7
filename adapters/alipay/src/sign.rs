//! Alipay RSA2 (SHA256withRSA): the sorted `k=v&...` string every signature covers, request
//! signing with the application private key, verification with the Alipay public key, and
//! Alipay's clock (`yyyy-MM-dd HH:mm:ss`, China Standard Time).

use aftersales_adapter::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The application's signing key. `Debug` shows no key material.
pub(crate) struct AppKey(SigningKey<Sha256>);

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(***)")
    }
}

impl AppKey {
    /// Reads PKCS#8 or PKCS#1, as PEM or as bare base64 DER.
    pub(crate) fn new(text: &Secret) -> Result<AppKey, String> {
        let text = text.expose().trim();
        let key = if text.starts_with("-----BEGIN") {
            RsaPrivateKey::from_pkcs8_pem(text)
                .or_else(|_| RsaPrivateKey::from_pkcs1_pem(text))
                .ok()
        } else {
            B64.decode(strip_whitespace(text)).ok().and_then(|der| {
                RsaPrivateKey::from_pkcs8_der(&der)
                    .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
                    .ok()
            })
        };
        key.map(|k| AppKey(SigningKey::new(k)))
            .ok_or_else(|| "not an RSA private key (PKCS#8 or PKCS#1, PEM or base64)".to_owned())
    }

    /// `base64(SHA256withRSA(content))`.
    pub(crate) fn sign(&self, content: &str) -> String {
        B64.encode(self.0.sign(content.as_bytes()).to_bytes())
    }
}

/// The Alipay public key.
#[derive(Clone)]
pub(crate) struct AlipayKey(VerifyingKey<Sha256>);

impl std::fmt::Debug for AlipayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlipayKey")
    }
}

impl AlipayKey {
    /// Reads an SPKI public key as PEM or bare base64 DER.
    pub(crate) fn new(text: &Secret) -> Result<AlipayKey, String> {
        let text = text.expose().trim();
        let key = if text.starts_with("-----BEGIN") {
            RsaPublicKey::from_public_key_pem(text).ok()
        } else {
            B64.decode(strip_whitespace(text))
                .ok()
                .and_then(|der| RsaPublicKey::from_public_key_der(&der).ok())
        };
        key.map(|k| AlipayKey(VerifyingKey::new(k)))
            .ok_or_else(|| "not an RSA public key (PEM or base64 DER)".to_owned())
    }

    /// Whether `signature` (base64) signs `content`.
    pub(crate) fn verify(&self, content: &[u8], signature: &str) -> bool {
        let Ok(raw) = B64.decode(strip_whitespace(signature)) else {
            return false;
        };
        let Ok(sig) = Signature::try_from(raw.as_slice()) else {
            return false;
        };
        self.0.verify(content, &sig).is_ok()
    }
}

fn strip_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The content Alipay signs: the parameters other than `skip`, with an empty value left out,
/// sorted by name, as `k=v` joined by `&` (values as they are, not URL-encoded).
pub(crate) fn content(params: &[(String, String)], skip: &[&str]) -> String {
    let mut kept: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(&k.as_str()))
        .collect();
    kept.sort();
    kept.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// China Standard Time is UTC+8, with no daylight saving.
const CST_OFFSET: i64 = 8 * 3600;

/// Unix seconds as Alipay writes time: `yyyy-MM-dd HH:mm:ss` in China Standard Time.
pub(crate) fn format_cst(unix: i64) -> String {
    let t = unix + CST_OFFSET;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Alipay's `yyyy-MM-dd HH:mm:ss` (China Standard Time) as Unix seconds.
pub(crate) fn parse_cst(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    if d.next().is_some()
        || t.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&min)
        || !(0..61).contains(&s)
    {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s - CST_OFFSET)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_time_both_ways() {
        // 2026-01-01 00:00:00 UTC is 08:00 in Beijing.
        assert_eq!(format_cst(1_767_225_600), "2026-01-01 08:00:00");
        assert_eq!(parse_cst("2026-01-01 08:00:00"), Some(1_767_225_600));
        assert_eq!(parse_cst("2024-02-29 23:59:59"), Some(1_709_222_399));
        assert_eq!(format_cst(1_709_222_399), "2024-02-29 23:59:59");
        assert_eq!(parse_cst("2026-13-01 08:00:00"), None);
        assert_eq!(parse_cst("yesterday"), None);
    }

    #[test]
    fn the_signed_content_is_sorted_and_skips_empty_values() {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let params = vec![
            p("sign", "x"),
            p("method", "alipay.trade.refund"),
            p("app_id", "2021"),
            p("empty", ""),
            p("sign_type", "RSA2"),
        ];
        assert_eq!(
            content(&params, &["sign"]),
            "app_id=2021&method=alipay.trade.refund&sign_type=RSA2"
        );
        assert_eq!(
            content(&params, &["sign", "sign_type"]),
            "app_id=2021&method=alipay.trade.refund"
        );
    }
}
