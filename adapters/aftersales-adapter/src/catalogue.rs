//! The action catalogue: every `system.action` that a workflow step may call, with its
//! declared input and output fields.
//!
//! The workflow validator reads this list (through the binary, which converts it to the
//! engine's own catalogue type), so a workflow that calls an unknown action, forgets a
//! required input or passes a literal of the wrong type is refused before it runs.

/// The external systems an action can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum System {
    /// The order system (order lines, after-sales marks, refund reconciliation, platform-side
    /// returns and cancellation).
    Order,
    /// The warehouse / WMS (interception, returns, inspection, replacement shipments).
    Warehouse,
    /// The fulfillment / entitlement system for virtual goods.
    Fulfillment,
    /// The payment system (refunds and their status).
    Payment,
    /// Notifications to buyers, merchants and agents.
    Notify,
}

impl System {
    /// Every system, in catalogue order.
    pub const ALL: [System; 5] = [
        System::Order,
        System::Warehouse,
        System::Fulfillment,
        System::Payment,
        System::Notify,
    ];

    /// The name used in workflow files (`order`, `warehouse`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            System::Order => "order",
            System::Warehouse => "warehouse",
            System::Fulfillment => "fulfillment",
            System::Payment => "payment",
            System::Notify => "notify",
        }
    }
}

/// The type of a field in an action's input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// A 64-bit signed integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// An amount: `{ minor = 1234, currency = "CNY" }`.
    Money,
    /// An RFC 3339 instant.
    Timestamp,
    /// A list of values.
    List,
    /// A key/value object.
    Object,
    /// Any JSON value; not checked statically.
    Any,
}

/// One declared input or output field of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field name.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// Inputs: must be given. Outputs: always present.
    pub required: bool,
    /// One line saying what it holds.
    pub doc: &'static str,
}

/// One action of one system, as a workflow sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    /// The system it belongs to.
    pub system: System,
    /// The action name inside the system (`refund` in `payment.refund`).
    pub name: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// True when the action changes state at the platform; such calls carry the engine's
    /// idempotency key.
    pub mutating: bool,
    /// The declared inputs.
    pub inputs: &'static [FieldSpec],
    /// The declared outputs.
    pub outputs: &'static [FieldSpec],
}

impl ActionSpec {
    /// The full name used in workflow files: `system.action`.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.system.as_str(), self.name)
    }

    /// The full name as a static string, for capability sets and errors.
    pub fn full_name_static(&self) -> &'static str {
        FULL_NAMES
            .iter()
            .find(|n| {
                n.split_once('.')
                    .is_some_and(|(s, a)| s == self.system.as_str() && a == self.name)
            })
            .copied()
            .unwrap_or("unknown.action")
    }
}

/// Every catalogue action's full name; a unit test keeps it in step with [`CATALOGUE`].
static FULL_NAMES: &[&str] = &[
    "order.get",
    "order.mark_after_sales",
    "order.clear_after_sales",
    "order.report_refund",
    "order.close_after_sales",
    "order.request_return",
    "order.approve_return",
    "order.decline_return",
    "order.cancel",
    "warehouse.intercept_shipment",
    "warehouse.carrier_intercept",
    "warehouse.create_return",
    "warehouse.cancel_return",
    "warehouse.restock",
    "warehouse.reverse_restock",
    "warehouse.return_to_buyer",
    "warehouse.reserve_stock",
    "warehouse.release_stock",
    "warehouse.ship_replacement",
    "fulfillment.get_consumption",
    "fulfillment.revoke",
    "fulfillment.regrant",
    "fulfillment.grant",
    "payment.refund",
    "payment.refund_status",
    "payment.charge",
    "payment.insurance_claim",
    "notify.send",
];

const fn req(name: &'static str, ty: FieldType, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: true,
        doc,
    }
}

const fn opt(name: &'static str, ty: FieldType, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: false,
        doc,
    }
}

use FieldType as T;

const ORDER_ID: FieldSpec = req("order_id", T::String, "the platform's order id");
const SERVICE_ORDER_ID: FieldSpec = req(
    "service_order_id",
    T::String,
    "the after-sales service order id",
);
const LINES: FieldSpec = req(
    "lines",
    T::List,
    "order lines concerned: [{ line_id, sku, quantity }]",
);

static CATALOGUE: &[ActionSpec] = &[
    // ---- order system ----
    ActionSpec {
        system: System::Order,
        name: "get",
        summary: "read an order: its lines, amounts paid and shipping state",
        mutating: false,
        inputs: &[ORDER_ID],
        outputs: &[
            req(
                "status",
                T::String,
                "paid | shipped | delivered | completed | cancelled",
            ),
            req(
                "lines",
                T::List,
                "the order lines: [{ line_id, sku, spu, quantity, unit_price, paid, entitlement_id?, line_discount?, category?, flags?, course_id? }]",
            ),
            req("paid", T::Money, "the amount paid for the whole order"),
            req("shipping_fee", T::Money, "the shipping fee paid"),
            req("payment_id", T::String, "the payment to refund against"),
            opt(
                "buyer_id",
                T::String,
                "the buyer, when the order system tells",
            ),
            opt(
                "shipment",
                T::String,
                "not_shipped | picked | shipped | delivered, when known",
            ),
            opt(
                "coupon",
                T::Money,
                "the order-level coupon, when reported apart from the lines",
            ),
            opt("paid_at", T::Int, "when it was paid, Unix milliseconds"),
            opt(
                "shipped_at",
                T::Int,
                "when it was handed to the carrier, Unix milliseconds",
            ),
            opt(
                "delivered_at",
                T::Int,
                "when the buyer signed for it, Unix milliseconds",
            ),
        ],
    },
    ActionSpec {
        system: System::Order,
        name: "mark_after_sales",
        summary: "tell the order system that lines are under after-sales",
        mutating: true,
        inputs: &[ORDER_ID, SERVICE_ORDER_ID, LINES],
        outputs: &[],
    },
    ActionSpec {
        system: System::Order,
        name: "clear_after_sales",
        summary: "lift the after-sales mark (compensation of mark_after_sales)",
        mutating: true,
        inputs: &[ORDER_ID, SERVICE_ORDER_ID],
        outputs: &[],
    },
    ActionSpec {
        system: System::Order,
        name: "report_refund",
        summary: "report a paid refund back to the order so it reconciles its state",
        mutating: true,
        inputs: &[
            ORDER_ID,
            SERVICE_ORDER_ID,
            req("amount", T::Money, "the amount refunded"),
            req("refund_id", T::String, "the payment system's refund id"),
        ],
        outputs: &[],
    },
    ActionSpec {
        system: System::Order,
        name: "close_after_sales",
        summary: "report the final outcome of a service order to the order system",
        mutating: true,
        inputs: &[
            ORDER_ID,
            SERVICE_ORDER_ID,
            req(
                "outcome",
                T::String,
                "completed | rejected | closed | failed",
            ),
            opt("reason", T::String, "why, for people"),
        ],
        outputs: &[],
    },
    ActionSpec {
        system: System::Order,
        name: "request_return",
        summary: "open a return request on the order system (awaiting the merchant's decision there)",
        mutating: true,
        inputs: &[
            ORDER_ID,
            SERVICE_ORDER_ID,
            LINES,
            opt(
                "reason",
                T::String,
                "why the buyer returns, shown to the merchant where the platform supports it",
            ),
        ],
        outputs: &[req("return_id", T::String, "the platform's return id")],
    },
    ActionSpec {
        system: System::Order,
        name: "approve_return",
        summary: "approve a requested return",
        mutating: true,
        inputs: &[
            req("return_id", T::String, "the return to approve"),
            SERVICE_ORDER_ID,
        ],
        outputs: &[],
    },
    ActionSpec {
        system: System::Order,
        name: "decline_return",
        summary: "decline a requested return (also the compensation of request_return)",
        mutating: true,
        inputs: &[
            req("return_id", T::String, "the return to decline"),
            SERVICE_ORDER_ID,
            opt(
                "reason",
                T::String,
                "why, sent to the buyer where the platform supports it",
            ),
        ],
        outputs: &[],
    },
    ActionSpec {
        system: System::Order,
        name: "cancel",
        summary: "cancel the order on the order system (no money moves: the payment adapter refunds)",
        mutating: true,
        inputs: &[
            ORDER_ID,
            SERVICE_ORDER_ID,
            opt("reason", T::String, "why, for people"),
        ],
        outputs: &[],
    },
    // ---- warehouse / WMS ----
    ActionSpec {
        system: System::Warehouse,
        name: "intercept_shipment",
        summary: "ask the warehouse to stop a shipment that has not left yet",
        mutating: true,
        inputs: &[ORDER_ID, SERVICE_ORDER_ID, LINES],
        outputs: &[req(
            "result",
            T::String,
            "intercepted | too_late | already_returned",
        )],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "carrier_intercept",
        summary: "ask the carrier to bring a parcel in transit back",
        mutating: true,
        inputs: &[ORDER_ID, SERVICE_ORDER_ID],
        outputs: &[req("result", T::String, "intercepted | failed")],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "create_return",
        summary: "open a return (RMA) that the warehouse expects to receive",
        mutating: true,
        inputs: &[
            ORDER_ID,
            SERVICE_ORDER_ID,
            LINES,
            opt("pickup", T::Bool, "book a door-to-door pickup"),
        ],
        outputs: &[req("rma_id", T::String, "the warehouse's return id")],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "cancel_return",
        summary: "cancel a return that has not arrived (compensation of create_return)",
        mutating: true,
        inputs: &[req("rma_id", T::String, "the return to cancel")],
        outputs: &[],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "restock",
        summary: "put inspected returned goods back into sellable stock",
        mutating: true,
        inputs: &[req("rma_id", T::String, "the received return")],
        outputs: &[],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "reverse_restock",
        summary: "take restocked goods out of sellable stock again (compensation of restock)",
        mutating: true,
        inputs: &[req("rma_id", T::String, "the received return")],
        outputs: &[],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "return_to_buyer",
        summary: "send goods that failed inspection back to the buyer",
        mutating: true,
        inputs: &[req("rma_id", T::String, "the received return")],
        outputs: &[req("parcel_id", T::String, "the parcel sent back")],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "reserve_stock",
        summary: "reserve stock for a replacement item",
        mutating: true,
        inputs: &[
            req("sku", T::String, "the SKU to reserve"),
            req("quantity", T::Int, "how many units"),
        ],
        outputs: &[
            req("reserved", T::Bool, "false when out of stock"),
            opt("reservation_id", T::String, "present when reserved"),
        ],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "release_stock",
        summary: "release a stock reservation (compensation of reserve_stock)",
        mutating: true,
        inputs: &[req("reservation_id", T::String, "the reservation")],
        outputs: &[],
    },
    ActionSpec {
        system: System::Warehouse,
        name: "ship_replacement",
        summary: "ship a reserved replacement item to the buyer",
        mutating: true,
        inputs: &[
            ORDER_ID,
            SERVICE_ORDER_ID,
            req("reservation_id", T::String, "the reservation to ship"),
        ],
        outputs: &[req("parcel_id", T::String, "the outgoing parcel")],
    },
    // ---- fulfillment / entitlements ----
    ActionSpec {
        system: System::Fulfillment,
        name: "get_consumption",
        summary: "read how much of an entitlement was used (lessons watched, days used)",
        mutating: false,
        inputs: &[req("entitlement_id", T::String, "the entitlement")],
        outputs: &[
            req("consumed", T::Int, "units used"),
            req("total", T::Int, "units bought"),
            req(
                "active",
                T::Bool,
                "whether the entitlement is still granted",
            ),
        ],
    },
    ActionSpec {
        system: System::Fulfillment,
        name: "revoke",
        summary: "revoke an entitlement (fully, or some units)",
        mutating: true,
        inputs: &[
            req("entitlement_id", T::String, "the entitlement"),
            opt("units", T::Int, "units to revoke; all when absent"),
        ],
        outputs: &[],
    },
    ActionSpec {
        system: System::Fulfillment,
        name: "regrant",
        summary: "restore a revoked entitlement (compensation of revoke)",
        mutating: true,
        inputs: &[req("entitlement_id", T::String, "the entitlement")],
        outputs: &[],
    },
    ActionSpec {
        system: System::Fulfillment,
        name: "grant",
        summary: "grant a new entitlement (virtual exchange)",
        mutating: true,
        inputs: &[
            req("buyer_id", T::String, "who receives it"),
            req("sku", T::String, "what is granted"),
        ],
        outputs: &[req("entitlement_id", T::String, "the new entitlement")],
    },
    // ---- payment ----
    ActionSpec {
        system: System::Payment,
        name: "refund",
        summary: "refund an amount against a payment; may answer pending",
        mutating: true,
        inputs: &[
            req("payment_id", T::String, "the payment to refund"),
            req("amount", T::Money, "the amount to refund"),
            opt(
                "reason",
                T::String,
                "shown to the buyer where the platform supports it",
            ),
            opt(
                "service_order_id",
                T::String,
                "the service order paying it, sent as metadata where supported",
            ),
        ],
        outputs: &[
            req("refund_id", T::String, "the platform's refund id"),
            req("status", T::String, "succeeded | pending"),
        ],
    },
    ActionSpec {
        system: System::Payment,
        name: "refund_status",
        summary: "query the state of a refund",
        mutating: false,
        inputs: &[
            opt(
                "refund_id",
                T::String,
                "the refund; or give payment_id and request_key",
            ),
            opt(
                "payment_id",
                T::String,
                "the payment, to look a refund up by its key",
            ),
            opt(
                "request_key",
                T::String,
                "the idempotency key of the refund call (after an unknown outcome)",
            ),
        ],
        outputs: &[
            req(
                "status",
                T::String,
                "pending | requires_action | succeeded | failed | canceled | not_found",
            ),
            opt("refund_id", T::String, "the refund; absent when not_found"),
        ],
    },
    ActionSpec {
        system: System::Payment,
        name: "charge",
        summary: "charge the buyer an amount (exchange shipping paid by the buyer)",
        mutating: true,
        inputs: &[
            req(
                "payment_id",
                T::String,
                "the original payment, for the payment method",
            ),
            req("amount", T::Money, "the amount to charge"),
            opt("reason", T::String, "shown to the buyer"),
            opt(
                "service_order_id",
                T::String,
                "the service order charging it",
            ),
        ],
        outputs: &[req("charge_id", T::String, "the new charge")],
    },
    ActionSpec {
        system: System::Payment,
        name: "insurance_claim",
        summary: "claim shipping insurance (运费险) that reimburses the buyer's return postage",
        mutating: true,
        inputs: &[
            ORDER_ID,
            SERVICE_ORDER_ID,
            req("amount", T::Money, "the postage to reimburse"),
        ],
        outputs: &[req("claim_id", T::String, "the insurer's claim id")],
    },
    // ---- notifications ----
    ActionSpec {
        system: System::Notify,
        name: "send",
        summary: "send a message to the buyer, the merchant or an agent",
        mutating: true,
        inputs: &[
            req("to", T::String, "buyer | merchant | agent"),
            req("template", T::String, "the message template"),
            opt("data", T::Object, "values for the template"),
        ],
        outputs: &[],
    },
];

/// One inbound event (webhook or poll result) a workflow may wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// The event name (`payment.refund.succeeded`).
    pub name: &'static str,
    /// The id the event is correlated by (`refund_id`), also a payload field.
    pub correlation: &'static str,
    /// One line saying when it arrives.
    pub summary: &'static str,
    /// The payload fields the event carries.
    pub payload: &'static [FieldSpec],
}

const REFUND_EVENT: &[FieldSpec] = &[
    req("refund_id", T::String, "the refund"),
    req("payment_id", T::String, "the payment refunded"),
    opt(
        "service_order_id",
        T::String,
        "the service order, when the refund named it",
    ),
    req("amount", T::Money, "the amount refunded"),
    req("status", T::String, "succeeded | failed | canceled"),
];

const RETURN_EVENT: &[FieldSpec] = &[
    req("rma_id", T::String, "the return"),
    req("order_id", T::String, "the order the goods came from"),
    opt(
        "service_order_id",
        T::String,
        "the service order, when the warehouse keeps our reference (ShipBob does not); \
         the event is correlated by `rma_id` either way",
    ),
    req(
        "inspection_passed",
        T::Bool,
        "false for wrong or damaged goods",
    ),
    opt(
        "note",
        T::String,
        "the inspector's note, when inspection failed",
    ),
];

static EVENTS: &[EventSpec] = &[
    EventSpec {
        name: "payment.refund.succeeded",
        correlation: "refund_id",
        summary: "a pending refund reached the buyer",
        payload: REFUND_EVENT,
    },
    EventSpec {
        name: "payment.refund.failed",
        correlation: "refund_id",
        summary: "a pending refund failed; a new key is needed to try again",
        payload: REFUND_EVENT,
    },
    EventSpec {
        name: "payment.refund.canceled",
        correlation: "refund_id",
        summary: "a pending refund was cancelled",
        payload: REFUND_EVENT,
    },
    EventSpec {
        name: "warehouse.return.received",
        correlation: "rma_id",
        summary: "the warehouse received and inspected a return parcel",
        payload: RETURN_EVENT,
    },
    EventSpec {
        name: "warehouse.return.inspected",
        correlation: "rma_id",
        summary: "the warehouse finished inspecting a return (after `received`, same payload)",
        payload: RETURN_EVENT,
    },
    EventSpec {
        name: "warehouse.parcel.delivered",
        correlation: "parcel_id",
        summary: "a parcel the warehouse sent (replacement, return to buyer) was delivered",
        payload: &[
            req("parcel_id", T::String, "the parcel"),
            req("order_id", T::String, "the order concerned"),
        ],
    },
];

/// Every inbound event a workflow may wait for.
pub fn events() -> &'static [EventSpec] {
    EVENTS
}

/// Every action a workflow may call.
pub fn catalogue() -> &'static [ActionSpec] {
    CATALOGUE
}

/// Looks one action up by its full name, `system.action`.
pub fn find_full(full_name: &str) -> Option<&'static ActionSpec> {
    let (system, name) = full_name.split_once('.')?;
    find(system, name)
}

/// Looks one action up by system and name.
pub fn find(system: &str, name: &str) -> Option<&'static ActionSpec> {
    CATALOGUE
        .iter()
        .find(|a| a.system.as_str() == system && a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique() {
        let mut seen = HashSet::new();
        for a in catalogue() {
            assert!(seen.insert(a.full_name()), "duplicate {}", a.full_name());
            let mut fields = HashSet::new();
            for f in a.inputs {
                assert!(
                    fields.insert(f.name),
                    "{}: duplicate input {}",
                    a.full_name(),
                    f.name
                );
            }
        }
    }

    #[test]
    fn full_names_follow_the_catalogue() {
        let from_catalogue: Vec<String> = catalogue().iter().map(|a| a.full_name()).collect();
        assert_eq!(from_catalogue, FULL_NAMES);
        for a in catalogue() {
            assert_eq!(a.full_name_static(), a.full_name());
        }
        assert_eq!(find_full("payment.refund").map(|a| a.name), Some("refund"));
        assert!(find_full("payment").is_none());
    }

    #[test]
    fn events_carry_their_correlation_in_the_payload() {
        for e in events() {
            assert!(
                e.payload
                    .iter()
                    .any(|f| f.name == e.correlation && f.required),
                "{}",
                e.name
            );
        }
    }

    #[test]
    fn every_system_has_actions() {
        for s in System::ALL {
            assert!(catalogue().iter().any(|a| a.system == s), "{s:?}");
        }
        assert!(find("payment", "refund").is_some());
        assert!(find("payment", "refnd").is_none());
    }
}
