//! What the engine asked of the store during a run: how many claim, start and commit calls,
//! how many instances each carried, and how long each took (queueing for the connection
//! included). The engine reports these as `aftersales_store_*` histograms; this recorder keeps
//! only their running totals, so it costs no memory per call and leaves the RSS figures alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

use super::{group, rate};

/// Running totals of one histogram.
#[derive(Default)]
struct Totals(Mutex<(u64, f64, f64)>);

impl HistogramFn for Totals {
    fn record(&self, value: f64) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        t.0 += 1;
        t.1 += value;
        t.2 = t.2.max(value);
    }
}

type Series = BTreeMap<(String, String), Arc<Totals>>;

/// The recorder. Metrics other than the store's go nowhere.
#[derive(Clone, Default)]
pub(crate) struct StoreCalls(Arc<Mutex<Series>>);

impl StoreCalls {
    /// Installs a recorder as the process's one; `None` when another is already installed.
    pub(crate) fn install() -> Option<StoreCalls> {
        let calls = StoreCalls::default();
        metrics::set_global_recorder(calls.clone()).ok()?;
        Some(calls)
    }

    /// Count, sum and max of one series, and resets it.
    fn take(&self, name: &str, op: &str) -> (u64, f64, f64) {
        let series = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        series
            .get(&(name.to_owned(), op.to_owned()))
            .map_or((0, 0.0, 0.0), |t| {
                std::mem::take(&mut *t.0.lock().unwrap_or_else(PoisonError::into_inner))
            })
    }

    /// Forgets what was recorded so far.
    pub(crate) fn reset(&self) {
        let series = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for t in series.values() {
            *t.0.lock().unwrap_or_else(PoisonError::into_inner) = (0, 0.0, 0.0);
        }
    }

    /// Prints one line per kind of store call since the last print, and how much of `elapsed`
    /// (seconds) they took together. On SQLite they all share the one writer connection, so
    /// that share is how busy the writer was.
    pub(crate) fn print(&self, elapsed: f64) {
        println!("  store calls (time includes waiting for a connection):");
        let mut busy = 0.0;
        for op in ["claim", "start", "commit", "lock"] {
            let (calls, items, _) = self.take("aftersales_store_batch_items", op);
            let (timed, secs, max) = self.take("aftersales_store_write_seconds", op);
            if timed == 0 {
                continue;
            }
            busy += secs;
            println!(
                "    {op:<7} {:>9} calls ({}/s), {:.1} instances per call, mean {:.2} ms, max {:.1} ms, {:.1} s in all",
                group(timed),
                rate(timed as f64, elapsed),
                if calls > 0 { items / calls as f64 } else { 0.0 },
                1000.0 * secs / timed as f64,
                1000.0 * max,
                secs
            );
        }
        if elapsed > 0.0 {
            println!(
                "    together {:.0}% of the elapsed time",
                100.0 * busy / elapsed
            );
        }
    }
}

impl metrics::Recorder for StoreCalls {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if !key.name().starts_with("aftersales_store_") {
            return Histogram::noop();
        }
        let op = key
            .labels()
            .find(|l| l.key() == "op")
            .map_or_else(String::new, |l| l.value().to_owned());
        let mut series = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let totals = series
            .entry((key.name().to_owned(), op))
            .or_default()
            .clone();
        Histogram::from_arc(totals)
    }
}
