//! Policy with no HTTP in it: handlers parse, call a service and map its answer (issue 9).
//!
//! - [`assignment`]: what a device is offered at check-in.
//! - [`dashboard`]: what the dashboard pages show (issue 11).
//! - [`fleet`]: tags, groups and filtered device lists.
//! - [`github`]: following a GitHub repository's releases (issue 13).
//! - [`people`]: people who sign in to the dashboard, and their sessions (issue 11).
//! - [`membership`]: whether a device is in a rollout's target.
//! - [`preview`]: how many devices each stage of a proposed rollout reaches (issue 11).
//! - [`release`]: publishing a release (stage, verify, publish, insert).
//! - [`rollouts`]: staged rollouts, their deployments and thresholds.

pub mod assignment;
pub mod dashboard;
pub mod fleet;
pub mod github;
pub mod last_seen;
pub mod membership;
pub mod offer_cache;
pub mod payloads;
pub mod people;
pub mod preview;
pub mod release;
pub mod rollouts;
