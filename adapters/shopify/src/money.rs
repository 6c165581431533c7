//! Shopify's money, exactly: `MoneyV2 { amount: Decimal, currencyCode }` where the amount is a
//! decimal string in major units (`"12.50"`, and often `"12.5"` or `"1000.0"` even for a
//! currency without minor units), converted to and from integer minor units with
//! `aftersales_money`, never through a float.

use aftersales_money::{Currency, Money, MoneyError};

/// Reads Shopify's `amount` in `currency_code` as minor units.
///
/// Trailing zeros beyond the currency's minor unit are dropped (`"1000.0"` JPY is 1000
/// yen); any other extra digit is refused, since it cannot be represented exactly.
pub(crate) fn from_shopify(amount: &str, currency_code: &str) -> Result<Money, MoneyError> {
    let currency = Currency::new(currency_code)?;
    let text = amount.trim();
    let trimmed = match text.split_once('.') {
        Some((int, frac)) => {
            let exp = currency.exponent() as usize;
            let keep = frac.trim_end_matches('0').len().max(exp.min(frac.len()));
            let frac = &frac[..keep];
            if frac.is_empty() {
                int.to_owned()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => text.to_owned(),
    };
    Money::from_decimal_str(&trimmed, currency)
}

/// Writes minor units as Shopify's decimal string (`"12.50"`, `"1000"`).
pub(crate) fn to_shopify(money: &Money) -> String {
    money.to_decimal_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(minor: i64, code: &str) -> Money {
        Money::new(minor, Currency::new(code).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn reads_shopify_decimals_exactly() {
        assert_eq!(from_shopify("12.50", "USD").ok(), Some(m(1250, "USD")));
        assert_eq!(from_shopify("12.5", "USD").ok(), Some(m(1250, "USD")));
        assert_eq!(from_shopify("12", "USD").ok(), Some(m(1200, "USD")));
        assert_eq!(from_shopify("0.0", "USD").ok(), Some(m(0, "USD")));
        assert_eq!(from_shopify("0.01", "EUR").ok(), Some(m(1, "EUR")));
        // A float would make 0.1 + 0.2 wrong; decimals never are.
        assert_eq!(from_shopify("19.99", "USD").ok(), Some(m(1999, "USD")));
        assert_eq!(
            from_shopify("99999999.99", "USD").ok(),
            Some(m(9_999_999_999, "USD"))
        );
        // Zero-decimal currencies arrive with a `.0`.
        assert_eq!(from_shopify("1000.0", "JPY").ok(), Some(m(1000, "JPY")));
        assert_eq!(from_shopify("1000", "JPY").ok(), Some(m(1000, "JPY")));
        // Three-decimal currencies keep all three.
        assert_eq!(from_shopify("1.250", "KWD").ok(), Some(m(1250, "KWD")));
        assert_eq!(from_shopify("1.25", "KWD").ok(), Some(m(1250, "KWD")));
    }

    #[test]
    fn refuses_what_cannot_be_exact() {
        assert!(from_shopify("12.345", "USD").is_err());
        assert!(from_shopify("1000.5", "JPY").is_err());
        assert!(from_shopify("1e3", "USD").is_err());
        assert!(from_shopify("", "USD").is_err());
        assert!(from_shopify("12.00", "usd!").is_err());
        assert!(from_shopify("NaN", "USD").is_err());
    }

    #[test]
    fn writes_what_shopify_reads() {
        assert_eq!(to_shopify(&m(1250, "USD")), "12.50");
        assert_eq!(to_shopify(&m(5, "USD")), "0.05");
        assert_eq!(to_shopify(&m(1000, "JPY")), "1000");
        assert_eq!(to_shopify(&m(1250, "KWD")), "1.250");
        for minor in [0, 1, 99, 100, 12_345, 9_999_999_999] {
            let usd = m(minor, "USD");
            assert_eq!(from_shopify(&to_shopify(&usd), "USD").ok(), Some(usd));
        }
    }
}
