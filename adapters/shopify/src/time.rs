//! RFC 3339 timestamps (`2026-11-20T14:02:11Z`, `2026-11-20T09:02:11-05:00`,
//! `2026-11-20T14:02:11.250Z`) as Unix milliseconds, as Shopify writes `DateTime`.

/// Unix milliseconds of an RFC 3339 timestamp, or `None` when it is not one.
pub(crate) fn unix_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = text.get(from..to)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut ms = String::from(&frac[..digits.min(3)]);
        while ms.len() < 3 {
            ms.push('0');
        }
        millis = ms.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = rest.as_bytes();
            if r.len() != 6 || r[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rfc3339() {
        assert_eq!(unix_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_ms("2026-01-01T00:00:00Z"), Some(1_767_225_600_000));
        assert_eq!(unix_ms("2025-11-24T16:00:00Z"), Some(1_764_000_000_000));
        assert_eq!(
            unix_ms("2025-11-24T11:00:00-05:00"),
            Some(1_764_000_000_000)
        );
        assert_eq!(unix_ms("2025-11-24T16:00:00.25Z"), Some(1_764_000_000_250));
        assert_eq!(unix_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(unix_ms("2025-11-24"), None);
        assert_eq!(unix_ms("2025-13-24T16:00:00Z"), None);
        assert_eq!(unix_ms("2025-11-24T16:00:00"), None);
        assert_eq!(unix_ms("yesterday at noon please"), None);
    }
}
