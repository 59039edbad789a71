//! Background work that runs on every node: the escalation engine (timers) and, with the
//! channel work, the outbox dispatcher.

pub mod dispatch;
pub mod escalation;
pub mod throttle;
