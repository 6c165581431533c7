//! Exact conversion between our [`Money`] (ISO 4217 minor units) and Stripe's `amount`
//! integers, which follow Stripe's own currency table rather than ISO 4217 in a few places:
//!
//! | currencies | Stripe's unit | note |
//! | --- | --- | --- |
//! | BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF | whole units | zero-decimal; MGA is two-decimal in ISO 4217, so only whole ariary convert |
//! | BHD JOD KWD OMR TND | thousandths | the last digit must be 0 |
//! | ISK | hundredths | zero-decimal in ISO 4217, two-decimal in Stripe's API (whole krónur only) |
//! | everything else | hundredths | |
//!
//! No float anywhere: a conversion that would lose a fraction is refused, never rounded.

use aftersales_money::{Currency, Money};

/// Why an amount cannot be sent to (or read from) Stripe exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AmountError {
    /// Refunds are positive.
    #[error("the amount {0} is not positive")]
    NotPositive(Money),
    /// The amount has a fraction Stripe's unit cannot carry.
    #[error("{0} cannot be expressed exactly in Stripe's unit for {1}")]
    Inexact(Money, Currency),
    /// Stripe requires three-decimal amounts to end in 0.
    #[error("{0}: Stripe needs three-decimal amounts rounded to the nearest ten")]
    NotRoundTen(Money),
    /// The amount does not fit.
    #[error("the amount overflows")]
    Overflow,
    /// Stripe named a currency that is not an ISO code.
    #[error("unknown currency `{0}`")]
    Currency(String),
}

/// The number of decimals in Stripe's `amount` for a currency.
pub(crate) fn stripe_exponent(currency: Currency) -> u32 {
    match currency.code() {
        "BIF" | "CLP" | "DJF" | "GNF" | "JPY" | "KMF" | "KRW" | "MGA" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Our money as Stripe's `amount` integer, exactly.
pub(crate) fn to_stripe(money: &Money) -> Result<i64, AmountError> {
    if money.minor <= 0 {
        return Err(AmountError::NotPositive(*money));
    }
    let ours = money.currency.exponent();
    let theirs = stripe_exponent(money.currency);
    let amount = if theirs >= ours {
        money
            .minor
            .checked_mul(10i64.pow(theirs - ours))
            .ok_or(AmountError::Overflow)?
    } else {
        let factor = 10i64.pow(ours - theirs);
        if money.minor % factor != 0 {
            return Err(AmountError::Inexact(*money, money.currency));
        }
        money.minor / factor
    };
    if theirs == 3 && amount % 10 != 0 {
        return Err(AmountError::NotRoundTen(*money));
    }
    Ok(amount)
}

/// Stripe's `amount` and lowercase `currency` as our money, exactly.
pub(crate) fn from_stripe(amount: i64, currency: &str) -> Result<Money, AmountError> {
    let currency = Currency::new(&currency.to_ascii_uppercase())
        .map_err(|_| AmountError::Currency(currency.to_owned()))?;
    let ours = currency.exponent();
    let theirs = stripe_exponent(currency);
    let minor = if ours >= theirs {
        amount
            .checked_mul(10i64.pow(ours - theirs))
            .ok_or(AmountError::Overflow)?
    } else {
        let factor = 10i64.pow(theirs - ours);
        if amount % factor != 0 {
            return Err(AmountError::Inexact(Money::new(amount, currency), currency));
        }
        amount / factor
    };
    Ok(Money::new(minor, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(minor: i64, code: &str) -> Money {
        Money::new(minor, Currency::new(code).unwrap())
    }

    #[test]
    fn two_decimal_currencies_pass_unchanged() {
        assert_eq!(to_stripe(&m(1, "USD")), Ok(1));
        assert_eq!(to_stripe(&m(1234, "CNY")), Ok(1234));
        assert_eq!(from_stripe(1234, "eur"), Ok(m(1234, "EUR")));
    }

    #[test]
    fn zero_decimal_currencies_are_whole_units() {
        assert_eq!(to_stripe(&m(500, "JPY")), Ok(500));
        assert_eq!(to_stripe(&m(1, "KRW")), Ok(1));
        assert_eq!(from_stripe(500, "jpy"), Ok(m(500, "JPY")));
        // MGA has two decimals in ISO 4217 but none at Stripe.
        assert_eq!(to_stripe(&m(12_300, "MGA")), Ok(123));
        assert_eq!(
            to_stripe(&m(12_345, "MGA")),
            Err(AmountError::Inexact(
                m(12_345, "MGA"),
                Currency::new("MGA").unwrap()
            ))
        );
        assert_eq!(from_stripe(123, "mga"), Ok(m(12_300, "MGA")));
    }

    #[test]
    fn isk_is_sent_in_hundredths() {
        assert_eq!(to_stripe(&m(5, "ISK")), Ok(500));
        assert_eq!(from_stripe(500, "isk"), Ok(m(5, "ISK")));
        assert!(from_stripe(550, "isk").is_err());
    }

    #[test]
    fn three_decimal_currencies_end_in_zero() {
        assert_eq!(to_stripe(&m(5_120, "KWD")), Ok(5_120));
        assert_eq!(
            to_stripe(&m(5_124, "KWD")),
            Err(AmountError::NotRoundTen(m(5_124, "KWD")))
        );
    }

    #[test]
    fn refuses_what_is_not_a_refund() {
        assert!(matches!(
            to_stripe(&m(0, "USD")),
            Err(AmountError::NotPositive(_))
        ));
        assert!(matches!(
            to_stripe(&m(-5, "USD")),
            Err(AmountError::NotPositive(_))
        ));
        assert_eq!(to_stripe(&m(i64::MAX, "ISK")), Err(AmountError::Overflow));
        assert!(from_stripe(1, "us").is_err());
    }
}
