//! The Shopify adapter against the mock: the order read exactly, tags as marks, refunds
//! recorded once per key, returns requested once per key and moved by their status, orders
//! cancelled once without a refund, each error class, and webhooks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::ids::{OrderId, ReturnId};
use aftersales_adapter::types::{
    ApproveReturn, CancelOrder, ClearAfterSales, CloseAfterSales, CloseOutcome, DeclineReturn,
    GetOrder, LineRef, MarkAfterSales, OrderStatus, ReportRefund, RequestReturn, ShipmentState,
};
use aftersales_adapter::{
    ErrorClass, Headers, IdempotencyKey, OrderSystem, Registry, WebhookError, WebhookVerifier,
};
use aftersales_money::{Currency, Money};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{CLIENT_SECRET, MLine, MOrderSpec, MockShopify, OLD_CLIENT_SECRET, build, decimal};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

async fn start() -> (MockShopify, Arc<dyn OrderSystem>) {
    let api = MockShopify::start().await;
    let o = build(&api.uri()).order.unwrap();
    (api, o)
}

fn report(order: &str, minor: i64) -> ReportRefund {
    ReportRefund {
        order_id: OrderId::new(order),
        service_order_id: "so-1".into(),
        amount: usd(minor),
        refund_id: "re_3Mock0001".into(),
    }
}

#[tokio::test]
async fn an_order_reads_exactly_with_discounts_taxes_and_times() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec {
        currency: "USD",
        exponent: 2,
        lines: vec![
            MLine {
                sku: "tee-m",
                quantity: 2,
                unit: 1_999,
                line_discount: 200,
                coupon_share: 379,
                tax: 281,
            },
            MLine {
                sku: "cap",
                quantity: 1,
                unit: 1_250,
                line_discount: 0,
                coupon_share: 121,
                tax: 90,
            },
        ],
        shipping: 495,
        shipping_tax: 40,
        taxes_included: false,
        fulfillment: "FULFILLED",
        delivered: true,
    });
    let order = o
        .get(&GetOrder {
            order_id: OrderId::new(id.clone()),
        })
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Delivered);
    assert_eq!(order.shipment, Some(ShipmentState::Delivered));
    let tee = &order.lines[0];
    assert_eq!(
        tee.line_id.as_str(),
        format!("gid://shopify/LineItem/{id}0")
    );
    assert_eq!(tee.sku.as_str(), "tee-m");
    assert_eq!(tee.unit_price, usd(1_999));
    assert_eq!(tee.line_discount, Some(usd(200)));
    // 2 × 19.99 − 2.00 line discount − 3.79 coupon share + 2.81 tax.
    assert_eq!(tee.paid, usd(3_998 - 200 - 379 + 281));
    assert_eq!(tee.category.as_deref(), Some("apparel.tops"));
    assert_eq!(order.lines[1].paid, usd(1_250 - 121 + 90));
    assert_eq!(order.coupon, Some(usd(500)));
    assert_eq!(order.shipping_fee, usd(535));
    assert_eq!(order.paid, usd(3_700 + 1_219 + 535));
    assert_eq!(
        order.payment_id.as_str(),
        format!("gid://shopify/OrderTransaction/{id}1")
    );
    assert_eq!(
        order.buyer_id.map(|b| b.to_string()).as_deref(),
        Some("gid://shopify/Customer/77")
    );
    assert_eq!(order.paid_at, Some(1_763_632_805_000));
    assert_eq!(order.shipped_at, Some(1_763_739_000_000));
    assert_eq!(order.delivered_at, Some(1_764_000_000_000));
}

#[tokio::test]
async fn zero_decimal_currencies_arrive_with_a_point_zero() {
    let (api, o) = start().await;
    let mut spec = MOrderSpec::simple("yukata", 1, 12_800);
    spec.currency = "JPY";
    spec.exponent = 0;
    spec.shipping = 800;
    let id = api.add_order(spec);
    assert_eq!(decimal(12_800, 0), "12800.0");
    let order = o
        .get(&GetOrder {
            order_id: OrderId::new(id),
        })
        .await
        .unwrap();
    assert_eq!(order.paid, Money::new(13_600, Currency::JPY));
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.shipment, Some(ShipmentState::NotShipped));
    assert_eq!(order.shipped_at, None);
}

#[tokio::test]
async fn marks_are_tags_and_repeats_change_nothing() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 2_000));
    let mark = MarkAfterSales {
        order_id: OrderId::new(id.clone()),
        service_order_id: "so-9".into(),
        lines: vec![],
    };
    o.mark_after_sales(&mark, &key("m-1")).await.unwrap();
    o.mark_after_sales(&mark, &key("m-1")).await.unwrap();
    assert_eq!(api.tags(&id), ["aftersales:so-9"]);
    o.clear_after_sales(
        &ClearAfterSales {
            order_id: OrderId::new(id.clone()),
            service_order_id: "so-9".into(),
        },
        &key("c-1"),
    )
    .await
    .unwrap();
    assert!(api.tags(&id).is_empty());
    o.mark_after_sales(&mark, &key("m-2")).await.unwrap();
    let close = CloseAfterSales {
        order_id: OrderId::new(id.clone()),
        service_order_id: "so-9".into(),
        outcome: CloseOutcome::Rejected,
        reason: None,
    };
    o.close_after_sales(&close, &key("x-1")).await.unwrap();
    o.close_after_sales(&close, &key("x-1")).await.unwrap();
    assert_eq!(api.tags(&id), ["aftersales:so-9:rejected"]);
}

#[tokio::test]
async fn a_refund_is_recorded_once_per_key() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 2, 2_250));
    let k = key("inst_42-report_refund-fwd-0");
    o.report_refund(&report(&id, 2_250), &k).await.unwrap();
    o.report_refund(&report(&id, 2_250), &k).await.unwrap();
    let refunds = api.refunds(&id);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].2, 2_250);
    let calls = api.operations("AftersalesRefund").await;
    assert_eq!(calls.len(), 1, "the repeat found the refund by its note");
    assert_eq!(
        calls[0]["variables"]["key"],
        json!(k.as_str()),
        "the key arrived unchanged"
    );
    let input = &calls[0]["variables"]["input"];
    assert_eq!(input["transactions"][0]["amount"], json!("22.50"));
    assert_eq!(input["transactions"][0]["kind"], json!("REFUND"));
    assert_eq!(input["notify"], json!(false));
    assert!(input["note"].as_str().unwrap().contains(k.as_str()));
    // A new key is a new refund, up to what is left.
    o.report_refund(&report(&id, 2_250), &key("second"))
        .await
        .unwrap();
    assert_eq!(api.refunds(&id).len(), 2);
    let e = o
        .report_refund(&report(&id, 1), &key("third"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert_eq!(
        api.operations("AftersalesRefund").await.len(),
        2,
        "nothing sent"
    );
}

/// `refunds = "record"` (the default): the refund paid by the payment adapter is written
/// down as a metafield, and no refund (no money) is created on Shopify.
#[tokio::test]
async fn the_default_records_a_refund_without_moving_money() {
    let api = MockShopify::start().await;
    let mut config = common::config(&api.uri());
    config.settings.as_object_mut().unwrap().remove("refunds");
    let mut registry = aftersales_adapter::Registry::new();
    aftersales_adapter_shopify::register(&mut registry);
    let o = registry
        .build(&config, &common::env)
        .unwrap()
        .order
        .unwrap();
    assert!(o.capabilities().supports("order.report_refund"));
    assert!(!o.capabilities().moves_money("order.report_refund"));
    let id = api.add_order(MOrderSpec::simple("tee-m", 2, 2_250));
    let k = key("as_0123456789abcdef0123456789abcdef01234567");
    o.report_refund(&report(&id, 2_250), &k).await.unwrap();
    o.report_refund(&report(&id, 2_250), &k).await.unwrap();
    assert!(api.refunds(&id).is_empty(), "no refundCreate, no money");
    assert!(api.operations("AftersalesRefund").await.is_empty());
    let fields = api.metafields(&id);
    assert_eq!(fields.len(), 1, "{fields:?}");
    let (ty, value) = &fields[&format!("aftersales.refund-{}", k.as_str())];
    assert_eq!(ty, "json");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(value).unwrap(),
        json!({"service_order_id": "so-1", "refund_id": "re_3Mock0001",
               "amount": "22.50", "currency": "USD"})
    );
    // Amounts are still checked against the order before anything is written.
    let e = o
        .report_refund(&report(&id, 4_501), &key("too-much"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert_eq!(api.metafields(&id).len(), 1);
    // `transactions` moves money, and says so to the validator.
    assert!(
        build(&api.uri())
            .order
            .unwrap()
            .capabilities()
            .moves_money("order.report_refund")
    );
}

#[tokio::test]
async fn a_lost_refund_answer_is_resolved_without_a_second_refund() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    let k = key("inst_43-report_refund-fwd-0");
    api.lose_next_answer(Some("AftersalesRefund"));
    let e = o.report_refund(&report(&id, 4_500), &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    // Shopify made the refund; the retry finds it by its note and sends nothing.
    o.report_refund(&report(&id, 4_500), &k).await.unwrap();
    assert_eq!(api.refunds(&id).len(), 1);
    assert_eq!(api.operations("AftersalesRefund").await.len(), 1);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    let get = GetOrder {
        order_id: OrderId::new(id.clone()),
    };
    api.fail_next(None, 429, Some("2.0"));
    let e = o.get(&get).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(2))
        },
        "{e}"
    );
    // THROTTLED in a 200: wait until the bucket holds the query's cost again.
    api.throttle_next(None);
    let e = o.get(&get).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(3))
        },
        "{e}"
    );
    api.fail_next(None, 503, None);
    assert!(matches!(
        o.get(&get).await.unwrap_err().class,
        ErrorClass::Transient { .. }
    ));
    // A 500 on the mutation may have acted: unknown outcome, and the retry finds nothing
    // made, so it records the refund once.
    api.fail_next(Some("AftersalesRefund"), 500, None);
    let e = o
        .report_refund(&report(&id, 4_500), &key("r-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome);
    o.report_refund(&report(&id, 4_500), &key("r-1"))
        .await
        .unwrap();
    assert_eq!(api.refunds(&id).len(), 1);
    assert!(o.get(&get).await.is_ok());
}

#[tokio::test]
async fn user_errors_in_a_200_are_permanent() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    api.refuse_next(Some("AftersalesRefund"));
    let e = o
        .report_refund(&report(&id, 1_000), &key("r-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(
        e.message,
        "shopify userErrors: orderId: Order is archived and cannot be edited"
    );
    api.refuse_next(Some("AftersalesTagsAdd"));
    let e = o
        .mark_after_sales(
            &MarkAfterSales {
                order_id: OrderId::new(id.clone()),
                service_order_id: "so-1".into(),
                lines: vec![],
            },
            &key("m-1"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    // Unknown orders, and a token Shopify does not accept.
    let e = o
        .report_refund(&report("404", 1_000), &key("r-2"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound);
    let mut registry = Registry::new();
    aftersales_adapter_shopify::register(&mut registry);
    let env = |n: &str| {
        if n == "SHOPIFY_ADMIN_TOKEN" {
            Some("shpat_wrong".to_owned())
        } else {
            common::env(n)
        }
    };
    let bad = registry
        .build(&common::config(&api.uri()), &env)
        .unwrap()
        .order
        .unwrap();
    let e = bad
        .get(&GetOrder {
            order_id: OrderId::new(id),
        })
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.starts_with("shopify 401"), "{e}");
    assert!(!e.to_string().contains("shpat_wrong"));
}

// ---------------------------------------------------------------- returns and cancellation

/// A shipped order of `quantity` units of one line; returns its id.
fn shipped(api: &MockShopify, quantity: u32) -> String {
    let mut spec = MOrderSpec::simple("tee-m", quantity, 2_250);
    spec.fulfillment = "FULFILLED";
    api.add_order(spec)
}

fn line(order: &str, index: usize, quantity: u32) -> LineRef {
    LineRef {
        line_id: format!("gid://shopify/LineItem/{order}{index}").into(),
        sku: "tee-m".into(),
        quantity,
    }
}

fn request(order: &str, lines: Vec<LineRef>) -> RequestReturn {
    RequestReturn {
        order_id: OrderId::new(order),
        service_order_id: "so-7".into(),
        lines,
        reason: Some("too small".into()),
    }
}

fn approve(id: &ReturnId) -> ApproveReturn {
    ApproveReturn {
        return_id: id.clone(),
        service_order_id: "so-7".into(),
    }
}

fn decline(id: &ReturnId, reason: Option<&str>) -> DeclineReturn {
    DeclineReturn {
        return_id: id.clone(),
        service_order_id: "so-7".into(),
        reason: reason.map(str::to_owned),
    }
}

fn cancel(order: &str) -> CancelOrder {
    CancelOrder {
        order_id: OrderId::new(order),
        service_order_id: "so-8".into(),
        reason: Some("cancelled by the buyer before shipment".into()),
    }
}

#[tokio::test]
async fn a_return_is_requested_once_per_key_and_approved_once() {
    let (api, o) = start().await;
    let caps = o.capabilities();
    for a in [
        "order.request_return",
        "order.approve_return",
        "order.decline_return",
        "order.cancel",
    ] {
        assert!(caps.supports(a), "{a}");
    }
    let id = shipped(&api, 2);
    let k = key("inst_50-request_return-fwd-0");
    let first = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &k)
        .await
        .unwrap();
    let again = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &k)
        .await
        .unwrap();
    assert_eq!(first, again, "the repeat found the first return");
    assert!(
        first
            .return_id
            .as_str()
            .starts_with("gid://shopify/Return/")
    );
    let returns = api.returns(&id);
    assert_eq!(returns.len(), 1, "{returns:?}");
    assert_eq!(returns[0].status, "REQUESTED");
    let (fli, quantity, note, reason) = &returns[0].lines[0];
    assert_eq!(fli, &format!("gid://shopify/FulfillmentLineItem/{id}0"));
    assert_eq!(*quantity, 1);
    assert_eq!(reason, "OTHER");
    assert_eq!(
        note,
        "too small [aftersales-key:inst_50-request_return-fwd-0] [aftersales-so:so-7]"
    );
    let calls = api.operations("AftersalesReturnRequest").await;
    assert_eq!(calls.len(), 1);
    assert!(
        !calls[0]["query"].as_str().unwrap().contains("@idempotent"),
        "returnRequest documents no @idempotent"
    );

    // Approved once; a repeat reads OPEN and sends nothing.
    o.approve_return(&approve(&first.return_id), &key("a-1"))
        .await
        .unwrap();
    o.approve_return(&approve(&first.return_id), &key("a-1"))
        .await
        .unwrap();
    assert_eq!(api.returns(&id)[0].status, "OPEN");
    assert_eq!(api.returns(&id)[0].notified, Some(false));
    assert_eq!(api.operations("AftersalesReturnApprove").await.len(), 1);

    // Another key is another return, for the unit no return holds yet; a third finds none.
    let second = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-2"))
        .await
        .unwrap();
    assert_ne!(second, first);
    let e = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-3"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(
        e.message
            .contains("1 unit(s) asked, 2 fulfilled, 0 of them free"),
        "{e}"
    );
    assert_eq!(
        api.operations("AftersalesReturnRequest").await.len(),
        2,
        "nothing sent"
    );
}

#[tokio::test]
async fn a_lost_return_request_answer_is_resolved_by_its_note() {
    let (api, o) = start().await;
    let id = shipped(&api, 1);
    let k = key("inst_51-request_return-fwd-0");
    api.lose_next_answer(Some("AftersalesReturnRequest"));
    let e = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &k)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    // Shopify opened the return; the retry finds it by the key in its note.
    let out = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &k)
        .await
        .unwrap();
    let returns = api.returns(&id);
    assert_eq!(returns.len(), 1, "{returns:?}");
    assert_eq!(out.return_id.as_str(), returns[0].id);
    assert_eq!(api.operations("AftersalesReturnRequest").await.len(), 1);

    // A 500 may have acted too: unknown outcome; here it did not, so the retry sends it.
    let id = shipped(&api, 1);
    let k = key("inst_52-request_return-fwd-0");
    api.fail_next(Some("AftersalesReturnRequest"), 500, None);
    let e = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &k)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    o.request_return(&request(&id, vec![line(&id, 0, 1)]), &k)
        .await
        .unwrap();
    assert_eq!(api.returns(&id).len(), 1);
    // Throttled while reading: transient, nothing sent.
    api.throttle_next(Some("AftersalesReturns"));
    let e = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-9"))
        .await
        .unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
}

#[tokio::test]
async fn only_fulfilled_units_can_be_returned() {
    let (api, o) = start().await;
    // Nothing shipped yet.
    let unshipped = api.add_order(MOrderSpec::simple("tee-m", 1, 2_250));
    let e = o
        .request_return(
            &request(&unshipped, vec![line(&unshipped, 0, 1)]),
            &key("k-1"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.message.contains("0 fulfilled"), "{e}");
    // Three units: one shipped, two in a cancelled fulfillment.
    let id = api.add_order(MOrderSpec::simple("tee-m", 3, 2_250));
    api.add_fulfillment(&id, "SUCCESS", &[(0, 1)]);
    api.add_fulfillment(&id, "CANCELLED", &[(0, 2)]);
    let e = o
        .request_return(&request(&id, vec![line(&id, 0, 2)]), &key("k-2"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.message.contains("2 unit(s) asked, 1 fulfilled"), "{e}");
    // Split shipments: two fulfillments of the same line make one return of both.
    let split = api.add_order(MOrderSpec::simple("tee-m", 3, 2_250));
    let a = api.add_fulfillment(&split, "SUCCESS", &[(0, 1)]);
    let b = api.add_fulfillment(&split, "SUCCESS", &[(0, 2)]);
    o.request_return(&request(&split, vec![line(&split, 0, 3)]), &key("k-3"))
        .await
        .unwrap();
    let lines: Vec<(String, u32)> = api.returns(&split)[0]
        .lines
        .iter()
        .map(|l| (l.0.clone(), l.1))
        .collect();
    assert_eq!(lines, [(a[0].clone(), 1), (b[0].clone(), 2)]);
    // An unknown line, a zero quantity, an unknown order: permanent, nothing sent.
    let e = o
        .request_return(&request(&id, vec![line(&id, 7, 1)]), &key("k-4"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    let e = o
        .request_return(&request(&id, vec![line(&id, 0, 0)]), &key("k-5"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    let e = o
        .request_return(&request("404", vec![line("404", 0, 1)]), &key("k-6"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound, "{e}");
    assert_eq!(api.operations("AftersalesReturnRequest").await.len(), 1);
}

#[tokio::test]
async fn returns_move_only_from_requested() {
    let (api, o) = start().await;
    let id = shipped(&api, 3);
    let r1 = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-1"))
        .await
        .unwrap()
        .return_id;
    // Declined once, with the reason as the note; a repeat reads DECLINED.
    o.decline_return(&decline(&r1, Some("the buyer withdrew")), &key("d-1"))
        .await
        .unwrap();
    o.decline_return(&decline(&r1, Some("the buyer withdrew")), &key("d-1"))
        .await
        .unwrap();
    let declined = &api.returns(&id)[0];
    assert_eq!(declined.status, "DECLINED");
    assert_eq!(
        declined.decline,
        Some(("OTHER".into(), Some("the buyer withdrew".into())))
    );
    assert_eq!(api.operations("AftersalesReturnDecline").await.len(), 1);
    // A declined return is not approved.
    let e = o
        .approve_return(&approve(&r1), &key("a-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.message.contains("is DECLINED"), "{e}");
    // An approved (OPEN) return cannot be declined; declining it (the compensation of the
    // request after an approval) cancels it instead, once.
    let r2 = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-2"))
        .await
        .unwrap()
        .return_id;
    o.approve_return(&approve(&r2), &key("a-2")).await.unwrap();
    o.decline_return(&decline(&r2, None), &key("d-2"))
        .await
        .unwrap();
    o.decline_return(&decline(&r2, None), &key("d-2"))
        .await
        .unwrap();
    assert_eq!(api.returns(&id)[1].status, "CANCELED");
    assert_eq!(api.operations("AftersalesReturnCancel").await.len(), 1);
    // Cancelled or closed in the admin: not approved; a closed one is not declined either.
    let r3 = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-3"))
        .await
        .unwrap()
        .return_id;
    for status in ["CANCELED", "CLOSED"] {
        api.set_return_status(r3.as_str(), status);
        let e = o
            .approve_return(&approve(&r3), &key("a-3"))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent, "{e}");
        assert!(e.message.contains(&format!("is {status}")), "{e}");
    }
    let e = o
        .decline_return(&decline(&r3, None), &key("d-3"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    // Shopify refusing the transition itself is permanent too.
    api.set_return_status(r3.as_str(), "REQUESTED");
    api.refuse_next(Some("AftersalesReturnApprove"));
    let e = o
        .approve_return(&approve(&r3), &key("a-4"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.message.starts_with("shopify userErrors"), "{e}");
    // An unknown return.
    let e = o
        .approve_return(&approve(&ReturnId::new("9")), &key("a-5"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.message.contains("no return"), "{e}");
    assert_eq!(api.operations("AftersalesReturnApprove").await.len(), 2);
}

#[tokio::test]
async fn a_lost_approval_is_found_by_the_status() {
    let (api, o) = start().await;
    let id = shipped(&api, 1);
    let r = o
        .request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-1"))
        .await
        .unwrap()
        .return_id;
    api.lose_next_answer(Some("AftersalesReturnApprove"));
    let e = o
        .approve_return(&approve(&r), &key("a-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    o.approve_return(&approve(&r), &key("a-1")).await.unwrap();
    assert_eq!(api.returns(&id)[0].status, "OPEN");
    assert_eq!(api.operations("AftersalesReturnApprove").await.len(), 1);
}

#[tokio::test]
async fn an_order_is_cancelled_once_without_a_refund() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    api.set_cancel_job_polls(2);
    let k = key("inst_60-cancel-fwd-0");
    o.cancel(&cancel(&id), &k).await.unwrap();
    let (cancelled, times, calls) = api.cancellation(&id);
    assert!(cancelled);
    assert_eq!(times, 1);
    let vars = &calls[0];
    assert_eq!(vars["orderId"], json!(format!("gid://shopify/Order/{id}")));
    assert_eq!(
        vars["refundMethod"],
        json!({"originalPaymentMethodsRefund": false}),
        "no money moves at Shopify"
    );
    assert_eq!(vars["restock"], json!(true));
    assert_eq!(vars["reason"], json!("CUSTOMER"));
    assert_eq!(vars["notifyCustomer"], json!(false));
    let note = vars["staffNote"].as_str().unwrap();
    assert!(
        note.contains("cancelled by the buyer before shipment"),
        "{note}"
    );
    assert!(
        note.contains("[aftersales-key:inst_60-cancel-fwd-0]"),
        "{note}"
    );
    assert!(note.contains("[aftersales-so:so-8]"), "{note}");
    assert_eq!(api.operations("AftersalesJob").await.len(), 2);
    // A repeat reads cancelledAt and sends nothing.
    o.cancel(&cancel(&id), &k).await.unwrap();
    assert_eq!(api.operations("AftersalesCancel").await.len(), 1);
    assert_eq!(api.cancellation(&id).1, 1);
    // A job done at once is not polled.
    api.set_cancel_job_polls(0);
    let now = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    o.cancel(&cancel(&now), &key("c-2")).await.unwrap();
    assert!(api.cancellation(&now).0);
    assert_eq!(api.operations("AftersalesJob").await.len(), 2);
}

#[tokio::test]
async fn a_cancel_job_still_running_is_transient_and_polled_again() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    api.set_cancel_job_polls(6);
    let k = key("inst_61-cancel-fwd-0");
    let e = o.cancel(&cancel(&id), &k).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
    assert!(e.message.contains("still running"), "{e}");
    assert!(!api.cancellation(&id).0);
    assert_eq!(api.operations("AftersalesJob").await.len(), 4);
    // The engine's retry: not cancelled yet, so the same job is polled, not a new cancel.
    o.cancel(&cancel(&id), &k).await.unwrap();
    assert!(api.cancellation(&id).0);
    assert_eq!(api.cancellation(&id).1, 1);
    assert_eq!(api.operations("AftersalesCancel").await.len(), 1);
    assert_eq!(api.operations("AftersalesJob").await.len(), 6);

    // Another process (no memory of the job) asks again while it runs: Shopify answers the
    // running job, and the order is still cancelled once.
    let other = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    let e = o.cancel(&cancel(&other), &key("c-2")).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
    let fresh = build(&api.uri()).order.unwrap();
    fresh.cancel(&cancel(&other), &key("c-2")).await.unwrap();
    assert_eq!(api.cancellation(&other).1, 1);
    assert_eq!(
        api.cancellation(&other).2.len(),
        1,
        "one cancellation started"
    );
}

#[tokio::test]
async fn an_already_cancelled_order_is_done() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    api.cancel_in_admin(&id);
    o.cancel(&cancel(&id), &key("c-1")).await.unwrap();
    assert!(api.operations("AftersalesCancel").await.is_empty());
    // Cancelled by someone else between the read and orderCancel: Shopify refuses, the
    // order tells it is done.
    let raced = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    api.cancel_meanwhile_next();
    o.cancel(&cancel(&raced), &key("c-2")).await.unwrap();
    assert_eq!(api.cancellation(&raced).1, 1);
    // A lost answer: the job ran; the retry reads cancelledAt.
    api.set_cancel_job_polls(0);
    let lost = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    api.lose_next_answer(Some("AftersalesCancel"));
    let e = o.cancel(&cancel(&lost), &key("c-3")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    o.cancel(&cancel(&lost), &key("c-3")).await.unwrap();
    assert_eq!(api.cancellation(&lost).1, 1);
}

#[tokio::test]
async fn cancel_refusals_are_permanent() {
    let (api, o) = start().await;
    // A return in progress blocks the cancellation.
    let id = shipped(&api, 1);
    o.request_return(&request(&id, vec![line(&id, 0, 1)]), &key("k-1"))
        .await
        .unwrap();
    let e = o.cancel(&cancel(&id), &key("c-1")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.message.contains("returns in progress"), "{e}");
    assert!(!api.cancellation(&id).0);
    // An unknown order.
    let e = o.cancel(&cancel("404"), &key("c-2")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound, "{e}");
    assert!(e.message.contains("no order"), "{e}");
}

#[test]
fn a_missing_token_names_the_variable_not_the_value() {
    let mut registry = Registry::new();
    aftersales_adapter_shopify::register(&mut registry);
    let e = registry
        .build(&common::config("http://127.0.0.1:9"), &|_| None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "adapter `shopify`: environment variable `SHOPIFY_ADMIN_TOKEN` (named by `access_token_env`) is not set"
    );
}

// ---------------------------------------------------------------- webhooks

const REFUND: &[u8] = include_bytes!("fixtures/refunds_create.json");

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_564_800)
}

fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    // 2026-11-25T00:00:00Z is 1_795_564_800; the tests stay within that day.
    let rem = secs - 1_795_564_800;
    format!(
        "2026-11-25T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn signed(secret: &str, id: &str, topic: &str, body: &[u8], at: SystemTime) -> Headers {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    Headers::new()
        .with(
            "X-Shopify-Hmac-Sha256",
            STANDARD.encode(mac.finalize().into_bytes()),
        )
        .with("X-Shopify-Webhook-Id", id)
        .with("X-Shopify-Triggered-At", rfc3339(at))
        .with("X-Shopify-Topic", topic)
}

fn verifier() -> Arc<dyn WebhookVerifier> {
    build("http://127.0.0.1:9").webhooks.unwrap()
}

#[test]
fn a_refund_webhook_is_a_typed_event() {
    let v = verifier();
    let at = now() + Duration::from_secs(60);
    let e = v
        .verify(
            &signed(CLIENT_SECRET, "wh-1", "refunds/create", REFUND, at),
            REFUND,
            at,
        )
        .unwrap()
        .unwrap();
    assert_eq!(e.name, "payment.refund.succeeded");
    assert_eq!(e.dedupe_id, "wh-1");
    assert_eq!(e.correlation, "gid://shopify/Refund/890088186047892319");
    assert_eq!(
        e.payload,
        json!({
            "refund_id": "gid://shopify/Refund/890088186047892319",
            "payment_id": "gid://shopify/OrderTransaction/55000011",
            "amount": {"minor": 4_500, "currency": "USD"},
            "status": "succeeded",
            "service_order_id": "so-42",
        })
    );
}

#[test]
fn signatures_are_base64_hmacs_of_the_raw_body() {
    let v = verifier();
    let at = now();
    // The previous secret during a rotation.
    let h = signed(OLD_CLIENT_SECRET, "wh-2", "refunds/create", REFUND, at);
    assert!(v.verify(&h, REFUND, at).unwrap().is_some());
    // Another secret; a hex signature; a body re-serialised after signing.
    let h = signed("shpss_other", "wh-3", "refunds/create", REFUND, at);
    assert_eq!(v.verify(&h, REFUND, at), Err(WebhookError::BadSignature));
    let mut mac = Hmac::<Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(REFUND);
    let hex_sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let h = Headers::new()
        .with("X-Shopify-Hmac-Sha256", hex_sig)
        .with("X-Shopify-Webhook-Id", "wh-4")
        .with("X-Shopify-Triggered-At", rfc3339(at))
        .with("X-Shopify-Topic", "refunds/create");
    assert_eq!(v.verify(&h, REFUND, at), Err(WebhookError::BadSignature));
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(REFUND).unwrap()).unwrap();
    let h = signed(CLIENT_SECRET, "wh-5", "refunds/create", REFUND, at);
    assert_eq!(
        v.verify(&h, &reserialised, at),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        v.verify(&Headers::new(), REFUND, at),
        Err(WebhookError::MissingHeader("X-Shopify-Hmac-Sha256".into()))
    );
}

#[test]
fn a_replayed_webhook_is_deduped_or_refused() {
    let v = verifier();
    let h = signed(CLIENT_SECRET, "wh-6", "refunds/create", REFUND, now());
    let a = v.verify(&h, REFUND, now()).unwrap().unwrap();
    let b = v.verify(&h, REFUND, now()).unwrap().unwrap();
    assert_eq!(a.dedupe_id, b.dedupe_id, "the engine processes it once");
    let later = now() + Duration::from_secs(301);
    assert_eq!(
        v.verify(&h, REFUND, later),
        Err(WebhookError::StaleTimestamp {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
}

#[test]
fn other_topics_are_acknowledged_and_dropped() {
    let v = verifier();
    let body = br#"{"id": 450789469, "admin_graphql_api_id": "gid://shopify/Order/450789469", "cancel_reason": "customer"}"#;
    let h = signed(CLIENT_SECRET, "wh-7", "orders/cancelled", body, now());
    assert_eq!(v.verify(&h, body, now()), Ok(None));
    let body = br#"{"id": 1, "order_id": 2, "transactions": [{"kind": "refund", "status": "pending", "amount": "1.0", "currency": "USD"}]}"#;
    let h = signed(CLIENT_SECRET, "wh-8", "refunds/create", body, now());
    assert_eq!(v.verify(&h, body, now()), Ok(None), "nothing refunded yet");
}
