//! Money: an amount in integer minor units together with its ISO 4217 currency.
//!
//! Knows nothing about workflows, stores or platforms; every other aftersales crate that
//! touches an amount uses [`Money`]. There is no float anywhere: amounts are `i64` minor
//! units (fen, cents, yen), arithmetic is checked, and conversions to and from decimal
//! strings (Alipay's `"12.34"` yuan) are exact. Start at [`Money`] and [`Currency`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors from building or combining money values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The currency code is not three ASCII uppercase letters.
    #[error("invalid currency code `{0}`: expected three uppercase letters such as CNY or USD")]
    InvalidCurrency(String),
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch {
        /// The left-hand currency.
        left: Currency,
        /// The right-hand currency.
        right: Currency,
    },
    /// The result does not fit in an `i64` of minor units.
    #[error("amount overflow")]
    Overflow,
    /// A decimal string could not be read as an amount of this currency.
    #[error("invalid decimal amount `{text}` for {currency}: {why}")]
    InvalidDecimal {
        /// The text that was read.
        text: String,
        /// The currency it was read for.
        currency: Currency,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// An ISO 4217 currency code, such as `CNY`, `USD` or `JPY`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Chinese yuan renminbi.
    pub const CNY: Currency = Currency(*b"CNY");
    /// US dollar.
    pub const USD: Currency = Currency(*b"USD");
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency(*b"JPY");

    /// Parses a three-letter uppercase code.
    pub fn new(code: &str) -> Result<Currency, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(MoneyError::InvalidCurrency(code.to_owned()))
        }
    }

    /// The code as a string slice.
    pub fn code(&self) -> &str {
        // The constructor only admits ASCII uppercase letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of decimal digits of the minor unit (2 for CNY and USD, 0 for JPY, 3 for BHD).
    ///
    /// Follows ISO 4217 and the zero-decimal list of card processors such as Stripe.
    pub fn exponent(&self) -> u32 {
        match &self.0 {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }

    /// True when the currency has no minor unit (1 unit = 1 minor unit).
    pub fn is_zero_decimal(&self) -> bool {
        self.exponent() == 0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::new(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::new(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: integer minor units and a currency.
///
/// `Money { minor: 1234, currency: CNY }` is ¥12.34. Arithmetic is checked and refuses
/// to mix currencies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount in the currency's minor unit (fen, cents; yen for JPY).
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Builds an amount from minor units.
    pub const fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Zero in the given currency.
    pub const fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// True when the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    /// True when the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.minor < 0
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    /// `self + other`, refusing overflow and mixed currencies.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// `self - other`, refusing overflow and mixed currencies.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// `self * factor`, refusing overflow.
    pub fn checked_mul(&self, factor: i64) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_mul(factor).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// Compares two amounts of the same currency.
    pub fn checked_cmp(&self, other: &Money) -> Result<std::cmp::Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.minor.cmp(&other.minor))
    }

    /// The sum of several amounts, all in `currency`.
    pub fn sum<'a>(
        currency: Currency,
        items: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        items
            .into_iter()
            .try_fold(Money::zero(currency), |acc, m| acc.checked_add(m))
    }

    /// The amount as a decimal string in major units with exactly the currency's number of
    /// decimals: `1234 CNY` → `"12.34"`, `500 JPY` → `"500"`, `-5 USD` → `"-0.05"`.
    pub fn to_decimal_string(&self) -> String {
        let exp = self.currency.exponent();
        if exp == 0 {
            return self.minor.to_string();
        }
        let scale = 10u64.pow(exp);
        let abs = self.minor.unsigned_abs();
        let sign = if self.minor < 0 { "-" } else { "" };
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = exp as usize
        )
    }

    /// Reads a decimal string in major units (`"12.34"`, `"12.3"`, `"12"`) exactly.
    ///
    /// More decimals than the currency has, signs other than a leading `-`, exponents and
    /// anything that is not a plain decimal number are refused.
    pub fn from_decimal_str(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let bad = |why: &'static str| MoneyError::InvalidDecimal {
            text: text.to_owned(),
            currency,
            why,
        };
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected digits before the decimal point"));
        }
        if body.contains('.') && frac_part.is_empty() {
            return Err(bad("expected digits after the decimal point"));
        }
        if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected digits after the decimal point"));
        }
        let exp = currency.exponent() as usize;
        if frac_part.len() > exp {
            return Err(bad("more decimals than the currency's minor unit"));
        }
        let scale = 10i64.pow(exp as u32);
        let int: i64 = int_part.parse().map_err(|_| bad("amount too large"))?;
        let mut frac: i64 = if frac_part.is_empty() {
            0
        } else {
            frac_part.parse().map_err(|_| bad("amount too large"))?
        };
        frac *= 10i64.pow((exp - frac_part.len()) as u32);
        let magnitude = int
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac))
            .ok_or_else(|| bad("amount too large"))?;
        Ok(Money::new(
            if negative { -magnitude } else { magnitude },
            currency,
        ))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cny(minor: i64) -> Money {
        Money::new(minor, Currency::CNY)
    }

    #[test]
    fn decimal_strings_render_exactly() {
        assert_eq!(cny(1234).to_decimal_string(), "12.34");
        assert_eq!(cny(5).to_decimal_string(), "0.05");
        assert_eq!(cny(-5).to_decimal_string(), "-0.05");
        assert_eq!(Money::new(500, Currency::JPY).to_decimal_string(), "500");
        let bhd = Currency::new("BHD").unwrap();
        assert_eq!(Money::new(1005, bhd).to_decimal_string(), "1.005");
        assert_eq!(cny(1234).to_string(), "12.34 CNY");
    }

    #[test]
    fn decimal_strings_parse_exactly() {
        assert_eq!(
            Money::from_decimal_str("12.34", Currency::CNY).unwrap(),
            cny(1234)
        );
        assert_eq!(
            Money::from_decimal_str("12.3", Currency::CNY).unwrap(),
            cny(1230)
        );
        assert_eq!(
            Money::from_decimal_str("12", Currency::CNY).unwrap(),
            cny(1200)
        );
        assert_eq!(
            Money::from_decimal_str("-0.01", Currency::CNY).unwrap(),
            cny(-1)
        );
        assert_eq!(
            Money::from_decimal_str("500", Currency::JPY).unwrap(),
            Money::new(500, Currency::JPY)
        );
    }

    #[test]
    fn bad_decimal_strings_are_refused_with_a_reason() {
        for text in [
            "",
            ".5",
            "1.",
            "1.234",
            "1e3",
            "+1",
            "1,00",
            "abc",
            "99999999999999999999",
        ] {
            let err = Money::from_decimal_str(text, Currency::CNY).unwrap_err();
            assert!(
                matches!(err, MoneyError::InvalidDecimal { .. }),
                "{text}: {err}"
            );
        }
        assert_eq!(
            Money::from_decimal_str("1.5", Currency::JPY)
                .unwrap_err()
                .to_string(),
            "invalid decimal amount `1.5` for JPY: more decimals than the currency's minor unit"
        );
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies_and_overflow() {
        let usd = Money::new(1, Currency::USD);
        assert!(matches!(
            cny(1).checked_add(&usd),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            cny(i64::MAX).checked_add(&cny(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(cny(3).checked_sub(&cny(5)).unwrap(), cny(-2));
        assert_eq!(
            Money::sum(Currency::CNY, &[cny(1), cny(2)]).unwrap(),
            cny(3)
        );
    }

    #[test]
    fn currency_codes_are_validated() {
        assert!(Currency::new("cny").is_err());
        assert!(Currency::new("CN").is_err());
        assert_eq!(Currency::new("CNY").unwrap(), Currency::CNY);
        assert!(Currency::JPY.is_zero_decimal());
    }

    #[test]
    fn serde_uses_minor_units_and_code() {
        let json = serde_json::to_string(&cny(1234)).unwrap();
        assert_eq!(json, r#"{"minor":1234,"currency":"CNY"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cny(1234));
        assert!(serde_json::from_str::<Money>(r#"{"minor":1,"currency":"xx"}"#).is_err());
    }

    proptest! {
        #[test]
        fn decimal_round_trip(minor in any::<i64>().prop_filter("not MIN", |m| *m != i64::MIN),
                              code in prop::sample::select(vec!["CNY", "JPY", "BHD", "USD"])) {
            let currency = Currency::new(code).unwrap();
            let m = Money::new(minor, currency);
            prop_assert_eq!(Money::from_decimal_str(&m.to_decimal_string(), currency).unwrap(), m);
        }
    }
}
