//! The engine end to end on the in-memory store, one test per feature of the workflow
//! format: tasks, retries, timeouts, deadlines, compensation, cancel, signals, events,
//! timers, choice, loops, parallel branches, sub-workflows, pending actions, versions and
//! idempotent starts.

#![allow(clippy::unwrap_used)]

mod common;

use aftersales_core::engine::state::ExecState;
use aftersales_core::engine::{CallResult, EngineError, StartRequest};
use aftersales_core::store::{Delivered, InstanceStatus, StoreError};
use common::*;
use serde_json::json;

const SAGA: &str = r#"
[workflow]
name = "t.saga"
version = 1

[input]
order_id = "string"
amount = "money"

[defaults]
timeout = "10s"
retry = { max_attempts = 4, initial = "1s", multiplier = 2, max_delay = "1m", jitter = "none" }

[[step]]
id = "reserve"
action = "stock.reserve"
input = { order_id = "${input.order_id}" }
compensate = { action = "stock.release", input = { reservation = "${steps.reserve.reservation}" } }

[[step]]
id = "note"
action = "note.send"
input = { text = "reserved ${steps.reserve.reservation}" }
compensate = { action = "note.unsend", input = { text = "undo" } }

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }
pivot = true

[[step]]
id = "done"
end = "completed"
output = { refund_id = "${steps.refund.refund_id}" }
"#;

fn saga_input() -> serde_json::Value {
    json!({"order_id": "o-1", "amount": money(12_345)})
}

#[tokio::test]
async fn a_saga_runs_step_by_step_to_its_end_and_tells_its_story() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    assert_eq!(
        h.script.actions_of(&id),
        ["stock.reserve", "note.send", "pay.refund"]
    );
    let refund_id = h.output(&id).await["refund_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(refund_id.starts_with("rf-"));
    assert_eq!(
        h.story(&id).await,
        [
            "instance_started",
            "step_scheduled:reserve",
            "step_completed:reserve",
            "step_scheduled:note",
            "step_completed:note",
            "step_scheduled:refund",
            "step_completed:refund",
            "pivot_passed:refund",
            "instance_completed:done",
        ]
    );
    // The version is in the story.
    let first = &h.history(&id).await[0];
    assert_eq!(first.event.data["version"], 1);
    assert_eq!(first.event.data["workflow"], "t.saga");
}

#[tokio::test]
async fn keys_are_stable_per_step_and_differ_between_steps() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    let keys: Vec<String> = h.script.calls().into_iter().map(|c| c.key).collect();
    assert_eq!(keys.len(), 3);
    assert!(keys[0] != keys[1] && keys[1] != keys[2]);
    assert_eq!(
        keys[2],
        aftersales_core::engine::keys::idempotency_key(
            &id,
            "refund",
            aftersales_core::engine::keys::Direction::Forward,
            1
        )
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_instance_and_a_different_body_conflicts() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    let a = h.start_with("t.saga", saga_input(), Some("req-1")).await;
    let b = h.start_with("t.saga", saga_input(), Some("req-1")).await;
    assert_eq!(a, b);
    let err = h
        .engine
        .start(StartRequest {
            workflow: "t.saga".into(),
            version: None,
            business_line: "test".into(),
            input: json!({"order_id": "o-2", "amount": money(1)}),
            params: json!({}),
            idempotency_key: Some("req-1".into()),
            search_key: None,
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Store(StoreError::KeyConflict { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("req-1"));
    h.run().await;
    // One instance, one refund.
    assert_eq!(
        h.script
            .calls()
            .iter()
            .filter(|c| c.action == "pay.refund")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_start_answers_with_the_record_it_stored_and_a_repeat_with_none() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    let req = || StartRequest {
        workflow: "t.saga".into(),
        version: None,
        business_line: "test".into(),
        input: saga_input(),
        params: json!({}),
        idempotency_key: Some("req-rec".into()),
        search_key: Some("o-1".into()),
        search_seen: None,
        meta: json!({"kind": "test"}),
        id: None,
    };
    let first = h.engine.start(req()).await.unwrap();
    assert!(first.created);
    let stored = h.engine.get(&first.id).await.unwrap().unwrap();
    // Nothing has run yet: what the start answered is what the store holds.
    assert_eq!(first.record.as_ref(), Some(&stored));
    let again = h.engine.start(req()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.id, first.id);
    assert_eq!(again.record, None);
}

#[tokio::test]
async fn bad_input_is_refused_with_every_problem_named_and_nothing_stored() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    let err = h
        .engine
        .start(StartRequest {
            workflow: "t.saga".into(),
            version: None,
            business_line: "test".into(),
            input: json!({"amount": {"minor": 10.5, "currency": "CNY"}, "colour": "red"}),
            params: json!({}),
            idempotency_key: Some("bad".into()),
            search_key: None,
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("input.order_id: required string is missing"),
        "{text}"
    );
    assert!(text.contains("input.amount"), "{text}");
    assert!(text.contains("input.colour: unknown field"), "{text}");
    assert!(h.engine.store().find_by_key("bad").await.unwrap().is_none());

    let err = h
        .engine
        .start(StartRequest {
            workflow: "t.nope".into(),
            version: None,
            business_line: "test".into(),
            input: json!({}),
            params: json!({}),
            idempotency_key: None,
            search_key: None,
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "workflow `t.nope` is not deployed");
}

#[tokio::test]
async fn a_transient_failure_stores_the_next_attempt_and_nothing_runs_before_it_is_due() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    h.script.push("stock.reserve", transient());
    h.script.push("stock.reserve", transient());
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    // First attempt failed; the retry is 1 s away, in the store.
    assert_eq!(h.script.calls().len(), 1);
    let rec = h.get(&id).await;
    assert_eq!(rec.due_at, Some(T0 + SEC));
    assert_eq!(rec.state["fibers"]["0"]["run"]["attempt"], 2);
    h.advance(999).await;
    assert_eq!(h.script.calls().len(), 1, "nothing before the due time");
    h.advance(1).await;
    assert_eq!(h.script.calls().len(), 2);
    // Exponential: the third attempt is 2 s after the second.
    h.advance(2 * SEC).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    let calls = h.script.calls();
    let reserve: Vec<_> = calls
        .iter()
        .filter(|c| c.action == "stock.reserve")
        .collect();
    assert_eq!(reserve.len(), 3);
    assert!(
        reserve.iter().all(|c| c.key == reserve[0].key),
        "every attempt carries the same key"
    );
    let story = h.story(&id).await;
    assert_eq!(
        story
            .iter()
            .filter(|s| *s == "retry_scheduled:reserve")
            .count(),
        2
    );
}

#[tokio::test]
async fn an_unknown_outcome_is_retried_with_the_same_key() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    h.script.push("pay.refund", unknown());
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    h.advance(SEC).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    let refunds: Vec<_> = h
        .script
        .calls()
        .into_iter()
        .filter(|c| c.action == "pay.refund")
        .collect();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0].key, refunds[1].key);
    let hist = h.history(&id).await;
    let retry = hist
        .iter()
        .find(|e| e.event.kind == "retry_scheduled")
        .unwrap();
    assert_eq!(retry.event.data["class"], "unknown_outcome");
}

#[tokio::test]
async fn a_permanent_failure_compensates_completed_steps_in_reverse_order() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    h.script.push("pay.refund", permanent("card closed"));
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
    assert_eq!(
        h.script.actions_of(&id),
        [
            "stock.reserve",
            "note.send",
            "pay.refund",
            "note.unsend",
            "stock.release"
        ]
    );
    let calls = h.script.calls();
    // The compensation reads the step's output, and has its own key.
    assert!(
        calls[4].input["reservation"]
            .as_str()
            .unwrap()
            .starts_with("res-")
    );
    assert_ne!(calls[4].key, calls[0].key);
    assert!(h.reason(&id).await.contains("card closed"));
    let story = h.story(&id).await;
    assert!(story.contains(&"compensation_started".to_owned()));
    assert!(story.contains(&"compensation_completed:note".to_owned()));
    assert!(story.contains(&"instance_failed".to_owned()));
    assert!(!h.get(&id).await.needs_attention);
}

#[tokio::test]
async fn a_compensation_that_cannot_succeed_leaves_the_instance_failed_and_flagged() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    h.script.push("pay.refund", permanent("card closed"));
    h.script
        .push("note.unsend", permanent("message already read"));
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    let rec = h.get(&id).await;
    assert_eq!(rec.status, InstanceStatus::Failed);
    assert!(rec.needs_attention);
    assert!(
        h.reason(&id)
            .await
            .contains("compensation of `note` could not succeed")
    );
    let story = h.story(&id).await;
    assert!(story.contains(&"compensation_failed:note".to_owned()));
    // It stopped there: the reservation was not released blindly.
    assert!(
        !h.script
            .actions_of(&id)
            .contains(&"stock.release".to_owned())
    );
}

#[tokio::test]
async fn a_compensation_is_retried_durably() {
    let h = Harness::new();
    h.deploy(&[SAGA]).await;
    h.script.push("pay.refund", permanent("card closed"));
    h.script.push("stock.release", transient());
    h.script.push("stock.release", transient());
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Running);
    h.advance(HOUR).await;
    h.advance(HOUR).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
    let releases: Vec<_> = h
        .script
        .calls()
        .into_iter()
        .filter(|c| c.action == "stock.release")
        .collect();
    assert_eq!(releases.len(), 3);
    assert!(releases.iter().all(|c| c.key == releases[0].key));
}

#[tokio::test]
async fn an_attempt_that_outlives_its_timeout_is_retried() {
    let h = Harness::new();
    let wf = SAGA.replace("timeout = \"10s\"", "timeout = \"50ms\"");
    h.deploy(&[&wf]).await;
    h.script.push("stock.reserve", Reply::Hang);
    let id = h.start("t.saga", saga_input()).await;
    h.run().await;
    let hist = h.history(&id).await;
    let retry = hist
        .iter()
        .find(|e| e.event.kind == "retry_scheduled")
        .unwrap();
    assert_eq!(retry.event.data["class"], "timeout");
    h.advance(SEC).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
}

const DEADLINE: &str = r#"
[workflow]
name = "t.deadline"
version = 1

[input]
order_id = "string"

[[step]]
id = "check"
action = "stock.check"
input = { order_id = "${input.order_id}" }
retry = { max_attempts = 100, initial = "1m", multiplier = 1, jitter = "none" }
deadline = "5m"
on_failure = "late"

[[step]]
id = "ok"
end = "completed"

[[step]]
id = "late"
end = "closed"
reason = "gave up: ${steps.check.error}"
"#;

#[tokio::test]
async fn a_step_deadline_ends_the_retries_and_takes_on_failure() {
    let h = Harness::new();
    h.deploy(&[DEADLINE]).await;
    for _ in 0..10 {
        h.script.push("stock.check", transient());
    }
    let id = h.start("t.deadline", json!({"order_id": "o"})).await;
    h.run().await;
    for _ in 0..10 {
        h.advance(MIN).await;
    }
    assert_eq!(h.status(&id).await, InstanceStatus::Closed);
    let n = h.script.actions_of(&id).len();
    assert!(
        (5..=6).contains(&n),
        "{n} attempts within a 5 minute deadline"
    );
    assert!(h.reason(&id).await.contains("gave up"));
}

const REVIEW: &str = r#"
[workflow]
name = "t.review"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "review"
wait = { signal = "merchant.decision", timeout = "7d", on_timeout = "auto", payload = { approved = "bool", reason = { type = "string", required = false } } }
next = [
    { if = "steps.review.approved", goto = "refund" },
    { goto = "rejected" },
]

[[step]]
id = "auto"
action = "note.send"
input = { text = "auto-approved" }
next = "refund"

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }

[[step]]
id = "done"
end = "completed"

[[step]]
id = "rejected"
end = "rejected"
reason = "${steps.review.reason}"
"#;

#[tokio::test]
async fn a_wait_parks_the_instance_and_a_signal_resumes_it() {
    let h = Harness::new();
    h.deploy(&[REVIEW]).await;
    let id = h.start("t.review", saga_input()).await;
    h.run().await;
    let rec = h.get(&id).await;
    assert_eq!(rec.status, InstanceStatus::Running);
    assert_eq!(
        rec.due_at,
        Some(T0 + 7 * DAY),
        "parked until the timeout, nothing else"
    );
    let st: ExecState = serde_json::from_value(rec.state.clone()).unwrap();
    let waiting = st.waiting_on();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (waiting[0].kind, waiting[0].what.as_deref()),
        ("signal", Some("merchant.decision"))
    );
    assert_eq!(waiting[0].until, Some(T0 + 7 * DAY));
    // A payload that does not fit the wait's declaration is refused before it is stored, so
    // the same dedupe id is still free for the right one.
    let err = h
        .engine
        .signal(&id, "merchant.decision", "m-1", json!({"approved": "yes"}))
        .await
        .unwrap_err();
    match err {
        EngineError::InvalidSignalPayload { step, errors, .. } => {
            assert_eq!(step, "review");
            assert_eq!(errors[0].path, "payload.approved");
        }
        other => panic!("expected InvalidSignalPayload, got {other:?}"),
    }
    let d = h
        .engine
        .signal(
            &id,
            "merchant.decision",
            "m-1",
            json!({"approved": false, "reason": "worn"}),
        )
        .await
        .unwrap();
    assert_eq!(d, Delivered::Accepted(vec![id.clone()]));
    // The same dedupe id again changes nothing.
    let d = h
        .engine
        .signal(&id, "merchant.decision", "m-1", json!({"approved": true}))
        .await
        .unwrap();
    assert_eq!(d, Delivered::Duplicate);
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Rejected);
    assert_eq!(h.reason(&id).await, "worn");
    assert!(h.script.calls().is_empty());
    // A signal to a finished instance says so.
    let d = h
        .engine
        .signal(&id, "merchant.decision", "m-2", json!({}))
        .await
        .unwrap();
    assert_eq!(d, Delivered::Finished(InstanceStatus::Rejected));
    // Both were recorded and ignored.
    let story = h.story(&id).await;
    assert_eq!(
        story.iter().filter(|s| *s == "signal_ignored").count(),
        2,
        "{story:?}"
    );
    let last = h.history(&id).await.pop().unwrap();
    assert_eq!(last.event.data["why"], "the instance has ended");
}

#[tokio::test]
async fn a_timed_out_wait_takes_its_on_timeout_path_after_seven_days() {
    let h = Harness::new();
    h.deploy(&[REVIEW]).await;
    let id = h.start("t.review", saga_input()).await;
    h.run().await;
    h.advance(7 * DAY - 1).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Running);
    h.advance(1).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    assert_eq!(h.script.actions_of(&id), ["note.send", "pay.refund"]);
    assert!(
        h.story(&id)
            .await
            .contains(&"wait_timed_out:review".to_owned())
    );
}

#[tokio::test]
async fn a_signal_sent_before_its_wait_is_buffered_and_consumed_when_the_wait_is_reached() {
    let h = Harness::new();
    let wf = r#"
[workflow]
name = "t.early"
version = 1

[[step]]
id = "first"
action = "note.send"
input = { text = "hello" }
retry = { max_attempts = 3, initial = "1s" }

[[step]]
id = "decide"
wait = { signal = "go", timeout = "1d", on_timeout = "done", payload = { n = "int" } }

[[step]]
id = "done"
end = "completed"
output = { n = "${steps.decide.n}" }
"#;
    h.deploy(&[wf]).await;
    h.script.push("note.send", transient());
    let id = h.start("t.early", json!({})).await;
    h.run().await;
    // Still retrying `first`; the signal comes early.
    let d = h
        .engine
        .signal(&id, "go", "g-1", json!({"n": 7}))
        .await
        .unwrap();
    assert_eq!(d, Delivered::Accepted(vec![id.clone()]));
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Running);
    h.advance(10 * SEC).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    assert_eq!(h.output(&id).await["n"], 7);
}

const RETURN: &str = r#"
[workflow]
name = "t.return"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "arrive"
wait = { event = "warehouse.return.received", correlate = "${input.order_id}", timeout = "14d", on_timeout = "lost", payload = { passed = "bool" } }
next = [
    { if = "steps.arrive.passed", goto = "refund" },
    { goto = "failed_inspection" },
]

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }

[[step]]
id = "done"
end = "completed"

[[step]]
id = "failed_inspection"
end = "rejected"
reason = "inspection failed"

[[step]]
id = "lost"
end = "closed"
reason = "the parcel never came back"
"#;

#[tokio::test]
async fn an_event_finds_its_instance_by_correlation_and_duplicates_are_ignored() {
    let h = Harness::new();
    h.deploy(&[RETURN]).await;
    let a = h
        .start("t.return", json!({"order_id": "o-A", "amount": money(100)}))
        .await;
    let b = h
        .start("t.return", json!({"order_id": "o-B", "amount": money(200)}))
        .await;
    h.run().await;
    let d = h
        .engine
        .event(
            "warehouse.return.received",
            "o-B",
            "wms-evt-1",
            json!({"passed": true}),
        )
        .await
        .unwrap();
    assert_eq!(d, Delivered::Accepted(vec![b.clone()]));
    let d = h
        .engine
        .event(
            "warehouse.return.received",
            "o-B",
            "wms-evt-1",
            json!({"passed": true}),
        )
        .await
        .unwrap();
    assert_eq!(d, Delivered::Duplicate);
    h.run().await;
    assert_eq!(h.status(&b).await, InstanceStatus::Completed);
    assert_eq!(h.status(&a).await, InstanceStatus::Running);
    assert_eq!(h.script.calls().len(), 1);
    let story = h.story(&b).await;
    assert!(story.contains(&"event_received:arrive".to_owned()));
}

#[tokio::test]
async fn an_event_that_comes_before_its_wait_is_kept_until_the_wait_registers() {
    let h = Harness::new();
    h.deploy(&[RETURN]).await;
    let d = h
        .engine
        .event(
            "warehouse.return.received",
            "o-early",
            "wms-evt-9",
            json!({"passed": false}),
        )
        .await
        .unwrap();
    assert_eq!(d, Delivered::Buffered);
    let id = h
        .start(
            "t.return",
            json!({"order_id": "o-early", "amount": money(100)}),
        )
        .await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Rejected);
}

#[tokio::test]
async fn cancel_mid_saga_compensates_in_reverse_order() {
    let h = Harness::new();
    let wf = r#"
[workflow]
name = "t.cancel"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "reserve"
action = "stock.reserve"
input = { order_id = "${input.order_id}" }
compensate = { action = "stock.release", input = { reservation = "${steps.reserve.reservation}" } }

[[step]]
id = "note"
action = "note.send"
input = { text = "reserved" }
compensate = { action = "note.unsend", input = { text = "undo" } }

[[step]]
id = "review"
wait = { signal = "merchant.decision", timeout = "3d", on_timeout = "refund" }

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }
pivot = true

[[step]]
id = "done"
end = "completed"
"#;
    h.deploy(&[wf]).await;
    let id = h.start("t.cancel", saga_input()).await;
    h.run().await;
    let d = h
        .engine
        .cancel(&id, "buyer changed their mind")
        .await
        .unwrap();
    assert_eq!(d, Delivered::Accepted(vec![id.clone()]));
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Cancelled);
    assert_eq!(
        h.script.actions_of(&id),
        ["stock.reserve", "note.send", "note.unsend", "stock.release"]
    );
    assert!(h.reason(&id).await.contains("buyer changed their mind"));

    // Past the pivot, a cancel is refused and recorded.
    let id2 = h
        .start("t.cancel", json!({"order_id": "o-2", "amount": money(5)}))
        .await;
    h.run().await;
    h.engine
        .signal(&id2, "merchant.decision", "ok", json!({}))
        .await
        .unwrap();
    h.run().await;
    assert_eq!(h.status(&id2).await, InstanceStatus::Completed);
    let d = h.engine.cancel(&id2, "too late").await.unwrap();
    assert_eq!(d, Delivered::Finished(InstanceStatus::Completed));
}

#[tokio::test]
async fn a_cancel_after_the_point_of_no_return_is_refused() {
    let h = Harness::new();
    let wf = r#"
[workflow]
name = "t.pivot"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }
pivot = true

[[step]]
id = "cool_off"
sleep = "1h"

[[step]]
id = "done"
end = "completed"
"#;
    h.deploy(&[wf]).await;
    let id = h.start("t.pivot", saga_input()).await;
    h.run().await;
    h.engine.cancel(&id, "please").await.unwrap();
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Running);
    assert!(h.story(&id).await.contains(&"cancel_refused".to_owned()));
    h.advance(HOUR).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
}

#[tokio::test]
async fn a_sleep_is_a_durable_timer() {
    let h = Harness::new();
    let wf = r#"
[workflow]
name = "t.sleep"
version = 1

[input]
at = "timestamp"

[[step]]
id = "nap"
sleep = "48h"

[[step]]
id = "until"
sleep = { until = "${input.at}" }

[[step]]
id = "done"
end = "completed"
"#;
    h.deploy(&[wf]).await;
    let id = h
        .start("t.sleep", json!({"at": "2026-12-01T00:00:00Z"}))
        .await;
    h.run().await;
    assert_eq!(h.get(&id).await.due_at, Some(T0 + 48 * HOUR));
    h.advance(48 * HOUR).await;
    let rec = h.get(&id).await;
    assert_eq!(rec.status, InstanceStatus::Running);
    assert_eq!(rec.due_at, Some(T0 + 6 * DAY));
    h.advance(4 * DAY).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    assert_eq!(
        h.story(&id)
            .await
            .iter()
            .filter(|s| s.starts_with("timer_fired"))
            .count(),
        2
    );
}

#[tokio::test]
async fn a_choice_and_a_bounded_loop() {
    let h = Harness::new();
    let wf = r#"
[workflow]
name = "t.loop"
version = 1

[input]
refund_id = "string"

[[step]]
id = "check"
action = "pay.refund_status"
input = { refund_id = "${input.refund_id}" }
max_visits = 3
next = [
    { if = "steps.check.status == 'succeeded'", goto = "done" },
    { goto = "later" },
]

[[step]]
id = "later"
sleep = "10m"
next = "check"

[[step]]
id = "done"
end = "completed"
"#;
    h.deploy(&[wf]).await;
    h.script.push(
        "pay.refund_status",
        Reply::R(CallResult::Done(json!({"status": "pending"}))),
    );
    h.script.push(
        "pay.refund_status",
        Reply::R(CallResult::Done(json!({"status": "pending"}))),
    );
    h.script.push(
        "pay.refund_status",
        Reply::R(CallResult::Done(json!({"status": "pending"}))),
    );
    let id = h.start("t.loop", json!({"refund_id": "rf"})).await;
    h.run().await;
    h.advance(10 * MIN).await;
    h.advance(10 * MIN).await;
    h.advance(10 * MIN).await;
    // Third visit was the last allowed; the fourth is refused.
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
    assert!(
        h.reason(&id).await.contains("max_visits"),
        "{}",
        h.reason(&id).await
    );
    let keys: Vec<String> = h.script.calls().into_iter().map(|c| c.key).collect();
    assert_eq!(keys.len(), 3);
    assert!(
        keys[0] != keys[1] && keys[1] != keys[2],
        "each visit has its own key"
    );
}

const PARALLEL: &str = r#"
[workflow]
name = "t.parallel"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "both"
parallel = { join = "all" }

[[step.branch]]
id = "goods"

[[step.branch.step]]
id = "reserve"
action = "stock.reserve"
input = { order_id = "${input.order_id}" }
compensate = { action = "stock.release", input = { reservation = "${steps.reserve.reservation}" } }

[[step.branch]]
id = "message"

[[step.branch.step]]
id = "note"
action = "note.send"
input = { text = "hi" }
compensate = { action = "note.unsend", input = { text = "undo" } }

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }

[[step]]
id = "done"
end = "completed"
output = { reservation = "${steps.reserve.reservation}" }
"#;

#[tokio::test]
async fn parallel_branches_run_side_by_side_and_join() {
    let h = Harness::new();
    h.deploy(&[PARALLEL]).await;
    let id = h.start("t.parallel", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    let mut first_two = h.script.actions_of(&id)[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, ["note.send", "stock.reserve"]);
    assert!(
        h.output(&id).await["reservation"]
            .as_str()
            .unwrap()
            .starts_with("res-")
    );
    assert!(h.story(&id).await.contains(&"joined:both".to_owned()));
}

#[tokio::test]
async fn a_failed_branch_fails_the_join_and_the_other_branch_is_compensated() {
    let h = Harness::new();
    h.deploy(&[PARALLEL]).await;
    h.script.push("note.send", permanent("blocked"));
    let id = h.start("t.parallel", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
    let actions = h.script.actions_of(&id);
    assert!(actions.contains(&"stock.release".to_owned()), "{actions:?}");
    assert!(!actions.contains(&"pay.refund".to_owned()));
}

const CHILD: &str = r#"
[workflow]
name = "t.child"
version = 1

[input]
order_id = "string"

[[step]]
id = "reserve"
action = "stock.reserve"
input = { order_id = "${input.order_id}" }

[[step]]
id = "done"
end = "completed"
output = { reservation = "${steps.reserve.reservation}" }
"#;

const PARENT: &str = r#"
[workflow]
name = "t.parent"
version = 1

[input]
order_id = "string"

[[step]]
id = "sub"
call = { workflow = "t.child", version = 1 }
input = { order_id = "${input.order_id}" }
next = [
    { if = "steps.sub.status == 'completed'", goto = "done" },
    { goto = "other" },
]

[[step]]
id = "done"
end = "completed"
output = { reservation = "${steps.sub.reservation}" }

[[step]]
id = "other"
end = "closed"
"#;

#[tokio::test]
async fn a_call_step_runs_a_child_workflow_and_reads_its_output() {
    let h = Harness::new();
    h.deploy(&[CHILD, PARENT]).await;
    let id = h.start("t.parent", json!({"order_id": "o-9"})).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    assert!(
        h.output(&id).await["reservation"]
            .as_str()
            .unwrap()
            .starts_with("res-")
    );
    let calls = h.script.calls();
    assert_eq!(calls.len(), 1);
    let child = h.get(&calls[0].instance_id).await;
    assert_eq!(child.parent_id.as_deref(), Some(id.as_str()));
    assert_eq!(child.workflow, "t.child");
}

#[tokio::test]
async fn a_failed_child_fails_the_call_step() {
    let h = Harness::new();
    h.deploy(&[CHILD, PARENT]).await;
    h.script.push("stock.reserve", permanent("no stock"));
    let id = h.start("t.parent", json!({"order_id": "o-9"})).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
    assert!(
        h.reason(&id).await.contains("no stock"),
        "{}",
        h.reason(&id).await
    );
}

#[tokio::test]
async fn cancelling_a_parent_cancels_its_child() {
    let h = Harness::new();
    let child = r#"
[workflow]
name = "t.slowchild"
version = 1

[[step]]
id = "reserve"
action = "stock.reserve"
input = { order_id = "x" }
compensate = { action = "stock.release", input = { reservation = "${steps.reserve.reservation}" } }

[[step]]
id = "wait"
wait = { signal = "never", timeout = "30d", on_timeout = "done" }

[[step]]
id = "done"
end = "completed"
"#;
    let parent = r#"
[workflow]
name = "t.slowparent"
version = 1

[[step]]
id = "sub"
call = "t.slowchild"

[[step]]
id = "done"
end = "completed"
"#;
    h.deploy(&[child, parent]).await;
    let id = h.start("t.slowparent", json!({})).await;
    h.run().await;
    let child_id = h.script.calls()[0].instance_id.clone();
    h.engine.cancel(&id, "stop").await.unwrap();
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Cancelled);
    assert_eq!(h.status(&child_id).await, InstanceStatus::Cancelled);
    assert_eq!(
        h.script.actions_of(&child_id),
        ["stock.reserve", "stock.release"]
    );
}

#[tokio::test]
async fn instances_stay_on_the_version_they_started_on() {
    let h = Harness::new();
    h.deploy(&[REVIEW]).await;
    let old = h.start("t.review", saga_input()).await;
    h.run().await;
    // v2 drops the auto-approval and notifies first.
    let v2 = REVIEW
        .replace("version = 1", "version = 2")
        .replace("on_timeout = \"auto\"", "on_timeout = \"rejected\"");
    h.deploy(&[&v2]).await;
    let new = h.start("t.review", saga_input()).await;
    assert_eq!(h.get(&new).await.version, 2);
    assert_eq!(h.get(&old).await.version, 1);
    h.run().await;
    h.advance(7 * DAY).await;
    // v1 auto-approves and refunds; v2 rejects.
    assert_eq!(h.status(&old).await, InstanceStatus::Completed);
    assert_eq!(h.status(&new).await, InstanceStatus::Rejected);
    // Redeploying v1 with other content is refused: running instances depend on it.
    let changed = REVIEW.replace("7d", "8d");
    let err = h
        .engine
        .deploy(&[("x.toml".into(), changed)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deploy a new version"), "{err}");
}

const PENDING: &str = r#"
[workflow]
name = "t.pending"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }
deadline = "3d"

[[step]]
id = "done"
end = "completed"
output = { refund_id = "${steps.refund.refund_id}", status = "${steps.refund.status}" }
"#;

fn pending_reply(poll: bool) -> Reply {
    Reply::R(CallResult::Pending {
        correlation: "rf-77".into(),
        output: json!({"refund_id": "rf-77", "status": "pending"}),
        poll: poll.then(|| {
            (
                "pay.refund_status".to_owned(),
                json!({"refund_id": "rf-77"}),
            )
        }),
        events: vec![
            "payment.refund.succeeded".into(),
            "payment.refund.failed".into(),
        ],
    })
}

#[tokio::test]
async fn a_pending_action_completes_on_its_event() {
    let h = Harness::new();
    h.deploy(&[PENDING]).await;
    h.script.push("pay.refund", pending_reply(false));
    let id = h.start("t.pending", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Running);
    let d = h
        .engine
        .event(
            "payment.refund.succeeded",
            "rf-77",
            "evt_1",
            json!({"refund_id": "rf-77"}),
        )
        .await
        .unwrap();
    assert_eq!(d, Delivered::Accepted(vec![id.clone()]));
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    assert_eq!(
        h.output(&id).await,
        json!({"refund_id": "rf-77", "status": "succeeded"})
    );
    assert_eq!(h.script.calls().len(), 1, "no second refund");
}

#[tokio::test]
async fn a_pending_action_is_resolved_by_polling_when_no_event_comes() {
    let h = Harness::new();
    h.deploy(&[PENDING]).await;
    h.script.push("pay.refund", pending_reply(true));
    h.script.push(
        "pay.refund_status",
        Reply::R(CallResult::Done(json!({"status": "processing"}))),
    );
    let id = h.start("t.pending", saga_input()).await;
    h.run().await;
    h.advance(30 * SEC).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Running);
    h.advance(HOUR).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    let actions = h.script.actions_of(&id);
    assert_eq!(
        actions,
        ["pay.refund", "pay.refund_status", "pay.refund_status"]
    );
}

#[tokio::test]
async fn a_pending_action_that_fails_fails_its_step() {
    let h = Harness::new();
    h.deploy(&[PENDING]).await;
    h.script.push("pay.refund", pending_reply(false));
    let id = h.start("t.pending", saga_input()).await;
    h.run().await;
    h.engine
        .event(
            "payment.refund.failed",
            "rf-77",
            "evt_2",
            json!({"reason": "insufficient balance"}),
        )
        .await
        .unwrap();
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
}

#[tokio::test]
async fn the_worker_loop_picks_up_work_without_polling_and_stops_gracefully() {
    let h = Harness::new();
    h.deploy(&[REVIEW]).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut cfg = h.cfg.clone();
    cfg.idle_poll_ms = 24 * HOUR; // only notifications and due times wake it
    let worker = tokio::spawn(h.engine.clone().run(cfg, stop_rx));
    let id = h.start("t.review", saga_input()).await;
    for _ in 0..200 {
        if h.get(&id).await.due_at == Some(T0 + 7 * DAY) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    h.engine
        .signal(&id, "merchant.decision", "s", json!({"approved": true}))
        .await
        .unwrap();
    for _ in 0..400 {
        if h.status(&id).await.is_final() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    // A timer wakes it too: the manual clock moving past a due time.
    let id2 = h.start("t.review", saga_input()).await;
    for _ in 0..200 {
        if h.get(&id2).await.due_at == Some(T0 + 7 * DAY) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    h.clock.advance(7 * DAY);
    for _ in 0..400 {
        if h.status(&id2).await.is_final() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(h.status(&id2).await, InstanceStatus::Completed);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), worker)
        .await
        .unwrap()
        .unwrap();
}

/// Several commit transactions in flight at once (`WorkerConfig::commit_writers`), with small
/// batches so that many overlap: every saga makes each of its calls once and ends, and every
/// parent hears from its child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_commit_writers_lose_and_repeat_nothing() {
    let h = Harness::new();
    h.deploy(&[SAGA, CHILD, PARENT]).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut cfg = h.cfg.clone();
    cfg.concurrency = 64;
    cfg.commit_batch = 4;
    cfg.commit_writers = Some(4);
    let worker = tokio::spawn(h.engine.clone().run(cfg, stop_rx));
    let mut sagas = Vec::new();
    let mut parents = Vec::new();
    for i in 0..120 {
        let order = json!({"order_id": format!("o-{i}"), "amount": money(100 + i)});
        sagas.push(h.start("t.saga", order).await);
        if i % 3 == 0 {
            parents.push(
                h.start("t.parent", json!({"order_id": format!("p-{i}")}))
                    .await,
            );
        }
    }
    for id in sagas.iter().chain(&parents) {
        for _ in 0..2_000 {
            if h.status(id).await.is_final() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap();
    for id in &sagas {
        assert_eq!(h.status(id).await, InstanceStatus::Completed, "{id}");
        assert_eq!(
            h.script.actions_of(id),
            ["stock.reserve", "note.send", "pay.refund"],
            "{id}"
        );
    }
    for id in &parents {
        assert_eq!(h.status(id).await, InstanceStatus::Completed, "{id}");
        assert!(
            h.output(id).await["reservation"]
                .as_str()
                .unwrap()
                .starts_with("res-")
        );
    }
}

fn parallel_with(join: &str) -> String {
    PARALLEL
        .replace(
            "name = \"t.parallel\"",
            &format!("name = \"t.parallel_{join}\""),
        )
        .replace(
            "parallel = { join = \"all\" }",
            &format!("parallel = {{ join = \"{join}\" }}"),
        )
}

#[tokio::test]
async fn an_any_join_continues_when_one_branch_completes_and_cancels_the_other() {
    let h = Harness::new();
    h.deploy(&[&parallel_with("any")]).await;
    // The note fails (no retry policy: for good); the reservation completes: `any` holds.
    h.script.push("note.send", transient());
    let id = h.start("t.parallel_any", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    let story = h.story(&id).await;
    assert!(story.contains(&"joined:both".to_owned()), "{story:?}");
    let joined = h
        .history(&id)
        .await
        .into_iter()
        .find(|e| e.event.kind == "joined")
        .unwrap();
    assert_eq!(joined.event.data, json!({"join": "any", "ok": true}));
}

#[tokio::test]
async fn an_any_join_fails_only_when_every_branch_failed() {
    let h = Harness::new();
    h.deploy(&[&parallel_with("any")]).await;
    h.script.push("note.send", permanent("blocked"));
    h.script.push("stock.reserve", permanent("no stock"));
    let id = h.start("t.parallel_any", saga_input()).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
    assert!(
        h.reason(&id).await.contains("any join"),
        "{}",
        h.reason(&id).await
    );
}

#[tokio::test]
async fn a_first_failure_join_fails_at_once_and_compensates_what_completed() {
    let h = Harness::new();
    let wf = parallel_with("first_failure").replace(
        "[[step.branch.step]]\nid = \"note\"",
        "[[step.branch.step]]\nid = \"wait_first\"\nsleep = \"1h\"\n\n[[step.branch.step]]\nid = \"note\"",
    );
    h.deploy(&[&wf]).await;
    h.script.push(
        "stock.reserve",
        Reply::R(CallResult::Done(json!({"reservation": "res-1"}))),
    );
    let id = h.start("t.parallel_first_failure", saga_input()).await;
    h.run().await;
    // The goods branch completed; the message branch sleeps. Now make the sleeping branch
    // fail when it wakes.
    h.script.push("note.send", permanent("blocked"));
    h.advance(HOUR).await;
    assert_eq!(h.status(&id).await, InstanceStatus::Failed);
    assert_eq!(
        h.script.actions_of(&id),
        ["stock.reserve", "note.send", "stock.release"]
    );
}

#[tokio::test]
async fn durations_can_come_from_business_line_parameters() {
    let h = Harness::new();
    let wf = r#"
[workflow]
name = "t.params"
version = 1

[params]
merchant_response = { type = "duration", default = "48h" }

[[step]]
id = "review"
wait = { signal = "merchant.decision", timeout = "${params.merchant_response}", on_timeout = "auto" }

[[step]]
id = "manual"
end = "completed"
reason = "answered"

[[step]]
id = "auto"
end = "closed"
reason = "auto-approved after ${params.merchant_response}"
"#;
    h.deploy(&[wf]).await;
    let started = h
        .engine
        .start(StartRequest {
            workflow: "t.params".into(),
            version: None,
            business_line: "fast".into(),
            input: json!({}),
            params: json!({"merchant_response": "2h"}),
            idempotency_key: None,
            search_key: None,
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap();
    let default = h.start("t.params", json!({})).await;
    h.run().await;
    assert_eq!(h.get(&started.id).await.due_at, Some(T0 + 2 * HOUR));
    assert_eq!(h.get(&default).await.due_at, Some(T0 + 48 * HOUR));
    h.advance(2 * HOUR).await;
    assert_eq!(h.status(&started.id).await, InstanceStatus::Closed);
    assert_eq!(h.reason(&started.id).await, "auto-approved after 2h");
    assert_eq!(h.status(&default).await, InstanceStatus::Running);
}

#[tokio::test]
async fn an_end_step_can_end_failed_with_a_reason_and_output() {
    let h = Harness::new();
    let wf = r#"
[workflow]
name = "t.endfailed"
version = 1

[input]
amount = "money"

[[step]]
id = "route"
next = [
    { if = "input.amount.minor > 0", goto = "ok" },
    { goto = "zero" },
]

[[step]]
id = "ok"
end = "completed"
output = { paid = "${input.amount}" }

[[step]]
id = "zero"
end = "failed"
reason = "a zero refund needs a person to look at it"
"#;
    h.deploy(&[wf]).await;
    let a = h.start("t.endfailed", json!({"amount": money(0)})).await;
    let b = h.start("t.endfailed", json!({"amount": money(250)})).await;
    h.run().await;
    assert_eq!(h.status(&a).await, InstanceStatus::Failed);
    assert_eq!(
        h.reason(&a).await,
        "a zero refund needs a person to look at it"
    );
    assert!(
        h.get(&a).await.needs_attention,
        "an end failed is flagged for a person"
    );
    assert_eq!(h.status(&b).await, InstanceStatus::Completed);
    assert_eq!(h.output(&b).await, json!({"paid": money(250)}));
    assert!(!h.get(&b).await.needs_attention);
}

#[tokio::test]
async fn a_call_without_a_version_pins_the_newest_child_at_the_time_of_the_call() {
    let h = Harness::new();
    let parent = PARENT.replace(
        "call = { workflow = \"t.child\", version = 1 }",
        "call = \"t.child\"",
    );
    let child_v2 = CHILD.replace("version = 1", "version = 2");
    h.deploy(&[CHILD, &child_v2, &parent]).await;
    let id = h.start("t.parent", json!({"order_id": "o"})).await;
    h.run().await;
    assert_eq!(h.status(&id).await, InstanceStatus::Completed);
    let child = h.get(&h.script.calls()[0].instance_id).await;
    assert_eq!(child.version, 2);
}

/// A call may take longer than a claim's lease: before dispatching, the worker holds the
/// instance for the call's timeout (in the commit that records the call), so no other
/// worker can claim it and call again while the first call is still out.
#[tokio::test]
async fn a_call_longer_than_the_lease_keeps_other_workers_out() {
    use aftersales_core::engine::{ActionCall, Dispatcher, Engine, ManualClock, WorkerConfig};
    use aftersales_core::store::Store;
    use aftersales_core::store::memory::MemoryStore;
    use std::sync::{Arc, Mutex};

    const SLOW: &str = r#"
[workflow]
name = "t.slow"
version = 1

[input]
order_id = "string"

[[step]]
id = "reserve"
action = "stock.reserve"
input = { order_id = "${input.order_id}" }
timeout = "10m"

[[step]]
id = "done"
end = "completed"
"#;
    /// On each call, a second worker tries to claim at points inside the call's timeout.
    struct Thief {
        store: Arc<dyn Store>,
        clock: ManualClock,
        stolen: Mutex<Vec<(i64, usize)>>,
    }
    #[async_trait::async_trait]
    impl Dispatcher for Thief {
        async fn dispatch(&self, _: ActionCall) -> CallResult {
            let now = aftersales_core::engine::Clock::now_ms(&self.clock);
            for later in [16_000, 60_000, 9 * 60_000] {
                let got = self
                    .store
                    .claim_due("thief", now + later, 15_000, 10)
                    .await
                    .unwrap();
                self.stolen.lock().unwrap().push((later, got.len()));
            }
            CallResult::Done(json!({"reservation": "r-1"}))
        }
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(T0);
    let thief = Arc::new(Thief {
        store: store.clone(),
        clock: clock.clone(),
        stolen: Mutex::default(),
    });
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::new(clock.clone()),
        thief.clone(),
        catalogue(),
    ));
    engine
        .deploy(&[("slow.toml".to_owned(), SLOW.to_owned())])
        .await
        .unwrap();
    let started = engine
        .start(StartRequest {
            workflow: "t.slow".into(),
            version: None,
            business_line: "test".into(),
            input: json!({"order_id": "o-1"}),
            params: json!({}),
            idempotency_key: None,
            search_key: None,
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap();
    let cfg = WorkerConfig {
        lease_ms: 15_000,
        ..WorkerConfig::default()
    };
    engine.run_until_idle(&cfg).await.unwrap();
    assert_eq!(
        *thief.stolen.lock().unwrap(),
        [(16_000, 0), (60_000, 0), (9 * 60_000, 0)],
        "nobody else may claim the instance while its 10-minute call is out"
    );
    let rec = engine.get(&started.id).await.unwrap().unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed);
}

/// Named locks through the engine's lock committer: concurrent takers share store writes,
/// and still exactly one of them gets the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lock_takers_through_the_engine_have_one_winner() {
    let h = Harness::new();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let engine = h.engine.clone();
            tokio::spawn(async move {
                let holder = format!("holder-{i}");
                let got = engine.try_lock("order/o-1", &holder, 30_000).await.unwrap();
                (holder, got)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (holder, got) = t.await.unwrap();
        if got {
            winners.push(holder);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(
        !h.engine
            .try_lock("order/o-1", "late", 30_000)
            .await
            .unwrap()
    );
    h.engine.unlock("order/o-1", &winners[0]).await.unwrap();
    assert!(
        h.engine
            .try_lock("order/o-1", "late", 30_000)
            .await
            .unwrap()
    );
}
