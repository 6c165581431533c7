//! The parts of the store contract where the order of checks matters, written once for both
//! backends: creating an instance, committing, delivering. Each mirrors the method of the same
//! name in `aftersales_core::store::memory`, step for step; a backend supplies the row
//! operations ([`Tx`]) inside one open transaction.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};

use aftersales_core::store::memory::name_matches;
use aftersales_core::store::{
    Commit, CommitOutcome, Created, Delivered, Delivery, InboxMessage, InstanceStatus, JsonText,
    LockOp, MessageKind, NewHistory, NewInstance, StoreError, ignored_history,
};
use async_trait::async_trait;
use serde_json::Value;

/// What a commit or a delivery needs to know about an instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub status: InstanceStatus,
    pub lease_version: i64,
    pub wake: i64,
    pub due_at: Option<i64>,
    pub needs_attention: bool,
}

/// One `(id, status, lease_version, wake, due_at, needs_attention)` row, as `lock_heads`
/// selects it.
pub(crate) type HeadRow = (String, String, i64, i64, Option<i64>, bool);

/// Heads keyed by instance id.
pub(crate) fn heads(rows: Vec<HeadRow>) -> Result<HashMap<String, Head>, StoreError> {
    rows.into_iter()
        .map(
            |(id, status, lease_version, wake, due_at, needs_attention)| {
                let status = InstanceStatus::parse(&status).ok_or_else(|| {
                    StoreError::Corrupt(format!("instance {id}: unknown status `{status}`"))
                })?;
                Ok((
                    id,
                    Head {
                        status,
                        lease_version,
                        wake,
                        due_at,
                        needs_attention,
                    },
                ))
            },
        )
        .collect()
}

/// The columns a commit sets on its instance.
#[derive(Debug, Clone)]
pub(crate) struct InstanceUpdate<'a> {
    pub id: &'a str,
    pub status: InstanceStatus,
    pub state: &'a JsonText,
    /// The due time to store: the stored one when both it and the commit's mean "due now"
    /// (see `Commit::due_at`).
    pub due_at: Option<i64>,
    pub needs_attention: bool,
    /// Which of `status`, `due_at` and `needs_attention` differ from the stored row. A store
    /// may leave the others out of its statement: on SQLite a column left alone costs no
    /// index write, and `status` no CHECK (an `IN` list SQLite builds a temporary index for
    /// on every row it checks).
    pub changed: Changed,
    /// Clear the lease (`lease_owner` null, `lease_until` 0).
    pub release: bool,
    /// Unless releasing, `lease_until` becomes at least this (0: unchanged).
    pub extend_lease: i64,
    pub now: i64,
}

/// Which indexed or checked columns a commit changes; see [`InstanceUpdate::changed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changed {
    pub status: bool,
    pub due_at: bool,
    pub needs_attention: bool,
}

/// History events to append to one instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Append<'a> {
    pub id: &'a str,
    pub events: &'a [NewHistory],
    /// Each event's `data` as JSON text, when the caller encoded it before the transaction
    /// (one per event, in order); `None`: the store encodes it.
    pub texts: Option<&'a [String]>,
}

impl Append<'_> {
    /// The `k`th event's data as JSON text: the caller's, or encoded now.
    pub fn text(&self, k: usize) -> Result<Cow<'_, str>, StoreError> {
        match self.texts.and_then(|t| t.get(k)) {
            Some(text) => Ok(Cow::Borrowed(text.as_str())),
            None => crate::rows::json_text(&self.events[k].data).map(Cow::Owned),
        }
    }
}

/// Each history event's `data` of each commit as JSON text, encoded before the transaction
/// so a store's single writer does not spend its time encoding; see [`commit`].
pub(crate) fn history_texts(commits: &[Commit]) -> Result<Vec<Vec<String>>, StoreError> {
    commits
        .iter()
        .map(|c| {
            c.history
                .iter()
                .map(|h| crate::rows::json_text(&h.data))
                .collect()
        })
        .collect()
}

/// Row operations inside one open transaction.
#[async_trait]
pub(crate) trait Tx: Send {
    /// Serialises with every other transaction that locks one of these correlation keys, or
    /// one of those the instances `waits_of` wait on now, until this one ends. Taken before
    /// any instance row lock.
    async fn lock_correlations(
        &mut self,
        keys: &[String],
        waits_of: &[String],
    ) -> Result<(), StoreError>;

    /// Locks these instance rows (those that exist), in id order, until the transaction ends.
    async fn lock_instances(&mut self, ids: &[String]) -> Result<(), StoreError>;

    /// Locks these instance rows (those that exist), in id order, until the transaction ends,
    /// and returns the head of each: one statement for a whole batch of commits.
    async fn lock_heads(&mut self, ids: &[String]) -> Result<HashMap<String, Head>, StoreError>;

    /// Status, lease version and wake counter of an instance, its row locked as
    /// [`Tx::lock_heads`] locks it.
    async fn head(&mut self, id: &str) -> Result<Option<Head>, StoreError> {
        Ok(self.lock_heads(&[id.to_owned()]).await?.remove(id))
    }

    /// Which of these ids are instances (takes no lock), in one statement.
    async fn existing_ids(&mut self, ids: &[&str]) -> Result<HashSet<String>, StoreError>;

    /// Whether an instance with this id exists (takes no lock).
    async fn exists(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(!self.existing_ids(&[id]).await?.is_empty())
    }

    /// Serialises with every other transaction that guards one of these (business line,
    /// search key) pairs, until this one ends, then counts the instances stored under each
    /// ([`NewInstance::search_seen`]). Taken before any row is written.
    async fn guard_search_keys(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), u64>, StoreError>;

    /// The instance and request hash of each of these idempotency keys that started one, in
    /// one statement.
    async fn key_owners(
        &mut self,
        keys: &[&str],
    ) -> Result<HashMap<String, (String, String)>, StoreError>;

    /// The instance an idempotency key started and its request hash.
    async fn key_owner(&mut self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self.key_owners(&[key]).await?.remove(key))
    }

    /// Inserts new running instances, each due at its `now`, in one statement, in the order
    /// given (ids and keys distinct); returns the ids inserted. One whose id or key is taken
    /// (by a concurrent transaction, since the caller looked first) is skipped.
    async fn insert_instances(
        &mut self,
        news: &[&NewInstance],
    ) -> Result<HashSet<String>, StoreError>;

    /// [`Tx::insert_instances`] of one; false when its id or its key is taken.
    async fn insert_instance(&mut self, new: &NewInstance) -> Result<bool, StoreError> {
        Ok(self.insert_instances(&[new]).await?.contains(&new.id))
    }

    /// Appends each instance's history events after its last sequence number, for many
    /// instances in one statement (each instance at most once).
    async fn append_histories(&mut self, items: &[Append<'_>]) -> Result<(), StoreError>;

    /// Appends history events after the instance's last sequence number.
    async fn append_history(&mut self, id: &str, events: &[NewHistory]) -> Result<(), StoreError> {
        self.append_histories(&[Append {
            id,
            events,
            texts: None,
        }])
        .await
    }

    /// Sets what each commit changes on its instance row, in one statement (each instance at
    /// most once).
    async fn update_instances(&mut self, updates: &[InstanceUpdate<'_>]) -> Result<(), StoreError>;

    /// Marks inbox messages consumed: `(instance id, message id)` pairs, in one statement.
    async fn mark_consumed(&mut self, pairs: &[(&str, i64)]) -> Result<(), StoreError>;

    /// Replaces the waits of each instance, in one statement per table (each instance at most
    /// once; an empty list removes its waits).
    async fn replace_waits(
        &mut self,
        items: &[(&str, &[(String, String)])],
    ) -> Result<(), StoreError>;

    /// Buffered events with one of these correlation keys, oldest first; `id` is the buffer's.
    async fn buffered_for(
        &mut self,
        correlations: &[String],
    ) -> Result<Vec<InboxMessage>, StoreError>;

    /// Removes buffered events by buffer id.
    async fn delete_buffered(&mut self, ids: &[i64]) -> Result<(), StoreError>;

    /// Whether the instance's inbox (consumed or not) holds a message with this dedupe id, of
    /// this kind if one is given.
    async fn inbox_has(
        &mut self,
        id: &str,
        dedupe_id: &str,
        kind: Option<MessageKind>,
    ) -> Result<bool, StoreError>;

    /// Inserts a message into the instance's inbox (its `id` is ignored; the store assigns
    /// one); false when the inbox's unique dedupe key already holds it.
    async fn insert_inbox(&mut self, id: &str, msg: &InboxMessage) -> Result<bool, StoreError>;

    /// Bumps the instance's wake counter and makes it due by `now`.
    async fn bump_wake(&mut self, id: &str, now: i64) -> Result<(), StoreError>;

    /// Records an event as seen; false when it was seen before.
    async fn mark_event_seen(&mut self, name: &str, dedupe_id: &str) -> Result<bool, StoreError>;

    /// `(instance id, wait name)` of every wait on this correlation key.
    async fn waiters(&mut self, correlation: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Keeps an event no instance waits for yet.
    async fn buffer_event(&mut self, msg: &InboxMessage) -> Result<(), StoreError>;

    /// `Store::try_lock` inside this transaction.
    async fn take_lock(
        &mut self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;

    /// `Store::unlock` inside this transaction.
    async fn release_lock(&mut self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// `Store::lock_ops` in one transaction: by lock name (the order given among operations on
/// one name), so two such transactions wait on each other's lock rows in one order.
pub(crate) async fn lock_ops<T: Tx + ?Sized>(
    tx: &mut T,
    ops: &[LockOp],
) -> Result<Vec<bool>, StoreError> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by(|a, b| ops[*a].name().cmp(ops[*b].name()));
    let mut out = vec![true; ops.len()];
    for i in order {
        match &ops[i] {
            LockOp::Take {
                name,
                holder,
                now,
                ttl_ms,
            } => out[i] = tx.take_lock(name, holder, *now, *ttl_ms).await?,
            LockOp::Release { name, holder } => tx.release_lock(name, holder).await?,
        }
    }
    Ok(out)
}

/// How many times a create that lost a race to a concurrent one looks again.
const CREATE_ATTEMPTS: usize = 3;

/// The answer to a start whose idempotency key already started `existing`, with request
/// hash `hash`: that instance for the same request, a conflict for another.
fn key_taken(
    new: &NewInstance,
    key: &str,
    existing: String,
    hash: &str,
) -> Result<Created, StoreError> {
    if hash == new.request_hash {
        Ok(Created::Existing(existing))
    } else {
        Err(StoreError::KeyConflict {
            key: key.to_owned(),
            existing,
        })
    }
}

/// `MemoryStore`'s `insert_instance`: the key first, then the id, then insert.
pub(crate) async fn create_instance<T: Tx + ?Sized>(
    tx: &mut T,
    new: &NewInstance,
) -> Result<Created, StoreError> {
    for _ in 0..CREATE_ATTEMPTS {
        if let Some(key) = &new.idempotency_key
            && let Some((existing, hash)) = tx.key_owner(key).await?
        {
            return key_taken(new, key, existing, &hash);
        }
        if tx.exists(&new.id).await? {
            return Ok(Created::Existing(new.id.clone()));
        }
        if let Some(guard) = new.search_guard() {
            let stored = tx
                .guard_search_keys(&[guard])
                .await?
                .get(&(guard.0.to_owned(), guard.1.to_owned()))
                .copied()
                .unwrap_or(0);
            new.check_search_seen(stored)?;
        }
        if tx.insert_instance(new).await? {
            tx.append_history(&new.id, &new.history).await?;
            return Ok(Created::New(new.id.clone()));
        }
        // A concurrent create took the id or the key between the look and the insert, and
        // has committed: the next look sees it.
    }
    Err(StoreError::Unavailable(format!(
        "create_instance: instance {} kept conflicting with concurrent creates; retry",
        new.id
    )))
}

/// Whether a create's error is that request's own answer (it wrote nothing) rather than a
/// failure of the whole transaction.
fn answers_one(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::KeyConflict { .. } | StoreError::SearchKeyMoved { .. }
    )
}

/// [`create_instance`] for each in one transaction, each answered as if alone: a key
/// conflict or a moved search key is that request's answer (it wrote nothing); any other
/// error fails them all.
///
/// Set-wise: one read of the keys, one of the ids, one insert of every new instance and one
/// history append, whatever the batch size. What that cannot settle goes one by one after it,
/// in batch order: a key or id repeated within the batch (the first takes it), and an insert
/// a concurrent transaction beat (it has committed by then, so the look finds it). Inserts go
/// in idempotency-key order (arrival order among equal keys), so two such transactions side
/// by side wait on each other's keys in one order instead of deadlocking.
pub(crate) async fn create_instances<T: Tx + ?Sized>(
    tx: &mut T,
    news: &[NewInstance],
) -> Result<Vec<Result<Created, StoreError>>, StoreError> {
    // Guarded search keys first, in one order (see `Tx::guard_search_keys`).
    let guards: Vec<(&str, &str)> = news
        .iter()
        .filter_map(NewInstance::search_guard)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut stored = if guards.is_empty() {
        HashMap::new()
    } else {
        tx.guard_search_keys(&guards).await?
    };
    let mut order: Vec<usize> = (0..news.len()).collect();
    order.sort_by(|a, b| news[*a].idempotency_key.cmp(&news[*b].idempotency_key));
    let keys: Vec<&str> = news
        .iter()
        .filter_map(|n| n.idempotency_key.as_deref())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let owners = if keys.is_empty() {
        HashMap::new()
    } else {
        tx.key_owners(&keys).await?
    };
    let ids: Vec<&str> = news.iter().map(|n| n.id.as_str()).collect();
    let existing = tx.existing_ids(&ids).await?;

    let mut out: Vec<Option<Result<Created, StoreError>>> = news.iter().map(|_| None).collect();
    let (mut fresh, mut alone) = (Vec::new(), Vec::new());
    let (mut taken_keys, mut taken_ids) = (HashSet::new(), HashSet::new());
    for &i in &order {
        let n = &news[i];
        if let Some(key) = &n.idempotency_key
            && let Some((owner, hash)) = owners.get(key)
        {
            out[i] = Some(key_taken(n, key, owner.clone(), hash));
        } else if existing.contains(&n.id) {
            out[i] = Some(Ok(Created::Existing(n.id.clone())));
        } else if let Err(e) = n.search_guard().map_or(Ok(()), |(line, key)| {
            // Counting the batch's earlier creates under the key, as if each were alone.
            let count = stored.entry((line.to_owned(), key.to_owned())).or_default();
            n.check_search_seen(*count).inspect(|()| *count += 1)
        }) {
            out[i] = Some(Err(e));
        } else if !taken_ids.insert(n.id.as_str())
            || n.idempotency_key
                .as_deref()
                .is_some_and(|k| !taken_keys.insert(k))
        {
            alone.push(i);
        } else {
            fresh.push(i);
        }
    }
    if !fresh.is_empty() {
        let batch: Vec<&NewInstance> = fresh.iter().map(|&i| &news[i]).collect();
        let inserted = tx.insert_instances(&batch).await?;
        let mut histories: Vec<Append<'_>> = Vec::new();
        for &i in &fresh {
            let n = &news[i];
            if inserted.contains(&n.id) {
                histories.push(Append {
                    id: &n.id,
                    events: &n.history,
                    texts: None,
                });
                out[i] = Some(Ok(Created::New(n.id.clone())));
            } else {
                alone.push(i);
            }
        }
        tx.append_histories(&histories).await?;
    }
    alone.sort_unstable();
    for i in alone {
        match create_instance(tx, &news[i]).await {
            Ok(created) => out[i] = Some(Ok(created)),
            Err(e) if answers_one(&e) => out[i] = Some(Err(e)),
            Err(e) => return Err(e),
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// `MemoryStore::commit`: each commit fenced by its lease version.
///
/// Most commits of a batch write only their own instance: its row, history, consumed
/// messages and waits. Those are written set-wise, a statement per table for the whole batch,
/// so a batch of 64 costs about as many round trips as one commit (the store's raw limit is
/// rows in batched transactions, not statements). A commit that reaches another instance
/// (starts children, tells its parent it ended, cancels children), or whose instance such a
/// commit reaches or that appears twice, is applied alone afterwards, in batch order, reading
/// its head again. The two groups touch disjoint instance rows, so the result is the one
/// the batch order gives, except which of two commits of one batch that start waiting on the
/// same correlation key takes a buffered event — a race between concurrent commits anyway.
///
/// `texts`: each commit's history data as JSON text ([`history_texts`]), in commit order,
/// when the caller encoded it before the transaction; `None`: encoded as it is written.
pub(crate) async fn commit<T: Tx + ?Sized>(
    tx: &mut T,
    commits: &[Commit],
    texts: Option<&[Vec<String>]>,
) -> Result<Vec<CommitOutcome>, StoreError> {
    let texts_of = |i: usize| texts.and_then(|t| t.get(i)).map(Vec::as_slice);
    // Every correlation key whose waits may change, then every instance row a commit writes,
    // each set in one order, before any work: see the crate docs.
    let ids: Vec<String> = commits.iter().map(|c| c.instance_id.clone()).collect();
    let keys: BTreeSet<String> = commits
        .iter()
        .flat_map(|c| c.waits.iter().map(|(_, k)| k.clone()))
        .collect();
    tx.lock_correlations(&keys.into_iter().collect::<Vec<_>>(), &ids)
        .await?;
    let mut reached: HashSet<&str> = HashSet::new();
    for c in commits {
        reached.extend(c.notify_parent.iter().map(|(p, _)| p.as_str()));
        reached.extend(c.cancel_children.iter().map(String::as_str));
        reached.extend(c.children.iter().map(|n| n.id.as_str()));
    }
    let mut rows: BTreeSet<String> = ids.iter().cloned().collect();
    rows.extend(reached.iter().map(|r| (*r).to_owned()));
    let heads = tx.lock_heads(&rows.into_iter().collect::<Vec<_>>()).await?;

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for c in commits {
        *seen.entry(c.instance_id.as_str()).or_default() += 1;
    }
    let alone = |c: &Commit| {
        !c.children.is_empty()
            || c.notify_parent.is_some()
            || !c.cancel_children.is_empty()
            || reached.contains(c.instance_id.as_str())
            || seen.get(c.instance_id.as_str()).copied().unwrap_or(0) > 1
    };

    let mut out: Vec<Option<CommitOutcome>> = vec![None; commits.len()];
    let mut set_wise: Vec<(&Commit, Planned<'_>)> = Vec::new();
    for (i, c) in commits.iter().enumerate() {
        if alone(c) {
            continue;
        }
        match heads.get(&c.instance_id) {
            Some(head) if head.lease_version == c.lease_version => {
                set_wise.push((c, plan(c, head, texts_of(i))));
                out[i] = Some(CommitOutcome::Applied);
            }
            _ => out[i] = Some(CommitOutcome::Fenced),
        }
    }
    write_set_wise(tx, &set_wise).await?;

    for (i, c) in commits.iter().enumerate() {
        if out[i].is_none() {
            out[i] = Some(commit_one(tx, c, texts_of(i)).await?);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// What a commit writes on its own instance, given the head it was fenced against.
struct Planned<'a> {
    update: InstanceUpdate<'a>,
    waits: &'a [(String, String)],
    /// The commit's history data as JSON text, when encoded before the transaction.
    texts: Option<&'a [String]>,
}

fn plan<'a>(c: &'a Commit, head: &Head, texts: Option<&'a [String]>) -> Planned<'a> {
    let is_final = c.status.is_final();
    let due_at = if is_final {
        None
    } else if head.wake != c.wake_seen {
        // A message arrived after the claim: look again now.
        Some(c.due_at.map_or(c.now, |d| d.min(c.now)))
    } else {
        c.due_at
    };
    let due_at = match (head.due_at, due_at) {
        (Some(stored), Some(new)) if stored <= c.now && new <= c.now => Some(stored),
        _ => due_at,
    };
    Planned {
        update: InstanceUpdate {
            id: &c.instance_id,
            status: c.status,
            state: &c.state,
            due_at,
            needs_attention: c.needs_attention,
            changed: Changed {
                status: c.status != head.status,
                due_at: due_at != head.due_at,
                needs_attention: c.needs_attention != head.needs_attention,
            },
            release: c.release || is_final,
            extend_lease: c.lease_until.unwrap_or(0),
            now: c.now,
        },
        waits: if is_final { &[] } else { &c.waits },
        texts,
    }
}

/// Writes the planned commits of distinct instances, a statement per table, then hands each
/// the buffered events it now waits for, oldest first, in batch order.
async fn write_set_wise<T: Tx + ?Sized>(
    tx: &mut T,
    planned: &[(&Commit, Planned<'_>)],
) -> Result<(), StoreError> {
    if planned.is_empty() {
        return Ok(());
    }
    let updates: Vec<InstanceUpdate<'_>> = planned.iter().map(|(_, p)| p.update.clone()).collect();
    tx.update_instances(&updates).await?;
    let histories: Vec<Append<'_>> = planned
        .iter()
        .filter(|(c, _)| !c.history.is_empty())
        .map(|(c, p)| Append {
            id: &c.instance_id,
            events: &c.history,
            texts: p.texts,
        })
        .collect();
    if !histories.is_empty() {
        tx.append_histories(&histories).await?;
    }
    let consumed: Vec<(&str, i64)> = planned
        .iter()
        .flat_map(|(c, _)| c.consumed.iter().map(|m| (c.instance_id.as_str(), *m)))
        .collect();
    if !consumed.is_empty() {
        tx.mark_consumed(&consumed).await?;
    }
    let waits: Vec<(&str, &[(String, String)])> = planned
        .iter()
        .map(|(c, p)| (c.instance_id.as_str(), p.waits))
        .collect();
    tx.replace_waits(&waits).await?;

    // Buffered events that these instances now wait for are handed over, oldest first: one
    // read for the whole batch, which is empty unless events arrived before their waiter.
    let correlations: Vec<String> = planned
        .iter()
        .flat_map(|(_, p)| p.waits.iter().map(|(_, k)| k.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if correlations.is_empty() {
        return Ok(());
    }
    let mut buffered = tx.buffered_for(&correlations).await?;
    for (c, p) in planned {
        let (matching, rest): (Vec<InboxMessage>, Vec<InboxMessage>) =
            buffered.into_iter().partition(|m| {
                p.waits.iter().any(|(n, k)| {
                    name_matches(n, &m.name) && m.correlation.as_deref() == Some(k.as_str())
                })
            });
        buffered = rest;
        if !matching.is_empty() {
            let buffer_ids: Vec<i64> = matching.iter().map(|m| m.id).collect();
            tx.delete_buffered(&buffer_ids).await?;
            for m in &matching {
                push_message(tx, &c.instance_id, m, c.now).await?;
            }
        }
    }
    Ok(())
}

/// One commit on its own, reading its head under the lock the batch already holds.
async fn commit_one<T: Tx + ?Sized>(
    tx: &mut T,
    c: &Commit,
    texts: Option<&[String]>,
) -> Result<CommitOutcome, StoreError> {
    let head = match tx.head(&c.instance_id).await? {
        Some(head) if head.lease_version == c.lease_version => head,
        _ => return Ok(CommitOutcome::Fenced),
    };
    // Creating children touches no other instance, so `head.wake` stays current. A child's
    // `KeyConflict` fails the whole call and the transaction rolls back, so nothing of the
    // batch is written (`MemoryStore` keeps the commits before it: see the crate README).
    for child in &c.children {
        create_instance(tx, child).await?;
    }
    write_set_wise(tx, &[(c, plan(c, &head, texts))]).await?;

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
        if !tx.inbox_has(parent, &msg.dedupe_id, None).await? {
            push_message(tx, parent, &msg, c.now).await?;
        }
    }
    // A second cancellation from the same parent is dropped by the inbox's unique dedupe key
    // (`MemoryStore` stores it twice: see the crate README).
    for child in &c.cancel_children {
        let msg = InboxMessage {
            id: 0,
            kind: MessageKind::Cancel,
            name: "cancel".to_owned(),
            correlation: None,
            dedupe_id: format!("cancel-from-parent-{}", c.instance_id),
            payload: Value::Null,
            received_at: c.now,
        };
        push_message(tx, child, &msg, c.now).await?;
    }
    Ok(CommitOutcome::Applied)
}

/// `MemoryStore::deliver`.
pub(crate) async fn deliver<T: Tx + ?Sized>(
    tx: &mut T,
    delivery: Delivery,
    now: i64,
) -> Result<Delivered, StoreError> {
    let (instance_id, msg) = match delivery {
        Delivery::Event {
            name,
            correlation,
            dedupe_id,
            payload,
        } => return deliver_event(tx, name, correlation, dedupe_id, payload, now).await,
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
    tx.lock_instances(std::slice::from_ref(&instance_id))
        .await?;
    let Some(head) = tx.head(&instance_id).await? else {
        return Ok(Delivered::UnknownInstance);
    };
    if head.status.is_final() {
        tx.append_history(
            &instance_id,
            &[ignored_history(&msg, now, "the instance has ended")],
        )
        .await?;
        return Ok(Delivered::Finished(head.status));
    }
    if tx
        .inbox_has(&instance_id, &msg.dedupe_id, Some(msg.kind))
        .await?
        || !push_message(tx, &instance_id, &msg, now).await?
    {
        tx.append_history(&instance_id, &[ignored_history(&msg, now, "duplicate")])
            .await?;
        return Ok(Delivered::Duplicate);
    }
    Ok(Delivered::Accepted(vec![instance_id]))
}

async fn deliver_event<T: Tx + ?Sized>(
    tx: &mut T,
    name: String,
    correlation: String,
    dedupe_id: String,
    payload: Value,
    now: i64,
) -> Result<Delivered, StoreError> {
    tx.lock_correlations(std::slice::from_ref(&correlation), &[])
        .await?;
    if !tx.mark_event_seen(&name, &dedupe_id).await? {
        return Ok(Delivered::Duplicate);
    }
    let msg = InboxMessage {
        id: 0,
        kind: MessageKind::Event,
        name,
        correlation: Some(correlation),
        dedupe_id,
        payload,
        received_at: now,
    };
    let correlation = msg.correlation.as_deref().unwrap_or_default();
    let targets: Vec<String> = tx
        .waiters(correlation)
        .await?
        .into_iter()
        .filter(|(_, wait)| name_matches(wait, &msg.name))
        .map(|(id, _)| id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if targets.is_empty() {
        tx.buffer_event(&msg).await?;
        return Ok(Delivered::Buffered);
    }
    tx.lock_instances(&targets).await?;
    for t in &targets {
        push_message(tx, t, &msg, now).await?;
    }
    Ok(Delivered::Accepted(targets))
}

/// `MemoryStore`'s `push_message`: into a running instance's inbox, which is then due by
/// `now`; false (nothing written) when the instance is unknown or has ended.
async fn push_message<T: Tx + ?Sized>(
    tx: &mut T,
    id: &str,
    msg: &InboxMessage,
    now: i64,
) -> Result<bool, StoreError> {
    match tx.head(id).await? {
        Some(head) if !head.status.is_final() => {}
        _ => return Ok(false),
    }
    if !tx.insert_inbox(id, msg).await? {
        return Ok(false);
    }
    tx.bump_wake(id, now).await?;
    Ok(true)
}

/// `Store::next_due_at` for a SQL store as one statement, in a dialect whose two-argument
/// maximum is `max` and whose placeholder for `now` is `now`.
///
/// The answer is the earliest time an instance can be claimed: an unleased running
/// instance's `due_at`, or a leased one's `due_at` or lease end, whichever is later. The
/// statement walks the `(status, due_at, id)` index in due order to the first unleased
/// instance (`first`), then looks at the leased ones due before it, which are all the
/// instances in front of it. Leased instances are at most what the workers hold, so both
/// parts read only those and one more row, whatever the number of parked instances: an
/// idle daemon with a million timers pays as little as one with none. (Until 2026-12-07
/// this paged through the index 64 rows at a time, one query per page: with 256 held
/// instances, five round trips and 300 rows carried back on every idle turn of a worker.)
pub(crate) fn next_due_sql(max: &str, now: &str) -> String {
    format!(
        "WITH first AS (SELECT due_at FROM instances \
           WHERE status = 'running' AND due_at IS NOT NULL AND lease_until <= {now} \
           ORDER BY due_at LIMIT 1) \
         SELECT MIN(t) FROM ( \
           SELECT due_at AS t FROM first \
           UNION ALL \
           SELECT {max}(due_at, lease_until) AS t FROM instances \
           WHERE status = 'running' AND due_at IS NOT NULL AND lease_until > {now} \
           AND due_at < COALESCE((SELECT due_at FROM first), 9223372036854775807)) AS due"
    )
}
