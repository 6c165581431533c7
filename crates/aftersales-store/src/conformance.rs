//! The store conformance suite: every behaviour of the [`Store`] contract, written once against
//! `Arc<dyn Store>` and run on `MemoryStore` (the reference), [`SqliteStore`] and [`PgStore`].
//!
//! Each case is a `pub async fn(Arc<dyn Store>)` that panics on a failed expectation.
//! [`conformance_tests!`](crate::conformance_tests) turns the list of cases into one
//! `#[tokio::test]` per case for a harness ([`with_memory`], [`with_sqlite`],
//! [`with_postgres`]); another crate can reuse the harnesses or the cases with the feature
//! `conformance`. PostgreSQL runs read [`PG_URL_VAR`]; see [`pg_test_url`].
//!
//! Ids in a case are chosen so that only the instances a step means to claim are due then.

// Test support: a failed expectation is a panic, as in any test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aftersales_core::store::memory::MemoryStore;
use aftersales_core::store::{
    Claimed, Commit, CommitOutcome, Created, DefinitionRecord, Delivered, Delivery, InboxMessage,
    InstanceRecord, InstanceStatus, JsonText, ListFilter, LockOp, MessageKind, NewHistory,
    NewInstance, Store, StoreError, StoreStats,
};
use serde_json::{Value, json};

use crate::{PgStore, SqliteStore};

/// The environment variable naming the PostgreSQL database the tests may use.
pub const PG_URL_VAR: &str = "AFTERSALES_TEST_PG_URL";

/// The clock reading every case starts from (unix ms).
pub const T0: i64 = 1_700_000_000_000;

/// The lease cases take unless they say otherwise.
const LEASE: i64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Harnesses.

/// Runs a case on a fresh [`MemoryStore`].
pub async fn with_memory<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    case(Arc::new(MemoryStore::new())).await;
}

/// Runs a case on a fresh [`SqliteStore`] in a temporary file, removed afterwards.
pub async fn with_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let file = TempSqlite::new();
    let store = Arc::new(file.open().await);
    let result = tokio::spawn(case(store.clone())).await;
    store.close().await;
    drop(file);
    resume(result);
}

/// Runs a case on a [`PgStore`] in a fresh schema, dropped afterwards (also when the case
/// fails). Without a database URL it prints why and returns; see [`pg_test_url`].
pub async fn with_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_pg_schema(|schema| async move {
        let store = Arc::new(schema.connect().await);
        let result = tokio::spawn(case(store.clone())).await;
        store.close().await;
        resume(result);
    })
    .await;
}

/// Runs a test that manages its own connections in a fresh schema, dropped afterwards (also
/// when the test fails). Without a database URL it prints why and returns.
pub async fn with_pg_schema<F, Fut>(test: F)
where
    F: FnOnce(PgTestSchema) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(schema) = PgTestSchema::new() else {
        return;
    };
    let result = tokio::spawn(test(schema.clone())).await;
    schema.drop().await;
    resume(result);
}

fn resume(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test case did not finish: {e}");
    }
}

/// The PostgreSQL URL for tests, from [`PG_URL_VAR`].
///
/// # Panics
///
/// When the variable is unset or empty and `CI` is `true`: a missing PostgreSQL under CI is a
/// failure. Elsewhere it prints a loud skip line and returns `None`.
pub fn pg_test_url() -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{PG_URL_VAR} is not set, and CI=true: the PostgreSQL tests must run in CI")
        }
        _ => {
            eprintln!(
                "SKIPPED: PostgreSQL store test not run: set {PG_URL_VAR} \
                 (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
            );
            None
        }
    }
}

/// A uniquely named schema in the test database, for one test.
#[derive(Debug, Clone)]
pub struct PgTestSchema {
    /// The database URL.
    pub url: String,
    /// The schema name.
    pub schema: String,
}

impl PgTestSchema {
    /// A new schema name in the database [`pg_test_url`] names, or `None` if there is none.
    pub fn new() -> Option<PgTestSchema> {
        Some(PgTestSchema {
            url: pg_test_url()?,
            schema: unique_name("aftersales_test"),
        })
    }

    /// Connects a store to the schema, creating it on first use.
    pub async fn connect(&self) -> PgStore {
        PgStore::connect_schema(&self.url, &self.schema)
            .await
            .unwrap()
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        crate::postgres::drop_schema(&self.url, &self.schema)
            .await
            .unwrap();
    }
}

/// A temporary SQLite database file, removed (with its WAL files) when dropped.
#[derive(Debug)]
pub struct TempSqlite {
    path: PathBuf,
}

impl TempSqlite {
    /// A new path in the system's temporary directory; the file does not exist yet.
    pub fn new() -> TempSqlite {
        TempSqlite {
            path: std::env::temp_dir().join(format!("{}.db", unique_name("aftersales-test"))),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Opens (or creates) the store in the file.
    pub async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path.to_string_lossy())
            .await
            .unwrap()
    }
}

impl Default for TempSqlite {
    fn default() -> TempSqlite {
        TempSqlite::new()
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One `#[tokio::test]` per conformance case, each run through `$harness` (a path to a
/// function like [`with_sqlite`](crate::conformance::with_sqlite)).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:path) => {
        $crate::conformance_tests!(@cases $harness;
            definitions_are_versioned_and_immutable,
            create_stores_the_instance,
            create_is_idempotent_by_key_and_id,
            batched_creates_answer_each_as_alone,
            concurrent_creates_have_one_winner,
            a_guarded_create_refuses_a_moved_search_key,
            concurrent_guarded_creates_have_one_winner,
            claim_takes_due_unleased_running_in_due_order,
            claim_returns_unconsumed_inbox_and_wake,
            stale_commit_is_fenced_and_writes_nothing,
            commit_applies_state_history_and_waits,
            unreleased_lease_blocks_other_workers,
            commit_extends_the_lease_and_never_shortens_it,
            final_commit_ends_the_instance,
            message_during_lease_keeps_instance_due,
            due_now_keeps_the_earlier_due_time,
            each_commit_writes_what_changed_and_keeps_the_rest,
            delivery_makes_a_parked_instance_due,
            buffered_event_is_handed_over_at_commit,
            event_reaches_every_matching_waiter_once,
            event_dedupe_is_global_by_name_and_id,
            signal_and_cancel_dedupe_per_instance,
            deliveries_to_finished_instances_change_nothing,
            children_are_created_once_and_report_to_parent,
            group_commit_applies_each_and_fences_one,
            group_commit_writes_many_instances_at_once,
            list_instances_filters_and_pages,
            history_pages_in_order,
            next_due_at_accounts_for_leases,
            next_due_at_sees_past_many_leases,
            renew_leases_keeps_live_leases_of_the_owner,
            stats_count_running_due_and_attention,
            sales_are_recorded_once_and_summed_over_a_window,
            named_locks_exclude_until_released_or_expired,
            lock_ops_answer_each_as_alone_in_one_write,
            json_round_trips_exactly,
            concurrent_claims_never_share_an_instance,
            concurrent_signals_are_stored_once,
            concurrent_event_and_wait_never_strand_the_event,
        );
    };
    (@cases $harness:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $harness($crate::conformance::$case).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A new instance request with plain defaults, created at `now`.
pub fn new_instance(id: &str, now: i64) -> NewInstance {
    NewInstance {
        id: id.to_owned(),
        idempotency_key: None,
        request_hash: "hash-1".to_owned(),
        workflow: "return".to_owned(),
        version: 1,
        business_line: "shop".to_owned(),
        input: json!({ "order": id }),
        params: json!({ "window_days": 30 }),
        state: json!({ "at": "start" }),
        meta: json!({ "service_order": { "reason": "no_reason" } }),
        parent_id: None,
        search_key: None,
        search_seen: None,
        now,
        history: vec![history_event("instance_started", now)],
    }
}

/// A history event of `kind` at `at`, its data `{"kind": kind}`.
pub fn history_event(kind: &str, at: i64) -> NewHistory {
    NewHistory {
        at,
        kind: kind.to_owned(),
        step: None,
        attempt: None,
        data: json!({ "kind": kind }),
    }
}

/// A commit that changes nothing but releases the lease and parks the instance (no due time).
pub fn commit_of(c: &Claimed, now: i64) -> Commit {
    Commit {
        instance_id: c.instance.id.clone(),
        lease_version: c.lease_version,
        status: InstanceStatus::Running,
        state: JsonText::encode(&c.instance.state).unwrap(),
        due_at: None,
        release: true,
        lease_until: None,
        needs_attention: false,
        history: Vec::new(),
        consumed: Vec::new(),
        waits: Vec::new(),
        children: Vec::new(),
        notify_parent: None,
        cancel_children: Vec::new(),
        wake_seen: c.wake,
        now,
    }
}

async fn create(store: &dyn Store, new: NewInstance) {
    let id = new.id.clone();
    assert_eq!(store.create_instance(new).await.unwrap(), Created::New(id));
}

async fn claim(store: &dyn Store, owner: &str, now: i64) -> Vec<Claimed> {
    store.claim_due(owner, now, LEASE, 100).await.unwrap()
}

fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.instance.id.as_str()).collect()
}

/// Claims at `now`, expecting exactly the instance `id`.
async fn claim_only(store: &dyn Store, owner: &str, now: i64, id: &str) -> Claimed {
    let mut claimed = claim(store, owner, now).await;
    assert_eq!(ids(&claimed), vec![id], "claim at {now}");
    claimed.remove(0)
}

async fn get(store: &dyn Store, id: &str) -> InstanceRecord {
    store.get_instance(id).await.unwrap().unwrap()
}

async fn commit1(store: &dyn Store, commit: Commit) -> CommitOutcome {
    let out = store.commit(vec![commit]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.into_iter().next().unwrap()
}

async fn signal(store: &dyn Store, id: &str, name: &str, dedupe: &str, now: i64) -> Delivered {
    store
        .deliver(
            Delivery::Signal {
                instance_id: id.to_owned(),
                name: name.to_owned(),
                dedupe_id: dedupe.to_owned(),
                payload: json!({ "dedupe": dedupe }),
            },
            now,
        )
        .await
        .unwrap()
}

async fn cancel(store: &dyn Store, id: &str, reason: &str, now: i64) -> Delivered {
    store
        .deliver(
            Delivery::Cancel {
                instance_id: id.to_owned(),
                reason: reason.to_owned(),
            },
            now,
        )
        .await
        .unwrap()
}

async fn event(store: &dyn Store, name: &str, key: &str, dedupe: &str, now: i64) -> Delivered {
    store
        .deliver(
            Delivery::Event {
                name: name.to_owned(),
                correlation: key.to_owned(),
                dedupe_id: dedupe.to_owned(),
                payload: json!({ "event": dedupe }),
            },
            now,
        )
        .await
        .unwrap()
}

fn accepted(ids: &[&str]) -> Delivered {
    Delivered::Accepted(ids.iter().map(|s| (*s).to_owned()).collect())
}

fn waits(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, k)| ((*n).to_owned(), (*k).to_owned()))
        .collect()
}

/// Creates an instance at `now` and parks it at once: claimed alone, committed with these
/// waits, no due time, lease released.
async fn create_parked(store: &dyn Store, id: &str, now: i64, wait_on: &[(&str, &str)]) {
    create(store, new_instance(id, now)).await;
    let c = claim_only(store, "parker", now, id).await;
    let mut commit = commit_of(&c, now);
    commit.waits = waits(wait_on);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
}

/// Creates an instance at `now`, claims it alone and commits it with `status` (and
/// `needs_attention`).
async fn create_finished(
    store: &dyn Store,
    id: &str,
    now: i64,
    status: InstanceStatus,
    needs_attention: bool,
) {
    create(store, new_instance(id, now)).await;
    let c = claim_only(store, "finisher", now, id).await;
    let mut commit = commit_of(&c, now);
    commit.status = status;
    commit.needs_attention = needs_attention;
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
}

fn kinds(inbox: &[InboxMessage]) -> Vec<(MessageKind, &str, &str)> {
    inbox
        .iter()
        .map(|m| (m.kind, m.name.as_str(), m.dedupe_id.as_str()))
        .collect()
}

fn def(name: &str, version: u32, hash: &str) -> DefinitionRecord {
    DefinitionRecord {
        name: name.to_owned(),
        version,
        source: format!("[workflow]\nname = \"{name}\" # {hash}"),
        hash: hash.to_owned(),
        deployed_at: T0 + i64::from(version % 1000),
    }
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// Definitions: the same name, version and hash again is a no-op (the first record stays), a
/// different hash is a conflict, and they list by name then version.
pub async fn definitions_are_versioned_and_immutable(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.definitions().await.unwrap(), vec![]);
    for d in [
        def("return", 2, "h2"),
        def("return", 10, "h10"),
        def("exchange", 1, "hx"),
        def("return", 1, "h1"),
        def("big", u32::MAX, "hb"),
    ] {
        store.put_definition(&d).await.unwrap();
    }
    let mut again = def("return", 1, "h1");
    again.source = "changed".to_owned();
    again.deployed_at = T0 + 99_999;
    store.put_definition(&again).await.unwrap();
    match store.put_definition(&def("return", 1, "other")).await {
        Err(StoreError::DefinitionConflict { name, version }) => {
            assert_eq!((name.as_str(), version), ("return", 1));
        }
        other => panic!("expected a definition conflict, got {other:?}"),
    }
    assert_eq!(
        store.definitions().await.unwrap(),
        vec![
            def("big", u32::MAX, "hb"),
            def("exchange", 1, "hx"),
            def("return", 1, "h1"),
            def("return", 2, "h2"),
            def("return", 10, "h10"),
        ]
    );
}

/// A created instance is stored as asked: running, due at creation, its first history.
pub async fn create_stores_the_instance(store: Arc<dyn Store>) {
    let store = &*store;
    let mut new = new_instance("i-1", T0);
    new.search_key = Some("order-1".to_owned());
    new.parent_id = Some("i-0".to_owned());
    new.version = 7;
    new.history.push(history_event("second", T0 + 1));
    create(store, new.clone()).await;
    assert_eq!(
        get(store, "i-1").await,
        InstanceRecord {
            id: "i-1".to_owned(),
            parent_id: Some("i-0".to_owned()),
            workflow: "return".to_owned(),
            version: 7,
            business_line: "shop".to_owned(),
            status: InstanceStatus::Running,
            idempotency_key: None,
            search_key: Some("order-1".to_owned()),
            input: new.input.clone(),
            params: new.params.clone(),
            state: new.state.clone(),
            meta: new.meta.clone(),
            due_at: Some(T0),
            needs_attention: false,
            created_at: T0,
            updated_at: T0,
        }
    );
    let history = store.history("i-1", 0, 100).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|h| (h.seq, &h.event))
            .collect::<Vec<_>>(),
        vec![(1, &new.history[0]), (2, &new.history[1])]
    );
    assert_eq!(store.get_instance("i-2").await.unwrap(), None);
}

/// The same key and request is the same instance; the same key with another request is a
/// conflict; the same id again is the existing instance, and a new key on it is not recorded.
pub async fn create_is_idempotent_by_key_and_id(store: Arc<dyn Store>) {
    let store = &*store;
    let mut a = new_instance("i-a", T0);
    a.idempotency_key = Some("key-1".to_owned());
    create(store, a.clone()).await;

    let mut same = a.clone();
    same.id = "i-b".to_owned();
    same.now = T0 + 5;
    assert_eq!(
        store.create_instance(same).await.unwrap(),
        Created::Existing("i-a".to_owned())
    );
    assert_eq!(store.get_instance("i-b").await.unwrap(), None);

    let mut other = a.clone();
    other.id = "i-c".to_owned();
    other.request_hash = "hash-2".to_owned();
    match store.create_instance(other).await {
        Err(StoreError::KeyConflict { key, existing }) => {
            assert_eq!((key.as_str(), existing.as_str()), ("key-1", "i-a"));
        }
        other => panic!("expected a key conflict, got {other:?}"),
    }
    assert_eq!(store.get_instance("i-c").await.unwrap(), None);

    let mut again = new_instance("i-a", T0 + 9);
    again.workflow = "exchange".to_owned();
    again.request_hash = "hash-3".to_owned();
    assert_eq!(
        store.create_instance(again.clone()).await.unwrap(),
        Created::Existing("i-a".to_owned())
    );
    again.idempotency_key = Some("key-2".to_owned());
    assert_eq!(
        store.create_instance(again).await.unwrap(),
        Created::Existing("i-a".to_owned())
    );
    assert_eq!(store.find_by_key("key-2").await.unwrap(), None);

    let found = store.find_by_key("key-1").await.unwrap().unwrap();
    assert_eq!(found.id, "i-a");
    assert_eq!(found.workflow, "return");
    assert_eq!(found.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(store.find_by_key("key-9").await.unwrap(), None);
    assert_eq!(store.history("i-a", 0, 100).await.unwrap().len(), 1);
    let all = store
        .list_instances(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

/// Creates written together answer each as it would alone, in order: a later request sees
/// an earlier one's key and id, and a key conflict refuses only its own request.
pub async fn batched_creates_answer_each_as_alone(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("old", T0)).await;
    let keyed = |id: &str, key: &str, hash: &str| {
        let mut n = new_instance(id, T0 + 1);
        n.idempotency_key = Some(key.to_owned());
        n.request_hash = hash.to_owned();
        n
    };
    let mut old_keyed = keyed("oldk", "k0", "h0");
    old_keyed.now = T0;
    create(store, old_keyed).await;
    let mut n1 = keyed("n1", "k1", "h1");
    n1.parent_id = Some("old".to_owned());
    n1.search_key = Some("order-7".to_owned());
    n1.input = json!({"text": "é \"quoted\" \n", "big": 9_007_199_254_740_993_i64, "f": 1.5});
    n1.meta = json!({"service_order": {"reason": "damaged", "lines": [1, 2]}});
    // Another new one further down the batch, every JSON column its own.
    let mut n4 = new_instance("n4", T0 + 1);
    n4.params = json!({"window_days": 7});
    n4.state = json!({"at": "n4's start"});
    n4.meta = json!({"service_order": {"reason": "n4's reason"}});
    n4.history[0].data = json!({"started": "n4"});
    let out = store
        .create_instances(vec![
            n1.clone(),
            keyed("n2", "k1", "h1"),
            keyed("n3", "k1", "h2"),
            new_instance("old", T0 + 1),
            n4.clone(),
            keyed("n5", "k0", "h0"),
            keyed("n6", "k0", "hX"),
            keyed("n4", "k9", "h9"),
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 8);
    assert_eq!(
        out[5].as_ref().unwrap(),
        &Created::Existing("oldk".to_owned()),
        "a key stored before the batch answers with its instance"
    );
    assert!(
        matches!(&out[6], Err(StoreError::KeyConflict { existing, .. }) if existing == "oldk"),
        "{:?}",
        out[6]
    );
    assert_eq!(
        out[7].as_ref().unwrap(),
        &Created::Existing("n4".to_owned()),
        "an id created earlier in the same batch is that instance"
    );
    assert_eq!(store.find_by_key("k9").await.unwrap(), None);
    let got = store.get_instance("n1").await.unwrap().unwrap();
    assert_eq!(
        (
            &got.input,
            &got.params,
            &got.state,
            &got.meta,
            got.parent_id.as_deref(),
            got.search_key.as_deref(),
            got.created_at,
            got.status,
        ),
        (
            &n1.input,
            &n1.params,
            &n1.state,
            &n1.meta,
            Some("old"),
            Some("order-7"),
            T0 + 1,
            InstanceStatus::Running,
        ),
        "a batched create stores every field exactly"
    );
    assert_eq!(out[0].as_ref().unwrap(), &Created::New("n1".to_owned()));
    assert_eq!(
        out[1].as_ref().unwrap(),
        &Created::Existing("n1".to_owned())
    );
    assert!(
        matches!(&out[2], Err(StoreError::KeyConflict { existing, .. }) if existing == "n1"),
        "{:?}",
        out[2]
    );
    assert_eq!(
        out[3].as_ref().unwrap(),
        &Created::Existing("old".to_owned())
    );
    assert_eq!(out[4].as_ref().unwrap(), &Created::New("n4".to_owned()));
    let got = store.get_instance("n4").await.unwrap().unwrap();
    assert_eq!(
        (&got.input, &got.params, &got.state, &got.meta),
        (&n4.input, &n4.params, &n4.state, &n4.meta),
        "each instance of a batched create keeps its own JSON"
    );
    for n in [&n1, &n4] {
        let history = store.history(&n.id, 0, 10).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(
            history[0].event.data, n.history[0].data,
            "{}'s first event keeps its own data",
            n.id
        );
    }
    for id in ["n2", "n3", "n5", "n6"] {
        assert_eq!(store.get_instance(id).await.unwrap(), None);
    }
    assert_eq!(
        ids(&claim(store, "w", T0 + 1).await),
        vec!["old", "oldk", "n1", "n4"]
    );
}

/// Concurrent creates with one key, or one id, have exactly one winner.
pub async fn concurrent_creates_have_one_winner(store: Arc<dyn Store>) {
    const N: usize = 8;
    async fn race(
        store: &Arc<dyn Store>,
        make: impl Fn(usize) -> NewInstance,
    ) -> Vec<Result<Created, StoreError>> {
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let store = Arc::clone(store);
                let new = make(i);
                tokio::spawn(async move { store.create_instance(new).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
    fn winner(results: &[Result<Created, StoreError>]) -> String {
        let new: Vec<&str> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Created::New(id)) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(new.len(), 1, "{results:?}");
        new[0].to_owned()
    }

    // One key, one request: one new, the others the same instance.
    let results = race(&store, |i| {
        let mut new = new_instance(&format!("k1-{i}"), T0);
        new.idempotency_key = Some("key-1".to_owned());
        new
    })
    .await;
    let first = winner(&results);
    for r in &results {
        assert_eq!(r.as_ref().unwrap().id(), first);
    }

    // One key, different requests: one new, the others conflicts naming it.
    let results = race(&store, |i| {
        let mut new = new_instance(&format!("k2-{i}"), T0);
        new.idempotency_key = Some("key-2".to_owned());
        new.request_hash = format!("hash-{i}");
        new
    })
    .await;
    let second = winner(&results);
    for r in &results {
        match r {
            Ok(Created::New(id)) => assert_eq!(*id, second),
            Err(StoreError::KeyConflict { key, existing }) => {
                assert_eq!(
                    (key.as_str(), existing.as_str()),
                    ("key-2", second.as_str())
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // One id, no key.
    let results = race(&store, |_| new_instance("same-id", T0)).await;
    assert_eq!(winner(&results), "same-id");
    for r in &results {
        assert_eq!(r.as_ref().unwrap().id(), "same-id");
    }

    // Batches racing on the same three keys, each listing them in another order: one
    // instance per key, every request answered with it, and no deadlock.
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = Arc::clone(&store);
            let mut keys = ["key-3a", "key-3b", "key-3c"];
            keys.rotate_left(i % 3);
            let batch: Vec<NewInstance> = keys
                .iter()
                .map(|k| {
                    let mut new = new_instance(&format!("{k}-{i}"), T0);
                    new.idempotency_key = Some((*k).to_owned());
                    new
                })
                .collect();
            tokio::spawn(async move { (keys, store.create_instances(batch).await.unwrap()) })
        })
        .collect();
    let mut owners: HashMap<&str, Vec<Created>> = HashMap::new();
    for t in tasks {
        let (keys, out) = t.await.unwrap();
        for (k, r) in keys.into_iter().zip(out) {
            owners.entry(k).or_default().push(r.unwrap());
        }
    }
    for (key, answers) in &owners {
        let new: Vec<&Created> = answers
            .iter()
            .filter(|c| matches!(c, Created::New(_)))
            .collect();
        assert_eq!(new.len(), 1, "{key}: {answers:?}");
        assert!(answers.iter().all(|c| c.id() == new[0].id()), "{answers:?}");
    }

    let all = store
        .list_instances(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    for id in [&first, &second, &"same-id".to_owned()] {
        assert_eq!(store.history(id, 0, 100).await.unwrap().len(), 1);
    }
}

/// A create that says how many instances of its line it read under its search key is
/// refused, writing nothing, when more are stored; the count is per business line, taken
/// after the idempotency key and the id, and counts a batch's earlier creates.
pub async fn a_guarded_create_refuses_a_moved_search_key(store: Arc<dyn Store>) {
    let guarded = |id: &str, line: &str, seen: u64| {
        let mut n = new_instance(id, T0);
        n.business_line = line.to_owned();
        n.search_key = Some("order-1".to_owned());
        n.search_seen = Some(seen);
        n
    };
    let moved = |r: &Result<Created, StoreError>, want_seen: u64, want_stored: u64| match r {
        Err(StoreError::SearchKeyMoved {
            business_line,
            key,
            seen,
            stored,
        }) => {
            assert_eq!(
                (business_line.as_str(), key.as_str(), *seen, *stored),
                ("shop", "order-1", want_seen, want_stored)
            );
        }
        other => panic!("expected SearchKeyMoved, got {other:?}"),
    };
    create(&*store, guarded("a", "shop", 0)).await;
    moved(&store.create_instance(guarded("b", "shop", 0)).await, 0, 1);
    assert!(store.get_instance("b").await.unwrap().is_none());
    assert!(store.history("b", 0, 10).await.unwrap().is_empty());
    create(&*store, guarded("b", "shop", 1)).await;
    // Another line counts its own.
    create(&*store, guarded("o", "other", 0)).await;
    // A repeat is answered by its key or id before the count.
    let mut keyed = guarded("c", "shop", 2);
    keyed.idempotency_key = Some("key-c".to_owned());
    create(&*store, keyed.clone()).await;
    assert_eq!(
        store.create_instance(keyed).await.unwrap(),
        Created::Existing("c".to_owned())
    );
    assert_eq!(
        store
            .create_instance(guarded("b", "shop", 0))
            .await
            .unwrap(),
        Created::Existing("b".to_owned())
    );
    // An unguarded create under the key is not checked, and is counted.
    let mut plain = new_instance("p", T0);
    plain.search_key = Some("order-1".to_owned());
    create(&*store, plain).await;
    // In one batch, each counts the creates before it.
    let out = store
        .create_instances(vec![
            guarded("d", "shop", 4),
            guarded("e", "shop", 4),
            guarded("f", "shop", 5),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &Created::New("d".to_owned()));
    moved(&out[1], 4, 5);
    assert_eq!(out[2].as_ref().unwrap(), &Created::New("f".to_owned()));
    assert!(store.get_instance("e").await.unwrap().is_none());
    let shop = store
        .list_instances(&ListFilter {
            business_line: Some("shop".to_owned()),
            search_key: Some("order-1".to_owned()),
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(shop.len(), 6, "a, b, c, p, d, f");
}

/// Concurrent guarded creates under one search key, each having read the same count: one is
/// stored, every other is refused, whichever connection or batch it comes through.
pub async fn concurrent_guarded_creates_have_one_winner(store: Arc<dyn Store>) {
    const N: usize = 8;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = Arc::clone(&store);
            let mut n = new_instance(&format!("g-{i}"), T0);
            n.search_key = Some("order-9".to_owned());
            n.search_seen = Some(0);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.create_instance(n).await
                } else {
                    let mut other = new_instance(&format!("h-{i}"), T0);
                    other.search_key = Some(format!("order-x{i}"));
                    other.search_seen = Some(0);
                    let mut out = store.create_instances(vec![other, n]).await.unwrap();
                    assert!(out[0].is_ok(), "{out:?}");
                    out.pop().unwrap()
                }
            })
        })
        .collect();
    let mut new = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(Created::New(id)) => new.push(id),
            Err(StoreError::SearchKeyMoved {
                seen: 0, stored: 1, ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(new.len(), 1, "{new:?}");
    let stored = store
        .list_instances(&ListFilter {
            search_key: Some("order-9".to_owned()),
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
}

/// Claims take running instances that are due and not leased, by due time then id, up to the
/// limit, and bump the lease version.
pub async fn claim_takes_due_unleased_running_in_due_order(store: Arc<dyn Store>) {
    let store = &*store;
    create_finished(store, "done", T0 - 5_000, InstanceStatus::Completed, false).await;
    create(store, new_instance("b", T0 - 100)).await;
    create(store, new_instance("c", T0)).await;
    create(store, new_instance("a", T0)).await;
    create(store, new_instance("later", T0 + 2 * LEASE)).await;

    assert!(
        store
            .claim_due("w1", T0, LEASE, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let first = store.claim_due("w1", T0, LEASE, 2).await.unwrap();
    assert_eq!(ids(&first), vec!["b", "a"]);
    assert!(first.iter().all(|c| c.lease_version == 1 && c.wake == 0));
    assert_eq!(first[1].instance, get(store, "a").await);
    assert_eq!(first[1].instance.updated_at, T0);
    let rest = claim(store, "w1", T0).await;
    assert_eq!(ids(&rest), vec!["c"]);
    assert!(claim(store, "w2", T0 + LEASE - 1).await.is_empty());

    // Leases lapse at `lease_until`; a new claim bumps the version again.
    let again = claim(store, "w2", T0 + LEASE).await;
    assert_eq!(ids(&again), vec!["b", "a", "c"]);
    assert!(again.iter().all(|c| c.lease_version == 2));
    let third = claim(store, "w3", T0 + 2 * LEASE).await;
    assert_eq!(ids(&third), vec!["b", "a", "c", "later"]);
    assert_eq!(
        third.iter().map(|c| c.lease_version).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
}

/// A claim hands over the unconsumed inbox, oldest first, and the wake counter; consumed
/// messages are not handed over again.
pub async fn claim_returns_unconsumed_inbox_and_wake(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    assert_eq!(
        signal(store, "a", "s.one", "d1", T0 + 1).await,
        accepted(&["a"])
    );
    assert_eq!(
        signal(store, "a", "s.two", "d2", T0 + 2).await,
        accepted(&["a"])
    );
    let c = claim_only(store, "w1", T0 + 10, "a").await;
    assert_eq!(c.wake, 2);
    assert_eq!(
        kinds(&c.inbox),
        vec![
            (MessageKind::Signal, "s.one", "d1"),
            (MessageKind::Signal, "s.two", "d2")
        ]
    );
    let m = &c.inbox[0];
    assert_eq!(m.correlation, None);
    assert_eq!(m.payload, json!({ "dedupe": "d1" }));
    assert_eq!(m.received_at, T0 + 1);
    assert!(c.inbox[0].id < c.inbox[1].id);

    let mut commit = commit_of(&c, T0 + 20);
    commit.consumed = vec![c.inbox[0].id];
    commit.due_at = Some(T0 + 20);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let c2 = claim_only(store, "w1", T0 + 20, "a").await;
    assert_eq!(kinds(&c2.inbox), vec![(MessageKind::Signal, "s.two", "d2")]);
    assert_eq!(c2.inbox[0], c.inbox[1]);
    assert_eq!(c2.wake, 2);

    let mut commit = commit_of(&c2, T0 + 30);
    commit.consumed = vec![c2.inbox[0].id, 999_999];
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "a").await.due_at, None);
    assert!(claim(store, "w1", T0 + 1_000_000).await.is_empty());
    assert_eq!(
        signal(store, "a", "s.three", "d3", T0 + 40).await,
        accepted(&["a"])
    );
    let c3 = claim_only(store, "w1", T0 + 40, "a").await;
    assert_eq!(
        kinds(&c3.inbox),
        vec![(MessageKind::Signal, "s.three", "d3")]
    );
    assert_eq!(c3.wake, 3);
}

/// A worker whose lease lapsed and was re-claimed by another is fenced: its commit writes
/// nothing at all (state, history, inbox, waits, children, parent, cancellations).
pub async fn stale_commit_is_fenced_and_writes_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    create_parked(store, "parent", T0 - 10, &[]).await;
    create_parked(store, "kid", T0 - 5, &[]).await;
    create(store, new_instance("a", T0)).await;
    let stale = claim_only(store, "w1", T0, "a").await;
    assert_eq!(
        signal(store, "a", "sig", "d1", T0 + 500).await,
        accepted(&["a"])
    );
    let fresh = claim_only(store, "w2", T0 + LEASE, "a").await;
    assert_eq!(fresh.lease_version, stale.lease_version + 1);
    let before = get(store, "a").await;
    let history_before = store.history("a", 0, 100).await.unwrap();

    let mut commit = commit_of(&stale, T0 + LEASE + 1);
    commit.status = InstanceStatus::Completed;
    commit.state = JsonText::encode(&json!({ "stale": true })).unwrap();
    commit.needs_attention = true;
    commit.history = vec![history_event("stale", T0 + LEASE + 1)];
    commit.consumed = fresh.inbox.iter().map(|m| m.id).collect();
    commit.waits = waits(&[("stale.event", "k")]);
    commit.children = vec![new_instance("stale-child", T0 + LEASE + 1)];
    commit.notify_parent = Some(("parent".to_owned(), json!({ "status": "completed" })));
    commit.cancel_children = vec!["kid".to_owned()];
    assert_eq!(commit1(store, commit.clone()).await, CommitOutcome::Fenced);

    assert_eq!(get(store, "a").await, before);
    assert_eq!(store.history("a", 0, 100).await.unwrap(), history_before);
    assert_eq!(store.get_instance("stale-child").await.unwrap(), None);
    assert_eq!(get(store, "parent").await.due_at, None);
    assert_eq!(get(store, "kid").await.due_at, None);
    assert_eq!(
        event(store, "stale.event", "k", "e1", T0 + LEASE + 2).await,
        Delivered::Buffered
    );
    // The fresh lease still works, and the message the stale commit "consumed" is still there.
    let mut ok = commit_of(&fresh, T0 + LEASE + 3);
    ok.due_at = Some(T0 + LEASE + 3);
    assert_eq!(commit1(store, ok).await, CommitOutcome::Applied);
    let again = claim_only(store, "w3", T0 + LEASE + 3, "a").await;
    assert_eq!(
        kinds(&again.inbox),
        vec![(MessageKind::Signal, "sig", "d1")]
    );

    // An unknown instance is fenced too.
    commit.instance_id = "nobody".to_owned();
    assert_eq!(commit1(store, commit).await, CommitOutcome::Fenced);
    assert_eq!(store.get_instance("nobody").await.unwrap(), None);
}

/// An applied commit sets status, state, due time, the attention flag and `updated_at`,
/// appends history with consecutive sequence numbers, consumes messages and replaces waits.
pub async fn commit_applies_state_history_and_waits(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    assert_eq!(signal(store, "a", "sig", "d1", T0).await, accepted(&["a"]));
    let c = claim_only(store, "w1", T0, "a").await;
    let mut commit = commit_of(&c, T0 + 10);
    commit.state = JsonText::encode(&json!({ "at": "waiting", "n": 1 })).unwrap();
    commit.due_at = Some(T0 + 5_000);
    commit.needs_attention = true;
    commit.history = vec![history_event("h2", T0 + 10), history_event("h3", T0 + 10)];
    commit.consumed = vec![c.inbox[0].id];
    commit.waits = waits(&[("payment.refund", "r-1"), ("old.event", "o-1")]);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);

    let rec = get(store, "a").await;
    assert_eq!(rec.state, json!({ "at": "waiting", "n": 1 }));
    assert_eq!(rec.status, InstanceStatus::Running);
    assert_eq!(rec.due_at, Some(T0 + 5_000));
    assert!(rec.needs_attention);
    assert_eq!((rec.created_at, rec.updated_at), (T0, T0 + 10));
    let kinds_seq: Vec<(i64, String)> = store
        .history("a", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.seq, h.event.kind))
        .collect();
    assert_eq!(
        kinds_seq,
        vec![
            (1, "instance_started".to_owned()),
            (2, "h2".to_owned()),
            (3, "h3".to_owned())
        ]
    );

    // Waits are replaced as a whole by the next commit.
    let c = claim_only(store, "w1", T0 + 5_000, "a").await;
    assert!(c.inbox.is_empty());
    let mut commit = commit_of(&c, T0 + 5_001);
    commit.waits = waits(&[("payment.refund", "r-1")]);
    commit.needs_attention = false;
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert!(!get(store, "a").await.needs_attention);
    assert_eq!(
        event(store, "old.event", "o-1", "e0", T0 + 5_002).await,
        Delivered::Buffered
    );
    assert_eq!(
        event(store, "payment.refund.succeeded", "r-1", "e1", T0 + 5_003).await,
        accepted(&["a"])
    );
    assert_eq!(get(store, "a").await.due_at, Some(T0 + 5_003));
}

/// A commit that keeps the lease keeps other workers out until it lapses.
pub async fn unreleased_lease_blocks_other_workers(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    let c = claim_only(store, "w1", T0, "a").await;
    let mut commit = commit_of(&c, T0 + 1);
    commit.release = false;
    commit.due_at = Some(T0 + 1);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert!(claim(store, "w2", T0 + LEASE - 1).await.is_empty());
    assert_eq!(
        store
            .renew_leases("w1", &["a".to_owned()], T0 + 2, LEASE)
            .await
            .unwrap(),
        vec!["a".to_owned()]
    );
    // The renewed lease runs to T0 + 2 + LEASE.
    assert!(claim(store, "w2", T0 + LEASE + 1).await.is_empty());
    let c2 = claim_only(store, "w2", T0 + LEASE + 2, "a").await;
    assert_eq!(c2.lease_version, c.lease_version + 1);

    // A released lease frees the instance at once.
    let mut commit = commit_of(&c2, T0 + LEASE + 3);
    commit.due_at = Some(T0 + LEASE + 3);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let c3 = claim_only(store, "w3", T0 + LEASE + 3, "a").await;
    assert_eq!(c3.lease_version, c2.lease_version + 1);
}

/// A commit's `lease_until` extends the lease in the same write (for a call longer than the
/// lease); an earlier time than the one stored changes nothing, and releasing wins.
pub async fn commit_extends_the_lease_and_never_shortens_it(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    create(store, new_instance("b", T0)).await;
    let mut claimed = claim(store, "w1", T0).await;
    assert_eq!(ids(&claimed), vec!["a", "b"]);
    let cb = claimed.pop().unwrap();
    let ca = claimed.pop().unwrap();
    // Both commits in one batch: `a` extends to T0 + 10 × LEASE, `b` asks for less than
    // it holds.
    let mut extend = commit_of(&ca, T0 + 1);
    extend.release = false;
    extend.due_at = Some(T0 + 1);
    extend.lease_until = Some(T0 + 10 * LEASE);
    let mut shorter = commit_of(&cb, T0 + 1);
    shorter.release = false;
    shorter.due_at = Some(T0 + 1);
    shorter.lease_until = Some(T0 + 2);
    assert_eq!(
        store.commit(vec![extend, shorter]).await.unwrap(),
        vec![CommitOutcome::Applied, CommitOutcome::Applied]
    );
    // `b`'s lease still runs to T0 + LEASE; `a`'s to T0 + 10 × LEASE.
    assert!(claim(store, "w2", T0 + LEASE - 1).await.is_empty());
    let ids: Vec<String> = claim(store, "w2", T0 + LEASE)
        .await
        .into_iter()
        .map(|c| c.instance.id)
        .collect();
    assert_eq!(ids, vec!["b".to_owned()]);
    assert!(
        claim(store, "w3", T0 + 10 * LEASE - 1)
            .await
            .iter()
            .all(|c| c.instance.id != "a")
    );
    let ca2 = claim_only(store, "w3", T0 + 10 * LEASE, "a").await;
    assert_eq!(ca2.lease_version, ca.lease_version + 1);

    // Releasing wins over an extension: the instance is free at once.
    let mut both = commit_of(&ca2, T0 + 10 * LEASE + 1);
    both.due_at = Some(T0 + 10 * LEASE + 1);
    both.lease_until = Some(T0 + 20 * LEASE);
    assert_eq!(commit1(store, both).await, CommitOutcome::Applied);
    let ca3 = claim_only(store, "w4", T0 + 10 * LEASE + 1, "a").await;
    assert_eq!(ca3.lease_version, ca2.lease_version + 1);
}

/// A final status clears the due time, the waits and the lease, whatever the commit says.
pub async fn final_commit_ends_the_instance(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    let c = claim_only(store, "w1", T0, "a").await;
    let mut commit = commit_of(&c, T0 + 10);
    commit.waits = waits(&[("x.event", "k")]);
    commit.due_at = Some(T0 + 20);
    commit.release = false;
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let c = claim_only(store, "w1", T0 + LEASE, "a").await;

    let mut commit = commit_of(&c, T0 + LEASE + 1);
    commit.status = InstanceStatus::Completed;
    commit.due_at = Some(T0);
    commit.release = false;
    commit.waits = waits(&[("x.event", "k")]);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let rec = get(store, "a").await;
    assert_eq!((rec.status, rec.due_at), (InstanceStatus::Completed, None));
    assert_eq!(rec.updated_at, T0 + LEASE + 1);
    assert!(
        store
            .renew_leases("w1", &["a".to_owned()], T0 + LEASE + 2, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(claim(store, "w2", T0 + 1_000_000).await.is_empty());
    assert_eq!(
        event(store, "x.event", "k", "e1", T0 + LEASE + 3).await,
        Delivered::Buffered
    );
    assert_eq!(store.next_due_at(T0).await.unwrap(), None);
}

/// A message that arrives while a worker holds the lease keeps the instance due after the
/// worker's commit (the wake rule); without one, the committed due time stands.
pub async fn message_during_lease_keeps_instance_due(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    let c = claim_only(store, "w1", T0, "a").await;
    assert_eq!(c.wake, 0);
    assert_eq!(
        signal(store, "a", "sig", "d1", T0 + 5).await,
        accepted(&["a"])
    );
    let mut commit = commit_of(&c, T0 + 50);
    commit.due_at = Some(T0 + 1_000_000);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    // Due now at the commit, and due since its creation at T0: that earlier time stays.
    assert_eq!(get(store, "a").await.due_at, Some(T0));

    let c = claim_only(store, "w1", T0 + 50, "a").await;
    assert_eq!(c.wake, 1);
    assert_eq!(kinds(&c.inbox), vec![(MessageKind::Signal, "sig", "d1")]);
    let mut commit = commit_of(&c, T0 + 60);
    commit.due_at = Some(T0 + 1_000_000);
    commit.consumed = vec![c.inbox[0].id];
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "a").await.due_at, Some(T0 + 1_000_000));

    // Committing no due time: a message during the lease keeps it due (since T0 + 1_000_000).
    let c = claim_only(store, "w1", T0 + 1_000_000, "a").await;
    assert_eq!(
        signal(store, "a", "sig", "d2", T0 + 1_000_001).await,
        accepted(&["a"])
    );
    let commit = commit_of(&c, T0 + 1_000_002);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "a").await.due_at, Some(T0 + 1_000_000));

    // Parked with no due time, a message makes it due; one during the next lease keeps it due
    // through a commit of no due time.
    let c = claim_only(store, "w1", T0 + 1_000_002, "a").await;
    let commit = commit_of(&c, T0 + 1_000_003);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "a").await.due_at, None);
    let delivered = signal(store, "a", "sig", "d3", T0 + 1_000_004).await;
    assert_eq!(delivered, accepted(&["a"]));
    let c = claim_only(store, "w1", T0 + 1_000_004, "a").await;
    assert_eq!(
        signal(store, "a", "sig", "d4", T0 + 1_000_005).await,
        accepted(&["a"])
    );
    let mut commit = commit_of(&c, T0 + 1_000_006);
    commit.consumed = c.inbox.iter().map(|m| m.id).collect();
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "a").await.due_at, Some(T0 + 1_000_004));
}

/// A commit that leaves an already-due instance due keeps the earlier due time (both mean
/// "due now"), in a single commit and in a batch; a due time after `now` replaces it, and
/// claims still find the instance in due order.
pub async fn due_now_keeps_the_earlier_due_time(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    create(store, new_instance("b", T0 + 1)).await;
    let c = claim_only(store, "w1", T0, "a").await;
    let mut commit = commit_of(&c, T0 + 10);
    commit.due_at = Some(T0 + 10);
    commit.release = false;
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "a").await.due_at, Some(T0));

    // In a batch with another instance, the same rule; a later time replaces it.
    let b = claim_only(store, "w1", T0 + 20, "b").await;
    let mut a_commit = commit_of(&c, T0 + 20);
    a_commit.due_at = Some(T0 + 15);
    let mut b_commit = commit_of(&b, T0 + 20);
    b_commit.due_at = Some(T0 + 500);
    b_commit.release = false;
    assert_eq!(
        store.commit(vec![a_commit, b_commit]).await.unwrap(),
        vec![CommitOutcome::Applied, CommitOutcome::Applied]
    );
    assert_eq!(get(store, "a").await.due_at, Some(T0));
    assert_eq!(get(store, "b").await.due_at, Some(T0 + 500));

    // Not due yet before the commit: the committed time stands, even if it is now.
    let mut b_commit = commit_of(&b, T0 + 400);
    b_commit.due_at = Some(T0 + 400);
    assert_eq!(commit1(store, b_commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "b").await.due_at, Some(T0 + 400));
    assert_eq!(
        ids(&claim(store, "w2", T0 + 2 * LEASE).await),
        vec!["a", "b"]
    );
}

/// Commits that change the state alone, then the flag, the due time and the status one at a
/// time, and then back: each reads back as committed (a SQL store may leave unchanged columns
/// out of its statement, and must not leave out a changed one), and the flag is counted.
pub async fn each_commit_writes_what_changed_and_keeps_the_rest(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    let c = claim_only(store, "w1", T0, "a").await;
    let running = InstanceStatus::Running;
    // (step, flag, due time, status, flagged instances counted after it), in order: the state
    // alone; the flag on; a later due time; the flag off; parked with no due time; due again;
    // and last the status, whose end clears the due time.
    let steps = [
        (1, false, Some(T0), running, 0),
        (2, true, Some(T0), running, 1),
        (3, true, Some(T0 + 900), running, 1),
        (4, false, Some(T0 + 900), running, 0),
        (5, false, None, running, 0),
        (6, false, Some(T0 + 2), running, 0),
        (7, false, Some(T0 + 2), InstanceStatus::Failed, 0),
    ];
    for (n, attention, due, status, flagged) in steps {
        let state = json!({ "n": n });
        let mut commit = commit_of(&c, T0 + 1);
        commit.state = JsonText::encode(&state).unwrap();
        commit.needs_attention = attention;
        commit.due_at = due;
        commit.status = status;
        commit.release = false;
        assert_eq!(
            commit1(store, commit).await,
            CommitOutcome::Applied,
            "step {n}"
        );
        let rec = get(store, "a").await;
        assert_eq!(rec.state, state, "step {n}");
        assert_eq!(rec.status, status, "step {n}");
        assert_eq!(rec.needs_attention, attention, "step {n}");
        let stored_due = if status.is_final() { None } else { due };
        assert_eq!(rec.due_at, stored_due, "step {n}");
        assert_eq!(
            store.stats(T0 + 1).await.unwrap().needs_attention,
            flagged,
            "step {n}"
        );
    }
}

/// A delivery makes the instance due by the delivery time, bumps its wake counter, and leaves
/// `updated_at` alone.
pub async fn delivery_makes_a_parked_instance_due(store: Arc<dyn Store>) {
    let store = &*store;
    create_parked(store, "parked", T0, &[]).await;
    create(store, new_instance("soon", T0 + 10)).await;
    assert_eq!(
        signal(store, "parked", "sig", "d1", T0 + 77).await,
        accepted(&["parked"])
    );
    let rec = get(store, "parked").await;
    assert_eq!((rec.due_at, rec.updated_at), (Some(T0 + 77), T0));
    assert_eq!(
        cancel(store, "soon", "customer asked", T0 + 99).await,
        accepted(&["soon"])
    );
    assert_eq!(get(store, "soon").await.due_at, Some(T0 + 10));

    let claimed = claim(store, "w1", T0 + 100).await;
    assert_eq!(ids(&claimed), vec!["soon", "parked"]);
    assert_eq!(claimed[0].wake, 1);
    assert_eq!(
        kinds(&claimed[0].inbox),
        vec![(MessageKind::Cancel, "cancel", "cancel-soon")]
    );
    assert_eq!(
        claimed[0].inbox[0].payload,
        json!({ "reason": "customer asked" })
    );
    assert_eq!(claimed[1].wake, 1);
}

/// An event nobody waits for is buffered and handed over, once, to the first instance that
/// commits a matching wait; it becomes due at that commit.
pub async fn buffered_event_is_handed_over_at_commit(store: Arc<dyn Store>) {
    let store = &*store;
    let e = |name, key, dedupe, at| async move { event(store, name, key, dedupe, at).await };
    assert_eq!(
        e("warehouse.return.received", "rma-1", "e1", T0).await,
        Delivered::Buffered
    );
    assert_eq!(
        e("warehouse.returned", "rma-1", "e2", T0 + 1).await,
        Delivered::Buffered
    );
    assert_eq!(
        e("warehouse.return.received", "rma-2", "e3", T0 + 2).await,
        Delivered::Buffered
    );
    assert_eq!(
        e("warehouse.return.received", "rma-1", "e4", T0 + 3).await,
        Delivered::Buffered
    );

    create(store, new_instance("a", T0 + 10)).await;
    let c = claim_only(store, "w1", T0 + 10, "a").await;
    assert!(c.inbox.is_empty());
    let mut commit = commit_of(&c, T0 + 100);
    commit.waits = waits(&[("warehouse.return", "rma-1")]);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "a").await.due_at, Some(T0 + 100));
    let c = claim_only(store, "w1", T0 + 100, "a").await;
    assert_eq!(c.wake, 2);
    assert_eq!(
        kinds(&c.inbox),
        vec![
            (MessageKind::Event, "warehouse.return.received", "e1"),
            (MessageKind::Event, "warehouse.return.received", "e4"),
        ]
    );
    let m = &c.inbox[0];
    assert_eq!(m.correlation.as_deref(), Some("rma-1"));
    assert_eq!(m.payload, json!({ "event": "e1" }));
    assert_eq!(m.received_at, T0);

    // `warehouse` matches `warehouse.returned`; `warehouse.return` did not.
    create_parked(store, "b", T0 + 200, &[("warehouse", "rma-1")]).await;
    let c = claim_only(store, "w1", T0 + 200, "b").await;
    assert_eq!(
        kinds(&c.inbox),
        vec![(MessageKind::Event, "warehouse.returned", "e2")]
    );
    assert_eq!(
        commit1(store, commit_of(&c, T0 + 201)).await,
        CommitOutcome::Applied
    );

    // Handed over once: a later waiter on the same key gets nothing.
    create_parked(store, "c", T0 + 300, &[("warehouse", "rma-1")]).await;
    assert_eq!(get(store, "c").await.due_at, None);

    // Two instances registering in one group commit: the first in the batch takes it.
    create(store, new_instance("d", T0 + 400)).await;
    create(store, new_instance("e", T0 + 400)).await;
    let claimed = claim(store, "w1", T0 + 400).await;
    assert_eq!(ids(&claimed), vec!["d", "e"]);
    let batch: Vec<Commit> = claimed
        .iter()
        .rev()
        .map(|c| {
            let mut commit = commit_of(c, T0 + 401);
            commit.waits = waits(&[("warehouse.return.received", "rma-2")]);
            commit
        })
        .collect();
    assert_eq!(
        store.commit(batch).await.unwrap(),
        vec![CommitOutcome::Applied, CommitOutcome::Applied]
    );
    assert_eq!(get(store, "d").await.due_at, None);
    let c = claim_only(store, "w1", T0 + 401, "e").await;
    assert_eq!(
        kinds(&c.inbox),
        vec![(MessageKind::Event, "warehouse.return.received", "e3")]
    );
}

/// An event goes to every instance with a matching wait (exact name or dot-segment prefix,
/// same key), once per instance however many of its waits match, in id order.
pub async fn event_reaches_every_matching_waiter_once(store: Arc<dyn Store>) {
    let store = &*store;
    create_parked(store, "a", T0, &[("payment.refund", "r1")]).await;
    create_parked(store, "b", T0 + 1, &[("payment.refund.succeeded", "r1")]).await;
    create_parked(store, "c", T0 + 2, &[("payment.refund", "r2")]).await;
    create_parked(store, "d", T0 + 3, &[("payment.ref", "r1")]).await;
    create_parked(
        store,
        "e",
        T0 + 4,
        &[("payment.refund", "r1"), ("payment", "r1"), ("other", "r1")],
    )
    .await;
    create_parked(
        store,
        "f",
        T0 + 5,
        &[("payment.refund.succeeded.more", "r1")],
    )
    .await;
    assert_eq!(
        event(store, "payment.refund.succeeded", "r1", "ev", T0 + 10).await,
        accepted(&["a", "b", "e"])
    );
    let claimed = claim(store, "w1", T0 + 10).await;
    assert_eq!(ids(&claimed), vec!["a", "b", "e"]);
    for c in &claimed {
        assert_eq!(
            kinds(&c.inbox),
            vec![(MessageKind::Event, "payment.refund.succeeded", "ev")]
        );
        assert_eq!(c.inbox[0].correlation.as_deref(), Some("r1"));
        assert_eq!(c.wake, 1);
    }
    assert_ne!(claimed[0].inbox[0].id, claimed[1].inbox[0].id);
}

/// Events are deduplicated globally on (name, dedupe id), whether buffered or delivered;
/// another name with the same id is another event, and may reach the same instance.
pub async fn event_dedupe_is_global_by_name_and_id(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(
        event(store, "n.one", "k1", "x", T0).await,
        Delivered::Buffered
    );
    assert_eq!(
        event(store, "n.one", "k9", "x", T0 + 1).await,
        Delivered::Duplicate
    );
    create_parked(store, "a", T0 + 10, &[("n", "k2")]).await;
    assert_eq!(
        event(store, "n.two", "k2", "y", T0 + 11).await,
        accepted(&["a"])
    );
    assert_eq!(
        event(store, "n.two", "k2", "y", T0 + 12).await,
        Delivered::Duplicate
    );
    assert_eq!(
        event(store, "n.three", "k2", "y", T0 + 13).await,
        accepted(&["a"])
    );
    assert_eq!(
        event(store, "n.one", "k2", "x", T0 + 14).await,
        Delivered::Duplicate
    );
    assert_eq!(
        signal(store, "a", "n.two", "y", T0 + 15).await,
        accepted(&["a"])
    );
    let c = claim_only(store, "w1", T0 + 15, "a").await;
    assert_eq!(
        kinds(&c.inbox),
        vec![
            (MessageKind::Event, "n.two", "y"),
            (MessageKind::Event, "n.three", "y"),
            (MessageKind::Signal, "n.two", "y"),
        ]
    );
    // The buffered `x` is still handed over to a waiter on its key.
    create_parked(store, "b", T0 + 20, &[("n.one", "k1")]).await;
    let c = claim_only(store, "w1", T0 + 20, "b").await;
    assert_eq!(kinds(&c.inbox), vec![(MessageKind::Event, "n.one", "x")]);
}

/// Signals and cancellations are deduplicated per instance and kind by dedupe id, consumed
/// or not; unknown instances are reported.
pub async fn signal_and_cancel_dedupe_per_instance(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    create(store, new_instance("b", T0)).await;
    assert_eq!(
        signal(store, "a", "merchant.decision", "d1", T0).await,
        accepted(&["a"])
    );
    assert_eq!(
        signal(store, "a", "merchant.decision", "d1", T0).await,
        Delivered::Duplicate
    );
    assert_eq!(
        signal(store, "a", "other.name", "d1", T0).await,
        Delivered::Duplicate
    );
    assert_eq!(
        signal(store, "b", "merchant.decision", "d1", T0).await,
        accepted(&["b"])
    );
    assert_eq!(cancel(store, "a", "first", T0 + 1).await, accepted(&["a"]));
    assert_eq!(
        cancel(store, "a", "second", T0 + 2).await,
        Delivered::Duplicate
    );
    assert_eq!(
        signal(store, "a", "sig", "cancel-a", T0 + 3).await,
        accepted(&["a"])
    );
    assert_eq!(
        signal(store, "nobody", "sig", "d1", T0).await,
        Delivered::UnknownInstance
    );
    assert_eq!(
        cancel(store, "nobody", "why", T0).await,
        Delivered::UnknownInstance
    );

    let claimed = claim(store, "w1", T0 + 5).await;
    assert_eq!(ids(&claimed), vec!["a", "b"]);
    let a = &claimed[0];
    assert_eq!(
        kinds(&a.inbox),
        vec![
            (MessageKind::Signal, "merchant.decision", "d1"),
            (MessageKind::Cancel, "cancel", "cancel-a"),
            (MessageKind::Signal, "sig", "cancel-a"),
        ]
    );
    assert_eq!(a.inbox[1].payload, json!({ "reason": "first" }));
    let mut commit = commit_of(a, T0 + 6);
    commit.consumed = a.inbox.iter().map(|m| m.id).collect();
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(
        signal(store, "a", "merchant.decision", "d1", T0 + 7).await,
        Delivered::Duplicate
    );
    assert_eq!(
        cancel(store, "a", "third", T0 + 7).await,
        Delivered::Duplicate
    );
    assert_eq!(get(store, "a").await.due_at, None);
    // Every duplicate is recorded in the history, and ignored.
    let ignored: Vec<(String, Value)> = store
        .history("a", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.event.kind.ends_with("_ignored"))
        .map(|h| (h.event.kind, h.event.data["why"].clone()))
        .collect();
    assert_eq!(
        ignored,
        vec![
            ("signal_ignored".to_owned(), json!("duplicate")),
            ("signal_ignored".to_owned(), json!("duplicate")),
            ("cancel_ignored".to_owned(), json!("duplicate")),
            ("signal_ignored".to_owned(), json!("duplicate")),
            ("cancel_ignored".to_owned(), json!("duplicate")),
        ]
    );
}

/// Deliveries to an instance that has ended report its status and change nothing.
pub async fn deliveries_to_finished_instances_change_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    create_finished(store, "rejected", T0, InstanceStatus::Rejected, false).await;
    create_finished(store, "cancelled", T0 + 1, InstanceStatus::Cancelled, false).await;
    let before = get(store, "rejected").await;
    assert_eq!(
        signal(store, "rejected", "sig", "d1", T0 + 5).await,
        Delivered::Finished(InstanceStatus::Rejected)
    );
    assert_eq!(
        cancel(store, "rejected", "late", T0 + 5).await,
        Delivered::Finished(InstanceStatus::Rejected)
    );
    assert_eq!(
        cancel(store, "cancelled", "again", T0 + 5).await,
        Delivered::Finished(InstanceStatus::Cancelled)
    );
    assert_eq!(get(store, "rejected").await, before);
    let kinds: Vec<String> = store
        .history("rejected", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.event.kind)
        .collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["signal_ignored".to_owned(), "cancel_ignored".to_owned()]
    );
    assert!(claim(store, "w1", T0 + 1_000_000).await.is_empty());
    assert_eq!(
        store.stats(T0 + 10).await.unwrap(),
        StoreStats {
            running: 0,
            due: 0,
            needs_attention: 0
        }
    );
}

/// Children are created by their parent's commit (an existing id is left alone), report to
/// the parent once when they finish, and receive the parent's cancellations while running.
pub async fn children_are_created_once_and_report_to_parent(store: Arc<dyn Store>) {
    let store = &*store;
    let mut existing = new_instance("p-c2", T0 - 100);
    existing.workflow = "already-there".to_owned();
    create(store, existing).await;
    let c = claim_only(store, "w1", T0 - 100, "p-c2").await;
    assert_eq!(
        commit1(store, commit_of(&c, T0 - 99)).await,
        CommitOutcome::Applied
    );

    create(store, new_instance("p", T0)).await;
    let c = claim_only(store, "w1", T0, "p").await;
    let mut commit = commit_of(&c, T0 + 10);
    let mut child = new_instance("p-c1", T0 + 10);
    child.parent_id = Some("p".to_owned());
    child.workflow = "refund".to_owned();
    let mut clash = new_instance("p-c2", T0 + 10);
    clash.parent_id = Some("p".to_owned());
    commit.children = vec![child.clone(), clash];
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let rec = get(store, "p-c1").await;
    assert_eq!(
        (rec.parent_id.as_deref(), rec.workflow.as_str(), rec.due_at),
        (Some("p"), "refund", Some(T0 + 10))
    );
    assert_eq!(store.history("p-c1", 0, 10).await.unwrap().len(), 1);
    let rec = get(store, "p-c2").await;
    assert_eq!(
        (rec.parent_id, rec.workflow.as_str()),
        (None, "already-there")
    );

    // The child finishes and tells the parent, once.
    let c = claim_only(store, "w1", T0 + 10, "p-c1").await;
    let mut done = commit_of(&c, T0 + 20);
    done.status = InstanceStatus::Completed;
    done.notify_parent = Some((
        "p".to_owned(),
        json!({ "status": "completed", "output": 1 }),
    ));
    assert_eq!(commit1(store, done.clone()).await, CommitOutcome::Applied);
    assert_eq!(get(store, "p").await.due_at, Some(T0 + 20));
    done.now = T0 + 30;
    assert_eq!(commit1(store, done).await, CommitOutcome::Applied);
    let c = claim_only(store, "w1", T0 + 30, "p").await;
    assert_eq!(
        kinds(&c.inbox),
        vec![(MessageKind::ChildDone, "child.done", "child-done-p-c1")]
    );
    assert_eq!(c.inbox[0].correlation.as_deref(), Some("p-c1"));
    assert_eq!(
        c.inbox[0].payload,
        json!({ "status": "completed", "output": 1 })
    );
    assert_eq!(c.inbox[0].received_at, T0 + 20);
    assert_eq!(c.wake, 1);

    // Cancellations reach running children only.
    let mut commit = commit_of(&c, T0 + 40);
    commit.consumed = vec![c.inbox[0].id];
    commit.cancel_children = vec!["p-c1".to_owned(), "p-c2".to_owned(), "p-c9".to_owned()];
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(get(store, "p-c1").await.due_at, None);
    assert_eq!(store.get_instance("p-c9").await.unwrap(), None);
    let c = claim_only(store, "w1", T0 + 40, "p-c2").await;
    assert_eq!(
        kinds(&c.inbox),
        vec![(MessageKind::Cancel, "cancel", "cancel-from-parent-p")]
    );
    assert_eq!(c.inbox[0].payload, Value::Null);
    assert_eq!(c.inbox[0].correlation, None);
}

/// A group commit applies each commit in order in one call; a fenced one among them changes
/// nothing and does not stop the others. Later commits see earlier ones' messages.
pub async fn group_commit_applies_each_and_fences_one(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.commit(Vec::new()).await.unwrap(), vec![]);
    for id in ["a", "b", "c"] {
        create(store, new_instance(id, T0)).await;
    }
    let claimed = claim(store, "w1", T0).await;
    assert_eq!(ids(&claimed), vec!["a", "b", "c"]);
    let renewed = store
        .renew_leases("w1", &["a".to_owned(), "c".to_owned()], T0 + 500, LEASE)
        .await
        .unwrap();
    assert_eq!(renewed, vec!["a".to_owned(), "c".to_owned()]);
    let b2 = claim_only(store, "w2", T0 + LEASE, "b").await;
    let b_before = get(store, "b").await;

    let batch: Vec<Commit> = claimed
        .iter()
        .map(|c| {
            let mut commit = commit_of(c, T0 + LEASE + 1);
            commit.state =
                JsonText::encode(&json!({ "done_by": "w1", "id": c.instance.id })).unwrap();
            commit.history = vec![history_event("w1", T0 + LEASE + 1)];
            if c.instance.id == "a" {
                commit.notify_parent = Some(("c".to_owned(), json!("from a")));
            }
            commit
        })
        .collect();
    assert_eq!(
        store.commit(batch).await.unwrap(),
        vec![
            CommitOutcome::Applied,
            CommitOutcome::Fenced,
            CommitOutcome::Applied
        ]
    );
    assert_eq!(
        get(store, "a").await.state,
        json!({ "done_by": "w1", "id": "a" })
    );
    assert_eq!(get(store, "b").await, b_before);
    assert_eq!(store.history("b", 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.history("a", 0, 10).await.unwrap().len(), 2);
    let c = get(store, "c").await;
    assert_eq!(c.state, json!({ "done_by": "w1", "id": "c" }));
    // `a`'s notice reached `c` before `c`'s own commit: it stays due, since its creation.
    assert_eq!(c.due_at, Some(T0));
    let mut b_commit = commit_of(&b2, T0 + LEASE + 2);
    b_commit.due_at = Some(T0 + 5 * LEASE);
    assert_eq!(commit1(store, b_commit).await, CommitOutcome::Applied);
    let c = claim_only(store, "w3", T0 + LEASE + 2, "c").await;
    assert_eq!(c.inbox.len(), 1);
    assert_eq!(c.inbox[0].payload, json!("from a"));
}

/// A batch of commits that each write only their own instance (written set-wise by the SQL
/// stores) gives every instance exactly what its own commit would: history numbered after its
/// own last event, its messages consumed, its waits replaced; a fenced one writes nothing,
/// and two commits of one instance in a batch apply in order.
pub async fn group_commit_writes_many_instances_at_once(store: Arc<dyn Store>) {
    let store = &*store;
    for id in ["a", "b", "c", "d"] {
        create(store, new_instance(id, T0)).await;
    }
    assert_eq!(signal(store, "a", "sig", "a1", T0).await, accepted(&["a"]));
    assert_eq!(signal(store, "b", "sig", "b1", T0).await, accepted(&["b"]));
    let claimed = claim(store, "w1", T0).await;
    assert_eq!(ids(&claimed), vec!["a", "b", "c", "d"]);
    let by = |id: &str| claimed.iter().find(|c| c.instance.id == id).unwrap();
    // `a`'s history gets a second event first, so the batch's events follow different
    // last sequence numbers.
    let mut a0 = commit_of(by("a"), T0 + 1);
    a0.release = false;
    a0.due_at = Some(T0 + 1);
    a0.history = vec![history_event("a-pre", T0 + 1)];
    assert_eq!(commit1(store, a0).await, CommitOutcome::Applied);

    let now = T0 + 10;
    let mut a = commit_of(by("a"), now);
    a.state = JsonText::encode(&json!({ "n": "a" })).unwrap();
    a.due_at = Some(T0 + 500);
    a.history = vec![history_event("a1", now), history_event("a2", now)];
    a.consumed = vec![by("a").inbox[0].id];
    a.waits = waits(&[("x", "k1")]);
    let mut b = commit_of(by("b"), now);
    b.status = InstanceStatus::Completed;
    b.state = JsonText::encode(&json!({ "n": "b" })).unwrap();
    b.history = vec![history_event("b1", now)];
    b.consumed = vec![by("b").inbox[0].id];
    // An ended instance waits for nothing, whatever its commit says.
    b.waits = waits(&[("y", "k2")]);
    let mut c = commit_of(by("c"), now);
    c.lease_version += 1;
    c.state = JsonText::encode(&json!({ "n": "stale" })).unwrap();
    c.history = vec![history_event("c1", now)];
    let mut d1 = commit_of(by("d"), now);
    d1.release = false;
    d1.state = JsonText::encode(&json!({ "n": "d1" })).unwrap();
    d1.history = vec![history_event("d1", now)];
    let mut d2 = commit_of(by("d"), now);
    d2.state = JsonText::encode(&json!({ "n": "d2" })).unwrap();
    d2.history = vec![history_event("d2", now)];
    d2.waits = waits(&[("z", "k3")]);
    assert_eq!(
        store.commit(vec![a, b, c, d1, d2]).await.unwrap(),
        vec![
            CommitOutcome::Applied,
            CommitOutcome::Applied,
            CommitOutcome::Fenced,
            CommitOutcome::Applied,
            CommitOutcome::Applied,
        ]
    );

    let seqs = |id: &'static str| async move {
        store
            .history(id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|h| {
                // Each event's data is its own, wherever in the batch its commit was.
                if h.event.kind != "instance_started" {
                    assert_eq!(h.event.data, json!({ "kind": h.event.kind }), "{id}");
                }
                (h.seq, h.event.kind)
            })
            .collect::<Vec<_>>()
    };
    let started = (1, "instance_started".to_owned());
    assert_eq!(
        seqs("a").await,
        vec![
            started.clone(),
            (2, "a-pre".to_owned()),
            (3, "a1".to_owned()),
            (4, "a2".to_owned())
        ]
    );
    assert_eq!(seqs("b").await, vec![started.clone(), (2, "b1".to_owned())]);
    assert_eq!(seqs("c").await, vec![started.clone()]);
    assert_eq!(
        seqs("d").await,
        vec![started, (2, "d1".to_owned()), (3, "d2".to_owned())]
    );

    let ra = get(store, "a").await;
    assert_eq!((ra.state, ra.due_at), (json!({ "n": "a" }), Some(T0 + 500)));
    let rb = get(store, "b").await;
    assert_eq!((rb.status, rb.due_at), (InstanceStatus::Completed, None));
    assert_eq!(get(store, "c").await.state, new_instance("c", T0).state);
    assert_eq!(get(store, "d").await.state, json!({ "n": "d2" }));

    // Waits: `a` on k1, `d` on k3, `b` (ended) on nothing.
    assert_eq!(
        event(store, "x", "k1", "e1", now + 1).await,
        accepted(&["a"])
    );
    assert_eq!(
        event(store, "z", "k3", "e2", now + 1).await,
        accepted(&["d"])
    );
    assert_eq!(
        event(store, "y", "k2", "e3", now + 1).await,
        Delivered::Buffered
    );
    // The consumed signals are gone from the next claim; the new event is there.
    let again = claim(store, "w2", now + 1).await;
    let a_again = again.iter().find(|c| c.instance.id == "a").unwrap();
    assert_eq!(kinds(&a_again.inbox), vec![(MessageKind::Event, "x", "e1")]);
}

/// Listing filters by every field, pages by id newest first, and returns at least one row.
pub async fn list_instances_filters_and_pages(store: Arc<dyn Store>) {
    let store = &*store;
    for i in 1..=7_i64 {
        let id = format!("0{i}");
        let mut new = new_instance(&id, T0 + i * 10);
        new.business_line = if i % 2 == 0 { "outlet" } else { "shop" }.to_owned();
        new.workflow = if i <= 4 { "return" } else { "exchange" }.to_owned();
        new.search_key = Some(format!("order-{}", i % 3));
        create(store, new).await;
        let c = claim_only(store, "w1", T0 + i * 10, &id).await;
        let mut commit = commit_of(&c, T0 + i * 10);
        if i == 3 {
            commit.status = InstanceStatus::Completed;
        }
        if i == 5 {
            commit.status = InstanceStatus::Failed;
            commit.needs_attention = true;
        }
        assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    }
    let list = |f: ListFilter| async move {
        store
            .list_instances(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let page = |after: Option<&str>, limit| ListFilter {
        after_id: after.map(str::to_owned),
        limit,
        ..ListFilter::default()
    };
    assert_eq!(list(page(None, 3)).await, ["07", "06", "05"]);
    assert_eq!(list(page(Some("05"), 3)).await, ["04", "03", "02"]);
    assert_eq!(list(page(Some("02"), 3)).await, ["01"]);
    assert!(list(page(Some("01"), 3)).await.is_empty());
    assert_eq!(list(page(None, 0)).await, ["07"]);
    let all = |f: fn(&mut ListFilter)| {
        let mut filter = page(None, 100);
        f(&mut filter);
        filter
    };
    assert_eq!(
        list(all(|f| f.status = Some(InstanceStatus::Completed))).await,
        ["03"]
    );
    assert_eq!(
        list(all(|f| f.status = Some(InstanceStatus::Running))).await,
        ["07", "06", "04", "02", "01"]
    );
    assert_eq!(
        list(all(|f| f.business_line = Some("outlet".to_owned()))).await,
        ["06", "04", "02"]
    );
    assert_eq!(
        list(all(|f| f.workflow = Some("exchange".to_owned()))).await,
        ["07", "06", "05"]
    );
    assert_eq!(
        list(all(|f| f.search_key = Some("order-1".to_owned()))).await,
        ["07", "04", "01"]
    );
    assert_eq!(
        list(all(|f| {
            f.created_from = Some(T0 + 30);
            f.created_to = Some(T0 + 50);
        }))
        .await,
        ["04", "03"]
    );
    assert_eq!(list(all(|f| f.needs_attention = Some(true))).await, ["05"]);
    assert_eq!(
        list(all(|f| f.needs_attention = Some(false))).await,
        ["07", "06", "04", "03", "02", "01"]
    );
    assert_eq!(
        list(all(|f| {
            f.business_line = Some("shop".to_owned());
            f.workflow = Some("return".to_owned());
            f.status = Some(InstanceStatus::Running);
        }))
        .await,
        ["01"]
    );
    let mut filter = all(|f| f.business_line = Some("shop".to_owned()));
    filter.after_id = Some("05".to_owned());
    filter.limit = 1;
    assert_eq!(list(filter).await, ["03"]);
    assert!(
        list(all(|f| f.search_key = Some("none".to_owned())))
            .await
            .is_empty()
    );
}

/// History pages after a sequence number, oldest first; fields round-trip.
pub async fn history_pages_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    create(store, new_instance("a", T0)).await;
    let c = claim_only(store, "w1", T0, "a").await;
    let mut commit = commit_of(&c, T0 + 1);
    let detailed = NewHistory {
        at: T0 + 1,
        kind: "step_failed".to_owned(),
        step: Some("refund".to_owned()),
        attempt: Some(u32::MAX),
        data: json!({ "error": "timeout", "retry_at": T0 + 100 }),
    };
    commit.history = vec![detailed.clone(), history_event("h3", T0 + 1)];
    commit.due_at = Some(T0 + 2);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let c = claim_only(store, "w1", T0 + 2, "a").await;
    let mut commit = commit_of(&c, T0 + 3);
    commit.history = vec![history_event("h4", T0 + 3), history_event("h5", T0 + 3)];
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);

    let all = store.history("a", 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|h| h.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[1].event, detailed);
    let page = store.history("a", 2, 2).await.unwrap();
    assert_eq!(
        page.iter()
            .map(|h| (h.seq, h.event.kind.as_str()))
            .collect::<Vec<_>>(),
        vec![(3, "h3"), (4, "h4")]
    );
    assert!(store.history("a", 5, 10).await.unwrap().is_empty());
    assert!(store.history("a", 0, 0).await.unwrap().is_empty());
    assert!(store.history("nobody", 0, 10).await.unwrap().is_empty());
}

/// The next due time is the earliest due time of a running instance, or the end of its lease
/// if a live lease holds it.
pub async fn next_due_at_accounts_for_leases(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.next_due_at(T0).await.unwrap(), None);
    create_finished(store, "done", T0 - 50, InstanceStatus::Closed, false).await;
    create_parked(store, "parked", T0 - 40, &[]).await;
    assert_eq!(store.next_due_at(T0).await.unwrap(), None);
    create(store, new_instance("a", T0 + 100)).await;
    create(store, new_instance("b", T0 + 50)).await;
    assert_eq!(store.next_due_at(T0).await.unwrap(), Some(T0 + 50));
    claim_only(store, "w1", T0 + 50, "b").await;
    assert_eq!(store.next_due_at(T0 + 60).await.unwrap(), Some(T0 + 100));
    claim_only(store, "w1", T0 + 100, "a").await;
    // Both leased: `b` frees first.
    assert_eq!(
        store.next_due_at(T0 + 110).await.unwrap(),
        Some(T0 + 50 + LEASE)
    );
    // Once a lease has lapsed the instance is simply due.
    assert_eq!(
        store.next_due_at(T0 + 50 + LEASE).await.unwrap(),
        Some(T0 + 50)
    );
}

/// More leased instances than a store reads at once before the first free one: the answer
/// still sees past all of them (a backend that pages through its due index must not stop at
/// the first page).
pub async fn next_due_at_sees_past_many_leases(store: Arc<dyn Store>) {
    let store = &*store;
    for i in 0..150 {
        create(store, new_instance(&format!("leased-{i:03}"), T0 + i)).await;
    }
    let claimed = store.claim_due("w1", T0 + 200, LEASE, 200).await.unwrap();
    assert_eq!(claimed.len(), 150);
    // Only leases, and a free instance far off: the leases lapse first.
    create(store, new_instance("later", T0 + 100 * LEASE)).await;
    assert_eq!(
        store.next_due_at(T0 + 250).await.unwrap(),
        Some(T0 + 200 + LEASE)
    );
    // A free instance due before the leases lapse, behind all 150 of them in due order.
    create(store, new_instance("free", T0 + 300)).await;
    assert_eq!(store.next_due_at(T0 + 250).await.unwrap(), Some(T0 + 300));
}

/// Renewing extends only the owner's live leases, never shortens one, and returns the ids
/// still held, in the order asked.
pub async fn renew_leases_keeps_live_leases_of_the_owner(store: Arc<dyn Store>) {
    let store = &*store;
    for id in ["a", "b", "c"] {
        create(store, new_instance(id, T0)).await;
    }
    assert_eq!(ids(&claim(store, "w1", T0).await), vec!["a", "b", "c"]);
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        store
            .renew_leases("w1", &s(&["b", "nobody", "a"]), T0 + 500, LEASE)
            .await
            .unwrap(),
        s(&["b", "a"])
    );
    assert!(
        store
            .renew_leases("w2", &s(&["a"]), T0 + 600, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .renew_leases("w1", &s(&["c"]), T0 + LEASE, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .renew_leases("w1", &[], T0, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let c = claim_only(store, "w2", T0 + LEASE, "c").await;
    assert_eq!(c.lease_version, 2);
    assert!(
        store
            .renew_leases("w1", &s(&["c"]), T0 + LEASE + 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .renew_leases("w2", &s(&["c"]), T0 + LEASE + 1, LEASE)
            .await
            .unwrap(),
        s(&["c"])
    );
    // A renewal never shortens a lease (a heartbeat beside a lease extended for a long call).
    assert_eq!(
        store
            .renew_leases("w1", &s(&["a"]), T0 + 501, 1)
            .await
            .unwrap(),
        s(&["a"])
    );
    assert!(claim(store, "w3", T0 + 1_000).await.is_empty());
    assert_eq!(
        ids(&claim(store, "w3", T0 + 500 + LEASE).await),
        vec!["a", "b"]
    );
}

/// Stats count running instances, those due (leased or not), and those flagged for a person
/// whatever their status.
pub async fn stats_count_running_due_and_attention(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.stats(T0).await.unwrap(), StoreStats::default());
    create_finished(store, "failed", T0 - 10, InstanceStatus::Failed, true).await;
    create(store, new_instance("flagged", T0 - 5)).await;
    let c = claim_only(store, "w1", T0 - 5, "flagged").await;
    let mut commit = commit_of(&c, T0 - 5);
    commit.needs_attention = true;
    commit.due_at = Some(T0 + 5);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    create(store, new_instance("a", T0)).await;
    create(store, new_instance("b", T0 + 1_000)).await;
    create_parked(store, "parked", T0 - 1, &[]).await;
    assert_eq!(
        store.stats(T0).await.unwrap(),
        StoreStats {
            running: 4,
            due: 1,
            needs_attention: 2
        }
    );
    claim_only(store, "w1", T0, "a").await;
    assert_eq!(
        store.stats(T0 + 5).await.unwrap(),
        StoreStats {
            running: 4,
            due: 2,
            needs_attention: 2
        }
    );
}

/// JSON values come back exactly as written, wherever they are stored: extreme integers,
/// floats, unicode, escapes, scalars at the top level; so do unicode ids and keys.
pub async fn json_round_trips_exactly(store: Arc<dyn Store>) {
    let store = &*store;
    let value = json!({
        "i64_max": i64::MAX,
        "i64_min": i64::MIN,
        "u64_max": u64::MAX,
        "zero": 0,
        "minus_one": -1,
        "floats": [0.1, -2.5, 1e-7, 1.7976931348623157e308, 5e-324, 123456.789, 1.0],
        "text": "退货 ✓ 🚚 مرحبا e\u{301} \"quoted\" \\ back/slash\n\ttab \u{1} \u{7f} \u{2028}",
        "nested": { "a": [[], {}, null, true, false, [1, [2, [3]]]] },
        "": "empty key",
        "keys order": { "z": 1, "a": 2, "m": 3 },
    });
    let scalars = [
        Value::Null,
        json!(42),
        json!("just a string"),
        json!([1, "two", 3.5]),
    ];
    let id = "订单-α-1";
    let mut new = new_instance(id, T0);
    new.input = value.clone();
    new.params = scalars[0].clone();
    new.state = scalars[1].clone();
    new.search_key = Some("order 🚚 1".to_owned());
    new.idempotency_key = Some("clé-🔑".to_owned());
    new.history[0].data = value.clone();
    create(store, new).await;
    let rec = get(store, id).await;
    assert_eq!(rec.input, value);
    assert_eq!(rec.params, scalars[0]);
    assert_eq!(rec.state, scalars[1]);
    assert_eq!(store.find_by_key("clé-🔑").await.unwrap().unwrap().id, id);
    let filter = ListFilter {
        search_key: Some("order 🚚 1".to_owned()),
        limit: 10,
        ..ListFilter::default()
    };
    assert_eq!(store.list_instances(&filter).await.unwrap(), vec![rec]);

    store
        .deliver(
            Delivery::Signal {
                instance_id: id.to_owned(),
                name: "信号".to_owned(),
                dedupe_id: "d-✓".to_owned(),
                payload: value.clone(),
            },
            T0 + 1,
        )
        .await
        .unwrap();
    store
        .deliver(
            Delivery::Event {
                name: "évènement.reçu".to_owned(),
                correlation: "clé-1".to_owned(),
                dedupe_id: "e-1".to_owned(),
                payload: value.clone(),
            },
            T0 + 2,
        )
        .await
        .unwrap();
    let c = claim_only(store, "w1", T0 + 2, id).await;
    assert_eq!(c.instance.input, value);
    assert_eq!(c.inbox.len(), 1);
    assert_eq!(c.inbox[0].payload, value);
    assert_eq!(c.inbox[0].name, "信号");
    let mut commit = commit_of(&c, T0 + 3);
    commit.state = JsonText::encode(&scalars[2]).unwrap();
    commit.waits = waits(&[("évènement", "clé-1")]);
    commit.history = vec![NewHistory {
        data: scalars[3].clone(),
        ..history_event("h", T0 + 3)
    }];
    commit.consumed = vec![c.inbox[0].id];
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let c = claim_only(store, "w1", T0 + 3, id).await;
    assert_eq!(c.instance.state, scalars[2]);
    assert_eq!(
        kinds(&c.inbox),
        vec![(MessageKind::Event, "évènement.reçu", "e-1")]
    );
    assert_eq!(c.inbox[0].payload, value);
    assert_eq!(c.inbox[0].correlation.as_deref(), Some("clé-1"));
    let history = store.history(id, 0, 10).await.unwrap();
    assert_eq!(history[0].event.data, value);
    assert_eq!(history[1].event.data, scalars[3]);
}

/// Workers claiming at the same time never get the same instance, and together get them all.
pub async fn concurrent_claims_never_share_an_instance(store: Arc<dyn Store>) {
    const INSTANCES: usize = 40;
    const WORKERS: usize = 4;
    for i in 0..INSTANCES {
        create(&*store, new_instance(&format!("i-{i:03}"), T0)).await;
    }
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..INSTANCES {
                    let claimed = store
                        .claim_due(&format!("w{w}"), T0, 60_000, 3)
                        .await
                        .unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    mine.extend(claimed.into_iter().map(|c| c.instance.id));
                    tokio::task::yield_now().await;
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    // A claim may pass over rows another claim holds at that instant: pick up what is left.
    all.extend(
        ids(&claim(&*store, "last", T0).await)
            .into_iter()
            .map(str::to_owned),
    );
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "an instance was claimed twice: {all:?}"
    );
    assert_eq!(all.len(), INSTANCES);
}

/// The same signal delivered concurrently is stored once.
pub async fn concurrent_signals_are_stored_once(store: Arc<dyn Store>) {
    create(&*store, new_instance("a", T0)).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { signal(&*store, "a", "sig", "d1", T0).await })
        })
        .collect();
    let mut accepted_count = 0;
    for t in tasks {
        match t.await.unwrap() {
            Delivered::Accepted(ids) => {
                assert_eq!(ids, vec!["a".to_owned()]);
                accepted_count += 1;
            }
            Delivered::Duplicate => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(accepted_count, 1);
    let c = claim_only(&*store, "w1", T0, "a").await;
    assert_eq!(c.inbox.len(), 1);
    assert_eq!(c.wake, 1);
}

/// An event delivered while its waiter's commit registers the wait is never stranded in the
/// buffer: either way round, the instance ends up due with the event in its inbox.
pub async fn concurrent_event_and_wait_never_strand_the_event(store: Arc<dyn Store>) {
    const N: usize = 20;
    for i in 0..N {
        create(&*store, new_instance(&format!("r-{i:02}"), T0)).await;
    }
    let claimed = store.claim_due("w1", T0, 60_000, N).await.unwrap();
    assert_eq!(claimed.len(), N);
    let mut tasks = Vec::new();
    for (i, c) in claimed.into_iter().enumerate() {
        let key = format!("k-{i:02}");
        let mut commit = commit_of(&c, T0 + 1);
        commit.waits = waits(&[("race.event", &key)]);
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            assert_eq!(
                s.commit(vec![commit]).await.unwrap(),
                vec![CommitOutcome::Applied]
            );
        }));
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let d = event(&*s, "race.event.done", &key, &format!("e-{i}"), T0 + 1).await;
            assert!(
                matches!(&d, Delivered::Buffered | Delivered::Accepted(_)),
                "{d:?}"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let claimed = store.claim_due("w2", T0 + 2, 60_000, N + 1).await.unwrap();
    assert_eq!(claimed.len(), N, "every instance must be due again");
    for c in &claimed {
        assert_eq!(
            kinds(&c.inbox),
            vec![(
                MessageKind::Event,
                "race.event.done",
                c.inbox[0].dedupe_id.as_str()
            )],
            "{}",
            c.instance.id
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Durability: state written by one store handle, read back by a new one on the same data.

/// Writes one of everything; [`durable_state_verify`] checks it on a reopened store.
pub async fn durable_state_populate(store: Arc<dyn Store>) {
    let store = &*store;
    store.put_definition(&def("return", 3, "h3")).await.unwrap();
    let mut new = new_instance("d-1", T0);
    new.idempotency_key = Some("key-d".to_owned());
    new.search_key = Some("order-d".to_owned());
    new.input = json!({ "big": i64::MAX, "text": "持久 ✓" });
    create(store, new).await;
    let c = claim_only(store, "w1", T0, "d-1").await;
    let mut commit = commit_of(&c, T0 + 1);
    commit.waits = waits(&[("parcel.delivered", "p-1")]);
    commit.history = vec![history_event("parked", T0 + 1)];
    commit.state = JsonText::encode(&json!({ "at": "parcel" })).unwrap();
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    assert_eq!(
        event(store, "parcel.lost", "p-9", "e-9", T0 + 2).await,
        Delivered::Buffered
    );
    assert_eq!(
        signal(store, "d-1", "sig", "s-1", T0 + 3).await,
        accepted(&["d-1"])
    );
    create(store, new_instance("d-2", T0 + 4)).await;
    // d-1 (due T0 + 3) and d-2 (due T0 + 4) leased to w1 until T0 + 4 + LEASE.
    assert_eq!(ids(&claim(store, "w1", T0 + 4).await), vec!["d-1", "d-2"]);
}

/// Checks what [`durable_state_populate`] wrote, on a new store handle.
pub async fn durable_state_verify(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(
        store.definitions().await.unwrap(),
        vec![def("return", 3, "h3")]
    );
    let rec = get(store, "d-1").await;
    assert_eq!(rec.input, json!({ "big": i64::MAX, "text": "持久 ✓" }));
    assert_eq!(rec.state, json!({ "at": "parcel" }));
    assert_eq!(rec.due_at, Some(T0 + 3));
    assert_eq!(store.find_by_key("key-d").await.unwrap().unwrap().id, "d-1");
    assert_eq!(store.history("d-1", 0, 10).await.unwrap().len(), 2);
    // Leases survive: nothing to claim before they lapse, and the owner can renew.
    assert!(claim(store, "w2", T0 + 5).await.is_empty());
    assert_eq!(
        store.next_due_at(T0 + 5).await.unwrap(),
        Some(T0 + 4 + LEASE)
    );
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        store
            .renew_leases("w1", &s(&["d-1", "d-2"]), T0 + 5, LEASE)
            .await
            .unwrap(),
        s(&["d-1", "d-2"])
    );
    // Dedupe memory survives, and so do waits and the buffer.
    assert_eq!(
        signal(store, "d-1", "sig", "s-1", T0 + 6).await,
        Delivered::Duplicate
    );
    assert_eq!(
        event(store, "parcel.lost", "p-9", "e-9", T0 + 6).await,
        Delivered::Duplicate
    );
    assert_eq!(
        event(store, "parcel.delivered", "p-1", "e-1", T0 + 7).await,
        accepted(&["d-1"])
    );
    let claimed = claim(store, "w2", T0 + 5 + LEASE).await;
    assert_eq!(ids(&claimed), vec!["d-1", "d-2"]);
    let d1 = &claimed[0];
    assert_eq!(d1.lease_version, 3);
    assert_eq!(d1.wake, 2);
    assert_eq!(
        kinds(&d1.inbox),
        vec![
            (MessageKind::Signal, "sig", "s-1"),
            (MessageKind::Event, "parcel.delivered", "e-1")
        ]
    );
    assert!(d1.inbox[0].id < d1.inbox[1].id);
    let mut commit = commit_of(d1, T0 + 6 + LEASE);
    commit.waits = waits(&[("parcel", "p-9")]);
    assert_eq!(commit1(store, commit).await, CommitOutcome::Applied);
    let c = claim_only(store, "w2", T0 + 6 + LEASE, "d-1").await;
    assert_eq!(
        kinds(&c.inbox)[2],
        (MessageKind::Event, "parcel.lost", "e-9")
    );
}

/// Lock operations gathered into one write: among operations on one name the order given
/// holds, each answers as it would alone, and what they leave is what they would alone.
pub async fn lock_ops_answer_each_as_alone_in_one_write(store: Arc<dyn Store>) {
    const TTL: i64 = 30_000;
    let s = store.as_ref();
    let take = |name: &str, holder: &str, now: i64| LockOp::Take {
        name: name.to_owned(),
        holder: holder.to_owned(),
        now,
        ttl_ms: TTL,
    };
    let release = |name: &str, holder: &str| LockOp::Release {
        name: name.to_owned(),
        holder: holder.to_owned(),
    };
    assert!(
        s.try_lock("order/old", "node-z", T0 - TTL, TTL)
            .await
            .unwrap()
    );
    let out = s
        .lock_ops(&[
            take("order/o-2", "a", T0),
            take("order/o-1", "a", T0),
            take("order/o-1", "b", T0),
            release("order/o-1", "b"),
            release("order/o-1", "a"),
            take("order/o-1", "c", T0),
            take("order/old", "d", T0),
            take("order/o-2", "e", T0),
        ])
        .await
        .unwrap();
    assert_eq!(out, [true, true, false, true, true, true, true, false]);
    // What is left: o-1 held by c, o-2 by a, old (expired before) by d.
    assert!(!s.try_lock("order/o-1", "x", T0 + 1, TTL).await.unwrap());
    assert!(s.try_lock("order/o-1", "c", T0 + 1, TTL).await.unwrap());
    assert!(!s.try_lock("order/o-2", "x", T0 + 1, TTL).await.unwrap());
    assert!(!s.try_lock("order/old", "x", T0 + 1, TTL).await.unwrap());
    assert_eq!(s.lock_ops(&[]).await.unwrap(), Vec::<bool>::new());
}

/// Named locks: one holder at a time; the holder may extend it; another takes it once it
/// expires or is released; a release by someone else changes nothing.
pub async fn named_locks_exclude_until_released_or_expired(store: Arc<dyn Store>) {
    const TTL: i64 = 30_000;
    let s = store.as_ref();
    async fn take(s: &dyn Store, holder: &str, at: i64) -> bool {
        s.try_lock("order/o-1", holder, at, TTL).await.unwrap()
    }
    assert!(take(s, "node-a", T0).await);
    assert!(!take(s, "node-b", T0 + 1).await);
    // Another name is another lock.
    assert!(
        s.try_lock("order/o-2", "node-b", T0 + 1, TTL)
            .await
            .unwrap()
    );
    // The holder extends it; the other still waits past the first expiry.
    assert!(take(s, "node-a", T0 + 10_000).await);
    assert!(!take(s, "node-b", T0 + TTL).await);
    // A release by someone else changes nothing; by the holder, frees it.
    s.unlock("order/o-1", "node-b").await.unwrap();
    assert!(!take(s, "node-b", T0 + TTL).await);
    s.unlock("order/o-1", "node-a").await.unwrap();
    assert!(take(s, "node-b", T0 + TTL).await);
    // A crashed holder's lock is taken over once it expires.
    assert!(!take(s, "node-c", T0 + 2 * TTL - 1).await);
    assert!(take(s, "node-c", T0 + 2 * TTL).await);
}

/// Units sold: a record seen before (by dedupe id) is ignored; totals sum a window per
/// business line, category and SKU.
pub async fn sales_are_recorded_once_and_summed_over_a_window(store: Arc<dyn Store>) {
    use aftersales_core::store::{SaleRecord, SalesTotal};
    let sale = |id: &str, sku: &str, quantity: u64, at: i64| SaleRecord {
        business_line: "apparel".to_owned(),
        category: "apparel.tops".to_owned(),
        sku: sku.to_owned(),
        quantity,
        at,
        dedupe_id: id.to_owned(),
    };
    let first = vec![
        sale("s1", "tshirt-m", 2, 1_000),
        sale("s2", "tshirt-m", 3, 2_000),
        sale("s3", "tshirt-l", 1, 3_000),
        sale("s4", "tshirt-l", 7, 9_000),
    ];
    assert_eq!(store.record_sales(&first).await.unwrap(), 4);
    // The same records again (a retried feed) and one new one.
    let mut again = first.clone();
    again.push(sale("s5", "tshirt-m", 1, 2_500));
    assert_eq!(store.record_sales(&again).await.unwrap(), 1);
    let totals = store.sales_totals(1_000, 9_000).await.unwrap();
    let total = |sku: &str, quantity: u64| SalesTotal {
        business_line: "apparel".to_owned(),
        category: "apparel.tops".to_owned(),
        sku: sku.to_owned(),
        quantity,
    };
    assert_eq!(totals, vec![total("tshirt-l", 1), total("tshirt-m", 6)]);
    assert!(store.sales_totals(10_000, 20_000).await.unwrap().is_empty());
}
