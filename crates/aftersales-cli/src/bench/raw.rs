//! The store's raw limits on this machine: how many durable single-row commits per second,
//! and how many rows per second in 100-row transactions, against a scratch table — what no
//! engine on that store can beat, measured beside the engine's own figures.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection as _, QueryBuilder};

use super::group;

/// Rows per transaction of the batched measurement.
const BATCH: usize = 100;
/// Connections of PostgreSQL's concurrent single-row measurement (what pgbench used).
const PG_CLIENTS: usize = 16;

/// What one run measured.
pub(crate) struct Limits {
    /// Single-row commits per second, one connection.
    single: f64,
    /// Single-row commits per second from several connections (PostgreSQL only).
    single_many: Option<(usize, f64)>,
    /// Rows per second, in transactions of [`BATCH`] rows, one connection.
    batched: f64,
}

impl Limits {
    /// Prints the limits and our steps/s as a fraction of each.
    pub(crate) fn print(&self, steps_per_s: f64) {
        let ratio = |limit: f64| {
            if limit > 0.0 {
                format!("{:.3}", steps_per_s / limit)
            } else {
                "-".to_owned()
            }
        };
        println!(
            "  single-row commits/s (1 connection):          {:>10}   our steps/s ÷ this = {}",
            group(self.single.round() as u64),
            ratio(self.single)
        );
        if let Some((c, r)) = self.single_many {
            println!(
                "  single-row commits/s ({c} connections):        {:>10}   our steps/s ÷ this = {}",
                group(r.round() as u64),
                ratio(r)
            );
        }
        println!(
            "  rows/s in {BATCH}-row transactions (1 connection): {:>10}   our steps/s ÷ this = {}",
            group(self.batched.round() as u64),
            ratio(self.batched)
        );
    }
}

/// SQLite: a file beside the engine's, opened as the store opens its own (WAL,
/// synchronous=FULL).
pub(crate) async fn sqlite(file: &Path, each: Duration) -> anyhow::Result<Limits> {
    use sqlx::ConnectOptions as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .context("opening the raw SQLite file")?;
    sqlx::query(
        "CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, at INTEGER NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    let t = Instant::now();
    let mut single = 0u64;
    while t.elapsed() < each {
        sqlx::query("INSERT INTO bench_raw (v, at) VALUES (?1, ?2)")
            .bind(1_i64)
            .bind(2_i64)
            .execute(&mut conn)
            .await?;
        single += 1;
    }
    let single = single as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut rows = 0u64;
    while t.elapsed() < each {
        let mut tx = conn.begin().await?;
        let mut q = QueryBuilder::new("INSERT INTO bench_raw (v, at) ");
        q.push_values(0..BATCH, |mut b, i| {
            b.push_bind(i64::try_from(i).unwrap_or(0)).push_bind(2_i64);
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        rows += BATCH as u64;
    }
    let batched = rows as f64 / t.elapsed().as_secs_f64();
    let _ = conn.close().await;
    Ok(Limits {
        single,
        single_many: None,
        batched,
    })
}

/// PostgreSQL: a scratch table in the scratch database, default server settings (fsync on,
/// synchronous_commit on).
pub(crate) async fn postgres(url: &str, each: Duration) -> anyhow::Result<Limits> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("connecting for the raw measurements")?;
    sqlx::query(
        "CREATE TABLE bench_raw (id BIGSERIAL PRIMARY KEY, v INT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut conn)
    .await?;
    let t = Instant::now();
    let mut single = 0u64;
    while t.elapsed() < each {
        sqlx::query("INSERT INTO bench_raw (v) VALUES ($1)")
            .bind(1_i32)
            .execute(&mut conn)
            .await?;
        single += 1;
    }
    let single = single as f64 / t.elapsed().as_secs_f64();

    let mut set = tokio::task::JoinSet::new();
    for _ in 0..PG_CLIENTS {
        let url = url.to_owned();
        set.spawn(async move {
            let mut c = sqlx::PgConnection::connect(&url).await?;
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < each {
                sqlx::query("INSERT INTO bench_raw (v) VALUES ($1)")
                    .bind(1_i32)
                    .execute(&mut c)
                    .await?;
                n += 1;
            }
            let _ = c.close().await;
            Ok::<(u64, f64), sqlx::Error>((n, t.elapsed().as_secs_f64()))
        });
    }
    let mut many = 0.0;
    while let Some(r) = set.join_next().await {
        let (n, secs) = r.context("a raw client task failed")??;
        many += n as f64 / secs;
    }

    let t = Instant::now();
    let mut rows = 0u64;
    while t.elapsed() < each {
        let mut tx = conn.begin().await?;
        let mut q = QueryBuilder::new("INSERT INTO bench_raw (v) ");
        q.push_values(0..BATCH, |mut b, i| {
            b.push_bind(i32::try_from(i).unwrap_or(0));
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        rows += BATCH as u64;
    }
    let batched = rows as f64 / t.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_raw")
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(Limits {
        single,
        single_many: Some((PG_CLIENTS, many)),
        batched,
    })
}
