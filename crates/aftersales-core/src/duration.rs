//! Durations as written in files: `"500ms"`, `"30s"`, `"10m"`, `"48h"`, `"7d"`, `"1h30m"`.

use std::time::Duration;

/// Parses a duration; the error says what is wrong, for a diagnostic.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let (num, tail) = rest.split_at(digits);
        let n: u64 = num.parse().map_err(|_| "number too large".to_owned())?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{num}` has no unit (use ms, s, m, h or d)")),
            other => return Err(format!("unknown unit `{other}` (use ms, s, m, h or d)")),
        };
        total = n
            .checked_mul(ms_per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration too large".to_owned())?;
        rest = tail;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way [`parse`] reads it, largest units first.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= per {
            out.push_str(&format!("{}{unit}", ms / per));
            ms %= per;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("48h").unwrap(), Duration::from_secs(48 * 3600));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        assert_eq!(parse("").unwrap_err(), "empty duration");
        assert_eq!(
            parse("10").unwrap_err(),
            "`10` has no unit (use ms, s, m, h or d)"
        );
        assert_eq!(
            parse("2w").unwrap_err(),
            "unknown unit `w` (use ms, s, m, h or d)"
        );
        assert!(parse("h").is_err());
        assert!(parse("99999999999999999999d").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["500ms", "7d", "1h30m", "1d2h3m4s5ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format(parse("48h").unwrap()), "2d");
        assert_eq!(
            parse(&format(Duration::from_millis(90_061_001))).unwrap(),
            Duration::from_millis(90_061_001)
        );
    }
}
