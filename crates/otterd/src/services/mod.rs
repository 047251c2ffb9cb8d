//! Policy with no HTTP in it: handlers parse, call a service and map its result (issue 9).

pub mod release;
