//! Newtype ids, so a refund id is never passed where an order id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id as the platform spells it.
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            /// The id text.
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
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }
    )*};
}

id_type! {
    /// The platform's order id.
    OrderId,
    /// One line of an order.
    LineId,
    /// The after-sales service order id (ours).
    ServiceOrderId,
    /// A stock-keeping unit.
    Sku,
    /// A standard product unit: the product that groups SKUs (sizes, colours).
    Spu,
    /// The buyer.
    BuyerId,
    /// The payment that paid an order; refunds go against it.
    PaymentId,
    /// A refund at the payment platform.
    RefundId,
    /// A new charge at the payment platform.
    ChargeId,
    /// A shipping-insurance claim.
    ClaimId,
    /// A return (RMA) at the warehouse.
    RmaId,
    /// A return at the order system (Shopify's `Return` GID); not a warehouse RMA.
    ReturnId,
    /// A stock reservation at the warehouse.
    ReservationId,
    /// A parcel sent by the warehouse.
    ParcelId,
    /// An entitlement (course, membership) at the fulfillment system.
    EntitlementId,
}
