//! The store conformance suite on `PgStore`, each test in its own schema. Needs
//! `AFTERSALES_TEST_PG_URL`; without it each test prints why it was skipped (and fails
//! under `CI=true`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aftersales_core::store::{Store as _, StoreError};
use aftersales_store::conformance;
use aftersales_store::open_store;

aftersales_store::conformance_tests!(aftersales_store::conformance::with_postgres);

/// Everything written survives closing the pool and connecting again.
#[tokio::test]
async fn reconnected_store_keeps_everything() {
    conformance::with_pg_schema(|schema| async move {
        let store = Arc::new(schema.connect().await);
        conformance::durable_state_populate(store.clone()).await;
        store.close().await;
        drop(store);
        let again = Arc::new(schema.connect().await);
        conformance::durable_state_verify(again.clone()).await;
        again.close().await;
    })
    .await;
}

/// `open_store` picks PostgreSQL for `postgres://` and `postgresql://` URLs.
#[tokio::test]
async fn open_store_connects_postgres_urls() {
    conformance::with_pg_schema(|schema| async move {
        // Create the schema first, then point the URLs at it so nothing lands in `public`.
        schema.connect().await.close().await;
        let sep = if schema.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}options=-c%20search_path%3D{}",
            schema.url, schema.schema
        );
        for url in [url.clone(), url.replacen("postgres://", "postgresql://", 1)] {
            let store = open_store(&url).await.unwrap();
            assert_eq!(
                store.stats(conformance::T0).await.unwrap(),
                Default::default()
            );
        }
    })
    .await;
}

/// FIXME: JSONB cannot hold U+0000 in a string, so a payload with one is refused here while
/// the memory and SQLite stores keep it. The refusal is reported as `Unavailable` (SQLSTATE
/// 22P05), the only fitting `StoreError`, although retrying cannot help.
#[tokio::test]
async fn nul_characters_in_json_are_refused() {
    conformance::with_postgres(|store| async move {
        let mut new = conformance::new_instance("nul", conformance::T0);
        new.input = serde_json::json!({ "text": "a\u{0}b" });
        let err = store.create_instance(new).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("22P05")),
            "{err}"
        );
        assert_eq!(store.get_instance("nul").await.unwrap(), None);
    })
    .await;
}

/// A start written through one node's store wakes another node's due feed (LISTEN/NOTIFY),
/// and the database's clock, which every node on it reads, is readable.
#[tokio::test]
async fn another_nodes_start_wakes_this_nodes_feed() {
    conformance::with_pg_schema(|schema| async move {
        let a = schema.connect().await;
        let b = schema.connect().await;
        let mut feed = b
            .due_feed()
            .await
            .unwrap()
            .expect("PostgreSQL has a due feed");
        a.create_instance(conformance::new_instance("woken", conformance::T0))
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
            .await
            .expect("woken within 10 s")
            .expect("the feed stays open while its receiver lives");
        let db_ms = a.clock_ms().await.unwrap().expect("PostgreSQL has a clock");
        let local_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((db_ms - local_ms).abs() < 60_000, "{db_ms} vs {local_ms}");
        drop(feed);
        a.close().await;
        b.close().await;
    })
    .await;
}
