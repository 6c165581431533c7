//! Workflow model and engine state machine. Knows no SQL, no HTTP, no platform names.
