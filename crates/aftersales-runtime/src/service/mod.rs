//! After-sales service orders on top of the engine: the layer the HTTP API and the demo
//! call.
//!
//! [`AfterSales::submit`] turns a buyer's request into a running workflow instance, in this
//! order, and stores nothing until the last step:
//!
//! 1. the caller's idempotency key: the same key and body answer with the service order
//!    already made; the same key with another body is [`ServiceError::IdempotencyConflict`];
//! 2. the business line and the workflow it runs for the type;
//! 3. the order, read from the line's order system (and, for virtual lines, the lessons
//!    consumed from the fulfillment system), plus every earlier service order of the
//!    order, read from the store, to know what was already returned, refunded or is open;
//! 4. the rules ([`aftersales_domain::check`]): a refusal is
//!    [`ServiceError::Refused`] with a stable code, and nothing is stored;
//! 5. the refund calculation ([`aftersales_domain::calculate_refund`]) with its breakdown;
//! 6. one engine start that stores the instance *and* the service order record (its
//!    `meta`) in one write.
//!
//! Two requests on one order cannot both pass the one-open-request-per-line rule, nor both
//! claim the same refundable quantity: in this process a mutex per order serialises steps 3
//! to 6, and across daemons on one database the start carries how many instances of the
//! order step 3 read ([`StartRequest::search_seen`]). The store checks that number in the
//! start's own transaction, serialised per order, and refuses the start when another
//! request's instance was stored in between; the submit then goes back to step 3 with what
//! is stored now, a few times, before it answers [`ServiceError::Busy`]. No lock outlives
//! a request, so a daemon that crashes mid-submit holds nobody up.
//!
//! [`StartRequest::search_seen`]: aftersales_core::engine::StartRequest::search_seen

mod snapshot;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aftersales_adapter::AdapterSet;
use aftersales_core::engine::{Engine, EngineError, StartRequest};
use aftersales_core::store::{HistoryRecord, ListFilter, StoreError};
use aftersales_domain::{
    AfterSalesRequest, AfterSalesType, Eligible, EvidenceRef, Reason, RefundBreakdown, RefundInput,
    Refusal, Replacement, RequestLine, ServiceOrderState, Sku,
};
use aftersales_money::Money;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::business_line::{BusinessLine, WorkflowRef};

pub use snapshot::{OrderFacts, PriorOrder};
pub use view::{LineView, ServiceOrderView, WaitingView};

/// The `kind` the service order record carries in an instance's `meta`.
pub const META_KIND: &str = "service_order";
/// The layout version of the service order record.
pub const META_VERSION: u32 = 1;

/// One business line as the service runs it: its configuration and its adapters.
#[derive(Debug)]
pub struct Line {
    /// The line's configuration.
    pub config: BusinessLine,
    /// Its adapters.
    pub adapters: Arc<AdapterSet>,
}

/// A buyer's after-sales request, as the API receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The business line the order belongs to (`apparel`).
    pub business_line: String,
    /// The platform's order.
    pub order_id: String,
    /// `cancel_after_payment`, `refund_only`, `return_refund` or `exchange`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "return_refund")]
    pub after_sales_type: AfterSalesType,
    /// The lines asked for.
    pub lines: Vec<SubmitLine>,
    /// Why (`no_reason`, `wrong_size`, `damaged`, `wrong_item`, `not_received`, `quality`,
    /// `other`).
    #[schema(value_type = String, example = "wrong_size")]
    pub reason: Reason,
    /// References to photos or text the buyer attached (stored elsewhere).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// The refund asked for; the most the rules allow when absent. The refund paid is the
    /// smaller of the two.
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"minor": 29900, "currency": "CNY"}))]
    pub requested_amount: Option<Money>,
    /// For returns: book a door-to-door pickup.
    #[serde(default)]
    pub pickup: bool,
}

/// One line of a [`SubmitRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitLine {
    /// The order line.
    pub line_id: String,
    /// Units; every unit not yet returned when absent (a course is always taken whole).
    #[serde(default)]
    pub quantity: Option<u32>,
    /// For an exchange: the SKU wanted instead (same product, same price).
    #[serde(default)]
    pub exchange_to: Option<String>,
}

/// What [`AfterSales::submit`] did.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The service order.
    pub order: ServiceOrderView,
    /// False when the idempotency key answered with an earlier service order.
    pub created: bool,
}

/// Why the service could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No such business line is loaded.
    #[error("unknown business line `{0}`")]
    UnknownBusinessLine(String),
    /// The line does not offer this after-sales type.
    #[error("business line `{line}` does not offer {kind}")]
    TypeNotOffered {
        /// The line.
        line: String,
        /// The type asked for.
        kind: AfterSalesType,
    },
    /// The rules refused the request; nothing was stored.
    #[error("{0}")]
    Refused(Refusal),
    /// The request is malformed in a way the rules do not cover (an exchange target on a
    /// virtual line, ...).
    #[error("{0}")]
    Invalid(String),
    /// The idempotency key was used before with another request.
    #[error(
        "idempotency key `{0}` was used before with a different request; use a new key for a new request"
    )]
    IdempotencyConflict(String),
    /// No such service order.
    #[error("no service order `{0}`")]
    NotFound(String),
    /// The order system does not know the order.
    #[error("order `{0}` was not found in the business line's order system")]
    OrderNotFound(String),
    /// An upstream system (order system, fulfillment) failed; nothing was stored.
    #[error("the {system} system failed: {message}")]
    Upstream {
        /// Which system.
        system: &'static str,
        /// What it said.
        message: String,
        /// Worth retrying later.
        retryable: bool,
    },
    /// Other requests on the same order kept being stored (on other daemons) while this one
    /// was being decided, [`SUBMIT_ATTEMPTS`] times; nothing was stored. Retry.
    #[error(
        "other requests on order `{0}` kept being submitted meanwhile; nothing was stored, retry"
    )]
    Busy(String),
    /// The engine or the store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How many times a submit reads the order and its earlier service orders again when
/// another daemon stored a request on the same order meanwhile.
pub const SUBMIT_ATTEMPTS: u32 = 5;

/// The after-sales service: business lines, their adapters and the engine.
pub struct AfterSales {
    engine: Arc<Engine>,
    lines: BTreeMap<String, Arc<Line>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for AfterSales {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterSales")
            .field("lines", &self.lines.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AfterSales {
    /// The service over `engine` for these business lines.
    pub fn new(engine: Arc<Engine>, lines: impl IntoIterator<Item = Line>) -> AfterSales {
        AfterSales {
            engine,
            lines: lines
                .into_iter()
                .map(|l| (l.config.id.to_string(), Arc::new(l)))
                .collect(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The business lines, by id.
    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        self.lines.values().map(|l| l.as_ref())
    }

    /// One business line.
    pub fn line(&self, id: &str) -> Option<&Line> {
        self.lines.get(id).map(|l| l.as_ref())
    }

    /// Checks, prices and starts an after-sales request; see the module docs for the order
    /// of things. `idempotency_key` makes a retried submit answer with the same service
    /// order.
    pub async fn submit(
        &self,
        req: SubmitRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, ServiceError> {
        let hash = request_hash(&req);
        if let Some(key) = idempotency_key
            && let Some(existing) = self.by_key(key, &hash).await?
        {
            return Ok(Submitted {
                order: existing,
                created: false,
            });
        }
        let (line, wf) = self.line_for(&req)?;
        let def = self.engine.definition(&wf.name, Some(wf.version)).await?;

        // One request at a time per order in this process; across daemons the start is
        // refused when the order's instances changed since they were read (module docs).
        // A twin under the same key that was stored while this one waited is found below,
        // when this one is refused or its start conflicts on the key.
        let lock = self.order_lock(&req.business_line, &req.order_id);
        let _guard = lock.lock().await;
        for attempt in 1..=SUBMIT_ATTEMPTS {
            match self
                .submit_once(&req, idempotency_key, &hash, &line, &wf, &def)
                .await
            {
                Err(ServiceError::Engine(EngineError::Store(StoreError::SearchKeyMoved {
                    ..
                }))) => {
                    tracing::debug!(order = %req.order_id, attempt, "order changed while deciding; reading it again");
                }
                // A keyed request refused (an open request on the line) or in conflict
                // because its twin, on this node or another, was stored meanwhile: the twin
                // is the answer (and another body under the key is a conflict).
                Err(e) => {
                    if let Some(key) = idempotency_key
                        && let Some(existing) = self.by_key(key, &hash).await?
                    {
                        return Ok(Submitted {
                            order: existing,
                            created: false,
                        });
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
        Err(ServiceError::Busy(req.order_id.clone()))
    }

    /// One decision of [`AfterSales::submit`]: reads the order and its earlier service
    /// orders, checks, prices and starts, the start guarded by how many instances of the
    /// order were read.
    async fn submit_once(
        &self,
        req: &SubmitRequest,
        idempotency_key: Option<&str>,
        hash: &str,
        line: &Line,
        wf: &WorkflowRef,
        def: &aftersales_core::model::Workflow,
    ) -> Result<Submitted, ServiceError> {
        let (prior, seen) = self.prior_orders(&req.order_id, &req.business_line).await?;
        let (facts, request, priced, now) = self.assess_with(line, req, &prior).await?;

        let service_order_id = uuid::Uuid::now_v7().to_string();
        let input = workflow_input(
            &service_order_id,
            req,
            &request,
            &facts,
            &priced,
            &line.config,
        );
        let declared_inputs: Vec<&str> = def.inputs.iter().map(|f| f.name.value.as_str()).collect();
        let declared_params: Vec<&str> = def.params.iter().map(|f| f.name.value.as_str()).collect();
        let meta = service_record(req, &request, &facts, &priced, hash, now);
        let started = self
            .engine
            .start(StartRequest {
                workflow: wf.name.clone(),
                version: Some(wf.version),
                business_line: req.business_line.clone(),
                input: only(&input, &declared_inputs),
                params: only(&line.config.instance_params(), &declared_params),
                idempotency_key: idempotency_key.map(str::to_owned),
                search_key: Some(req.order_id.clone()),
                search_seen: Some(seen),
                meta,
                id: Some(service_order_id),
            })
            .await
            .map_err(|e| match e {
                EngineError::Store(StoreError::KeyConflict { .. }) => {
                    ServiceError::IdempotencyConflict(
                        idempotency_key.unwrap_or_default().to_owned(),
                    )
                }
                other => ServiceError::Engine(other),
            })?;
        // A new service order is answered as stored; one its key returned is read.
        let order = match started.record {
            Some(record) => view::build(&self.engine, record).await?,
            None => self
                .get(&started.id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(started.id.clone()))?,
        };
        Ok(Submitted {
            order,
            created: started.created,
        })
    }

    /// Re-runs the rules and the refund calculation without storing anything: what
    /// [`AfterSales::submit`] would decide now.
    pub async fn quote(&self, req: &SubmitRequest) -> Result<RefundBreakdown, ServiceError> {
        let (line, _) = self.line_for(req)?;
        Ok(self.assess(&line, req).await?.2.breakdown)
    }

    /// The request's business line and the workflow it runs for the request's type.
    fn line_for(&self, req: &SubmitRequest) -> Result<(Arc<Line>, WorkflowRef), ServiceError> {
        let line = self
            .lines
            .get(&req.business_line)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownBusinessLine(req.business_line.clone()))?;
        let wf = line
            .config
            .workflow(req.after_sales_type)
            .cloned()
            .ok_or_else(|| ServiceError::TypeNotOffered {
                line: req.business_line.clone(),
                kind: req.after_sales_type,
            })?;
        Ok((line, wf))
    }

    /// Reads the order and its earlier service orders, runs the rules and prices the
    /// request; stores nothing.
    async fn assess(
        &self,
        line: &Line,
        req: &SubmitRequest,
    ) -> Result<(OrderFacts, AfterSalesRequest, Priced, i64), ServiceError> {
        let (prior, _) = self.prior_orders(&req.order_id, &req.business_line).await?;
        self.assess_with(line, req, &prior).await
    }

    /// [`AfterSales::assess`] given the earlier service orders.
    async fn assess_with(
        &self,
        line: &Line,
        req: &SubmitRequest,
        prior: &[PriorOrder],
    ) -> Result<(OrderFacts, AfterSalesRequest, Priced, i64), ServiceError> {
        let now = self.engine.clock().now_ms();
        let facts = snapshot::read_order(&line.adapters, &req.order_id, prior, now).await?;
        let request = domain_request(req, &facts)?;
        let priced = price(&request, &facts, &line.config, now)?;
        Ok((facts, request, priced, now))
    }

    /// One service order.
    pub async fn get(&self, id: &str) -> Result<Option<ServiceOrderView>, ServiceError> {
        let Some(record) = self.engine.get(id).await? else {
            return Ok(None);
        };
        if !is_service_order(&record) {
            return Ok(None);
        }
        Ok(Some(view::build(&self.engine, record).await?))
    }

    /// A page of service orders, newest first. `state` filters on the service order state.
    pub async fn list(
        &self,
        filter: &ListQuery,
    ) -> Result<(Vec<ServiceOrderView>, Option<String>), ServiceError> {
        let limit = filter.limit.clamp(1, 500);
        let mut out = Vec::new();
        let mut after = filter.after.clone();
        // Scan pages until the page is full or the store runs out; a state filter may skip
        // many rows, so the scan is bounded.
        for _ in 0..20 {
            let page = self
                .engine
                .store()
                .list_instances(&ListFilter {
                    business_line: filter.business_line.clone(),
                    search_key: filter.order_id.clone(),
                    created_from: filter.created_from,
                    created_to: filter.created_to,
                    after_id: after.clone(),
                    limit: limit * 2,
                    ..ListFilter::default()
                })
                .await
                .map_err(EngineError::from)?;
            let exhausted = page.len() < limit * 2;
            for record in page {
                after = Some(record.id.clone());
                if !is_service_order(&record) {
                    continue;
                }
                let v = view::build(&self.engine, record).await?;
                if filter.state.is_some_and(|s| s != v.state) {
                    continue;
                }
                if filter
                    .after_sales_type
                    .is_some_and(|t| t != v.after_sales_type)
                {
                    continue;
                }
                out.push(v);
                if out.len() == limit {
                    return Ok((out, after));
                }
            }
            if exhausted {
                return Ok((out, None));
            }
        }
        Ok((out, after))
    }

    /// A service order's history, oldest first, with its sub-workflows' (a cancellation
    /// converted to a return) merged in by time.
    pub async fn history(
        &self,
        id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, ServiceError> {
        if self.get(id).await?.is_none() {
            return Err(ServiceError::NotFound(id.to_owned()));
        }
        Ok(self.engine.history(id, after_seq, limit).await?)
    }

    /// The service order with `key`, when the key was used with the same request; a
    /// conflict when it was used with another.
    async fn by_key(
        &self,
        key: &str,
        hash: &str,
    ) -> Result<Option<ServiceOrderView>, ServiceError> {
        let Some(record) = self
            .engine
            .store()
            .find_by_key(key)
            .await
            .map_err(EngineError::from)?
        else {
            return Ok(None);
        };
        if record.meta.get("request_hash").and_then(Value::as_str) != Some(hash) {
            return Err(ServiceError::IdempotencyConflict(key.to_owned()));
        }
        Ok(Some(view::build(&self.engine, record).await?))
    }

    fn order_lock(&self, line: &str, order: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds, so the map does not grow with every order ever seen.
        if locks.len() > 4096 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks
            .entry(format!("{line}\u{1f}{order}"))
            .or_default()
            .clone()
    }

    /// Every earlier service order on this order in this business line, and how many
    /// instances of the line carry the order as their search key (service orders and their
    /// sub-workflows), for [`StartRequest::search_seen`].
    async fn prior_orders(
        &self,
        order_id: &str,
        business_line: &str,
    ) -> Result<(Vec<PriorOrder>, u64), ServiceError> {
        let mut out = Vec::new();
        let mut seen = 0_u64;
        let mut after = None;
        loop {
            let page = self
                .engine
                .store()
                .list_instances(&ListFilter {
                    business_line: Some(business_line.to_owned()),
                    search_key: Some(order_id.to_owned()),
                    after_id: after.clone(),
                    limit: 200,
                    ..ListFilter::default()
                })
                .await
                .map_err(EngineError::from)?;
            let n = page.len();
            seen += n as u64;
            for r in page {
                after = Some(r.id.clone());
                if is_service_order(&r) {
                    out.push(PriorOrder::from_record(&r));
                }
            }
            if n < 200 {
                return Ok((out, seen));
            }
        }
    }
}

/// Filters for [`AfterSales::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this service order state.
    pub state: Option<ServiceOrderState>,
    /// Only this type.
    pub after_sales_type: Option<AfterSalesType>,
    /// Only this business line.
    pub business_line: Option<String>,
    /// Only this order.
    pub order_id: Option<String>,
    /// Created at or after (unix ms).
    pub created_from: Option<i64>,
    /// Created before (unix ms).
    pub created_to: Option<i64>,
    /// The cursor from the previous page.
    pub after: Option<String>,
    /// Page size (1 to 500).
    pub limit: usize,
}

/// The checked and priced request.
struct Priced {
    verdict: Eligible,
    breakdown: RefundBreakdown,
    /// For a cancellation: the refund should it turn into a return (no shipping fee). For
    /// an exchange: the refund should the replacement be out of stock.
    alternative: Option<RefundBreakdown>,
}

fn domain_request(
    req: &SubmitRequest,
    facts: &OrderFacts,
) -> Result<AfterSalesRequest, ServiceError> {
    let currency = facts.snapshot.currency();
    let mut lines = Vec::with_capacity(req.lines.len());
    for l in &req.lines {
        let known = facts
            .snapshot
            .lines
            .iter()
            .find(|o| o.line_id.as_str() == l.line_id);
        let quantity = match (l.quantity, known) {
            (Some(q), _) => q,
            (None, Some(o)) => o.remaining_quantity(),
            (None, None) => 1,
        };
        let replacement = match (&l.exchange_to, known) {
            (None, _) => None,
            (Some(sku), Some(o)) => Some(Replacement {
                sku: Sku::new(sku.clone()),
                // The order system gives no catalogue: the replacement is taken to be a
                // variant of the same product at the same price.
                spu: o.spu.clone(),
                unit_price: o.unit_price,
            }),
            (Some(_), None) => None,
        };
        lines.push(RequestLine {
            line_id: aftersales_domain::LineId::new(l.line_id.clone()),
            quantity,
            replacement,
        });
    }
    if req.after_sales_type == AfterSalesType::Exchange {
        let virtual_lines = facts
            .snapshot
            .lines
            .iter()
            .filter(|o| {
                req.lines.iter().any(|l| l.line_id == o.line_id.as_str())
                    && o.goods_kind() == aftersales_domain::GoodsKind::Virtual
            })
            .count();
        if virtual_lines > 1 {
            return Err(ServiceError::Invalid(
                "a virtual exchange swaps one course at a time; send one request per course"
                    .to_owned(),
            ));
        }
    }
    Ok(AfterSalesRequest {
        order_id: facts.snapshot.order_id.clone(),
        after_sales_type: req.after_sales_type,
        lines,
        reason: req.reason,
        evidence: req
            .evidence
            .iter()
            .map(|e| EvidenceRef::new(e.clone()))
            .collect(),
        requested_amount: req.requested_amount.unwrap_or(Money::zero(currency)),
    })
}

fn price(
    request: &AfterSalesRequest,
    facts: &OrderFacts,
    line: &BusinessLine,
    now: i64,
) -> Result<Priced, ServiceError> {
    let mut request = request.clone();
    let asked = request.requested_amount;
    let explicit = !asked.is_zero();
    let verdict = aftersales_domain::check(
        &request,
        &facts.snapshot,
        &line.rules,
        aftersales_domain::UnixMillis(now),
    )
    .map_err(ServiceError::Refused)?;
    if !explicit && request.after_sales_type != AfterSalesType::Exchange {
        request.requested_amount = verdict.max_refund;
    }
    let breakdown = aftersales_domain::calculate_refund(&RefundInput {
        request: &request,
        order: &facts.snapshot,
        params: &line.rules,
    })
    .map_err(|e| ServiceError::Invalid(format!("the refund cannot be calculated: {e}")))?;
    let alternative = match request.after_sales_type {
        AfterSalesType::CancelAfterPayment | AfterSalesType::Exchange => {
            let mut alt = request.clone();
            alt.after_sales_type = AfterSalesType::ReturnRefund;
            for l in &mut alt.lines {
                l.replacement = None;
            }
            // What the order was paid caps any entitlement, so asking for it yields the
            // entitlement; a buyer who named an amount keeps to it.
            alt.requested_amount =
                if explicit && request.after_sales_type == AfterSalesType::CancelAfterPayment {
                    asked
                } else {
                    facts.snapshot.paid_total
                };
            aftersales_domain::calculate_refund(&RefundInput {
                request: &alt,
                order: &facts.snapshot,
                params: &line.rules,
            })
            .ok()
        }
        _ => None,
    };
    Ok(Priced {
        verdict,
        breakdown,
        alternative,
    })
}

/// The input vocabulary every shipped workflow draws from; each workflow receives only the
/// fields its `[input]` declares (docs/business-lines.md, "What a workflow receives").
fn workflow_input(
    service_order_id: &str,
    req: &SubmitRequest,
    request: &AfterSalesRequest,
    facts: &OrderFacts,
    priced: &Priced,
    line: &BusinessLine,
) -> Value {
    let currency = facts.snapshot.currency();
    let zero = Money::zero(currency);
    // The lines as the rules resolved them (default quantities filled in).
    let mut physical = Vec::new();
    let mut virtual_refs = Vec::new();
    let mut virtual_lines = Vec::new();
    for l in &request.lines {
        let Some((_, o)) = facts.snapshot.line(&l.line_id) else {
            continue;
        };
        let r = json!({ "line_id": o.line_id, "sku": o.sku, "quantity": l.quantity });
        match &o.goods {
            aftersales_domain::LineGoods::Physical => physical.push(r),
            aftersales_domain::LineGoods::Virtual(v) => {
                virtual_refs.push(r);
                virtual_lines.push((o, v));
            }
        }
    }
    let b = &priced.breakdown;
    let (physical_refund, virtual_refund) = if virtual_lines.is_empty() {
        (b.total, zero)
    } else if physical.is_empty() {
        (zero, b.total)
    } else {
        // A bundle: the virtual part is refunded after the physical part is back; the
        // buyer's waiver (asking for less) comes off the virtual part first.
        let virtual_net: i64 = b
            .lines
            .iter()
            .filter(|lr| virtual_lines.iter().any(|(o, _)| o.line_id == lr.line_id))
            .map(|lr| lr.net.minor)
            .sum();
        let waived = b.entitled.minor - b.total.minor;
        let v_paid = (virtual_net - waived).max(0);
        (
            Money::new(b.total.minor - v_paid, currency),
            Money::new(v_paid, currency),
        )
    };
    let first_virtual = virtual_lines.first();
    let replacement = request
        .lines
        .iter()
        .find_map(|l| l.replacement.as_ref().map(|r| r.sku.clone()));
    let exchange_quantity: u32 = request.lines.iter().map(|l| l.quantity).sum();
    let alternative_total = priced.alternative.as_ref().map_or(zero, |a| a.total);
    let mut m = Map::new();
    m.insert("service_order_id".into(), json!(service_order_id));
    m.insert("order_id".into(), json!(req.order_id));
    m.insert("payment_id".into(), json!(facts.payment_id));
    m.insert(
        "buyer_id".into(),
        json!(facts.buyer_id.clone().unwrap_or_default()),
    );
    m.insert("after_sales_type".into(), json!(req.after_sales_type));
    m.insert("reason".into(), json!(req.reason));
    m.insert(
        "merchant_fault".into(),
        json!(priced.verdict.fault == aftersales_domain::Fault::Merchant),
    );
    let all_lines: Vec<Value> = physical.iter().chain(&virtual_refs).cloned().collect();
    m.insert("lines".into(), Value::Array(all_lines));
    m.insert("physical_lines".into(), Value::Array(physical));
    m.insert("virtual_lines".into(), Value::Array(virtual_refs));
    m.insert("refund_amount".into(), json!(b.total));
    m.insert("return_refund_amount".into(), json!(alternative_total));
    m.insert("fallback_refund".into(), json!(alternative_total));
    m.insert("physical_refund".into(), json!(physical_refund));
    m.insert("virtual_refund".into(), json!(virtual_refund));
    if let Some((o, v)) = first_virtual {
        m.insert("entitlement_id".into(), json!(v.entitlement));
        m.insert("course_id".into(), json!(v.course));
        m.insert("sku".into(), json!(o.sku));
    }
    if let Some(sku) = replacement {
        m.insert("new_sku".into(), json!(sku));
    }
    m.insert("quantity".into(), json!(exchange_quantity));
    // The buyer sends the return leg at their own cost; what is charged through the
    // payment system for an exchange is only the reshipment.
    let reship = line.rules.return_shipping.exchange_reship_fee;
    let buyer_shipping_fee = if b.buyer_pays_shipping.is_zero() {
        zero
    } else if reship.minor <= b.buyer_pays_shipping.minor {
        reship
    } else {
        b.buyer_pays_shipping
    };
    m.insert("buyer_shipping_fee".into(), json!(buyer_shipping_fee));
    m.insert("insurance_payout".into(), json!(b.insurance));
    m.insert("insured".into(), json!(!b.insurance.is_zero()));
    m.insert("pickup".into(), json!(req.pickup));
    m.insert("business_line".into(), json!(line.id));
    Value::Object(m)
}

/// The service order record stored with the instance.
fn service_record(
    req: &SubmitRequest,
    request: &AfterSalesRequest,
    facts: &OrderFacts,
    priced: &Priced,
    hash: &str,
    now: i64,
) -> Value {
    let lines: Vec<Value> = request
        .lines
        .iter()
        .map(|l| {
            let o = facts.snapshot.lines.iter().find(|o| o.line_id == l.line_id);
            json!({
                "line_id": l.line_id,
                "quantity": l.quantity,
                "sku": o.map(|o| o.sku.as_str()),
                "category": o.map(|o| o.category.as_str()),
                "goods": o.map(|o| o.goods_kind()),
                "exchange_to": l.replacement.as_ref().map(|r| r.sku.as_str()),
            })
        })
        .collect();
    json!({
        "kind": META_KIND,
        "v": META_VERSION,
        "request_hash": hash,
        "business_line": req.business_line,
        "type": req.after_sales_type,
        "goods": priced.verdict.goods,
        "order_id": req.order_id,
        "payment_id": facts.payment_id,
        "buyer_id": facts.buyer_id,
        "lines": lines,
        "reason": req.reason,
        "fault": priced.verdict.fault,
        "evidence": req.evidence,
        "requested_amount": priced.breakdown.requested,
        "approved_amount": priced.breakdown.total,
        "breakdown": priced.breakdown,
        "alternative": priced.alternative,
        "created_at": now,
    })
}

/// True for the instance of a service order (not a sub-workflow, not a plain instance
/// started through `/v1/instances`).
fn is_service_order(r: &aftersales_core::store::InstanceRecord) -> bool {
    r.parent_id.is_none() && r.meta.get("kind").and_then(Value::as_str) == Some(META_KIND)
}

/// Keeps only the named fields of an object.
fn only(v: &Value, names: &[&str]) -> Value {
    let Value::Object(m) = v else {
        return Value::Object(Map::new());
    };
    Value::Object(
        m.iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// A stable hash of the request body, for idempotency comparisons.
pub fn request_hash(req: &SubmitRequest) -> String {
    // serde_json sorts nothing, but the struct's field order is fixed, so the same request
    // always serializes the same way.
    let text = serde_json::to_string(req).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl AfterSales {
    /// The instance a signal for service order `id` should go to: the service order's own
    /// instance, or the sub-workflow it is running (a cancellation that became a return
    /// waits for the buyer's parcel in its child).
    pub async fn signal_target(&self, id: &str) -> Result<String, ServiceError> {
        let mut current = id.to_owned();
        for _ in 0..4 {
            let Some(r) = self.engine.get(&current).await? else {
                break;
            };
            let Ok(st) =
                serde_json::from_value::<aftersales_core::engine::state::ExecState>(r.state)
            else {
                break;
            };
            let child = st.fibers.values().find_map(|f| match &f.run {
                aftersales_core::engine::state::Run::Calling { child } => Some(child.clone()),
                _ => None,
            });
            match child {
                Some(c) => current = c,
                None => break,
            }
        }
        Ok(current)
    }
}

/// Return rates over a window, and the alerts they raise.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReturnRatesReport {
    /// Window start (unix ms, inclusive).
    pub from: i64,
    /// Window end (unix ms, exclusive).
    pub to: i64,
    /// Rates by business line, category, SKU and reason:
    /// `{ business_line, scope: { kind, value? }, ratio: { returned, sold } }`.
    #[schema(value_type = Vec<Object>)]
    pub rates: Vec<aftersales_domain::ReturnRate>,
    /// Scopes above their line's threshold, with `basis_points`.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<aftersales_domain::Alert>,
}

impl AfterSales {
    /// Records units sold from a sales feed (the denominator of return rates); records seen
    /// before are ignored. Every record must name a loaded business line.
    pub async fn record_sales(
        &self,
        sales: &[aftersales_core::store::SaleRecord],
    ) -> Result<u64, ServiceError> {
        if let Some(bad) = sales
            .iter()
            .find(|s| !self.lines.contains_key(&s.business_line))
        {
            return Err(ServiceError::UnknownBusinessLine(bad.business_line.clone()));
        }
        Ok(self
            .engine
            .store()
            .record_sales(sales)
            .await
            .map_err(EngineError::from)?)
    }

    /// Return rates over `[from, to)`: units sold from the sales feed, units returned from
    /// the service orders created in the window that paid money back, by business line,
    /// category, SKU and reason; and the scopes above their line's `[return_rate]`
    /// threshold, each logged as an alert and counted in
    /// `aftersales_return_rate_alerts_total`.
    pub async fn return_rates(
        &self,
        from: i64,
        to: i64,
    ) -> Result<ReturnRatesReport, ServiceError> {
        use aftersales_domain::{
            BusinessLineId, CategoryId, SalesEvent, SalesRecord, UnixMillis, Window,
        };
        let window = Window::new(UnixMillis(from), UnixMillis(to))
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let mut records = Vec::new();
        for t in self
            .engine
            .store()
            .sales_totals(from, to)
            .await
            .map_err(EngineError::from)?
        {
            records.push(SalesRecord {
                business_line: BusinessLineId::new(t.business_line),
                category: CategoryId::new(t.category),
                sku: aftersales_domain::Sku::new(t.sku),
                at: UnixMillis(from),
                event: SalesEvent::Sold {
                    quantity: t.quantity,
                },
            });
        }
        let mut after = None;
        loop {
            let page = self
                .engine
                .store()
                .list_instances(&ListFilter {
                    created_from: Some(from),
                    created_to: Some(to),
                    after_id: after.clone(),
                    limit: 500,
                    ..ListFilter::default()
                })
                .await
                .map_err(EngineError::from)?;
            let n = page.len();
            for r in page {
                after = Some(r.id.clone());
                if !is_service_order(&r) || snapshot::refunded_amount(&r).is_none_or(|m| m <= 0) {
                    continue;
                }
                let reason: Reason = r
                    .meta
                    .get("reason")
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or(Reason::Other);
                for l in r
                    .meta
                    .get("lines")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let text = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("unknown");
                    records.push(SalesRecord {
                        business_line: BusinessLineId::new(r.business_line.clone()),
                        category: CategoryId::new(text("category")),
                        sku: aftersales_domain::Sku::new(text("sku")),
                        at: UnixMillis(r.created_at),
                        event: SalesEvent::Returned {
                            quantity: l.get("quantity").and_then(Value::as_u64).unwrap_or(0),
                            reason,
                        },
                    });
                }
            }
            if n < 500 {
                break;
            }
        }
        let rates = aftersales_domain::return_rates(&records, window);
        let thresholds: Vec<_> = self
            .lines
            .values()
            .map(|l| l.config.return_rate.clone())
            .collect();
        let alerts = aftersales_domain::alerts(&rates, &thresholds);
        for r in rates
            .iter()
            .filter(|r| r.scope == aftersales_domain::RateScope::BusinessLine)
        {
            if let Some(bp) = r.ratio.basis_points() {
                metrics::gauge!(
                    "aftersales_return_rate_bp",
                    "business_line" => r.business_line.to_string(),
                )
                .set(bp as f64);
            }
        }
        for a in &alerts {
            let scope = match &a.scope {
                aftersales_domain::RateScope::BusinessLine => "business_line".to_owned(),
                aftersales_domain::RateScope::Category(c) => format!("category:{c}"),
                aftersales_domain::RateScope::Sku(s) => format!("sku:{s}"),
                aftersales_domain::RateScope::Reason(r) => {
                    format!(
                        "reason:{}",
                        serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    )
                }
            };
            tracing::warn!(
                business_line = %a.business_line,
                scope = %scope,
                returned = a.ratio.returned,
                sold = a.ratio.sold,
                basis_points = a.basis_points,
                "return rate above the business line's alert threshold"
            );
            metrics::counter!(
                "aftersales_return_rate_alerts_total",
                "business_line" => a.business_line.to_string(),
                "scope" => scope,
            )
            .increment(1);
        }
        Ok(ReturnRatesReport {
            from,
            to,
            rates,
            alerts,
        })
    }
}
