//! Newtype identifiers and the timestamp type.
//!
//! Every identifier that comes from another system (order, payment, SKU, entitlement) is an
//! opaque string: we never parse it, only compare and print it.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an identifier.
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_owned())
            }
        }
    };
}

string_id!(
    /// Identifies one after-sales service order (售后服务单).
    ServiceOrderId
);
string_id!(
    /// Identifies a business line, such as `apparel` or `courses`.
    BusinessLineId
);
string_id!(
    /// The order system's order identifier.
    OrderId
);
string_id!(
    /// The order system's identifier of one order line (SKU line or course line).
    LineId
);
string_id!(
    /// A stock-keeping unit: one sellable variant (size, colour) of an SPU.
    Sku
);
string_id!(
    /// A standard product unit: the product all its SKUs share. Exchanges stay inside one SPU.
    Spu
);
string_id!(
    /// A product category, such as `3c.phones` or `apparel.women`.
    CategoryId
);
string_id!(
    /// The payment system's identifier of the order's payment.
    PaymentId
);
string_id!(
    /// The fulfillment system's identifier of a granted entitlement (course access, membership).
    EntitlementId
);
string_id!(
    /// Identifies a course inside a virtual product.
    CourseId
);
string_id!(
    /// A reference to a piece of evidence (photo key, uploaded text) kept by another system.
    EvidenceRef
);
string_id!(
    /// The workflow instance that drives a service order, opaque to this crate.
    WorkflowInstanceId
);

/// Milliseconds since the Unix epoch, UTC.
///
/// Callers pass the current time in; nothing in this crate reads the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// Milliseconds in one day of 24 hours.
    pub const DAY: i64 = 86_400_000;

    /// The 1-based day number of `self` counted from `start`: the first 24 hours after `start`
    /// are day 1, the next 24 hours day 2, and so on. Instants before `start` count as day 1.
    pub fn day_number_since(self, start: UnixMillis) -> i64 {
        let elapsed = self.0.saturating_sub(start.0).max(0);
        elapsed / Self::DAY + 1
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = LineId::new("L1");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""L1""#);
        assert_eq!(format!("{id}"), "L1");
        assert_eq!(format!("{id:?}"), r#"LineId("L1")"#);
        let back: LineId = serde_json::from_str(r#""L1""#).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn day_numbers_count_whole_days_from_one() {
        let start = UnixMillis(1_000);
        assert_eq!(UnixMillis(1_000).day_number_since(start), 1);
        assert_eq!(
            UnixMillis(1_000 + UnixMillis::DAY - 1).day_number_since(start),
            1
        );
        assert_eq!(
            UnixMillis(1_000 + UnixMillis::DAY).day_number_since(start),
            2
        );
        assert_eq!(
            UnixMillis(1_000 + 8 * UnixMillis::DAY).day_number_since(start),
            9
        );
        assert_eq!(UnixMillis(0).day_number_since(start), 1);
    }
}
