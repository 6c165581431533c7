//! The durable engine: the pure state machine ([`machine`]), the persisted execution state
//! ([`state`]), idempotency keys ([`keys`]), input preparation ([`prepare`]), the clock
//! ([`clock`]) and the worker loop ([`worker`]) that claims instances from a
//! [`crate::store::Store`], advances them, commits, and dispatches their calls.

pub mod clock;
pub mod keys;
pub mod machine;
pub mod prepare;
pub mod state;
pub mod worker;

pub use clock::{Clock, DatabaseClock, ManualClock, SystemClock};
pub use machine::{CallResult, FailureClass};
pub use worker::{
    ActionCall, Dispatcher, Engine, EngineError, StartRequest, Started, WorkerConfig,
};
