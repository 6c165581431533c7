//! The store conformance suite on `SqliteStore`, plus what only a file can show: reopening.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aftersales_core::store::{Store, StoreError};
use aftersales_store::conformance::{self, TempSqlite};
use aftersales_store::{SqliteStore, open_store};

aftersales_store::conformance_tests!(aftersales_store::conformance::with_sqlite);

/// Everything written survives closing the store and opening the file again.
#[tokio::test]
async fn reopened_file_keeps_everything() {
    let file = TempSqlite::new();
    let store = Arc::new(file.open().await);
    conformance::durable_state_populate(store.clone()).await;
    store.close().await;
    drop(store);
    let reopened = Arc::new(file.open().await);
    conformance::durable_state_verify(reopened.clone()).await;
    reopened.close().await;
}

/// `open_store` takes a plain path and `sqlite:` URLs, and both reach the same file.
#[tokio::test]
async fn open_store_accepts_paths_and_urls() {
    let file = TempSqlite::new();
    let path = file.path().to_string_lossy().into_owned();
    let by_path = open_store(&path).await.unwrap();
    conformance::durable_state_populate(by_path.clone()).await;
    drop(by_path);
    let by_url = open_store(&format!("sqlite://{path}")).await.unwrap();
    conformance::durable_state_verify(by_url).await;
    assert!(file.path().exists());

    let fresh = TempSqlite::new();
    let url = format!("sqlite://{}", fresh.path().to_string_lossy());
    open_store(&url).await.unwrap();
    assert!(
        fresh.path().exists(),
        "a sqlite: URL creates a missing file"
    );

    let memory = open_store("sqlite::memory:").await.unwrap();
    assert_eq!(memory.definitions().await.unwrap(), vec![]);
}

/// The in-memory database is one database for all of a store's calls.
#[tokio::test]
async fn in_memory_store_keeps_its_data() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    conformance::durable_state_populate(store.clone()).await;
    conformance::durable_state_verify(store).await;
}

/// Each `sqlite::memory:` store is a database of its own.
#[tokio::test]
async fn in_memory_stores_are_separate() {
    let first = Arc::new(SqliteStore::in_memory().await.unwrap());
    let second = SqliteStore::in_memory().await.unwrap();
    conformance::durable_state_populate(first.clone()).await;
    assert!(!first.definitions().await.unwrap().is_empty());
    assert_eq!(second.definitions().await.unwrap(), vec![]);
}

/// A closed store refuses writes as `Unavailable` (a caller may retry elsewhere), without
/// panicking, whichever connection the write would have used.
#[tokio::test]
async fn closed_store_refuses_writes() {
    let file = TempSqlite::new();
    let store = file.open().await;
    store.close().await;
    let err = store
        .try_lock("order-1", "holder", 0, 1_000)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = store.claim_due("worker", 0, 1_000, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

/// Unknown URL schemes are refused with a message that names the scheme only.
#[tokio::test]
async fn open_store_refuses_other_schemes() {
    let err = open_store("mysql://root:secret@localhost/db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`mysql:`"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

/// Writes that wait together share one transaction, each in its own savepoint: here 60
/// creates sent at once, a third of them reusing a taken key with another request. Each is
/// answered as if it had been written alone, the refused ones wrote nothing, and the rest
/// are all there, also after reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_together_are_answered_each_as_alone() {
    let file = TempSqlite::new();
    let store = Arc::new(file.open().await);
    let mut taken = conformance::new_instance("owner", 1_000);
    taken.idempotency_key = Some("taken".to_owned());
    store.create_instance(taken).await.unwrap();

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let store: Arc<dyn Store> = store.clone();
        calls.spawn(async move {
            let mut new = conformance::new_instance(&format!("i{i:02}"), 1_000 + i);
            if i % 3 == 0 {
                new.idempotency_key = Some("taken".to_owned());
                new.request_hash = format!("other-{i}");
            }
            (i, store.create_instance(new).await)
        });
    }
    let mut created = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (i, answer) = joined.unwrap();
        if i % 3 == 0 {
            assert!(
                matches!(answer, Err(StoreError::KeyConflict { .. })),
                "i{i:02}: {answer:?}"
            );
        } else {
            answer.unwrap();
            created.push(format!("i{i:02}"));
        }
    }
    assert_eq!(created.len(), 40);
    store.close().await;
    drop(store);

    let reopened = file.open().await;
    for i in 0..60 {
        let id = format!("i{i:02}");
        let found = reopened.get_instance(&id).await.unwrap();
        assert_eq!(found.is_some(), i % 3 != 0, "{id}");
        if found.is_some() {
            assert_eq!(reopened.history(&id, 0, 10).await.unwrap().len(), 1, "{id}");
        }
    }
    reopened.close().await;
}
