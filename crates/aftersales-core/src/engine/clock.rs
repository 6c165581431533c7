//! Time, behind a trait, so tests can move through a seven-day timeout without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

use crate::store::{Store, StoreError};

/// The engine's source of time, in unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> i64;

    /// Sleeps until `at` or until woken early, whichever comes first. A manual clock wakes
    /// sleepers when it is advanced.
    fn sleep_until(&self, at: i64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    fn sleep_until(&self, at: i64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let ms = (at - self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }
}

/// The clock of a store several nodes share: the database's time, so that leases, timers
/// and lock expiries mean the same instant on every node whatever each machine's clock says.
///
/// It reads the store's clock ([`Store::clock_ms`]) and runs on from that reading with the
/// local monotonic clock, so between readings neither a skewed nor a stepped local wall
/// clock moves it. The reading is taken at the midpoint of the round trip, so its error is
/// at most half a round trip; [`DatabaseClock::keep_synced`] refreshes it against drift. A
/// store with no clock of its own (SQLite, memory: one node) gives the local clock.
pub struct DatabaseClock {
    read: Box<dyn Fn() -> Reading + Send + Sync>,
    anchor: std::sync::RwLock<(std::time::Instant, i64)>,
}

impl std::fmt::Debug for DatabaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseClock")
            .field("offset_ms", &self.offset_ms())
            .finish_non_exhaustive()
    }
}

/// One reading of a store's clock.
type Reading = std::pin::Pin<Box<dyn Future<Output = Result<Option<i64>, StoreError>> + Send>>;

/// A local clock this far from the database's is worth a warning.
const SKEW_WARNING_MS: i64 = 1_000;

impl DatabaseClock {
    /// A clock anchored on one reading of the store's clock.
    pub async fn new(store: Arc<dyn Store>) -> Result<Arc<DatabaseClock>, StoreError> {
        DatabaseClock::reading(Box::new(move || {
            let store = store.clone();
            Box::pin(async move { store.clock_ms().await })
        }))
        .await
    }

    async fn reading(
        read: Box<dyn Fn() -> Reading + Send + Sync>,
    ) -> Result<Arc<DatabaseClock>, StoreError> {
        let clock = Arc::new(DatabaseClock {
            read,
            anchor: std::sync::RwLock::new((std::time::Instant::now(), SystemClock.now_ms())),
        });
        clock.sync().await?;
        Ok(clock)
    }

    /// Reads the store's clock again and re-anchors on it. Returns how far the local wall
    /// clock is from the store's (positive: the store is ahead), in milliseconds.
    pub async fn sync(&self) -> Result<i64, StoreError> {
        let before = std::time::Instant::now();
        let Some(store_ms) = (self.read)().await? else {
            let anchor = (std::time::Instant::now(), SystemClock.now_ms());
            *self
                .anchor
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = anchor;
            return Ok(0);
        };
        let round_trip = before.elapsed();
        let at = before + round_trip / 2;
        *self
            .anchor
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (at, store_ms);
        let offset = self.offset_ms();
        if offset.abs() > SKEW_WARNING_MS {
            tracing::warn!(
                offset_ms = offset,
                "this machine's clock is off the database's; leases and timers follow the database"
            );
        }
        Ok(offset)
    }

    /// How far the local wall clock is from this clock (positive: this clock is ahead).
    pub fn offset_ms(&self) -> i64 {
        self.now_ms() - SystemClock.now_ms()
    }

    /// Re-reads the store's clock every `every` until `stop` turns true. A failed reading
    /// keeps the last anchor (the monotonic clock runs on) and is retried next time.
    pub async fn keep_synced(
        self: Arc<Self>,
        every: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "reading the database's clock failed; running on the last reading");
            }
        }
    }
}

impl Clock for DatabaseClock {
    fn now_ms(&self) -> i64 {
        let (at, ms) = *self
            .anchor
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
        ms.saturating_add(elapsed)
    }

    fn sleep_until(&self, at: i64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let ms = (at - self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }
}

/// A clock moved by hand. Sleepers wake when it passes their time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    moved: Arc<Notify>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock {
            now: Arc::new(AtomicI64::new(start_ms)),
            moved: Arc::new(Notify::new()),
        }
    }

    /// Moves the clock forward by `ms` and wakes sleepers.
    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// Sets the clock and wakes sleepers.
    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at: i64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let moved = self.moved.notified();
                if self.now_ms() >= at {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn database_clock_follows_the_store_not_this_machine() {
        // A database whose clock is an hour ahead of this machine's.
        let clock = DatabaseClock::reading(Box::new(|| {
            Box::pin(async { Ok(Some(SystemClock.now_ms() + 3_600_000)) })
        }))
        .await
        .unwrap();
        let off = clock.offset_ms();
        assert!((3_599_000..=3_601_000).contains(&off), "offset {off}");
        let local = DatabaseClock::new(Arc::new(crate::store::memory::MemoryStore::new()))
            .await
            .unwrap();
        assert!(local.offset_ms().abs() < 1_000);
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_moved() {
        let c = ManualClock::new(1_000);
        let c2 = c.clone();
        let h = tokio::spawn(async move {
            c2.sleep_until(5_000).await;
            c2.now_ms()
        });
        tokio::task::yield_now().await;
        c.advance(1_000);
        tokio::task::yield_now().await;
        assert!(!h.is_finished());
        c.advance(3_000);
        assert_eq!(h.await.unwrap(), 5_000);
    }
}
