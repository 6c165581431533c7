//! A simulated world for the scenarios: the shipped workflows and business lines, one
//! simulator behind every line, the real engine on a real store, and the after-sales
//! service on top — everything but HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use aftersales_adapter::Registry;
use aftersales_adapter::ids::{BuyerId, EntitlementId, LineId, OrderId, ServiceOrderId, Sku};
use aftersales_adapter_sim::{
    LedgerEntry, LedgerKind, LineDetails, NewLine, NewOrder, OrderDetails, Sim, SimConfig,
};
use aftersales_core::diag::Source;
use aftersales_core::engine::{Clock, Engine, ManualClock, WorkerConfig};
use aftersales_core::store::{HistoryRecord, Store};
use aftersales_core::validate::check_sources;
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use aftersales_runtime::business_line::{CrossCheck, load_dir};
use aftersales_runtime::service::{
    AfterSales, Line, ServiceError, ServiceOrderView, SubmitRequest,
};
use serde_json::{Value, json};

/// 2026-11-26T00:00:00Z.
pub const START_MS: i64 = 1_795_651_200_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

pub fn workflow_files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kind in ["physical", "virtual", "bundle"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("workflows").join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    out
}

pub struct World {
    pub sim: Sim,
    pub engine: Arc<Engine>,
    pub clock: ManualClock,
    pub svc: AfterSales,
    keys: std::sync::atomic::AtomicU64,
    /// Makes the idempotency keys of worlds sharing one database distinct.
    world: String,
}

impl World {
    /// The shipped business lines (from `lines_dir`) over one simulator, on `store`.
    pub async fn with_lines(store: Arc<dyn Store>, lines_dir: &Path, config: SimConfig) -> World {
        let clock = ManualClock::new(START_MS);
        let sim_clock = clock.clone();
        let sim = Sim::new(config, move || {
            UNIX_EPOCH + Duration::from_millis(u64::try_from(sim_clock.now_ms()).unwrap())
        });
        World::assemble(store, lines_dir, sim, clock).await
    }

    /// A new engine and service on the same store, simulated world and clock: what a
    /// daemon restarted after a crash finds. Nothing of this world's memory is kept.
    pub async fn restarted(self) -> World {
        let store = self.engine.store().clone();
        let World { sim, clock, .. } = self;
        World::assemble(store, &root().join("config/business-lines"), sim, clock).await
    }

    /// A second daemon on the same database and simulated world: its own engine, service
    /// and in-process locks, sharing only what two real daemons share.
    pub async fn another_node(&self) -> World {
        let store = self.engine.store().clone();
        World::assemble(
            store,
            &root().join("config/business-lines"),
            self.sim.clone(),
            self.clock.clone(),
        )
        .await
    }

    async fn assemble(
        store: Arc<dyn Store>,
        lines_dir: &Path,
        sim: Sim,
        clock: ManualClock,
    ) -> World {
        let files = workflow_files();
        let sources: Vec<Source> = files.iter().map(|(n, t)| Source::new(n, t)).collect();
        let report = check_sources(&sources, &aftersales_runtime::catalogue::builtin(), true);
        assert!(report.is_ok(), "{:#?}", report.diagnostics);
        let workflows: Vec<_> = report.workflows.iter().map(|(_, w)| w).collect();
        let mut registry = Registry::new();
        aftersales_adapter_sim::register(&mut registry);
        let loaded = load_dir(
            lines_dir,
            &CrossCheck {
                workflows: &workflows,
                registry: &registry,
                refs_must_resolve: true,
            },
        )
        .unwrap();
        let set = Arc::new(sim.adapter_set());
        let mut dispatcher = AdapterDispatcher::new();
        let mut lines = Vec::new();
        for (_, line) in loaded.lines {
            dispatcher.bind(line.id.to_string(), set.clone());
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
        engine.deploy(&files).await.unwrap();
        let svc = AfterSales::new(engine.clone(), lines);
        World {
            sim,
            engine,
            clock,
            svc,
            keys: std::sync::atomic::AtomicU64::new(0),
            world: uuid::Uuid::now_v7().simple().to_string(),
        }
    }

    pub async fn new(store: Arc<dyn Store>) -> World {
        World::with_lines(
            store,
            &root().join("config/business-lines"),
            SimConfig::quiet(7),
        )
        .await
    }

    /// Runs the engine until nothing is due, delivering the simulator's events (the
    /// warehouse's receipts, refund completions) as they appear.
    pub async fn settle(&self) {
        let cfg = WorkerConfig::default();
        for _ in 0..50 {
            self.engine.run_until_idle(&cfg).await.unwrap();
            self.sim.settle_due();
            let events = self.sim.drain_events();
            if events.is_empty() {
                return;
            }
            for e in events {
                self.engine
                    .event(&e.name, &e.correlation, &e.dedupe_id, e.payload)
                    .await
                    .unwrap();
            }
        }
        panic!("the world did not settle in 50 rounds");
    }

    /// Moves time forward in steps (so retries and timers fire in order) and settles.
    pub async fn advance(&self, ms: i64) {
        let step = (ms / 20).max(1_000);
        let mut done = 0;
        while done < ms {
            let d = step.min(ms - done);
            self.clock.advance(d);
            done += d;
            self.settle().await;
        }
    }

    pub async fn submit(&self, body: Value) -> Result<ServiceOrderView, ServiceError> {
        let so = self.submit_only(body).await?;
        self.settle().await;
        Ok(self.view(&so.id).await)
    }

    /// Submits without running the engine.
    pub async fn submit_only(&self, body: Value) -> Result<ServiceOrderView, ServiceError> {
        let n = self.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req: SubmitRequest = serde_json::from_value(body).unwrap();
        let out = self
            .svc
            .submit(req, Some(&format!("key-{}-{n}", self.world)))
            .await?;
        assert!(out.created);
        Ok(out.order)
    }

    pub async fn view(&self, id: &str) -> ServiceOrderView {
        self.svc.get(id).await.unwrap().unwrap()
    }

    pub async fn signal(&self, id: &str, name: &str, payload: Value) {
        let target = self.svc.signal_target(id).await.unwrap();
        let n = self.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.engine
            .signal(&target, name, &format!("sig-{n}"), payload)
            .await
            .unwrap();
        self.settle().await;
    }

    pub async fn approve(&self, id: &str) {
        self.signal(id, "merchant.decision", json!({"approved": true}))
            .await;
    }

    pub async fn ship(&self, id: &str) {
        self.signal(
            id,
            "buyer.shipped",
            json!({"carrier": "SF", "tracking_no": "SF1234567890"}),
        )
        .await;
    }

    /// The return of service order `id` arrives and is inspected.
    pub async fn receive(&self, id: &str, passed: bool) {
        let rma = self
            .sim
            .returns()
            .into_iter()
            .find(|r| r.service_order_id == ServiceOrderId::new(id))
            .unwrap_or_else(|| panic!("no return for {id}"));
        let inspection = if passed {
            aftersales_adapter_sim::Inspection::Pass
        } else {
            aftersales_adapter_sim::Inspection::Fail("wrong item in the parcel".into())
        };
        self.sim.receive_return(&rma.rma_id, inspection).unwrap();
        self.settle().await;
    }

    pub fn refunds(&self, id: &str) -> Vec<LedgerEntry> {
        self.sim.refunds_for_service_order(&ServiceOrderId::new(id))
    }

    pub fn ledger(&self, id: &str, kind: LedgerKind) -> Vec<LedgerEntry> {
        self.sim
            .ledger()
            .into_iter()
            .filter(|e| e.kind == kind && e.service_order_id == Some(ServiceOrderId::new(id)))
            .collect()
    }

    pub async fn history(&self, id: &str) -> Vec<HistoryRecord> {
        self.engine.history(id, 0, 10_000).await.unwrap()
    }

    /// True when `step` completed in `id`'s history.
    pub async fn step_done(&self, id: &str, step: &str) -> bool {
        self.history(id)
            .await
            .iter()
            .any(|h| h.event.kind == "step_completed" && h.event.step.as_deref() == Some(step))
    }

    /// A paid physical order of one line; returns nothing (the payment is `pay_<order>`).
    pub fn physical_order(&self, order: &str, sku: &str, quantity: u32, unit: i64, shipping: i64) {
        self.sim
            .create_order(NewOrder {
                order_id: OrderId::new(order),
                buyer_id: BuyerId::new("buyer-1"),
                lines: vec![NewLine {
                    line_id: LineId::new("l1"),
                    sku: Sku::new(sku),
                    spu: sku.split('-').next().unwrap().into(),
                    quantity,
                    unit_price: cny(unit),
                    paid: cny(unit * i64::from(quantity)),
                    entitlement_units: None,
                }],
                shipping_fee: cny(shipping),
            })
            .unwrap();
        self.sim
            .set_line_details(
                &OrderId::new(order),
                &LineId::new("l1"),
                LineDetails {
                    category: Some("general".into()),
                    ..LineDetails::default()
                },
            )
            .unwrap();
    }

    /// A course of `lessons` lessons; returns the entitlement.
    pub fn course_order(&self, order: &str, sku: &str, price: i64, lessons: u32) -> EntitlementId {
        self.sim
            .create_order(NewOrder {
                order_id: OrderId::new(order),
                buyer_id: BuyerId::new("buyer-1"),
                lines: vec![NewLine {
                    line_id: LineId::new("l1"),
                    sku: Sku::new(sku),
                    spu: Sku::new(sku).as_str().into(),
                    quantity: 1,
                    unit_price: cny(price),
                    paid: cny(price),
                    entitlement_units: Some(lessons),
                }],
                shipping_fee: cny(0),
            })
            .unwrap();
        self.sim.order(&OrderId::new(order)).unwrap().lines[0]
            .entitlement_id
            .clone()
            .unwrap()
    }

    pub fn deliver(&self, order: &str) {
        self.sim.mark_delivered(&OrderId::new(order)).unwrap();
    }

    pub fn coupon(&self, order: &str, coupon: i64) {
        self.sim
            .set_order_details(
                &OrderId::new(order),
                OrderDetails {
                    coupon: Some(cny(coupon)),
                    paid_at: None,
                },
            )
            .unwrap();
    }
}
