//! `aftersales demo`: the daemon on a SQLite file with the simulator behind every business
//! line, about a thousand buyers' requests pushed through its HTTP API, merchants, buyers
//! and the warehouse acting on them, timers firing on a fast clock, and a summary.
//!
//! Everything goes through the same code as `aftersales serve`: the shipped workflows and
//! business lines, the after-sales service (rules, refunds), the engine on SQLite, the
//! axum API, signed webhooks. Only the platforms are simulated, in one simulated world, and
//! time is a clock the demo moves forward six hours at a time once the workers are idle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use aftersales_adapter::ids::{BuyerId, LineId, OrderId, Sku};
use aftersales_adapter::{WebhookVerifier, types::ShipmentState};
use aftersales_adapter_sim::{
    BusinessFaults, FaultRates, Inspection, LedgerKind, LineDetails, NewLine, NewOrder,
    OrderDetails, Sim, SimConfig,
};
use aftersales_core::engine::{Clock, Engine, ManualClock, WorkerConfig};
use aftersales_domain::{
    BusinessLineId, CategoryId, RateThreshold, Reason, SalesEvent, SalesRecord, UnixMillis,
};
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use aftersales_runtime::service::{AfterSales, Line, ListQuery, ServiceOrderView};
use aftersales_server::{AppState, Auth};
use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::serve::{Config, load_definitions};

/// Options of `aftersales demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How many after-sales requests to push.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// The SQLite file (recreated on every run).
    #[arg(long, default_value = "target/demo/aftersales-demo.db")]
    pub db: PathBuf,
    /// Where the API listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Seeds the simulator and the mix of requests: the same seed, the same run.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Turn the simulator's faults off (timeouts, lost answers, failed refunds, too-late
    /// interceptions, out-of-stock).
    #[arg(long)]
    pub no_faults: bool,
    /// Keep the daemon running after the summary, until Ctrl-C, to explore the API.
    #[arg(long)]
    pub serve: bool,
}

/// A small deterministic random source (xorshift), so a seed gives the same mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

/// One request the demo will send, with the order it needs in the simulated world.
struct Planned {
    body: Value,
    /// Set the warehouse's state after the submit (a parcel that leaves while the request
    /// is on its way: the too-late cancellation).
    ship_after_submit: bool,
}

/// What the demo world sells, per business line: (sku prefix, category, unit price).
type Goods = &'static [(&'static str, &'static str, i64)];

const CATALOGUE: &[(&str, Goods)] = &[
    (
        "apparel",
        &[
            ("tshirt", "apparel.tops", 9_900),
            ("jeans", "apparel.bottoms", 29_900),
            ("dress", "apparel.dresses", 49_900),
            ("sneakers", "apparel.shoes", 59_900),
        ],
    ),
    (
        "electronics_3c",
        &[
            ("phone", "3c.phones", 399_900),
            ("earbuds", "3c.audio", 89_900),
            ("charger", "3c.accessories", 12_900),
        ],
    ),
];

const SIZES: &[&str] = &["s", "m", "l", "xl"];

/// Creates the order for request `i` in the simulated world and plans the request.
fn plan(sim: &Sim, rng: &mut Rng, i: usize, sales: &mut Vec<SalesRecord>, now: i64) -> Planned {
    let order = format!("D{i:05}");
    let oid = OrderId::new(order.clone());
    let roll = rng.below(100);
    let (line, kind) = match roll {
        0..=7 => ("electronics_3c", "cancel_after_payment"),
        8..=12 => ("electronics_3c", "refund_only"),
        13..=24 => ("electronics_3c", "return_refund"),
        25..=29 => ("electronics_3c", "exchange"),
        30..=35 => ("apparel", "cancel_after_payment"),
        36..=55 => ("apparel", "return_refund"),
        56..=65 => ("apparel", "exchange"),
        66..=67 => ("apparel", "refund_only"),
        68..=79 => ("online_courses", "return_refund"),
        80..=83 => ("online_courses", "exchange"),
        84..=91 => ("membership", "return_refund"),
        _ => ("course_with_textbook", "return_refund"),
    };
    let sold = |sales: &mut Vec<SalesRecord>, category: &str, sku: &str, q: u64| {
        sales.push(SalesRecord {
            business_line: BusinessLineId::new(line),
            category: CategoryId::new(category),
            sku: aftersales_domain::Sku::new(sku),
            at: UnixMillis(now),
            event: SalesEvent::Sold { quantity: q },
        });
    };
    let reasons_buyer = [Reason::NoReason, Reason::WrongSize, Reason::Other];
    let reasons_merchant = [Reason::Damaged, Reason::Quality, Reason::WrongItem];
    let reason = if rng.chance(250) {
        *rng.pick(&reasons_merchant)
    } else {
        *rng.pick(&reasons_buyer)
    };
    match line {
        "apparel" | "electronics_3c" => {
            let goods = CATALOGUE
                .iter()
                .find(|(l, _)| *l == line)
                .map(|(_, g)| *g)
                .unwrap_or(&[]);
            let (spu, category, price) = *rng.pick(goods);
            let size = if line == "apparel" {
                *rng.pick(SIZES)
            } else {
                "std"
            };
            let sku = format!("{spu}-{size}");
            let quantity = if line == "apparel" && rng.chance(300) {
                3
            } else {
                1
            };
            // Some apparel orders carry a ¥10 coupon over the line.
            let coupon = if line == "apparel" && rng.chance(300) {
                1_000
            } else {
                0
            };
            let gross = price * i64::from(quantity);
            let shipping = if rng.chance(500) { 0 } else { 800 };
            let _ = sim.create_order(NewOrder {
                order_id: oid.clone(),
                buyer_id: BuyerId::new(format!("buyer-{}", rng.below(400))),
                lines: vec![NewLine {
                    line_id: LineId::new("l1"),
                    sku: Sku::new(sku.clone()),
                    spu: spu.into(),
                    quantity,
                    unit_price: cny(price),
                    paid: cny(gross - coupon),
                    entitlement_units: None,
                }],
                shipping_fee: cny(shipping),
            });
            let mut flags = Vec::new();
            if line == "electronics_3c" && rng.chance(40) {
                flags.push("unsealed".to_owned());
            }
            let _ = sim.set_line_details(
                &oid,
                &LineId::new("l1"),
                LineDetails {
                    line_discount: Some(cny(0)),
                    category: Some(category.into()),
                    flags,
                    course_id: None,
                },
            );
            if coupon > 0 {
                let _ = sim.set_order_details(
                    &oid,
                    OrderDetails {
                        coupon: Some(cny(coupon)),
                        paid_at: None,
                    },
                );
            }
            sold(sales, category, &sku, u64::from(quantity));
            // Where the goods are when the buyer asks.
            let mut ship_after_submit = false;
            match kind {
                "cancel_after_payment" => {
                    if rng.chance(200) {
                        ship_after_submit = true;
                    }
                }
                "refund_only" => {
                    let _ = sim.set_shipment(&oid, ShipmentState::Shipped);
                }
                _ => {
                    let _ = sim.set_shipment(&oid, ShipmentState::Delivered);
                }
            }
            let mut line_req = json!({"line_id": "l1"});
            if quantity > 1 && rng.chance(600) {
                line_req["quantity"] = json!(1);
            }
            if kind == "exchange" {
                let other = if line == "apparel" {
                    let s = *rng.pick(SIZES);
                    format!("{spu}-{s}")
                } else {
                    sku.clone()
                };
                // Mostly in stock; some sizes have run out.
                let stock = if rng.chance(150) { 0 } else { 50 };
                sim.set_stock(&Sku::new(other.clone()), stock);
                line_req["exchange_to"] = json!(other);
            }
            let mut body = json!({
                "business_line": line, "order_id": order, "type": kind,
                "lines": [line_req],
                "reason": if kind == "exchange" { json!("wrong_size") } else { json!(reason) },
                "evidence": if reason == Reason::Damaged { json!([format!("img://{order}/1.jpg")]) } else { json!([]) },
            });
            // Now and then a buyer asks for more than was paid: refused by the rules.
            if kind == "return_refund" && rng.chance(15) {
                body["requested_amount"] = json!({"minor": gross * 2, "currency": "CNY"});
            }
            Planned {
                body,
                ship_after_submit,
            }
        }
        "online_courses" | "membership" => {
            let (sku, price, lessons) = if line == "membership" {
                (format!("vip-{}", rng.pick(&["month", "year"])), 3_000, 30)
            } else {
                (
                    format!("course-{}", rng.pick(&["rust", "go", "ml", "design"])),
                    99_900,
                    10,
                )
            };
            let _ = sim.create_order(NewOrder {
                order_id: oid.clone(),
                buyer_id: BuyerId::new(format!("buyer-{}", rng.below(400))),
                lines: vec![NewLine {
                    line_id: LineId::new("l1"),
                    sku: Sku::new(sku.clone()),
                    spu: sku.as_str().into(),
                    quantity: 1,
                    unit_price: cny(price),
                    paid: cny(price),
                    entitlement_units: Some(lessons),
                }],
                shipping_fee: cny(0),
            });
            let category = if line == "membership" {
                "virtual.membership"
            } else {
                "virtual.courses"
            };
            let _ = sim.set_line_details(
                &oid,
                &LineId::new("l1"),
                LineDetails {
                    category: Some(category.into()),
                    ..LineDetails::default()
                },
            );
            if let Some(ent) = sim
                .order(&oid)
                .and_then(|o| o.lines.first().and_then(|l| l.entitlement_id.clone()))
            {
                let used = rng.below(u64::from(lessons) / 2) as u32;
                if used > 0 {
                    let _ = sim.consume(&ent, used);
                }
            }
            sold(sales, category, &sku, 1);
            let mut line_req = json!({"line_id": "l1"});
            if kind == "exchange" {
                line_req["exchange_to"] = json!("course-data");
            }
            Planned {
                body: json!({
                    "business_line": line, "order_id": order, "type": kind,
                    "lines": [line_req], "reason": "no_reason",
                }),
                ship_after_submit: false,
            }
        }
        _ => {
            let _ = sim.create_order(NewOrder {
                order_id: oid.clone(),
                buyer_id: BuyerId::new(format!("buyer-{}", rng.below(400))),
                lines: vec![
                    NewLine {
                        line_id: LineId::new("book"),
                        sku: Sku::new("rust-book"),
                        spu: "rust-book".into(),
                        quantity: 1,
                        unit_price: cny(8_000),
                        paid: cny(8_000),
                        entitlement_units: None,
                    },
                    NewLine {
                        line_id: LineId::new("course"),
                        sku: Sku::new("rust-course-bundle"),
                        spu: "rust-course-bundle".into(),
                        quantity: 1,
                        unit_price: cny(40_000),
                        paid: cny(40_000),
                        entitlement_units: Some(20),
                    },
                ],
                shipping_fee: cny(0),
            });
            for l in ["book", "course"] {
                let _ = sim.set_line_details(
                    &oid,
                    &LineId::new(l),
                    LineDetails {
                        category: Some("bundle.course_with_book".into()),
                        ..LineDetails::default()
                    },
                );
            }
            let _ = sim.set_shipment(&oid, ShipmentState::Delivered);
            sold(sales, "bundle.course_with_book", "rust-book", 1);
            sold(sales, "bundle.course_with_book", "rust-course-bundle", 1);
            Planned {
                body: json!({
                    "business_line": line, "order_id": order, "type": kind,
                    "lines": [{"line_id": "book"}, {"line_id": "course"}], "reason": "no_reason",
                }),
                ship_after_submit: false,
            }
        }
    }
}

fn sim_config(seed: u64, faults: bool) -> SimConfig {
    let mut c = SimConfig::quiet(seed);
    if faults {
        c.default_faults = FaultRates {
            transient: 30,
            permanent: 0,
            lost_answer: 10,
            lost_request: 5,
            hang: 0,
        };
        c.faults.insert(
            "payment.refund".into(),
            FaultRates {
                transient: 60,
                permanent: 3,
                lost_answer: 20,
                lost_request: 10,
                hang: 0,
            },
        );
        c.business = BusinessFaults {
            intercept_too_late: 150,
            carrier_intercept_fails: 200,
            wrong_item: 0,
            out_of_stock: 0,
            pending_refund_fails: 0,
        };
    }
    c
}

fn bar(multi: &MultiProgress, len: u64, msg: &str) -> ProgressBar {
    let pb = multi.add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>11} [{bar:40}] {pos:>5}/{len:5} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(msg.to_owned());
    pb
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = Config::default();
    let defs = load_definitions(&config)?;
    if let Some(dir) = args.db.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", args.db.display()));
    }
    let url = format!("sqlite://{}", args.db.display());
    let store = aftersales_store::open_store(&url)
        .await
        .context("opening the demo store")?;

    // One clock for the engine and the simulated world, moved forward by the demo.
    let start_ms = chrono_now_ms();
    let clock = ManualClock::new(start_ms);
    let sim_clock = clock.clone();
    let sim = Sim::new(sim_config(args.seed, !args.no_faults), move || {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(sim_clock.now_ms()).unwrap_or(0))
    });
    let set = Arc::new(sim.adapter_set());
    let mut dispatcher = AdapterDispatcher::new();
    let mut lines = Vec::new();
    let mut thresholds = Vec::new();
    for (_, line) in defs.lines {
        dispatcher.bind(line.id.to_string(), set.clone());
        thresholds.push(line.return_rate.clone());
        lines.push(Line {
            config: line,
            adapters: set.clone(),
        });
    }
    let engine = Arc::new(Engine::new(
        store,
        Arc::new(clock.clone()),
        Arc::new(dispatcher),
        aftersales_runtime::catalogue::builtin(),
    ));
    engine
        .deploy(&defs.workflow_files)
        .await
        .context("deploying the workflows")?;
    let service = Arc::new(AfterSales::new(engine.clone(), lines));

    // The daemon: workers and the HTTP API.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine.clone().run(
        WorkerConfig {
            concurrency: 32,
            ..WorkerConfig::default()
        },
        stop_rx,
    ));
    let mut webhooks: HashMap<String, Arc<dyn WebhookVerifier>> = HashMap::new();
    webhooks.insert("sim".into(), Arc::new(sim.webhook_verifier()));
    let app = aftersales_server::router(AppState {
        engine: engine.clone(),
        auth: Arc::new(Auth::new(Vec::new())),
        body_limit: 1 << 20,
        metrics: aftersales_server::install_metrics().ok(),
        webhooks: Arc::new(webhooks),
        service: Some(service.clone()),
    })
    .merge(demo_routes(sim.clone()));
    let addr: SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen `{}` is not an address", args.listen))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let (http_stop_tx, mut http_stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop_rx.changed().await;
            })
            .await
    });
    let base = format!("http://{bound}");
    println!(
        "aftersales demo: daemon on {base} (SQLite {}), simulator faults {}",
        args.db.display(),
        if args.no_faults { "off" } else { "on" }
    );
    let http = reqwest::Client::new();

    let multi = MultiProgress::new();
    // 1. The simulated world: orders, and what was sold.
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut sales = Vec::new();
    let mut planned = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        planned.push(plan(&sim, &mut rng, i, &mut sales, start_ms));
    }
    // Orders nobody complains about: most of what is sold is kept.
    add_quiet_sales(&mut sales, &mut rng, start_ms);
    post_sales(&http, &base, &sales).await?;

    // 2. The buyers' requests, through the API, eight at a time.
    let submit_bar = bar(&multi, planned.len() as u64, "submitted");
    let mut accepted: Vec<String> = Vec::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut ship_later = Vec::new();
    let mut chunks = planned.chunks(8);
    let mut n = 0usize;
    for chunk in &mut chunks {
        let mut set = tokio::task::JoinSet::new();
        for p in chunk {
            let http = http.clone();
            let url = format!("{base}/v1/after-sales");
            let body = p.body.clone();
            let key = format!("demo-{}-{n}", args.seed);
            n += 1;
            let ship = p.ship_after_submit;
            let order = p.body["order_id"].as_str().unwrap_or_default().to_owned();
            set.spawn(async move {
                let resp = http
                    .post(&url)
                    .header("Idempotency-Key", key)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                (resp, ship, order)
            });
        }
        while let Some(r) = set.join_next().await {
            let (resp, ship, order) = r?;
            let resp = resp.context("submitting a request")?;
            let status = resp.status();
            let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap_or_default())
                .unwrap_or(Value::Null);
            if status.is_success() {
                accepted.push(v["id"].as_str().unwrap_or_default().to_owned());
                if ship {
                    ship_later.push(order);
                }
            } else if status.as_u16() == 422 {
                let code = v["rule"]["code"].as_str().unwrap_or("invalid").to_owned();
                *refused.entry(code).or_default() += 1;
            } else {
                bail!("submit answered {status}: {v}");
            }
            submit_bar.inc(1);
        }
    }
    submit_bar.finish_with_message(format!(
        "{} accepted, {} refused by the rules",
        accepted.len(),
        refused.values().sum::<u64>()
    ));
    for order in ship_later {
        let _ = sim.set_shipment(&OrderId::new(order), ShipmentState::Shipped);
    }

    // 3. Time passes: merchants, buyers, agents and the warehouse act; timers fire.
    let done_bar = bar(&multi, accepted.len() as u64, "finished");
    let mut acted: HashSet<(String, &'static str)> = HashSet::new();
    let tick = 6 * 3_600_000;
    let mut days = 0.0;
    for _round in 0..(20 * 4) {
        wait_idle(&engine, &clock).await;
        deliver_webhooks(&sim, &http, &base).await?;
        wait_idle(&engine, &clock).await;
        let all = all_orders(&service).await?;
        let finished = all.iter().filter(|o| o.state.is_final()).count();
        done_bar.set_position(finished as u64);
        done_bar.set_message(format!("simulated day {days:.1}"));
        if finished == all.len() {
            break;
        }
        for o in &all {
            act(o, &mut acted, &mut rng, &sim, &http, &base).await?;
        }
        deliver_webhooks(&sim, &http, &base).await?;
        wait_idle(&engine, &clock).await;
        clock.advance(tick);
        engine.notify();
        days += 0.25;
    }
    let all = all_orders(&service).await?;
    done_bar.set_position(all.iter().filter(|o| o.state.is_final()).count() as u64);
    done_bar.finish_with_message(format!("after {days:.1} simulated days"));

    // 4. The summary.
    summary(
        &engine,
        &sim,
        &all,
        &refused,
        &thresholds,
        (&http, &base),
        (start_ms - 24 * 3_600_000, clock.now_ms() + 1),
    )
    .await?;
    let example = all
        .iter()
        .find(|o| {
            o.state == aftersales_domain::ServiceOrderState::Completed
                && o.after_sales_type == aftersales_domain::AfterSalesType::ReturnRefund
        })
        .or_else(|| all.first())
        .map(|o| o.id.clone())
        .unwrap_or_default();
    println!();
    println!("Finished in {:.1}s.", started.elapsed().as_secs_f64());
    println!("Where to look next:");
    println!("  the store:        {}", args.db.display());
    println!("  docs/api.md       the HTTP API with curl examples");
    if args.serve {
        let fresh = fresh_orders(&sim);
        println!("  the API:          {base}/v1/after-sales   (Ctrl-C to stop)");
        println!("  one service order: curl -s {base}/v1/after-sales/{example}");
        println!(
            "  its history:      cargo run -q -p aftersales-cli -- history {example} --url {base}"
        );
        println!(
            "  untouched orders to try docs/api.md on: {}",
            fresh.join(", ")
        );
        println!(
            "  the simulated warehouse receives a return: curl -s -X POST {base}/demo/returns/<service order id>/receive"
        );
        println!(
            "Time now runs at its real pace; the simulator's webhooks are delivered as they happen."
        );
        let pump = tokio::spawn(live(
            sim.clone(),
            clock.clone(),
            engine.clone(),
            http.clone(),
            base.clone(),
        ));
        crate::serve::shutdown_signal().await;
        pump.abort();
    } else {
        println!("  run `aftersales demo --serve` to keep the daemon up and, e.g.:");
        println!("    curl -s http://127.0.0.1:<port>/v1/after-sales/{example}");
        println!("    aftersales history {example} --url http://127.0.0.1:<port>");
    }
    let _ = http_stop_tx.send(true);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What was sold and kept, so return rates have a denominator: per business line, a
/// volume that puts the lines near their usual rates (3C about 3%, apparel about 20%).
fn add_quiet_sales(sales: &mut Vec<SalesRecord>, rng: &mut Rng, now: i64) {
    let requested: BTreeMap<String, u64> = sales.iter().fold(BTreeMap::new(), |mut m, r| {
        if let SalesEvent::Sold { quantity } = r.event {
            *m.entry(r.business_line.to_string()).or_default() += quantity;
        }
        m
    });
    for (line, asked) in requested {
        let factor = match line.as_str() {
            "electronics_3c" => 30,
            "apparel" => 4,
            // Few textbook bundles sold for their returns: this line crosses its alert line.
            "course_with_textbook" => 6,
            _ => 10,
        };
        let skus: Vec<(CategoryId, aftersales_domain::Sku)> = sales
            .iter()
            .filter(|r| r.business_line.as_str() == line)
            .map(|r| (r.category.clone(), r.sku.clone()))
            .collect();
        for _ in 0..asked * factor {
            let (category, sku) = rng.pick(&skus).clone();
            sales.push(SalesRecord {
                business_line: BusinessLineId::new(line.clone()),
                category,
                sku,
                at: UnixMillis(now),
                event: SalesEvent::Sold { quantity: 1 },
            });
        }
    }
}

/// Sends what was sold to the daemon's sales feed, in batches.
async fn post_sales(
    http: &reqwest::Client,
    base: &str,
    sales: &[SalesRecord],
) -> anyhow::Result<()> {
    for (n, chunk) in sales.chunks(5_000).enumerate() {
        let records: Vec<Value> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.event {
                SalesEvent::Sold { quantity } => Some(json!({
                    "id": format!("demo-sale-{n}-{i}"),
                    "business_line": r.business_line,
                    "category": r.category,
                    "sku": r.sku,
                    "quantity": quantity,
                    "at": aftersales_core::engine::machine::rfc3339(r.at.0),
                })),
                SalesEvent::Returned { .. } => None,
            })
            .collect();
        let resp = http
            .post(format!("{base}/v1/sales"))
            .header("content-type", "application/json")
            .body(json!({ "sales": records }).to_string())
            .send()
            .await
            .context("posting sales")?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!(
                "POST /v1/sales answered {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Waits until no instance is due (the workers caught up with the clock).
async fn wait_idle(engine: &Engine, clock: &ManualClock) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match engine.store().stats(clock.now_ms()).await {
            Ok(s) if s.due == 0 => return,
            _ if Instant::now() > deadline => return,
            _ => {
                engine.notify();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Posts the simulator's pending webhooks to the daemon, signed.
async fn deliver_webhooks(sim: &Sim, http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for d in sim.drain_webhooks() {
        let mut req = http.post(format!("{base}/v1/webhooks/sim"));
        for (k, v) in d.headers.iter() {
            req = req.header(k, v);
        }
        let resp = req.body(d.body).send().await.context("posting a webhook")?;
        if !resp.status().is_success() && resp.status().as_u16() != 409 {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("webhook answered {status}: {text}");
        }
    }
    Ok(())
}

async fn all_orders(service: &AfterSales) -> anyhow::Result<Vec<ServiceOrderView>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = service
            .list(&ListQuery {
                after: after.clone(),
                limit: 500,
                ..ListQuery::default()
            })
            .await?;
        out.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

async fn signal(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    name: &str,
    payload: Value,
) -> anyhow::Result<()> {
    let resp = http
        .post(format!("{base}/v1/after-sales/{id}/signals/{name}"))
        .header("Idempotency-Key", format!("{id}-{name}"))
        .header("content-type", "application/json")
        .body(json!({ "payload": payload }).to_string())
        .send()
        .await
        .context("sending a signal")?;
    // A signal racing the instance's own timeout may find it finished: that is fine.
    if !resp.status().is_success() && resp.status().as_u16() != 409 {
        let status = resp.status();
        bail!(
            "signal {name} answered {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// What the people around a service order do today.
async fn act(
    o: &ServiceOrderView,
    acted: &mut HashSet<(String, &'static str)>,
    rng: &mut Rng,
    sim: &Sim,
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<()> {
    use aftersales_domain::ServiceOrderState as S;
    let (role, what) = match o.state {
        S::UnderReview => ("review", "merchant.decision"),
        S::Retention => ("retention", "retention.result"),
        S::AwaitingReturnShipment => ("ship", "buyer.shipped"),
        S::InTransit => ("receive", "warehouse.return.received"),
        _ => return Ok(()),
    };
    if !o.waiting.iter().any(|w| w.what.as_deref() == Some(what))
        || !acted.insert((o.id.clone(), role))
    {
        return Ok(());
    }
    match role {
        "review" => {
            // Most merchants answer; some never do and the request is approved anyway.
            let r = rng.below(100);
            if r < 80 {
                signal(http, base, &o.id, what, json!({"approved": true})).await?;
            } else if r < 85 {
                signal(
                    http,
                    base,
                    &o.id,
                    what,
                    json!({"approved": false, "reason": "the photos show wear"}),
                )
                .await?;
            }
        }
        "retention" => {
            let kept = rng.chance(300);
            signal(http, base, &o.id, what, json!({"kept": kept})).await?;
        }
        "ship" => {
            // A few buyers never send the parcel: the request closes when the time is up.
            if rng.chance(920) {
                let tracking = format!("SF{}", rng.below(1_000_000_000));
                signal(
                    http,
                    base,
                    &o.id,
                    what,
                    json!({"carrier": "SF Express", "tracking_no": tracking}),
                )
                .await?;
            }
        }
        _ => {
            let so = aftersales_adapter::ids::ServiceOrderId::new(o.id.clone());
            if let Some(rma) = sim
                .returns()
                .into_iter()
                .rev()
                .find(|r| r.service_order_id == so)
            {
                let inspection = if rng.chance(60) {
                    Inspection::Fail("the parcel held a different item".into())
                } else {
                    Inspection::Pass
                };
                let _ = sim.receive_return(&rma.rma_id, inspection);
            }
        }
    }
    Ok(())
}

async fn summary(
    engine: &Engine,
    sim: &Sim,
    all: &[ServiceOrderView],
    refused: &BTreeMap<String, u64>,
    thresholds: &[RateThreshold],
    (http, base): (&reqwest::Client, &str),
    (from, to): (i64, i64),
) -> anyhow::Result<()> {
    use aftersales_domain::ServiceOrderState as S;
    let states = [S::Completed, S::Rejected, S::Closed, S::Failed];
    let mut table: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for o in all {
        let state = if o.state.is_final() {
            o.state.as_str().to_owned()
        } else {
            "in progress".to_owned()
        };
        *table
            .entry(o.after_sales_type.as_str().to_owned())
            .or_default()
            .entry(state)
            .or_default() += 1;
    }
    println!();
    println!("Service orders by type and final state");
    print!("  {:<22}", "type");
    for s in &states {
        print!("{:>11}", s.as_str());
    }
    println!("{:>13}{:>8}", "in progress", "total");
    for (kind, row) in &table {
        print!("  {kind:<22}");
        let mut total = 0;
        for s in &states {
            let n = row.get(s.as_str()).copied().unwrap_or(0);
            total += n;
            print!("{n:>11}");
        }
        let open = row.get("in progress").copied().unwrap_or(0);
        println!("{open:>13}{:>8}", total + open);
    }
    let refused_total: u64 = refused.values().sum();
    println!(
        "  refused by the rules before anything was stored: {refused_total} ({})",
        refused
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Money, from the simulated payment platform's ledger.
    let ledger = sim.ledger();
    let refunds: Vec<_> = ledger
        .iter()
        .filter(|e| {
            e.kind == LedgerKind::Refund && e.status == aftersales_adapter::RefundStatus::Succeeded
        })
        .collect();
    let refunded: i64 = refunds.iter().map(|e| e.amount.minor).sum();
    let charges: i64 = ledger
        .iter()
        .filter(|e| e.kind == LedgerKind::Charge)
        .map(|e| e.amount.minor)
        .sum();
    let insurance: i64 = ledger
        .iter()
        .filter(|e| e.kind == LedgerKind::InsuranceClaim)
        .map(|e| e.amount.minor)
        .sum();
    let mut per_order: BTreeMap<String, u32> = BTreeMap::new();
    for e in &refunds {
        if let Some(so) = &e.service_order_id {
            *per_order.entry(so.to_string()).or_default() += 1;
        }
    }
    let twice = all
        .iter()
        .filter(|o| {
            o.after_sales_type != aftersales_domain::AfterSalesType::ReturnRefund
                || o.business_line != "course_with_textbook"
        })
        .filter(|o| per_order.get(&o.id).copied().unwrap_or(0) > 1)
        .count();
    println!();
    println!("Money");
    println!(
        "  refunds paid:            {} totalling {}",
        refunds.len(),
        Money::new(refunded, Currency::CNY)
    );
    println!(
        "  exchange postage charged: {}",
        Money::new(charges, Currency::CNY)
    );
    println!(
        "  shipping insurance paid:  {}",
        Money::new(insurance, Currency::CNY)
    );
    println!("  service orders refunded twice: {twice}");

    // Retries and compensations, from the histories.
    let mut retries = 0usize;
    let mut compensations = 0usize;
    let mut attention = 0usize;
    for o in all {
        if o.needs_attention {
            attention += 1;
        }
        let h = engine.history(&o.id, 0, 10_000).await?;
        retries += h
            .iter()
            .filter(|e| e.event.kind == "retry_scheduled")
            .count();
        compensations += h
            .iter()
            .filter(|e| e.event.kind == "compensation_started")
            .count();
    }
    println!();
    println!("Reliability (the simulator injected timeouts, lost answers and refusals)");
    println!("  retries scheduled:        {retries}");
    println!("  sagas compensated:        {compensations}");
    println!("  flagged for a person:     {attention}");

    // Return rates against each line's threshold, from the daemon's analytics.
    let url = format!(
        "{base}/v1/analytics/return-rates?from={}&to={}",
        aftersales_core::engine::machine::rfc3339(from),
        aftersales_core::engine::machine::rfc3339(to)
    );
    let resp = http
        .get(&url)
        .send()
        .await
        .context("reading return rates")?;
    let status = resp.status();
    let report: Value =
        serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("GET /v1/analytics/return-rates answered {status}: {report}");
    }
    let empty = Vec::new();
    let rates = report["rates"].as_array().unwrap_or(&empty);
    let alerts = report["alerts"].as_array().unwrap_or(&empty);
    let ratio = |r: &Value| {
        (
            r["ratio"]["returned"].as_u64().unwrap_or(0),
            r["ratio"]["sold"].as_u64().unwrap_or(0),
        )
    };
    println!();
    println!(
        "Return rates (returned ÷ sold units; GET /v1/analytics/return-rates) against each line's alert threshold"
    );
    for r in rates
        .iter()
        .filter(|r| r["scope"]["kind"] == "business_line")
    {
        let line = r["business_line"].as_str().unwrap_or_default();
        let (returned, sold) = ratio(r);
        let bp = (returned * 10_000).checked_div(sold).unwrap_or(0);
        let t = thresholds
            .iter()
            .find(|t| t.business_line.as_str() == line)
            .map(|t| t.max_bp);
        let alert = alerts
            .iter()
            .any(|a| a["business_line"] == line && a["scope"]["kind"] == "business_line");
        println!(
            "  {:<22} {:>7}  ({returned} of {sold})   threshold {}{}",
            line,
            percent(bp),
            t.map(|t| percent(u64::from(t)))
                .unwrap_or_else(|| "none".into()),
            if alert { "   ALERT" } else { "" }
        );
    }
    let other: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["scope"]["kind"] != "business_line")
        .collect();
    if !other.is_empty() {
        println!("  alerts by category or SKU:");
        for a in other.iter().take(8) {
            let (returned, sold) = ratio(a);
            println!(
                "    {} {} {}: {} ({returned} of {sold})",
                a["business_line"].as_str().unwrap_or_default(),
                a["scope"]["kind"].as_str().unwrap_or_default(),
                a["scope"]["value"].as_str().unwrap_or_default(),
                percent(a["basis_points"].as_u64().unwrap_or(0)),
            );
        }
    }
    Ok(())
}

/// Basis points as a percentage with two decimals, in integers.
fn percent(bp: u64) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
}

/// Orders nobody has asked about yet, for trying the API by hand (docs/api.md).
fn fresh_orders(sim: &Sim) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (sku, spu, category, price, shipped)) in [
        ("jeans-m", "jeans", "apparel.jeans", 29_900, true),
        ("jeans-l", "jeans", "apparel.jeans", 29_900, true),
        ("dress-s", "dress", "apparel.dresses", 49_900, true),
        ("coat-m", "coat", "apparel.outerwear", 89_900, false),
    ]
    .into_iter()
    .enumerate()
    {
        let order = format!("TRY-{}", i + 1);
        let oid = OrderId::new(order.clone());
        if sim
            .create_order(NewOrder {
                order_id: oid.clone(),
                buyer_id: BuyerId::new("buyer-try"),
                lines: vec![NewLine {
                    line_id: LineId::new("l1"),
                    sku: Sku::new(sku),
                    spu: spu.into(),
                    quantity: 1,
                    unit_price: cny(price),
                    paid: cny(price),
                    entitlement_units: None,
                }],
                shipping_fee: cny(800),
            })
            .is_err()
        {
            continue;
        }
        let _ = sim.set_line_details(
            &oid,
            &LineId::new("l1"),
            LineDetails {
                line_discount: Some(cny(0)),
                category: Some(category.into()),
                ..LineDetails::default()
            },
        );
        if shipped {
            let _ = sim.set_shipment(&oid, ShipmentState::Delivered);
        }
        out.push(format!(
            "{order} (apparel, {sku}, {})",
            if shipped {
                "delivered"
            } else {
                "not shipped yet"
            }
        ));
    }
    out
}

/// While the demo daemon keeps serving: time runs at its real pace and the simulator's
/// webhooks are posted as they happen.
async fn live(
    sim: Sim,
    clock: ManualClock,
    engine: Arc<Engine>,
    http: reqwest::Client,
    base: String,
) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let elapsed = last.elapsed();
        last = Instant::now();
        clock.advance(i64::try_from(elapsed.as_millis()).unwrap_or(0));
        engine.notify();
        if let Err(e) = deliver_webhooks(&sim, &http, &base).await {
            eprintln!("delivering the simulator's webhooks: {e:#}");
        }
    }
}

/// `POST /demo/returns/{service_order_id}/receive` (`{"passed": false, "note": "..."}` to
/// fail the inspection): the simulated warehouse receives the buyer's parcel and sends its
/// signed webhook to the daemon.
fn demo_routes(sim: Sim) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::post;
    async fn receive(
        State(sim): State<Sim>,
        Path(id): Path<String>,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<Value>) {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let passed = v.get("passed").and_then(Value::as_bool).unwrap_or(true);
        let so = aftersales_adapter::ids::ServiceOrderId::new(id.clone());
        let Some(rma) = sim
            .returns()
            .into_iter()
            .rev()
            .find(|r| r.service_order_id == so)
        else {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(
                    json!({"detail": format!("the warehouse expects no return for service order `{id}`")}),
                ),
            );
        };
        let inspection = if passed {
            Inspection::Pass
        } else {
            Inspection::Fail(
                v.get("note")
                    .and_then(Value::as_str)
                    .unwrap_or("inspection failed")
                    .to_owned(),
            )
        };
        match sim.receive_return(&rma.rma_id, inspection) {
            Ok(()) => (
                StatusCode::ACCEPTED,
                axum::Json(json!({"rma_id": rma.rma_id.as_str(), "inspection_passed": passed})),
            ),
            Err(e) => (
                StatusCode::CONFLICT,
                axum::Json(json!({"detail": e.to_string()})),
            ),
        }
    }
    axum::Router::new()
        .route("/demo/returns/{id}/receive", post(receive))
        .with_state(sim)
}
