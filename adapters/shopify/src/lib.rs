//! Shopify orders for aftersales: an [`OrderSystem`] adapter over the Admin GraphQL API and
//! a [`WebhookVerifier`](aftersales_adapter::WebhookVerifier) for `X-Shopify-Hmac-Sha256`
//! webhooks, registered as `kind = "shopify"` by [`register`].
//!
//! Knows Shopify's wire format and nothing of the engine. `order.get` reads an order's lines,
//! discounts (line discounts apart from the order-level coupon), taxes, shipping, payment
//! transaction and fulfillments; amounts are Shopify's decimal strings converted exactly to
//! minor units (`money.rs`). After-sales marks are order tags (`aftersales:<service order>`,
//! and `aftersales:<service order>:<outcome>` when closed), which are idempotent by nature.
//! `order.report_refund` records the refund with `refundCreate`, bounded by the order's
//! `suggestedRefund`, with the engine's key both in the `@idempotent` directive and in the
//! refund's note, so a retry after a lost answer finds the first refund instead of making a
//! second. Platform-side returns (`returnRequest`, `returnApproveRequest`,
//! `returnDeclineRequest`) and `orderCancel` (without a refund: the payment adapter pays)
//! are in `returns.rs`; each reads the state first, so a retry never acts twice. A GraphQL
//! `userErrors` list in an HTTP `200` is an error (`error.rs`).
//! Layout as in `docs/adapters.md`: `config.rs`, `client.rs`, `error.rs`, `webhook.rs`.

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod money;
mod returns;
mod time;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::ids::OrderId;
use aftersales_adapter::types::{
    ApproveReturn, CancelOrder, ClearAfterSales, CloseAfterSales, CloseOutcome, DeclineReturn,
    GetOrder, MarkAfterSales, Order, OrderLine, OrderStatus, ReportRefund, RequestReturn,
    RequestReturnOutput, ShipmentState,
};
use aftersales_adapter::{
    AdapterError, Built, Capabilities, IdempotencyKey, OrderSystem, Registry, RegistryError,
    WebhookVerifier,
};
use aftersales_money::Money;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::client::{ShopifyClient, check_user_errors};
use crate::config::{RefundMode, ShopifySettings, parse_duration};
use crate::error::{Call, UserError};
use crate::money::{from_shopify, to_shopify};
use crate::returns::PendingCancels;
use crate::webhook::ShopifyWebhooks;

/// The adapter kind this crate registers under.
pub const KIND: &str = "shopify";

/// Registers Shopify as `kind = "shopify"`.
///
/// Settings: `shop` (the `*.myshopify.com` domain), `access_token_env` (the env var holding
/// the Admin API token), optional `base_url`, `api_version` (`"2026-01"`), `tag_prefix`
/// (`"aftersales"`), `notify_customer` (`false`), `timeout` (`"10s"`),
/// `webhook_secret_env`, `webhook_previous_secret_env` and `webhook_tolerance` (`"5m"`).
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let settings: ShopifySettings = cx.settings()?;
        let invalid = |message: String| RegistryError::InvalidSettings {
            kind: KIND.into(),
            message,
        };
        let timeout =
            parse_duration(&settings.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        let tolerance = parse_duration(&settings.webhook_tolerance)
            .map_err(|e| invalid(format!("webhook_tolerance: {e}")))?;
        if settings.shop.is_empty() || settings.shop.contains('/') {
            return Err(invalid(format!(
                "shop: expected a domain such as \"example.myshopify.com\", found \"{}\"",
                settings.shop
            )));
        }
        let base_url = settings
            .base_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", settings.shop));
        let client = ShopifyClient::new(
            &base_url,
            &settings.api_version,
            cx.secret("access_token_env")?,
            timeout,
        )
        .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let webhooks = match settings.webhook_secret_env {
            Some(_) => {
                let mut secrets = vec![cx.secret("webhook_secret_env")?];
                if settings.webhook_previous_secret_env.is_some() {
                    secrets.push(cx.secret("webhook_previous_secret_env")?);
                }
                Some(Arc::new(ShopifyWebhooks { secrets, tolerance }) as Arc<dyn WebhookVerifier>)
            }
            None => None,
        };
        Ok(Built {
            order: Some(Arc::new(ShopifyOrders {
                client,
                tag_prefix: settings.tag_prefix,
                notify_customer: settings.notify_customer,
                refunds: settings.refunds,
                timeout,
                pending: PendingCancels::default(),
            })),
            webhooks,
            ..Built::default()
        })
    });
}

/// The order-system adapter.
#[derive(Debug)]
struct ShopifyOrders {
    client: ShopifyClient,
    tag_prefix: String,
    notify_customer: bool,
    /// How `order.report_refund` records a refund (a metafield, or money-moving
    /// `refundCreate` transactions).
    refunds: RefundMode,
    /// One call's timeout; also bounds how long `order.cancel` polls its job.
    timeout: Duration,
    /// Cancel jobs started and not yet seen finished, by idempotency key.
    pending: PendingCancels,
}

/// The marker a refund's note (and a return's `customerNote`, and a cancellation's staff
/// note) carries: the engine's key, found again after a lost answer.
pub(crate) fn key_marker(key: &str) -> String {
    format!("[aftersales-key:{key}]")
}

/// The marker naming the service order in a refund's note, read back by the webhook.
pub(crate) const SERVICE_ORDER_MARKER: &str = "[aftersales-so:";

/// Our order id as a Shopify GID: `gid://shopify/Order/1` as is, `1` completed.
fn order_gid(id: &OrderId) -> String {
    let text = id.as_str();
    if text.starts_with("gid://") {
        text.to_owned()
    } else {
        format!("gid://shopify/Order/{text}")
    }
}

// ---------------------------------------------------------------- GraphQL documents

const ORDER_QUERY: &str = r#"query AftersalesOrder($id: ID!) {
  order(id: $id) {
    id
    cancelledAt
    closedAt
    processedAt
    taxesIncluded
    displayFulfillmentStatus
    customer { id }
    transactions(first: 50) { id kind status processedAt }
    fulfillments(first: 50) { createdAt inTransitAt deliveredAt displayStatus }
    shippingLines(first: 20) {
      nodes {
        discountedPriceSet { shopMoney { amount currencyCode } }
        taxLines { priceSet { shopMoney { amount currencyCode } } }
      }
    }
    lineItems(first: 250) {
      nodes {
        id
        sku
        quantity
        variant { id }
        product { id productType }
        originalUnitPriceSet { shopMoney { amount currencyCode } }
        taxLines { priceSet { shopMoney { amount currencyCode } } }
        discountAllocations {
          allocatedAmountSet { shopMoney { amount currencyCode } }
          discountApplication { targetSelection }
        }
      }
    }
  }
}"#;

const TAGS_ADD: &str = r#"mutation AftersalesTagsAdd($id: ID!, $tags: [String!]!) {
  tagsAdd(id: $id, tags: $tags) { node { id } userErrors { field message } }
}"#;

const TAGS_REMOVE: &str = r#"mutation AftersalesTagsRemove($id: ID!, $tags: [String!]!) {
  tagsRemove(id: $id, tags: $tags) { node { id } userErrors { field message } }
}"#;

const CLOSE: &str = r#"mutation AftersalesClose($id: ID!, $add: [String!]!, $remove: [String!]!) {
  closed: tagsAdd(id: $id, tags: $add) { node { id } userErrors { field message } }
  open: tagsRemove(id: $id, tags: $remove) { node { id } userErrors { field message } }
}"#;

const REFUNDABLE_QUERY: &str = r#"query AftersalesRefundable($id: ID!) {
  order(id: $id) {
    id
    refunds(first: 250) { id note }
    suggestedRefund(suggestFullRefund: true) {
      maximumRefundableSet { shopMoney { amount currencyCode } }
      suggestedTransactions {
        gateway
        amountSet { shopMoney { amount currencyCode } }
        parentTransaction { id }
      }
    }
  }
}"#;

const REFUND_CREATE: &str = r#"mutation AftersalesRefund($input: RefundInput!, $key: String!) {
  refundCreate(input: $input) @idempotent(key: $key) {
    refund { id }
    userErrors { field message }
  }
}"#;

// ---------------------------------------------------------------- answers

#[derive(Debug, Deserialize)]
struct Node {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Nodes<T> {
    nodes: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoneyBag {
    shop_money: MoneyV2,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoneyV2 {
    amount: String,
    currency_code: String,
}

#[derive(Debug, Deserialize)]
struct OrderData {
    order: Option<SOrder>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SOrder {
    id: String,
    #[serde(default)]
    cancelled_at: Option<String>,
    #[serde(default)]
    processed_at: Option<String>,
    #[serde(default)]
    taxes_included: bool,
    #[serde(default)]
    display_fulfillment_status: Option<String>,
    #[serde(default)]
    customer: Option<Node>,
    #[serde(default)]
    transactions: Vec<STransaction>,
    #[serde(default)]
    fulfillments: Vec<SFulfillment>,
    shipping_lines: Nodes<SShippingLine>,
    line_items: Nodes<SLineItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct STransaction {
    id: String,
    kind: String,
    status: String,
    #[serde(default)]
    processed_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SFulfillment {
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    in_transit_at: Option<String>,
    #[serde(default)]
    delivered_at: Option<String>,
    #[serde(default)]
    display_status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SShippingLine {
    discounted_price_set: MoneyBag,
    #[serde(default)]
    tax_lines: Vec<STaxLine>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct STaxLine {
    price_set: MoneyBag,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SLineItem {
    id: String,
    #[serde(default)]
    sku: Option<String>,
    quantity: u32,
    #[serde(default)]
    variant: Option<Node>,
    #[serde(default)]
    product: Option<SProduct>,
    original_unit_price_set: MoneyBag,
    #[serde(default)]
    tax_lines: Vec<STaxLine>,
    #[serde(default)]
    discount_allocations: Vec<SAllocation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SProduct {
    id: String,
    #[serde(default)]
    product_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SAllocation {
    allocated_amount_set: MoneyBag,
    discount_application: SApplication,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SApplication {
    target_selection: String,
}

#[derive(Debug, Deserialize)]
struct TagsData {
    #[serde(rename = "tagsAdd", alias = "tagsRemove", alias = "closed")]
    payload: Option<MutationPayload>,
    #[serde(default)]
    open: Option<MutationPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MutationPayload {
    #[serde(default)]
    user_errors: Vec<UserError>,
}

#[derive(Debug, Deserialize)]
struct RefundableData {
    order: Option<SRefundable>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SRefundable {
    #[serde(default)]
    refunds: Vec<SRefund>,
    suggested_refund: SSuggested,
}

#[derive(Debug, Deserialize)]
struct SRefund {
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SSuggested {
    maximum_refundable_set: MoneyBag,
    #[serde(default)]
    suggested_transactions: Vec<SSuggestedTransaction>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SSuggestedTransaction {
    gateway: String,
    amount_set: MoneyBag,
    #[serde(default)]
    parent_transaction: Option<Node>,
}

const REFUND_RECORD: &str = r#"mutation AftersalesRefundRecord($metafields: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $metafields) {
    metafields { key }
    userErrors { field message code }
  }
}"#;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundRecordData {
    metafields_set: Option<RefundRecordPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundRecordPayload {
    #[serde(default)]
    metafields: Option<Vec<MetafieldKey>>,
    #[serde(default)]
    user_errors: Vec<UserError>,
}

#[derive(Debug, Deserialize)]
struct MetafieldKey {
    #[allow(dead_code)] // Read to show the write happened; its value is ours.
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundCreateData {
    refund_create: Option<RefundCreatePayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundCreatePayload {
    #[serde(default)]
    refund: Option<Node>,
    #[serde(default)]
    user_errors: Vec<UserError>,
}

// ---------------------------------------------------------------- mapping

impl MoneyBag {
    fn money(&self, action: &'static str) -> Result<Money, AdapterError> {
        from_shopify(&self.shop_money.amount, &self.shop_money.currency_code).map_err(|e| {
            AdapterError::permanent(
                KIND,
                action,
                format!(
                    "cannot read amount \"{}\" {}: {e}",
                    self.shop_money.amount, self.shop_money.currency_code
                ),
            )
        })
    }
}

fn money_error(action: &'static str, what: &str, e: aftersales_money::MoneyError) -> AdapterError {
    AdapterError::permanent(KIND, action, format!("{what}: {e}"))
}

fn sum(
    action: &'static str,
    what: &str,
    zero: Money,
    items: impl IntoIterator<Item = Result<Money, AdapterError>>,
) -> Result<Money, AdapterError> {
    let mut total = zero;
    for m in items {
        total = total
            .checked_add(&m?)
            .map_err(|e| money_error(action, what, e))?;
    }
    Ok(total)
}

fn is_delivered(f: &SFulfillment) -> bool {
    f.delivered_at.is_some() || f.display_status.as_deref() == Some("DELIVERED")
}

/// Shopify's order in ours.
fn to_order(o: SOrder) -> Result<Order, AdapterError> {
    let action = "order.get";
    let currency = match o.line_items.nodes.first() {
        Some(l) => l.original_unit_price_set.money(action)?.currency,
        None => {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!("order {} has no line", o.id),
            ));
        }
    };
    let zero = Money::new(0, currency);
    let mut lines = Vec::with_capacity(o.line_items.nodes.len());
    let mut coupon = zero;
    for l in &o.line_items.nodes {
        let unit = l.original_unit_price_set.money(action)?;
        let gross = unit
            .checked_mul(i64::from(l.quantity))
            .map_err(|e| money_error(action, "line total", e))?;
        let (order_level, own): (Vec<&SAllocation>, Vec<&SAllocation>) = l
            .discount_allocations
            .iter()
            .partition(|a| a.discount_application.target_selection == "ALL");
        let line_discount = sum(
            action,
            "line discount",
            zero,
            own.iter().map(|a| a.allocated_amount_set.money(action)),
        )?;
        let coupon_share = sum(
            action,
            "order discount",
            zero,
            order_level
                .iter()
                .map(|a| a.allocated_amount_set.money(action)),
        )?;
        let tax = if o.taxes_included {
            zero
        } else {
            sum(
                action,
                "line tax",
                zero,
                l.tax_lines.iter().map(|t| t.price_set.money(action)),
            )?
        };
        let paid = gross
            .checked_sub(&line_discount)
            .and_then(|m| m.checked_sub(&coupon_share))
            .and_then(|m| m.checked_add(&tax))
            .map_err(|e| money_error(action, "line paid", e))?;
        coupon = coupon
            .checked_add(&coupon_share)
            .map_err(|e| money_error(action, "order discount", e))?;
        let sku = l
            .sku
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| l.variant.as_ref().map(|v| v.id.clone()))
            .unwrap_or_else(|| l.id.clone());
        lines.push(OrderLine {
            line_id: l.id.clone().into(),
            sku: sku.into(),
            spu: l
                .product
                .as_ref()
                .map_or_else(|| l.id.clone(), |p| p.id.clone())
                .into(),
            quantity: l.quantity,
            unit_price: unit,
            paid,
            entitlement_id: None,
            line_discount: Some(line_discount),
            category: l
                .product
                .as_ref()
                .and_then(|p| p.product_type.clone())
                .filter(|t| !t.is_empty()),
            flags: Vec::new(),
            course_id: None,
        });
    }
    let mut shipping_fee = zero;
    for s in &o.shipping_lines.nodes {
        shipping_fee = shipping_fee
            .checked_add(&s.discounted_price_set.money(action)?)
            .map_err(|e| money_error(action, "shipping", e))?;
        if !o.taxes_included {
            for t in &s.tax_lines {
                shipping_fee = shipping_fee
                    .checked_add(&t.price_set.money(action)?)
                    .map_err(|e| money_error(action, "shipping tax", e))?;
            }
        }
    }
    let paid = sum(
        action,
        "order paid",
        shipping_fee,
        lines.iter().map(|l| Ok(l.paid)),
    )?;
    let payment = o
        .transactions
        .iter()
        .filter(|t| t.status == "SUCCESS")
        .find(|t| t.kind == "SALE" || t.kind == "CAPTURE")
        .or_else(|| {
            o.transactions
                .iter()
                .find(|t| t.status == "SUCCESS" && t.kind == "AUTHORIZATION")
        })
        .ok_or_else(|| {
            AdapterError::permanent(
                KIND,
                action,
                format!("order {} has no successful payment transaction", o.id),
            )
        })?;
    let fulfillment = o.display_fulfillment_status.as_deref().unwrap_or("");
    let delivered = !o.fulfillments.is_empty() && o.fulfillments.iter().all(is_delivered);
    let handed_over = matches!(fulfillment, "FULFILLED" | "PARTIALLY_FULFILLED");
    let shipment = if delivered {
        ShipmentState::Delivered
    } else if handed_over {
        ShipmentState::Shipped
    } else if fulfillment == "IN_PROGRESS" {
        ShipmentState::Picked
    } else {
        ShipmentState::NotShipped
    };
    let status = if o.cancelled_at.is_some() {
        OrderStatus::Cancelled
    } else if delivered {
        OrderStatus::Delivered
    } else if handed_over {
        OrderStatus::Shipped
    } else {
        OrderStatus::Paid
    };
    let shipped_at = o
        .fulfillments
        .iter()
        .filter_map(|f| {
            f.in_transit_at
                .as_deref()
                .or(f.created_at.as_deref())
                .and_then(time::unix_ms)
        })
        .min();
    let delivered_at = if delivered {
        o.fulfillments
            .iter()
            .filter_map(|f| f.delivered_at.as_deref().and_then(time::unix_ms))
            .max()
    } else {
        None
    };
    Ok(Order {
        status,
        lines,
        paid,
        shipping_fee,
        payment_id: payment.id.clone().into(),
        buyer_id: o.customer.map(|c| c.id.into()),
        shipment: Some(shipment),
        coupon: Some(coupon),
        paid_at: payment
            .processed_at
            .as_deref()
            .or(o.processed_at.as_deref())
            .and_then(time::unix_ms),
        shipped_at,
        delivered_at,
    })
}

fn outcome_name(o: CloseOutcome) -> &'static str {
    match o {
        CloseOutcome::Completed => "completed",
        CloseOutcome::Rejected => "rejected",
        CloseOutcome::Closed => "closed",
        CloseOutcome::Failed => "failed",
    }
}

impl ShopifyOrders {
    /// `order.report_refund` with `refunds = "record"`: one metafield per refund call on
    /// the order (namespace `aftersales`, key `refund-<engine key>`), written with
    /// `metafieldsSet`, which overwrites the same key with the same value on a retry. No
    /// money moves; the payment adapter paid the buyer.
    async fn record_refund(
        &self,
        req: &ReportRefund,
        key: &IdempotencyKey,
        gid: &str,
    ) -> Result<(), AdapterError> {
        let action = "order.report_refund";
        let value = json!({
            "service_order_id": req.service_order_id.as_str(),
            "refund_id": req.refund_id.as_str(),
            "amount": to_shopify(&req.amount),
            "currency": req.amount.currency.to_string(),
        });
        let call = Call::Mutating(action);
        let data: RefundRecordData = self
            .client
            .graphql(
                call,
                REFUND_RECORD,
                json!({"metafields": [{
                    "ownerId": gid,
                    "namespace": "aftersales",
                    "key": format!("refund-{}", key.as_str()),
                    "type": "json",
                    "value": value.to_string(),
                }]}),
            )
            .await?;
        let payload = data.metafields_set.ok_or_else(|| {
            AdapterError::unknown_outcome(KIND, action, "Shopify answered without a payload")
        })?;
        check_user_errors(call, &payload.user_errors)?;
        match payload.metafields {
            Some(m) if !m.is_empty() => Ok(()),
            _ => Err(AdapterError::unknown_outcome(
                KIND,
                action,
                "Shopify answered without the metafield: the retry writes it again",
            )),
        }
    }
}

impl ShopifyOrders {
    fn open_tag(&self, service_order: &str) -> String {
        format!("{}:{service_order}", self.tag_prefix)
    }

    async fn tags(
        &self,
        action: &'static str,
        query: &str,
        order: &OrderId,
        tags: Vec<String>,
    ) -> Result<(), AdapterError> {
        let call = Call::Mutating(action);
        let data: TagsData = self
            .client
            .graphql(call, query, json!({"id": order_gid(order), "tags": tags}))
            .await?;
        let payload = data.payload.ok_or_else(|| {
            AdapterError::unknown_outcome(KIND, action, "Shopify answered without a payload")
        })?;
        check_user_errors(call, &payload.user_errors)
    }
}

#[async_trait]
impl OrderSystem for ShopifyOrders {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::required(System::Order)
            .with("order.request_return")
            .with("order.approve_return")
            .with("order.decline_return")
            .with("order.cancel");
        match self.refunds {
            RefundMode::Record => caps,
            RefundMode::Transactions => caps.with_money_moving("order.report_refund"),
        }
    }

    async fn get(&self, req: &GetOrder) -> Result<Order, AdapterError> {
        let action = "order.get";
        let data: OrderData = self
            .client
            .graphql(
                Call::Read(action),
                ORDER_QUERY,
                json!({"id": order_gid(&req.order_id)}),
            )
            .await?;
        let order = data.order.ok_or_else(|| {
            AdapterError::not_found(
                KIND,
                action,
                format!("Shopify has no order `{}`", req.order_id),
            )
        })?;
        to_order(order)
    }

    async fn mark_after_sales(
        &self,
        req: &MarkAfterSales,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        // Adding a tag the order already has changes nothing: a repeat is safe.
        let tag = self.open_tag(req.service_order_id.as_str());
        self.tags("order.mark_after_sales", TAGS_ADD, &req.order_id, vec![tag])
            .await
    }

    async fn clear_after_sales(
        &self,
        req: &ClearAfterSales,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        let tag = self.open_tag(req.service_order_id.as_str());
        self.tags(
            "order.clear_after_sales",
            TAGS_REMOVE,
            &req.order_id,
            vec![tag],
        )
        .await
    }

    async fn report_refund(
        &self,
        req: &ReportRefund,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        let action = "order.report_refund";
        let gid = order_gid(&req.order_id);
        let marker = key_marker(key.as_str());
        let data: RefundableData = self
            .client
            .graphql(Call::Read(action), REFUNDABLE_QUERY, json!({"id": gid}))
            .await?;
        let order = data.order.ok_or_else(|| {
            AdapterError::not_found(
                KIND,
                action,
                format!("Shopify has no order `{}`", req.order_id),
            )
        })?;
        // Already recorded by an earlier attempt whose answer was lost: done.
        if order
            .refunds
            .iter()
            .any(|r| r.note.as_deref().is_some_and(|n| n.contains(&marker)))
        {
            return Ok(());
        }
        let max = order
            .suggested_refund
            .maximum_refundable_set
            .money(action)?;
        if max.currency != req.amount.currency {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!(
                    "the order is refunded in {} but {} was reported",
                    max.currency, req.amount.currency
                ),
            ));
        }
        if req.amount.minor <= 0 || req.amount.minor > max.minor {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!(
                    "cannot record a refund of {}: Shopify allows 0 < amount <= {max}",
                    req.amount
                ),
            ));
        }
        if self.refunds == RefundMode::Record {
            return self.record_refund(req, key, &gid).await;
        }
        // Spread the amount over the suggested transactions, each at most its own amount.
        let mut left = req.amount.minor;
        let mut transactions = Vec::new();
        for t in &order.suggested_refund.suggested_transactions {
            if left == 0 {
                break;
            }
            let Some(parent) = &t.parent_transaction else {
                continue;
            };
            let available = t.amount_set.money(action)?;
            let take = left.min(available.minor);
            if take <= 0 {
                continue;
            }
            left -= take;
            transactions.push(json!({
                "orderId": gid,
                "parentId": parent.id,
                "gateway": t.gateway,
                "kind": "REFUND",
                "amount": to_shopify(&Money::new(take, req.amount.currency)),
            }));
        }
        if left > 0 {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!(
                    "Shopify suggests no transaction to refund {} against",
                    req.amount
                ),
            ));
        }
        let note = format!(
            "aftersales refund {} for service order {} {}{}] {marker}",
            req.refund_id, req.service_order_id, SERVICE_ORDER_MARKER, req.service_order_id
        );
        let call = Call::Mutating(action);
        let data: RefundCreateData = self
            .client
            .graphql(
                call,
                REFUND_CREATE,
                json!({
                    "key": key.as_str(),
                    "input": {
                        "orderId": gid,
                        "note": note,
                        "notify": self.notify_customer,
                        "transactions": transactions,
                    },
                }),
            )
            .await?;
        let payload = data.refund_create.ok_or_else(|| {
            AdapterError::unknown_outcome(KIND, action, "Shopify answered without a payload")
        })?;
        check_user_errors(call, &payload.user_errors)?;
        match payload.refund {
            Some(_) => Ok(()),
            None => Err(AdapterError::unknown_outcome(
                KIND,
                action,
                "Shopify answered without the refund: query the order's refunds",
            )),
        }
    }

    async fn close_after_sales(
        &self,
        req: &CloseAfterSales,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        let action = "order.close_after_sales";
        let call = Call::Mutating(action);
        let open = self.open_tag(req.service_order_id.as_str());
        let closed = format!("{open}:{}", outcome_name(req.outcome));
        let data: TagsData = self
            .client
            .graphql(
                call,
                CLOSE,
                json!({"id": order_gid(&req.order_id), "add": [closed], "remove": [open]}),
            )
            .await?;
        let (Some(add), Some(remove)) = (data.payload, data.open) else {
            return Err(AdapterError::unknown_outcome(
                KIND,
                action,
                "Shopify answered without a payload",
            ));
        };
        check_user_errors(call, &add.user_errors)?;
        check_user_errors(call, &remove.user_errors)
    }

    async fn request_return(
        &self,
        req: &RequestReturn,
        key: &IdempotencyKey,
    ) -> Result<RequestReturnOutput, AdapterError> {
        self.request_return_impl(req, key).await
    }

    async fn approve_return(
        &self,
        req: &ApproveReturn,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        // Idempotent by the return's status: an approved return is not approved again.
        self.approve_return_impl(req).await
    }

    async fn decline_return(
        &self,
        req: &DeclineReturn,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        // Idempotent by the return's status: a declined return is not declined again.
        self.decline_return_impl(req).await
    }

    async fn cancel(&self, req: &CancelOrder, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.cancel_impl(req, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_become_gids() {
        assert_eq!(
            order_gid(&OrderId::new("450789469")),
            "gid://shopify/Order/450789469"
        );
        assert_eq!(
            order_gid(&OrderId::new("gid://shopify/Order/1")),
            "gid://shopify/Order/1"
        );
    }
}
