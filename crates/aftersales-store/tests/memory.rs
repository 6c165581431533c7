//! The store conformance suite on `MemoryStore`, the reference semantics: a case that fails
//! here is a wrong test, not a wrong store.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aftersales_core::store::memory::MemoryStore;
use aftersales_store::conformance;

aftersales_store::conformance_tests!(aftersales_store::conformance::with_memory);

/// The durability cases' expectations hold on the reference store (without a reopen).
#[tokio::test]
async fn durable_state_expectations_hold_on_the_reference() {
    let store = Arc::new(MemoryStore::new());
    conformance::durable_state_populate(store.clone()).await;
    conformance::durable_state_verify(store).await;
}
