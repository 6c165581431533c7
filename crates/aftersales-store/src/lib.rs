//! SQLite and PostgreSQL implementations of the engine's [`Store`] contract.
//!
//! Knows SQL and the `Store` trait, nothing else: no workflow model, no HTTP, no adapters.
//! Its observable behaviour is defined by `aftersales_core::store::memory::MemoryStore`; the
//! conformance suite (feature `conformance`) runs the same cases against all three stores.
//! Start at [`open_store`], which picks [`SqliteStore`] or [`PgStore`] from a URL.
//!
//! Both backends share one implementation of the parts where the order of checks matters
//! (creating an instance, committing, delivering): a backend only supplies the row operations.
//! Each of those operations runs in one database transaction, so a failed call writes nothing.
//! On PostgreSQL the transactions that could race (a commit registering waits while an event
//! for them arrives, two commits notifying each other's instances) take their locks in one
//! global order: correlation keys first, then instance rows sorted by id. SQLite has one
//! writer at a time, so it needs no locks of its own; its engine transactions run whole on a
//! blocking thread through a synchronous connection (`sqlite_sync`).

#![warn(missing_docs)]

mod error;
mod logic;
mod postgres;
mod rows;
mod sqlite;
mod sqlite_sync;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;

use aftersales_core::store::{Store, StoreError};

pub use crate::postgres::PgStore;
pub use crate::sqlite::SqliteStore;

/// Opens the store a URL names, applying migrations.
///
/// - `sqlite:...` (`sqlite://path`, `sqlite:path`, `sqlite::memory:`) or a plain file path:
///   [`SqliteStore::open`].
/// - `postgres://...` or `postgresql://...`: [`PgStore::connect`].
///
/// Any other scheme is refused with [`StoreError::Unavailable`] naming the scheme (never the
/// whole URL, which may hold a password).
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match Backend::of(url)? {
        Backend::Sqlite => Ok(Arc::new(SqliteStore::open(url).await?)),
        Backend::Postgres => Ok(Arc::new(PgStore::connect(url).await?)),
    }
}

/// Which backend a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(Backend::Sqlite);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres);
        }
        match url_scheme(url) {
            Some(scheme) => Err(StoreError::Unavailable(format!(
                "unsupported store URL scheme `{scheme}:`; use `sqlite:<path>`, a file path, \
                 or `postgres://...`"
            ))),
            None if url.trim().is_empty() => Err(StoreError::Unavailable(
                "empty store URL; use `sqlite:<path>`, a file path, or `postgres://...`".to_owned(),
            )),
            None => Ok(Backend::Sqlite),
        }
    }
}

/// The scheme of something that looks like a URL (`name:` of at least two characters, so
/// that a Windows drive letter stays a path), if any.
fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (scheme.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_picked_by_url() {
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite://data/a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("data/a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("/var/lib/a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of(r"C:\data\a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
    }

    #[test]
    fn unknown_schemes_are_refused_without_echoing_the_url() {
        let err = Backend::of("mysql://user:secret@host/db").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`mysql:`"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(Backend::of("").is_err());
    }
}
