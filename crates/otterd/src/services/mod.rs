//! Policy with no HTTP in it: handlers parse, call a service and map its answer.
//!
//! - [`assignment`]: what a device is offered at check-in.
//! - [`rollouts`]: staged rollouts, their deployments and thresholds.
//! - [`membership`]: whether a device is in a rollout's target.

pub mod assignment;
pub mod membership;
pub mod rollouts;
