//! `aftersales bench --http`: the daemon in this process — the shipped workflows and business
//! lines, the after-sales service, the engine and its workers on the scratch store, the axum
//! API on loopback — with the simulator behind every line, and a concurrent reqwest client
//! sending `POST /v1/after-sales` with a fresh idempotency key and a fresh order each time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aftersales_adapter::WebhookVerifier;
use aftersales_adapter::ids::{BuyerId, LineId, OrderId, Sku};
use aftersales_adapter::types::ShipmentState;
use aftersales_adapter_sim::{LineDetails, NewLine, NewOrder, Sim, SimConfig};
use aftersales_core::engine::{Engine, SystemClock};
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use aftersales_runtime::service::{AfterSales, Line};
use aftersales_server::{AppState, Auth};
use anyhow::{Context as _, bail};
use serde_json::json;

use super::{BenchArgs, Scratch, group, mib, p3, rate, rss_kib, worker_config};
use crate::serve::{Config, load_definitions};

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

/// Order `B{i}`: one pair of jeans, paid and delivered, on the apparel line.
fn seed_order(sim: &Sim, i: usize) -> anyhow::Result<()> {
    let oid = OrderId::new(format!("B{i:08}"));
    sim.create_order(NewOrder {
        order_id: oid.clone(),
        buyer_id: BuyerId::new(format!("buyer-{}", i % 400)),
        lines: vec![NewLine {
            line_id: LineId::new("l1"),
            sku: Sku::new("jeans-m"),
            spu: "jeans".into(),
            quantity: 1,
            unit_price: cny(29_900),
            paid: cny(29_900),
            entitlement_units: None,
        }],
        shipping_fee: cny(800),
    })
    .with_context(|| format!("seeding order {i}"))?;
    sim.set_line_details(
        &oid,
        &LineId::new("l1"),
        LineDetails {
            line_discount: Some(cny(0)),
            category: Some("apparel.jeans".into()),
            ..LineDetails::default()
        },
    )
    .with_context(|| format!("seeding order {i}"))?;
    sim.set_shipment(&oid, ShipmentState::Delivered)
        .with_context(|| format!("seeding order {i}"))?;
    Ok(())
}

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let n = args.instances;
    let defs = load_definitions(&Config::default()).context(
        "loading workflows/ and config/business-lines/ (run `aftersales bench --http` from the repository root)",
    )?;
    let scratch = Scratch::create(args.store, &args.store_url).await?;
    let store = scratch.open().await?;
    let sim = Sim::new(SimConfig::quiet(7), SystemTime::now);
    let set = Arc::new(sim.adapter_set());
    let mut dispatcher = AdapterDispatcher::new();
    let mut lines = Vec::new();
    for (_, line) in defs.lines {
        dispatcher.bind(line.id.to_string(), set.clone());
        lines.push(Line {
            config: line,
            adapters: set.clone(),
        });
    }
    let engine = Arc::new(Engine::new(
        store,
        Arc::new(SystemClock),
        Arc::new(dispatcher),
        aftersales_runtime::catalogue::builtin(),
    ));
    engine
        .deploy(&defs.workflow_files)
        .await
        .context("deploying the workflows")?;
    let service = Arc::new(AfterSales::new(engine.clone(), lines));
    for i in 0..n {
        seed_order(&sim, i)?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(engine.clone().run(worker_config(args), stop_rx));
    let mut webhooks: HashMap<String, Arc<dyn WebhookVerifier>> = HashMap::new();
    webhooks.insert("sim".into(), Arc::new(sim.webhook_verifier()));
    let app = aftersales_server::router(AppState {
        engine: engine.clone(),
        auth: Arc::new(Auth::new(Vec::new())),
        body_limit: 1 << 20,
        metrics: aftersales_server::install_metrics().ok(),
        webhooks: Arc::new(webhooks),
        service: Some(service),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("listening on loopback")?;
    let base = format!("http://{}", listener.local_addr()?);
    let (http_stop_tx, mut http_stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop_rx.changed().await;
            })
            .await
    });
    println!(
        "aftersales bench --http: daemon in process on {base} ({}), simulator behind every \
         line; {n} POST /v1/after-sales (apparel return_refund, one fresh order and key each) \
         from {} concurrent loopback clients; {} workers",
        scratch.describe(),
        args.concurrency,
        args.workers
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .context("building the HTTP client")?;
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(n) {
        let client = client.clone();
        let next = next.clone();
        let url = format!("{base}/v1/after-sales");
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>((lat, statuses));
                }
                let body = json!({
                    "business_line": "apparel", "order_id": format!("B{i:08}"),
                    "type": "return_refund", "lines": [{"line_id": "l1", "quantity": 1}],
                    "reason": "wrong_size", "evidence": [],
                });
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("Idempotency-Key", format!("bench-http-{i}"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .context("sending a request")?;
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                *statuses.entry(status).or_default() += 1;
            }
        });
    }
    let mut lat = Vec::with_capacity(n);
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (l, s) = r.context("a client task failed")??;
        lat.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (hwm, _) = rss_kib();
    let created = statuses.get(&201).copied().unwrap_or(0);
    println!("  requests:                  {n} in {secs:.3} s");
    println!(
        "  statuses:                  {}",
        statuses
            .iter()
            .map(|(k, v)| format!("{k}×{}", group(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  req/s:                     {}", rate(n as f64, secs));
    println!("  latency p50/p95/p99:       {}", p3(lat));
    println!(
        "  peak RSS (VmHWM):          {}   (daemon, workers, simulator and load client in one process)",
        mib(hwm)
    );
    let _ = http_stop_tx.send(true);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    drop(engine);
    scratch.remove().await?;
    if created != n as u64 {
        bail!(
            "{} of {n} requests were not answered 201 Created",
            n as u64 - created
        );
    }
    Ok(())
}
