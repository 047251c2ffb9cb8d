//! Storage backends the tests can run on besides the defaults.

pub mod s3;
