//! A business line's rule parameters, as its TOML config declares them.

use aftersales_money::Money;
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::CategoryId;
use crate::snapshot::LineFlag;

/// Basis points in a whole (100%).
pub const BASIS_POINTS: u32 = 10_000;

/// The after-sales rule parameters of one business line.
///
/// Filled from the business line's config; merchant timeouts and workflow choices live
/// elsewhere. Money is integer minor units plus a currency, never a float:
///
/// ```toml
/// no_reason_window_days = 7
/// non_returnable = ["unsealed", "custom_made", "perishable"]
/// excluded_categories = ["food.fresh"]
/// consumed_threshold_bp = 5000
/// return_shipping = { payer = "buyer_unless_merchant_fault", return_leg_fee = { minor = 1200, currency = "CNY" }, exchange_reship_fee = { minor = 800, currency = "CNY" } }
/// shipping_insurance = { mode = "on", payout = { minor = 1000, currency = "CNY" } }
/// restocking_fee = { kind = "basis_points", bp = 500 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleParams {
    /// Days after delivery (after payment for virtual goods) during which the buyer may
    /// return without a merchant fault. The window is `N × 24` hours long: day 8 of a 7-day
    /// window is out. Merchant-fault reasons are not bound by it.
    pub no_reason_window_days: u32,
    /// Lines carrying any of these flags cannot be returned or exchanged without a
    /// merchant fault ("no return once unsealed", custom-made, perishable).
    #[serde(default = "no_flags")]
    pub non_returnable: Vec<LineFlag>,
    /// Categories that cannot be returned or exchanged without a merchant fault.
    #[serde(default = "no_categories")]
    pub excluded_categories: Vec<CategoryId>,
    /// A course with more than this share of its lessons consumed (basis points of
    /// `lessons_total`) is not refunded for a buyer-side reason. `10000` means never.
    #[serde(default = "consumed_threshold_never")]
    pub consumed_threshold_bp: u32,
    /// Who pays the postage of returns and exchanges, and how much it is.
    pub return_shipping: ReturnShipping,
    /// Shipping insurance (运费险) that reimburses the buyer's return postage.
    #[serde(default = "insurance_off")]
    pub shipping_insurance: ShippingInsurance,
    /// A fee kept from buyer-side returns of physical goods.
    #[serde(default = "no_restocking_fee")]
    pub restocking_fee: RestockingFee,
}

fn no_flags() -> Vec<LineFlag> {
    Vec::new()
}

fn no_categories() -> Vec<CategoryId> {
    Vec::new()
}

fn consumed_threshold_never() -> u32 {
    BASIS_POINTS
}

fn insurance_off() -> ShippingInsurance {
    ShippingInsurance::Off
}

fn no_restocking_fee() -> RestockingFee {
    RestockingFee::None
}

/// Return and exchange postage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnShipping {
    /// Who pays.
    pub payer: ReturnShippingPayer,
    /// The postage of sending goods back (the return leg).
    pub return_leg_fee: Money,
    /// The postage of sending the replacement of an exchange.
    pub exchange_reship_fee: Money,
}

/// Who pays return postage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnShippingPayer {
    /// The buyer, unless the merchant is at fault (the common rule).
    BuyerUnlessMerchantFault,
    /// Always the merchant (free returns).
    Merchant,
}

/// Shipping insurance (运费险).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShippingInsurance {
    /// No insurance.
    Off,
    /// The insurer pays the buyer `payout` when the buyer bears a return leg.
    On {
        /// The fixed reimbursement per claim.
        payout: Money,
    },
}

/// A restocking fee kept from buyer-side returns of physical goods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RestockingFee {
    /// No fee.
    None,
    /// A share of the returned goods' refund, rounded down to the minor unit.
    BasisPoints {
        /// The share, in basis points (500 = 5%).
        bp: u32,
    },
    /// A fixed amount per service order, capped at the goods' refund.
    Fixed {
        /// The fee.
        amount: Money,
    },
}

impl RuleParams {
    /// Checks every parameter and reports every problem at once.
    pub fn validate(&self) -> Result<(), Vec<DomainError>> {
        let mut problems = Vec::new();
        if self.consumed_threshold_bp > BASIS_POINTS {
            problems.push(DomainError::InvalidParams {
                field: "consumed_threshold_bp",
                why: format!("{} is above 10000 (100%)", self.consumed_threshold_bp),
            });
        }
        let currency = self.return_shipping.return_leg_fee.currency;
        let mut amounts = vec![
            (
                "return_shipping.return_leg_fee",
                &self.return_shipping.return_leg_fee,
            ),
            (
                "return_shipping.exchange_reship_fee",
                &self.return_shipping.exchange_reship_fee,
            ),
        ];
        if let ShippingInsurance::On { payout } = &self.shipping_insurance {
            amounts.push(("shipping_insurance.payout", payout));
        }
        match &self.restocking_fee {
            RestockingFee::None => {}
            RestockingFee::BasisPoints { bp } => {
                if *bp > BASIS_POINTS {
                    problems.push(DomainError::InvalidParams {
                        field: "restocking_fee.bp",
                        why: format!("{bp} is above 10000 (100%)"),
                    });
                }
            }
            RestockingFee::Fixed { amount } => amounts.push(("restocking_fee.amount", amount)),
        }
        for (field, m) in amounts {
            if m.is_negative() {
                problems.push(DomainError::InvalidParams {
                    field,
                    why: format!("{m} is negative"),
                });
            } else if m.currency != currency {
                problems.push(DomainError::InvalidParams {
                    field,
                    why: format!("{m} is not in {currency} like the return leg fee"),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use aftersales_money::Currency;

    use super::*;

    const TOML: &str = r#"
no_reason_window_days = 7
non_returnable = ["unsealed", "custom_made", "perishable"]
excluded_categories = ["food.fresh"]
consumed_threshold_bp = 5000
return_shipping = { payer = "buyer_unless_merchant_fault", return_leg_fee = { minor = 1200, currency = "CNY" }, exchange_reship_fee = { minor = 800, currency = "CNY" } }
shipping_insurance = { mode = "on", payout = { minor = 1000, currency = "CNY" } }
restocking_fee = { kind = "basis_points", bp = 500 }
"#;

    #[test]
    fn reads_naturally_from_toml() {
        let p: RuleParams = toml::from_str(TOML).unwrap();
        assert_eq!(p.no_reason_window_days, 7);
        assert_eq!(
            p.non_returnable,
            [
                LineFlag::Unsealed,
                LineFlag::CustomMade,
                LineFlag::Perishable
            ]
        );
        assert_eq!(p.excluded_categories, [CategoryId::new("food.fresh")]);
        assert_eq!(p.consumed_threshold_bp, 5000);
        assert_eq!(
            p.return_shipping.payer,
            ReturnShippingPayer::BuyerUnlessMerchantFault
        );
        assert_eq!(
            p.shipping_insurance,
            ShippingInsurance::On {
                payout: Money::new(1000, Currency::CNY)
            }
        );
        assert_eq!(p.restocking_fee, RestockingFee::BasisPoints { bp: 500 });
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn optional_fields_default_and_unknown_fields_are_refused() {
        let minimal = r#"
no_reason_window_days = 7
return_shipping = { payer = "merchant", return_leg_fee = { minor = 0, currency = "JPY" }, exchange_reship_fee = { minor = 0, currency = "JPY" } }
"#;
        let p: RuleParams = toml::from_str(minimal).unwrap();
        assert_eq!(p.non_returnable, []);
        assert_eq!(p.consumed_threshold_bp, 10_000);
        assert_eq!(p.shipping_insurance, ShippingInsurance::Off);
        assert_eq!(p.restocking_fee, RestockingFee::None);

        let typo = format!("{minimal}no_reason_window_dayz = 7\n");
        let err = toml::from_str::<RuleParams>(&typo).unwrap_err();
        assert!(err.to_string().contains("no_reason_window_dayz"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut p: RuleParams = toml::from_str(TOML).unwrap();
        p.consumed_threshold_bp = 10_001;
        p.restocking_fee = RestockingFee::BasisPoints { bp: 20_000 };
        p.shipping_insurance = ShippingInsurance::On {
            payout: Money::new(-1, Currency::CNY),
        };
        let messages: Vec<String> = p
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            [
                "invalid rule parameter `consumed_threshold_bp`: 10001 is above 10000 (100%)",
                "invalid rule parameter `restocking_fee.bp`: 20000 is above 10000 (100%)",
                "invalid rule parameter `shipping_insurance.payout`: -0.01 CNY is negative",
            ]
        );
    }
}
