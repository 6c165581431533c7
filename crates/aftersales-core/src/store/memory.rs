//! An in-memory [`Store`]: the reference semantics the SQL stores must match, and the store
//! the engine's own tests run on. Not durable; not for production.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

use super::*;

#[derive(Default)]
struct Row {
    rec: Option<InstanceRecord>,
    request_hash: String,
    lease_owner: Option<String>,
    lease_until: i64,
    lease_version: i64,
    inbox: Vec<(InboxMessage, bool)>,
    history: Vec<HistoryRecord>,
    waits: Vec<(String, String)>,
    wake: i64,
}

#[derive(Default)]
struct Inner {
    defs: BTreeMap<(String, u32), DefinitionRecord>,
    rows: BTreeMap<String, Row>,
    keys: HashMap<String, String>,
    /// (name, dedupe id) of every event ever delivered.
    seen_events: HashMap<(String, String), ()>,
    /// Events no instance waited for yet.
    buffered: Vec<InboxMessage>,
    next_msg: i64,
    /// Units sold, by dedupe id.
    sales: BTreeMap<String, SaleRecord>,
    /// Named locks: name → (holder, expires at).
    locks: HashMap<String, (String, i64)>,
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".to_owned()))
    }
}

impl Inner {
    fn insert_instance(&mut self, new: NewInstance) -> Result<Created, StoreError> {
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.keys.get(key)
        {
            let row = &self.rows[existing];
            return if row.request_hash == new.request_hash {
                Ok(Created::Existing(existing.clone()))
            } else {
                Err(StoreError::KeyConflict {
                    key: key.clone(),
                    existing: existing.clone(),
                })
            };
        }
        if self.rows.contains_key(&new.id) {
            return Ok(Created::Existing(new.id));
        }
        if let Some((line, key)) = new.search_guard() {
            let stored = self
                .rows
                .values()
                .filter_map(|row| row.rec.as_ref())
                .filter(|r| r.search_key.as_deref() == Some(key) && r.business_line == line)
                .count() as u64;
            new.check_search_seen(stored)?;
        }
        if let Some(key) = &new.idempotency_key {
            self.keys.insert(key.clone(), new.id.clone());
        }
        let rec = new.record();
        let mut row = Row {
            rec: Some(rec),
            request_hash: new.request_hash,
            ..Row::default()
        };
        for h in new.history {
            let seq = row.history.len() as i64 + 1;
            row.history.push(HistoryRecord { seq, event: h });
        }
        self.rows.insert(new.id.clone(), row);
        Ok(Created::New(new.id))
    }

    fn push_message(&mut self, id: &str, mut msg: InboxMessage, now: i64) -> bool {
        self.next_msg += 1;
        msg.id = self.next_msg;
        let Some(row) = self.rows.get_mut(id) else {
            return false;
        };
        let Some(rec) = row.rec.as_mut() else {
            return false;
        };
        if rec.status.is_final() {
            return false;
        }
        row.inbox.push((msg, false));
        row.wake += 1;
        rec.due_at = Some(rec.due_at.map_or(now, |d| d.min(now)));
        true
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_definition(&self, def: &DefinitionRecord) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let key = (def.name.clone(), def.version);
        match inner.defs.get(&key) {
            Some(existing) if existing.hash != def.hash => Err(StoreError::DefinitionConflict {
                name: def.name.clone(),
                version: def.version,
            }),
            Some(_) => Ok(()),
            None => {
                inner.defs.insert(key, def.clone());
                Ok(())
            }
        }
    }

    async fn definitions(&self) -> Result<Vec<DefinitionRecord>, StoreError> {
        Ok(self.lock()?.defs.values().cloned().collect())
    }

    async fn create_instance(&self, new: NewInstance) -> Result<Created, StoreError> {
        self.lock()?.insert_instance(new)
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut inner = self.lock()?;
        let mut due: Vec<(i64, String)> = inner
            .rows
            .iter()
            .filter_map(|(id, row)| {
                let rec = row.rec.as_ref()?;
                let due_at = rec.due_at?;
                (rec.status == InstanceStatus::Running && due_at <= now && row.lease_until <= now)
                    .then(|| (due_at, id.clone()))
            })
            .collect();
        due.sort();
        due.truncate(limit);
        let mut out = Vec::new();
        for (_, id) in due {
            let Some(row) = inner.rows.get_mut(&id) else {
                continue;
            };
            row.lease_owner = Some(owner.to_owned());
            row.lease_until = now + lease_ms;
            row.lease_version += 1;
            let Some(rec) = row.rec.clone() else { continue };
            out.push(Claimed {
                instance: rec,
                lease_version: row.lease_version,
                inbox: row
                    .inbox
                    .iter()
                    .filter(|(_, consumed)| !consumed)
                    .map(|(m, _)| m.clone())
                    .collect(),
                wake: row.wake,
            });
        }
        Ok(out)
    }

    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<CommitOutcome>, StoreError> {
        let mut inner = self.lock()?;
        let mut out = Vec::new();
        for c in commits {
            let fenced = inner
                .rows
                .get(&c.instance_id)
                .is_none_or(|row| row.lease_version != c.lease_version);
            if fenced {
                out.push(CommitOutcome::Fenced);
                continue;
            }
            for child in c.children.clone() {
                inner.insert_instance(child)?;
            }
            let Some(row) = inner.rows.get_mut(&c.instance_id) else {
                out.push(CommitOutcome::Fenced);
                continue;
            };
            if let Some(rec) = row.rec.as_mut() {
                rec.status = c.status;
                rec.state = c.state.decode()?;
                let due_at = if c.status.is_final() {
                    None
                } else if row.wake != c.wake_seen {
                    // A message arrived after the claim: look again now.
                    Some(c.due_at.map_or(c.now, |d| d.min(c.now)))
                } else {
                    c.due_at
                };
                // Due now before and after: the earlier due time stays (see `Commit::due_at`).
                rec.due_at = match (rec.due_at, due_at) {
                    (Some(old), Some(new)) if old <= c.now && new <= c.now => Some(old),
                    _ => due_at,
                };
                rec.needs_attention = c.needs_attention;
                rec.updated_at = c.now;
            }
            for h in &c.history {
                let seq = row.history.len() as i64 + 1;
                row.history.push(HistoryRecord {
                    seq,
                    event: h.clone(),
                });
            }
            for (msg, consumed) in row.inbox.iter_mut() {
                if c.consumed.contains(&msg.id) {
                    *consumed = true;
                }
            }
            if c.release || c.status.is_final() {
                row.lease_owner = None;
                row.lease_until = 0;
            } else if let Some(until) = c.lease_until {
                row.lease_until = row.lease_until.max(until);
            }
            row.waits = if c.status.is_final() {
                Vec::new()
            } else {
                c.waits.clone()
            };
            // Buffered events that this instance now waits for are handed over.
            let waits = row.waits.clone();
            let (matching, rest): (Vec<InboxMessage>, Vec<InboxMessage>) =
                std::mem::take(&mut inner.buffered)
                    .into_iter()
                    .partition(|m| {
                        waits.iter().any(|(n, k)| {
                            name_matches(n, &m.name) && m.correlation.as_deref() == Some(k)
                        })
                    });
            inner.buffered = rest;
            for m in matching {
                inner.push_message(&c.instance_id, m, c.now);
            }
            if let Some((parent, payload)) = &c.notify_parent {
                let msg = InboxMessage {
                    id: 0,
                    kind: MessageKind::ChildDone,
                    name: "child.done".to_owned(),
                    correlation: Some(c.instance_id.clone()),
                    dedupe_id: format!("child-done-{}", c.instance_id),
                    payload: payload.clone(),
                    received_at: c.now,
                };
                let already = inner
                    .rows
                    .get(parent)
                    .is_some_and(|r| r.inbox.iter().any(|(m, _)| m.dedupe_id == msg.dedupe_id));
                if !already {
                    inner.push_message(parent, msg, c.now);
                }
            }
            for child in &c.cancel_children {
                let dedupe_id = format!("cancel-from-parent-{}", c.instance_id);
                let already = inner.rows.get(child).is_some_and(|r| {
                    r.inbox
                        .iter()
                        .any(|(m, _)| m.kind == MessageKind::Cancel && m.dedupe_id == dedupe_id)
                });
                if already {
                    continue;
                }
                let msg = InboxMessage {
                    id: 0,
                    kind: MessageKind::Cancel,
                    name: "cancel".to_owned(),
                    correlation: None,
                    dedupe_id,
                    payload: Value::Null,
                    received_at: c.now,
                };
                inner.push_message(child, msg, c.now);
            }
            out.push(CommitOutcome::Applied);
        }
        Ok(out)
    }

    async fn deliver(&self, delivery: Delivery, now: i64) -> Result<Delivered, StoreError> {
        let mut inner = self.lock()?;
        let (instance_id, msg) = match delivery {
            Delivery::Event {
                name,
                correlation,
                dedupe_id,
                payload,
            } => {
                if inner
                    .seen_events
                    .insert((name.clone(), dedupe_id.clone()), ())
                    .is_some()
                {
                    return Ok(Delivered::Duplicate);
                }
                let msg = InboxMessage {
                    id: 0,
                    kind: MessageKind::Event,
                    name: name.clone(),
                    correlation: Some(correlation.clone()),
                    dedupe_id,
                    payload,
                    received_at: now,
                };
                let targets: Vec<String> = inner
                    .rows
                    .iter()
                    .filter(|(_, r)| {
                        r.waits
                            .iter()
                            .any(|(n, k)| name_matches(n, &name) && *k == correlation)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                if targets.is_empty() {
                    inner.buffered.push(msg);
                    return Ok(Delivered::Buffered);
                }
                for t in &targets {
                    inner.push_message(t, msg.clone(), now);
                }
                return Ok(Delivered::Accepted(targets));
            }
            Delivery::Signal {
                instance_id,
                name,
                dedupe_id,
                payload,
            } => (
                instance_id,
                InboxMessage {
                    id: 0,
                    kind: MessageKind::Signal,
                    name,
                    correlation: None,
                    dedupe_id,
                    payload,
                    received_at: now,
                },
            ),
            Delivery::Cancel {
                instance_id,
                reason,
            } => (
                instance_id.clone(),
                InboxMessage {
                    id: 0,
                    kind: MessageKind::Cancel,
                    name: "cancel".to_owned(),
                    correlation: None,
                    dedupe_id: format!("cancel-{instance_id}"),
                    payload: serde_json::json!({ "reason": reason }),
                    received_at: now,
                },
            ),
        };
        let Some(row) = inner.rows.get_mut(&instance_id) else {
            return Ok(Delivered::UnknownInstance);
        };
        let Some(rec) = &row.rec else {
            return Ok(Delivered::UnknownInstance);
        };
        let ignored = if rec.status.is_final() {
            Some((Delivered::Finished(rec.status), "the instance has ended"))
        } else if row
            .inbox
            .iter()
            .any(|(m, _)| m.dedupe_id == msg.dedupe_id && m.kind == msg.kind)
        {
            Some((Delivered::Duplicate, "duplicate"))
        } else {
            None
        };
        if let Some((answer, why)) = ignored {
            let seq = row.history.len() as i64 + 1;
            row.history.push(HistoryRecord {
                seq,
                event: ignored_history(&msg, now, why),
            });
            return Ok(answer);
        }
        inner.push_message(&instance_id, msg, now);
        Ok(Delivered::Accepted(vec![instance_id]))
    }

    async fn get_instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        Ok(self.lock()?.rows.get(id).and_then(|r| r.rec.clone()))
    }

    async fn find_by_key(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .keys
            .get(key)
            .and_then(|id| inner.rows.get(id))
            .and_then(|r| r.rec.clone()))
    }

    async fn list_instances(&self, f: &ListFilter) -> Result<Vec<InstanceRecord>, StoreError> {
        let inner = self.lock()?;
        let mut out: Vec<InstanceRecord> = inner
            .rows
            .values()
            .filter_map(|r| r.rec.clone())
            .filter(|r| f.status.is_none_or(|s| s == r.status))
            .filter(|r| {
                f.business_line
                    .as_ref()
                    .is_none_or(|b| *b == r.business_line)
            })
            .filter(|r| f.workflow.as_ref().is_none_or(|w| *w == r.workflow))
            .filter(|r| f.search_key.is_none() || f.search_key == r.search_key)
            .filter(|r| f.created_from.is_none_or(|t| r.created_at >= t))
            .filter(|r| f.created_to.is_none_or(|t| r.created_at < t))
            .filter(|r| f.needs_attention.is_none_or(|n| n == r.needs_attention))
            .filter(|r| f.after_id.as_ref().is_none_or(|a| r.id < *a))
            .collect();
        out.sort_by(|a, b| b.id.cmp(&a.id));
        out.truncate(f.limit.max(1));
        Ok(out)
    }

    async fn history(
        &self,
        id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .rows
            .get(id)
            .map(|r| {
                r.history
                    .iter()
                    .filter(|h| h.seq > after_seq)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn next_due_at(&self, now: i64) -> Result<Option<i64>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .rows
            .values()
            .filter_map(|r| {
                let rec = r.rec.as_ref()?;
                if rec.status != InstanceStatus::Running {
                    return None;
                }
                let due = rec.due_at?;
                // A leased instance becomes claimable again when its lease lapses.
                Some(if r.lease_until > now {
                    due.max(r.lease_until)
                } else {
                    due
                })
            })
            .min())
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut inner = self.lock()?;
        let mut held = Vec::new();
        for id in ids {
            if let Some(row) = inner.rows.get_mut(id)
                && row.lease_owner.as_deref() == Some(owner)
                && row.lease_until > now
            {
                row.lease_until = row.lease_until.max(now + lease_ms);
                held.push(id.clone());
            }
        }
        Ok(held)
    }

    async fn stats(&self, now: i64) -> Result<StoreStats, StoreError> {
        let inner = self.lock()?;
        let mut s = StoreStats::default();
        for r in inner.rows.values() {
            let Some(rec) = &r.rec else { continue };
            if rec.status == InstanceStatus::Running {
                s.running += 1;
                if rec.due_at.is_some_and(|d| d <= now) {
                    s.due += 1;
                }
            }
            if rec.needs_attention {
                s.needs_attention += 1;
            }
        }
        Ok(s)
    }

    async fn record_sales(&self, sales: &[SaleRecord]) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        let mut new = 0;
        for s in sales {
            if !inner.sales.contains_key(&s.dedupe_id) {
                inner.sales.insert(s.dedupe_id.clone(), s.clone());
                new += 1;
            }
        }
        Ok(new)
    }

    async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let free = match inner.locks.get(name) {
            None => true,
            Some((h, expires_at)) => h == holder || *expires_at <= now,
        };
        if free {
            inner
                .locks
                .insert(name.to_owned(), (holder.to_owned(), now + ttl_ms));
        }
        Ok(free)
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.locks.get(name).is_some_and(|(h, _)| h == holder) {
            inner.locks.remove(name);
        }
        Ok(())
    }

    async fn sales_totals(&self, from: i64, to: i64) -> Result<Vec<SalesTotal>, StoreError> {
        let inner = self.lock()?;
        let mut totals: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for s in inner.sales.values().filter(|s| from <= s.at && s.at < to) {
            *totals
                .entry((s.business_line.clone(), s.category.clone(), s.sku.clone()))
                .or_default() += s.quantity;
        }
        Ok(totals
            .into_iter()
            .map(|((business_line, category, sku), quantity)| SalesTotal {
                business_line,
                category,
                sku,
                quantity,
            })
            .collect())
    }
}

/// Whether a registered wait name matches a delivered event name: exactly, or as a prefix
/// of dot-separated segments (`payment.refund` matches `payment.refund.succeeded`).
pub fn name_matches(registered: &str, delivered: &str) -> bool {
    delivered == registered
        || delivered
            .strip_prefix(registered)
            .is_some_and(|rest| rest.starts_with('.'))
}
