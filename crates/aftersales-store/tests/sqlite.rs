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
