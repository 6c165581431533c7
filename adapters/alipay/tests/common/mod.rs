//! A stateful mock of the Alipay open-platform gateway (the documented shapes and RSA2
//! signatures), the keys it and the adapter use (generated at test time, never committed),
//! and the adapter built against it the way the binary builds it.
//!
//! `POST /gateway.do` (form): every request must carry a valid RSA2 `sign` made with the
//! application key over the sorted parameters; every answer is
//! `{"<method>_response": {...}, "sign": ..}` signed with the Alipay key over the raw text of
//! the response object.
//!
//! - `alipay.trade.refund`: one `out_request_no` is refunded once per trade; a repeat
//!   answers success with `fund_change = N`; the same number with another amount is
//!   `ACQ.DISCORDANT_REPEAT_REQUEST`; more than what is left is
//!   `ACQ.REASON_TRADE_REFUND_FEE_ERR`; an unknown trade `ACQ.TRADE_NOT_EXIST`.
//! - `alipay.trade.fastpay.refund.query`: the refund with `refund_status = REFUND_SUCCESS`,
//!   or `code = 10000` with no refund data when the number was never used.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

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

pub const APP_ID: &str = "2021004100000001";

/// How long a lost answer is held back; the adapter's timeout in tests is shorter.
pub const LOST_ANSWER_DELAY: Duration = Duration::from_secs(3);

/// RSA keys made once per test binary.
pub struct Keys {
    /// The application private key as the Alipay key tool writes it: bare base64 PKCS#8.
    pub app_private_b64: String,
    pub app_public: VerifyingKey<Sha256>,
    pub alipay: SigningKey<Sha256>,
    /// The Alipay public key as the open platform shows it: bare base64 SPKI.
    pub alipay_public_b64: String,
    /// A key pair that is not Alipay's.
    pub stranger: SigningKey<Sha256>,
    pub app_public_pem: String,
}

fn strip_pem(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat()
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let app = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let alipay = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let stranger = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let app_public_pem = app
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        Keys {
            app_private_b64: strip_pem(&app.to_pkcs8_pem(LineEnding::LF).unwrap()),
            app_public: VerifyingKey::new(app.to_public_key()),
            alipay_public_b64: strip_pem(
                &alipay
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap(),
            ),
            alipay: SigningKey::new(alipay),
            stranger: SigningKey::new(stranger),
            app_public_pem,
        }
    })
}

pub fn env(name: &str) -> Option<String> {
    match name {
        "ALIPAY_APP_PRIVATE_KEY" => Some(keys().app_private_b64.clone()),
        "ALIPAY_PUBLIC_KEY" => Some(keys().alipay_public_b64.clone()),
        _ => None,
    }
}

pub fn config(base_url: &str) -> AdapterConfig {
    AdapterConfig::with_settings(
        "alipay",
        json!({
            "gateway_url": format!("{base_url}/gateway.do"),
            "app_id": APP_ID,
            "private_key_env": "ALIPAY_APP_PRIVATE_KEY",
            "alipay_public_key_env": "ALIPAY_PUBLIC_KEY",
            "timeout": "1s",
            "webhook_tolerance": "5m",
        }),
    )
}

/// Builds the adapter the way the binary does: registry, config, environment.
pub fn build(base_url: &str) -> Built {
    let mut registry = Registry::new();
    aftersales_adapter_alipay::register(&mut registry);
    registry.build(&config(base_url), &env).unwrap()
}

/// Alipay's signed content: parameters but `skip`, empty ones left out, sorted, `k=v&k=v`.
pub fn signed_content(params: &[(String, String)], skip: &[&str]) -> String {
    let mut kept: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(&k.as_str()))
        .collect();
    kept.sort();
    kept.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn rsa2(key: &SigningKey<Sha256>, content: &str) -> String {
    B64.encode(key.sign(content.as_bytes()).to_bytes())
}

/// `yyyy-MM-dd HH:mm:ss` in China Standard Time, for the few instants the tests use.
pub fn cst(at: SystemTime) -> String {
    let unix = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64 + 8 * 3600;
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil date from days since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A refund notification as Alipay posts it: form parameters signed (without `sign` and
/// `sign_type`) by `key`, `notify_time` = `at`.
pub fn notification(
    key: &SigningKey<Sha256>,
    mut params: Vec<(String, String)>,
    at: SystemTime,
) -> (Headers, Vec<u8>) {
    params.retain(|(k, _)| k != "notify_time" && k != "sign" && k != "sign_type");
    params.push(("notify_time".into(), cst(at)));
    let sign = rsa2(key, &signed_content(&params, &["sign", "sign_type"]));
    params.push(("sign_type".into(), "RSA2".into()));
    params.push(("sign".into(), sign));
    let body = serde_urlencoded::to_string(&params).unwrap().into_bytes();
    (
        Headers::new().with(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        body,
    )
}

/// The captured refund notification's parameters (`notify_time`, `sign` added when sent).
pub fn fixture_params() -> Vec<(String, String)> {
    let v: BTreeMap<String, String> =
        serde_json::from_slice(include_bytes!("../fixtures/refund_notification.json")).unwrap();
    v.into_iter().collect()
}

/// A running mock; dropping it stops the server.
pub struct MockAlipay {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// out_trade_no → (trade_no, total fen)
    trades: BTreeMap<String, (String, i64)>,
    refunds: Vec<Rec>,
    next: u64,
    faults: VecDeque<Fault>,
}

#[derive(Clone)]
struct Rec {
    out_trade_no: String,
    out_request_no: String,
    fen: i64,
}

enum Fault {
    Http(u16),
    /// `code = 20000`, nothing happens.
    Unavailable,
    /// `ACQ.SYSTEM_ERROR`, nothing happens.
    SystemError,
    LoseAnswer,
    SignWithStranger,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

fn fen(yuan: &str) -> Option<i64> {
    let (i, f) = yuan.split_once('.').unwrap_or((yuan, ""));
    if f.len() > 2 || i.is_empty() {
        return None;
    }
    let f = format!("{f:0<2}");
    Some(i.parse::<i64>().ok()? * 100 + f.parse::<i64>().ok()?)
}

impl MockAlipay {
    pub async fn start() -> MockAlipay {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Handler {
                state: state.clone(),
            })
            .mount(&server)
            .await;
        MockAlipay { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// A paid trade of `amount`; its `out_trade_no` is the payment id.
    pub fn create_payment(&self, amount: Money) -> PaymentId {
        assert_eq!(amount.currency, Currency::CNY);
        let mut s = lock(&self.state);
        s.next += 1;
        let out_trade_no = format!("70501111111S001111{:04}", s.next);
        let trade_no = format!("2026010122001{:015}", s.next);
        s.trades
            .insert(out_trade_no.clone(), (trade_no, amount.minor));
        PaymentId::new(out_trade_no)
    }

    pub fn movements(&self, payment: &PaymentId) -> Vec<Money> {
        lock(&self.state)
            .refunds
            .iter()
            .filter(|r| r.out_trade_no == payment.as_str())
            .map(|r| Money::new(r.fen, Currency::CNY))
            .collect()
    }

    pub fn fail_next_http(&self, status: u16) {
        lock(&self.state).faults.push_back(Fault::Http(status));
    }

    pub fn unavailable_next(&self) {
        lock(&self.state).faults.push_back(Fault::Unavailable);
    }

    pub fn system_error_next(&self) {
        lock(&self.state).faults.push_back(Fault::SystemError);
    }

    pub fn lose_next_answer(&self) {
        lock(&self.state).faults.push_back(Fault::LoseAnswer);
    }

    pub fn forge_next_answer(&self) {
        lock(&self.state).faults.push_back(Fault::SignWithStranger);
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// The parameters of every `alipay.trade.refund` call received.
    pub async fn refund_calls(&self) -> Vec<HashMap<String, String>> {
        self.requests()
            .await
            .iter()
            .map(|r| {
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&r.body)
                    .unwrap()
                    .into_iter()
                    .collect::<HashMap<_, _>>()
            })
            .filter(|p| p.get("method").map(String::as_str) == Some("alipay.trade.refund"))
            .collect()
    }
}

struct Handler {
    state: Arc<Mutex<State>>,
}

/// `{"<name>": <object>, "sign": ..}` with the sign over the object's exact text.
fn answer(name: &str, object: &Value, key: &SigningKey<Sha256>) -> ResponseTemplate {
    let text = serde_json::to_string(object).unwrap();
    let sign = rsa2(key, &text);
    ResponseTemplate::new(200).set_body_raw(
        format!("{{\"{name}\":{text},\"sign\":\"{sign}\"}}"),
        "text/html;charset=utf-8",
    )
}

fn failure(name: &str, sub_code: &str, sub_msg: &str) -> ResponseTemplate {
    answer(
        name,
        &json!({"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}),
        &keys().alipay,
    )
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let params: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&request.body).unwrap_or_default();
        let p: HashMap<&str, &str> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let method = p.get("method").copied().unwrap_or_default();
        let name = format!("{}_response", method.replace('.', "_"));
        // The request signature, checked over the parameters as received.
        let signed = signed_content(&params, &["sign"]);
        let genuine = p
            .get("sign")
            .and_then(|s| B64.decode(s).ok())
            .and_then(|raw| Signature::try_from(raw.as_slice()).ok())
            .is_some_and(|sig| keys().app_public.verify(signed.as_bytes(), &sig).is_ok());
        if request.url.path() != "/gateway.do"
            || p.get("app_id") != Some(&APP_ID)
            || p.get("sign_type") != Some(&"RSA2")
            || p.get("charset") != Some(&"utf-8")
            || p.get("version") != Some(&"1.0")
            || p.get("timestamp").is_none_or(|t| t.len() != 19)
            || !genuine
        {
            return answer(
                &name,
                &json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature", "sub_msg": "验签出错"}),
                &keys().alipay,
            );
        }
        let Some(biz) = p
            .get("biz_content")
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
        else {
            return answer(
                &name,
                &json!({"code": "40001", "msg": "Missing Required Arguments", "sub_code": "isv.missing-biz-content"}),
                &keys().alipay,
            );
        };
        let mut s = lock(&self.state);
        let trade = match (biz["out_trade_no"].as_str(), biz["trade_no"].as_str()) {
            (_, Some(no)) => s
                .trades
                .iter()
                .find(|(_, (t, _))| t == no)
                .map(|(o, (t, total))| (o.clone(), t.clone(), *total)),
            (Some(o), None) => s
                .trades
                .get(o)
                .map(|(t, total)| (o.to_owned(), t.clone(), *total)),
            (None, None) => None,
        };
        match method {
            "alipay.trade.refund" => refund(&mut s, &name, &biz, trade),
            "alipay.trade.fastpay.refund.query" => {
                let Some((out_trade_no, trade_no, total)) = trade else {
                    return failure(&name, "ACQ.TRADE_NOT_EXIST", "交易不存在");
                };
                let request_no = biz["out_request_no"].as_str().unwrap_or_default();
                let mut o = json!({
                    "code": "10000",
                    "msg": "Success",
                    "trade_no": trade_no,
                    "out_trade_no": out_trade_no,
                    "out_request_no": request_no,
                });
                if let Some(r) = s
                    .refunds
                    .iter()
                    .find(|r| r.out_trade_no == out_trade_no && r.out_request_no == request_no)
                {
                    o["total_amount"] = yuan(total).into();
                    o["refund_amount"] = yuan(r.fen).into();
                    o["refund_status"] = "REFUND_SUCCESS".into();
                }
                answer(&name, &o, &keys().alipay)
            }
            _ => answer(
                &name,
                &json!({"code": "40004", "msg": "Business Failed", "sub_code": "isv.invalid-method"}),
                &keys().alipay,
            ),
        }
    }
}

fn refund(
    s: &mut State,
    name: &str,
    biz: &Value,
    trade: Option<(String, String, i64)>,
) -> ResponseTemplate {
    let fault = s.faults.pop_front();
    match fault {
        Some(Fault::Http(code)) => return ResponseTemplate::new(code),
        Some(Fault::Unavailable) => {
            return answer(
                name,
                &json!({"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error", "sub_msg": "系统繁忙"}),
                &keys().alipay,
            );
        }
        Some(Fault::SystemError) => return failure(name, "ACQ.SYSTEM_ERROR", "系统错误"),
        _ => {}
    }
    let Some((out_trade_no, trade_no, total)) = trade else {
        return failure(name, "ACQ.TRADE_NOT_EXIST", "交易不存在");
    };
    let (Some(amount), Some(request_no)) = (
        biz["refund_amount"].as_str().and_then(fen),
        biz["out_request_no"].as_str(),
    ) else {
        return answer(
            name,
            &json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-parameter", "sub_msg": "refund_amount 或 out_request_no 无效"}),
            &keys().alipay,
        );
    };
    let refunded: i64 = s
        .refunds
        .iter()
        .filter(|r| r.out_trade_no == out_trade_no)
        .map(|r| r.fen)
        .sum();
    let fund_change = match s
        .refunds
        .iter()
        .find(|r| r.out_trade_no == out_trade_no && r.out_request_no == request_no)
    {
        Some(r) if r.fen == amount => "N",
        Some(_) => {
            return failure(name, "ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致");
        }
        None => {
            if amount <= 0 || refunded + amount > total {
                return failure(name, "ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额超限");
            }
            s.refunds.push(Rec {
                out_trade_no: out_trade_no.clone(),
                out_request_no: request_no.to_owned(),
                fen: amount,
            });
            "Y"
        }
    };
    let after: i64 = s
        .refunds
        .iter()
        .filter(|r| r.out_trade_no == out_trade_no)
        .map(|r| r.fen)
        .sum();
    let key = match fault {
        Some(Fault::SignWithStranger) => &keys().stranger,
        _ => &keys().alipay,
    };
    let t = answer(
        name,
        &json!({
            "code": "10000",
            "msg": "Success",
            "trade_no": trade_no,
            "out_trade_no": out_trade_no,
            "buyer_logon_id": "159****5620",
            "fund_change": fund_change,
            "refund_fee": yuan(after),
            "gmt_refund_pay": "2026-01-01 08:00:01",
            "buyer_user_id": "2088101117955611",
        }),
        key,
    );
    match fault {
        Some(Fault::LoseAnswer) => t.set_delay(LOST_ANSWER_DELAY),
        _ => t,
    }
}

/// The conformance harness: a fresh adapter per check against a shared mock.
pub struct AlipayHarness {
    pub api: Arc<MockAlipay>,
    pub payment: Arc<dyn Payment>,
}

#[async_trait]
impl PaymentHarness for AlipayHarness {
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
        self.api.fail_next_http(503);
        true
    }
}
