//! Mapping sqlx errors onto [`StoreError`].

use aftersales_core::store::StoreError;
use sqlx::migrate::MigrateError;

/// Maps an sqlx error from operation `op`: decoding problems are [`StoreError::Corrupt`],
/// everything else (connection, pool, I/O, a refused statement) is
/// [`StoreError::Unavailable`], which the caller may retry: every operation runs in one
/// transaction, so a failed one wrote nothing.
pub(crate) fn db(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| map(op, e)
}

fn map(op: &str, e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Decode(_)
        | E::ColumnDecode { .. }
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. }
        | E::RowNotFound => StoreError::Corrupt(format!("{op}: {e}")),
        E::Migrate(m) => match *m {
            // The database holds migrations this build does not know or that changed: it
            // belongs to another version of aftersales, or was edited by hand.
            MigrateError::VersionMissing(_)
            | MigrateError::VersionMismatch(_)
            | MigrateError::VersionNotPresent(_)
            | MigrateError::VersionTooOld(..)
            | MigrateError::VersionTooNew(..)
            | MigrateError::Dirty(_) => StoreError::Corrupt(format!("{op}: {m}")),
            other => StoreError::Unavailable(format!("{op}: {other}")),
        },
        E::Database(d) => StoreError::Unavailable(match d.code() {
            Some(code) => format!("{op}: database error {code}: {}", d.message()),
            None => format!("{op}: database error: {}", d.message()),
        }),
        other => StoreError::Unavailable(format!("{op}: {other}")),
    }
}

/// A JSON value that does not serialise, or a stored JSON text that does not parse.
pub(crate) fn json_corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: invalid JSON: {e}"))
}
