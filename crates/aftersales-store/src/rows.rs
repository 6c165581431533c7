//! Row types as read from either database, and their conversion to the store's records.
//!
//! The queries of both backends select the same column names with the same Rust types (JSON
//! is read as text: `TEXT` in SQLite, `jsonb::text` in PostgreSQL), so these types serve both.

use std::collections::HashMap;

use aftersales_core::store::{
    Claimed, DefinitionRecord, HistoryRecord, InboxMessage, InstanceRecord, InstanceStatus,
    MessageKind, NewHistory, StoreError,
};
use serde_json::Value;

use crate::error::json_corrupt;

/// An `instances` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct InstanceRow {
    pub id: String,
    pub parent_id: Option<String>,
    pub workflow: String,
    pub version: i64,
    pub business_line: String,
    pub status: String,
    pub idempotency_key: Option<String>,
    pub search_key: Option<String>,
    pub input: String,
    pub params: String,
    pub state: String,
    pub meta: String,
    pub due_at: Option<i64>,
    pub needs_attention: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub lease_version: i64,
    pub wake: i64,
}

impl InstanceRow {
    pub(crate) fn into_record(self) -> Result<InstanceRecord, StoreError> {
        let what = |col: &str| format!("instance {} column {col}", self.id);
        Ok(InstanceRecord {
            version: to_u32(self.version, &what("version"))?,
            status: parse_status(&self.status, &what("status"))?,
            input: parse_json(&self.input, &what("input"))?,
            params: parse_json(&self.params, &what("params"))?,
            state: parse_json(&self.state, &what("state"))?,
            meta: parse_json(&self.meta, &what("meta"))?,
            id: self.id,
            parent_id: self.parent_id,
            workflow: self.workflow,
            business_line: self.business_line,
            idempotency_key: self.idempotency_key,
            search_key: self.search_key,
            due_at: self.due_at,
            needs_attention: self.needs_attention,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// An `inbox` or `buffered_events` row (`instance_id` is empty for the latter).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MessageRow {
    pub id: i64,
    pub instance_id: String,
    pub kind: String,
    pub name: String,
    pub correlation: Option<String>,
    pub dedupe_id: String,
    pub payload: String,
    pub received_at: i64,
}

impl MessageRow {
    pub(crate) fn into_message(self) -> Result<InboxMessage, StoreError> {
        let what = format!("message {}", self.id);
        Ok(InboxMessage {
            id: self.id,
            kind: parse_kind(&self.kind, &what)?,
            name: self.name,
            correlation: self.correlation,
            dedupe_id: self.dedupe_id,
            payload: parse_json(&self.payload, &what)?,
            received_at: self.received_at,
        })
    }
}

/// A `history` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct HistoryRow {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub step: Option<String>,
    pub attempt: Option<i64>,
    pub data: String,
}

impl HistoryRow {
    pub(crate) fn into_record(self) -> Result<HistoryRecord, StoreError> {
        let what = format!("history event {}", self.seq);
        Ok(HistoryRecord {
            seq: self.seq,
            event: NewHistory {
                at: self.at,
                kind: self.kind,
                step: self.step,
                attempt: self.attempt.map(|a| to_u32(a, &what)).transpose()?,
                data: parse_json(&self.data, &what)?,
            },
        })
    }
}

/// A `definitions` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DefinitionRow {
    pub name: String,
    pub version: i64,
    pub source: String,
    pub hash: String,
    pub deployed_at: i64,
}

impl DefinitionRow {
    pub(crate) fn into_record(self) -> Result<DefinitionRecord, StoreError> {
        let what = format!("definition {}", self.name);
        Ok(DefinitionRecord {
            version: to_u32(self.version, &what)?,
            name: self.name,
            source: self.source,
            hash: self.hash,
            deployed_at: self.deployed_at,
        })
    }
}

/// The stored name of a message kind.
pub(crate) fn kind_str(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Signal => "signal",
        MessageKind::Event => "event",
        MessageKind::ChildDone => "child_done",
        MessageKind::Cancel => "cancel",
    }
}

fn parse_kind(s: &str, what: &str) -> Result<MessageKind, StoreError> {
    Ok(match s {
        "signal" => MessageKind::Signal,
        "event" => MessageKind::Event,
        "child_done" => MessageKind::ChildDone,
        "cancel" => MessageKind::Cancel,
        other => {
            return Err(StoreError::Corrupt(format!(
                "{what}: unknown message kind `{other}`"
            )));
        }
    })
}

fn parse_status(s: &str, what: &str) -> Result<InstanceStatus, StoreError> {
    InstanceStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: unknown status `{s}`")))
}

fn parse_json(s: &str, what: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| json_corrupt(what, e))
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: {v} is out of range")))
}

/// A JSON value as stored text.
pub(crate) fn json_text(v: &Value) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| json_corrupt("value to store", e))
}

/// A page size or limit as SQL wants it.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Joins claimed rows with their unconsumed messages, in claim order (due time, then id).
///
/// Runs after the claim has committed. An instance whose row or one of whose messages does
/// not decode is left out and logged as an error: it stays leased until its lease lapses and
/// is then claimed (and reported) again, while the rest of the batch runs. Failing the whole
/// claim instead would stop every instance behind it in due order, over and over.
pub(crate) fn claimed(rows: Vec<InstanceRow>, messages: Vec<MessageRow>) -> Vec<Claimed> {
    let mut inboxes: HashMap<String, Result<Vec<InboxMessage>, StoreError>> = HashMap::new();
    for m in messages {
        let inbox = inboxes
            .entry(m.instance_id.clone())
            .or_insert(Ok(Vec::new()));
        if let Ok(list) = inbox {
            match m.into_message() {
                Ok(msg) => list.push(msg),
                Err(e) => *inbox = Err(e),
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, lease_version, wake) = (row.id.clone(), row.lease_version, row.wake);
        let decoded = row.into_record().and_then(|instance| {
            let inbox = inboxes.remove(&instance.id).unwrap_or(Ok(Vec::new()))?;
            Ok((instance, inbox))
        });
        match decoded {
            Ok((instance, inbox)) => out.push(Claimed {
                inbox,
                instance,
                lease_version,
                wake,
            }),
            Err(e) => tracing::error!(
                instance = %id,
                error = %e,
                "a claimed instance does not decode; it is left leased until its lease lapses"
            ),
        }
    }
    out.sort_by(|a, b| {
        (a.instance.due_at, &a.instance.id).cmp(&(b.instance.due_at, &b.instance.id))
    });
    out
}

/// A `COUNT(*)` as the stats want it.
pub(crate) fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, due: i64, state: &str) -> InstanceRow {
        InstanceRow {
            id: id.to_owned(),
            parent_id: None,
            workflow: "wf".to_owned(),
            version: 1,
            business_line: "line".to_owned(),
            status: "running".to_owned(),
            idempotency_key: None,
            search_key: None,
            input: "{}".to_owned(),
            params: "{}".to_owned(),
            state: state.to_owned(),
            meta: "{}".to_owned(),
            due_at: Some(due),
            needs_attention: false,
            created_at: 0,
            updated_at: 0,
            lease_version: 3,
            wake: 0,
        }
    }

    fn message(id: i64, instance: &str, payload: &str) -> MessageRow {
        MessageRow {
            id,
            instance_id: instance.to_owned(),
            kind: "signal".to_owned(),
            name: "go".to_owned(),
            correlation: None,
            dedupe_id: format!("d{id}"),
            payload: payload.to_owned(),
            received_at: 0,
        }
    }

    #[test]
    fn an_instance_that_does_not_decode_is_left_out_and_the_rest_are_claimed() {
        let rows = vec![
            row("c", 30, "{}"),
            row("bad-state", 10, "{not json"),
            row("a", 20, "{\"n\":1}"),
            row("bad-message", 5, "{}"),
        ];
        let messages = vec![
            message(1, "a", "{\"x\":1}"),
            message(2, "bad-message", "{}"),
            message(3, "bad-message", "[unterminated"),
        ];
        let out = claimed(rows, messages);
        let ids: Vec<&str> = out.iter().map(|c| c.instance.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "c"]);
        assert_eq!(out[0].inbox.len(), 1);
        assert_eq!(out[0].instance.state, serde_json::json!({"n": 1}));
        assert_eq!(out[0].lease_version, 3);
        assert!(out[1].inbox.is_empty());
    }
}
