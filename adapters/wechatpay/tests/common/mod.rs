//! A stateful mock of WeChat Pay API v3 (the documented shapes and signatures), the keys it
//! and the adapter use (generated at test time, never committed), and the adapter built
//! against it the way the binary builds it.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v3/pay/transactions/out-trade-no/{no}?mchid=..` | `200` and the order, or `404 ORDER_NOT_EXIST` |
//! | `POST /v3/refund/domestic/refunds` | `200` and the refund |
//! | `GET /v3/refund/domestic/refunds/{out_refund_no}` | `200` and the refund, or `404 RESOURCE_NOT_EXISTS` |
//!
//! Every request must carry a valid `Authorization: WECHATPAY2-SHA256-RSA2048 ...` made with
//! the merchant key (`401 SIGN_ERROR` otherwise); every answer is signed with the WeChat Pay
//! key (`Wechatpay-Timestamp/Nonce/Signature/Serial`). One `out_refund_no` is refunded once:
//! a repeat answers the refund as it stands; the same number with another amount is `400
//! INVALID_REQUEST`.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use aftersales_adapter::ids::PaymentId;
use aftersales_adapter::{AdapterConfig, Built, Headers, Payment, Registry};
use aftersales_adapter_testkit::PaymentHarness;
use aftersales_money::{Currency, Money};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::rand_core::OsRng;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const MCHID: &str = "1900000109";
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0119000001092026010100000000000001";
pub const OLD_PLATFORM_SERIAL: &str = "PUB_KEY_ID_0119000001092025010100000000000001";
pub const APIV3_KEY: &str = "a7cde1ZJB1kG2e7VGbQgX4Pu2Ywy8Hs1";

/// How long a lost answer is held back; the adapter's timeout in tests is shorter.
pub const LOST_ANSWER_DELAY: Duration = Duration::from_secs(3);

/// RSA keys made once per test binary.
pub struct Keys {
    pub merchant_private_pem: String,
    pub merchant_public: VerifyingKey<Sha256>,
    pub platform: SigningKey<Sha256>,
    pub platform_public_pem: String,
    pub old_platform: SigningKey<Sha256>,
    pub old_platform_public_pem: String,
    pub stranger: SigningKey<Sha256>,
}

fn pair() -> (RsaPrivateKey, String) {
    let key = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (key, public)
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (merchant, _) = pair();
        let (platform, platform_public_pem) = pair();
        let (old, old_platform_public_pem) = pair();
        let (stranger, _) = pair();
        Keys {
            merchant_private_pem: merchant.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            merchant_public: VerifyingKey::new(merchant.to_public_key()),
            platform: SigningKey::new(platform),
            platform_public_pem,
            old_platform: SigningKey::new(old),
            old_platform_public_pem,
            stranger: SigningKey::new(stranger),
        }
    })
}

pub fn env(name: &str) -> Option<String> {
    match name {
        "WECHATPAY_MERCHANT_KEY" => Some(keys().merchant_private_pem.clone()),
        "WECHATPAY_APIV3_KEY" => Some(APIV3_KEY.to_owned()),
        "WECHATPAY_PUBLIC_KEY" => Some(keys().platform_public_pem.clone()),
        "WECHATPAY_OLD_PUBLIC_KEY" => Some(keys().old_platform_public_pem.clone()),
        _ => None,
    }
}

pub fn config(base_url: &str) -> AdapterConfig {
    AdapterConfig::with_settings(
        "wechatpay",
        json!({
            "base_url": base_url,
            "mchid": MCHID,
            "merchant_serial_no": MERCHANT_SERIAL,
            "private_key_env": "WECHATPAY_MERCHANT_KEY",
            "apiv3_key_env": "WECHATPAY_APIV3_KEY",
            "platform_serial": PLATFORM_SERIAL,
            "platform_public_key_env": "WECHATPAY_PUBLIC_KEY",
            "platform_previous_serial": OLD_PLATFORM_SERIAL,
            "platform_previous_public_key_env": "WECHATPAY_OLD_PUBLIC_KEY",
            "notify_url": "https://shop.example.com/v1/webhooks/cn_apparel.payment",
            "timeout": "1s",
        }),
    )
}

/// Builds the adapter the way the binary does: registry, config, environment.
pub fn build(base_url: &str) -> Built {
    let mut registry = Registry::new();
    aftersales_adapter_wechatpay::register(&mut registry);
    registry.build(&config(base_url), &env).unwrap()
}

/// WeChat Pay's signature: `base64(SHA256withRSA("{ts}\n{nonce}\n{body}\n"))`.
pub fn platform_sign(key: &SigningKey<Sha256>, ts: &str, nonce: &str, body: &[u8]) -> String {
    let mut m = format!("{ts}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    B64.encode(key.sign(&m).to_bytes())
}

/// Signed notification headers.
pub fn notification_headers(
    key: &SigningKey<Sha256>,
    serial: &str,
    body: &[u8],
    at: SystemTime,
) -> Headers {
    let ts = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let nonce = "fdasflkja484w";
    Headers::new()
        .with("Wechatpay-Timestamp", ts.clone())
        .with("Wechatpay-Nonce", nonce)
        .with("Wechatpay-Signature", platform_sign(key, &ts, nonce, body))
        .with("Wechatpay-Serial", serial)
        .with("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
}

/// A refund notification body: the envelope with `resource` encrypted under the APIv3 key.
pub fn notification_body(id: &str, event_type: &str, resource: &Value) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(APIV3_KEY.as_bytes()).unwrap();
    let nonce = "fdasfjihihih";
    let plain = serde_json::to_vec(resource).unwrap();
    let ct = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: &plain,
                aad: b"refund",
            },
        )
        .unwrap();
    let mut envelope: Value = serde_json::from_slice(include_bytes!(
        "../fixtures/refund_notification_envelope.json"
    ))
    .unwrap();
    envelope["id"] = id.into();
    envelope["event_type"] = event_type.into();
    envelope["resource"]["ciphertext"] = B64.encode(ct).into();
    envelope["resource"]["nonce"] = nonce.into();
    serde_json::to_vec(&envelope).unwrap()
}

/// A running mock; dropping it stops the server.
pub struct MockWechat {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// out_trade_no → (transaction_id, total fen)
    orders: BTreeMap<String, (String, i64)>,
    refunds: Vec<Rec>,
    next: u64,
    asynchronous: bool,
    faults: VecDeque<Fault>,
}

#[derive(Clone)]
struct Rec {
    refund_id: String,
    out_refund_no: String,
    out_trade_no: String,
    transaction_id: String,
    refund: i64,
    total: i64,
    status: &'static str,
}

enum Fault {
    Status(u16, &'static str),
    LoseAnswer,
    SignWithStranger,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockWechat {
    pub async fn start() -> MockWechat {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Handler {
                state: state.clone(),
            })
            .mount(&server)
            .await;
        MockWechat { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// A paid order of `amount` fen; its `out_trade_no` is the payment id.
    pub fn create_payment(&self, amount: Money) -> PaymentId {
        assert_eq!(amount.currency, Currency::CNY);
        let mut s = lock(&self.state);
        s.next += 1;
        let out_trade_no = format!("1217752501201407{:012}", s.next);
        let transaction_id = format!("42000009912021032{:011}", s.next);
        s.orders
            .insert(out_trade_no.clone(), (transaction_id, amount.minor));
        PaymentId::new(out_trade_no)
    }

    pub fn set_asynchronous(&self, on: bool) {
        lock(&self.state).asynchronous = on;
    }

    /// Refunds that moved (or are moving) money: every one not `CLOSED`.
    pub fn movements(&self, payment: &PaymentId) -> Vec<Money> {
        lock(&self.state)
            .refunds
            .iter()
            .filter(|r| r.out_trade_no == payment.as_str() && r.status != "CLOSED")
            .map(|r| Money::new(r.refund, Currency::CNY))
            .collect()
    }

    /// Moves a refund to `status` and returns the decrypted notification resource for it.
    pub fn settle(&self, out_refund_no: &str, status: &'static str) -> Value {
        let mut s = lock(&self.state);
        let r = s
            .refunds
            .iter_mut()
            .find(|r| r.out_refund_no == out_refund_no)
            .unwrap();
        r.status = status;
        json!({
            "mchid": MCHID,
            "out_trade_no": r.out_trade_no,
            "transaction_id": r.transaction_id,
            "out_refund_no": r.out_refund_no,
            "refund_id": r.refund_id,
            "refund_status": r.status,
            "success_time": "2026-01-01T08:00:02+08:00",
            "user_received_account": "支付用户零钱",
            "amount": {"total": r.total, "refund": r.refund, "payer_total": r.total, "payer_refund": r.refund},
        })
    }

    pub fn fail_next(&self, status: u16, code: &'static str) {
        lock(&self.state)
            .faults
            .push_back(Fault::Status(status, code));
    }

    pub fn lose_next_answer(&self) {
        lock(&self.state).faults.push_back(Fault::LoseAnswer);
    }

    /// The next refund is made, but its answer is signed with a key WeChat Pay does not own.
    pub fn forge_next_answer(&self) {
        lock(&self.state).faults.push_back(Fault::SignWithStranger);
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    pub async fn refund_posts(&self) -> Vec<Request> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == "POST")
            .collect()
    }
}

fn refund_json(r: &Rec) -> Value {
    let mut v = json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": r.transaction_id,
        "out_trade_no": r.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": "2026-01-01T08:00:00+08:00",
        "status": r.status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": r.total,
            "refund": r.refund,
            "from": [],
            "payer_total": r.total,
            "payer_refund": r.refund,
            "settlement_refund": r.refund,
            "settlement_total": r.total,
            "discount_refund": 0,
            "currency": "CNY",
            "refund_fee": 0,
        },
        "promotion_detail": [],
    });
    if r.status == "SUCCESS" {
        v["success_time"] = "2026-01-01T08:00:02+08:00".into();
    }
    v
}

struct Handler {
    state: Arc<Mutex<State>>,
}

/// Checks the merchant's `Authorization` header over the request as received.
fn authorized(request: &Request) -> bool {
    let Some(auth) = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(params) = auth.strip_prefix("WECHATPAY2-SHA256-RSA2048 ") else {
        return false;
    };
    let fields: BTreeMap<&str, &str> = params
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect();
    if fields.get("mchid") != Some(&MCHID) || fields.get("serial_no") != Some(&MERCHANT_SERIAL) {
        return false;
    }
    let (Some(ts), Some(nonce), Some(sig)) = (
        fields.get("timestamp"),
        fields.get("nonce_str"),
        fields.get("signature"),
    ) else {
        return false;
    };
    let mut url = request.url.path().to_owned();
    if let Some(q) = request.url.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut m = format!("{}\n{url}\n{ts}\n{nonce}\n", request.method).into_bytes();
    m.extend_from_slice(&request.body);
    m.push(b'\n');
    let Ok(raw) = B64.decode(sig) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(raw.as_slice()) else {
        return false;
    };
    keys().merchant_public.verify(&m, &sig).is_ok()
}

fn signed(status: u16, body: &Value, key: &SigningKey<Sha256>) -> ResponseTemplate {
    let bytes = serde_json::to_vec(body).unwrap();
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let nonce = "593BEC0C930BF1AFEB40B4A08C8FB242";
    ResponseTemplate::new(status)
        .insert_header("Request-ID", "08F78BB5AF0610D302A2F8C0FF3F6F5D")
        .insert_header("Wechatpay-Timestamp", ts.as_str())
        .insert_header("Wechatpay-Nonce", nonce)
        .insert_header(
            "Wechatpay-Signature",
            platform_sign(key, &ts, nonce, &bytes).as_str(),
        )
        .insert_header("Wechatpay-Serial", PLATFORM_SERIAL)
        .set_body_raw(bytes, "application/json")
}

fn answer(status: u16, body: &Value) -> ResponseTemplate {
    signed(status, body, &keys().platform)
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    answer(status, &json!({"code": code, "message": message}))
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !authorized(request) {
            return error(401, "SIGN_ERROR", "签名错误");
        }
        let mut s = lock(&self.state);
        let path: Vec<&str> = request
            .url
            .path_segments()
            .map(|p| p.collect())
            .unwrap_or_default();
        match (request.method.as_str(), path.as_slice()) {
            ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => {
                let mchid = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "mchid")
                    .map(|(_, v)| v.into_owned());
                if mchid.as_deref() != Some(MCHID) {
                    return error(400, "PARAM_ERROR", "mchid 与请求不符");
                }
                match s.orders.get(*no) {
                    Some((tx, total)) => answer(
                        200,
                        &json!({
                            "appid": "wxd678efh567hg6787",
                            "mchid": MCHID,
                            "out_trade_no": no,
                            "transaction_id": tx,
                            "trade_type": "JSAPI",
                            "trade_state": "SUCCESS",
                            "trade_state_desc": "支付成功",
                            "success_time": "2026-01-01T07:00:00+08:00",
                            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                            "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
                        }),
                    ),
                    None => error(404, "ORDER_NOT_EXIST", "订单不存在"),
                }
            }
            ("POST", ["v3", "refund", "domestic", "refunds"]) => create(&mut s, request),
            ("GET", ["v3", "refund", "domestic", "refunds", no]) => {
                match s.refunds.iter().find(|r| r.out_refund_no == *no) {
                    Some(r) => answer(200, &refund_json(r)),
                    None => error(404, "RESOURCE_NOT_EXISTS", "退款单不存在"),
                }
            }
            _ => error(404, "NOT_FOUND", "no such endpoint"),
        }
    }
}

fn create(s: &mut State, request: &Request) -> ResponseTemplate {
    let fault = s.faults.pop_front();
    if let Some(Fault::Status(code, name)) = &fault {
        return error(*code, name, "系统繁忙，请稍后重试");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return error(400, "PARAM_ERROR", "请求体不是 JSON");
    };
    let (Some(no), Some(refund), Some(total), Some("CNY")) = (
        body["out_refund_no"].as_str(),
        body["amount"]["refund"].as_i64(),
        body["amount"]["total"].as_i64(),
        body["amount"]["currency"].as_str(),
    ) else {
        return error(400, "PARAM_ERROR", "缺少参数 out_refund_no 或 amount");
    };
    let order = match (
        body["out_trade_no"].as_str(),
        body["transaction_id"].as_str(),
    ) {
        (Some(no), None) => s
            .orders
            .get(no)
            .map(|(tx, t)| (no.to_owned(), tx.clone(), *t)),
        (None, Some(tx)) => s
            .orders
            .iter()
            .find(|(_, (t, _))| t == tx)
            .map(|(no, (tx, t))| (no.clone(), tx.clone(), *t)),
        _ => return error(400, "PARAM_ERROR", "transaction_id 与 out_trade_no 二选一"),
    };
    let Some((out_trade_no, transaction_id, order_total)) = order else {
        return error(404, "RESOURCE_NOT_EXISTS", "订单不存在");
    };
    if total != order_total {
        return error(400, "PARAM_ERROR", "订单金额与原订单不一致");
    }
    let answer_for = |r: &Rec, fault: Option<Fault>| {
        let key = match fault {
            Some(Fault::SignWithStranger) => &keys().stranger,
            _ => &keys().platform,
        };
        let t = signed(200, &refund_json(r), key);
        match fault {
            Some(Fault::LoseAnswer) => t.set_delay(LOST_ANSWER_DELAY),
            _ => t,
        }
    };
    if let Some(r) = s.refunds.iter().find(|r| r.out_refund_no == no) {
        if r.out_trade_no != out_trade_no || r.refund != refund {
            return error(
                400,
                "INVALID_REQUEST",
                "商户退款单号已存在，请求参数与原退款不一致",
            );
        }
        // One out_refund_no is refunded once: the repeat answers the refund as it stands.
        return answer_for(&r.clone(), fault);
    }
    if refund <= 0 {
        return error(400, "PARAM_ERROR", "退款金额必须大于 0");
    }
    let refunded: i64 = s
        .refunds
        .iter()
        .filter(|r| r.out_trade_no == out_trade_no && r.status != "CLOSED")
        .map(|r| r.refund)
        .sum();
    if refunded + refund > order_total {
        return error(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额");
    }
    s.next += 1;
    let rec = Rec {
        refund_id: format!("5030{:025}", s.next),
        out_refund_no: no.to_owned(),
        out_trade_no,
        transaction_id,
        refund,
        total,
        status: if s.asynchronous {
            "PROCESSING"
        } else {
            "SUCCESS"
        },
    };
    s.refunds.push(rec.clone());
    answer_for(&rec, fault)
}

/// The conformance harness: a fresh adapter per check against a shared mock.
pub struct WechatHarness {
    pub api: Arc<MockWechat>,
    pub payment: Arc<dyn Payment>,
}

#[async_trait]
impl PaymentHarness for WechatHarness {
    fn payment(&self) -> Arc<dyn Payment> {
        self.payment.clone()
    }

    async fn paid_payment(&self, amount: Money) -> PaymentId {
        self.api.create_payment(amount)
    }

    fn movements(&self, payment_id: &PaymentId) -> Vec<Money> {
        self.api.movements(payment_id)
    }

    fn lose_next_answer(&self) -> bool {
        self.api.lose_next_answer();
        true
    }

    fn fail_next_transiently(&self) -> bool {
        self.api.fail_next(503, "SYSTEM_ERROR");
        true
    }
}
