//! Policy with no HTTP in it: handlers parse, call a service and map the result (issue 9).

pub mod fleet;
pub mod github;
pub mod release;
