//! Time, behind a trait, so tests can move through a seven-day timeout without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

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
