//! Policy with no HTTP in it: handlers parse, call a service and map the result.

pub mod fleet;
