//! One module per command group; each function does one command and prints through
//! [`crate::output::Output`].

pub mod audit;
pub mod dev;
pub mod device;
pub mod github;
pub mod group;
pub mod image_signing;
pub mod inspect;
pub mod keys;
pub mod payload;
pub mod product;
pub mod release;
pub mod rollout;
pub mod signing;
pub mod token;
pub mod user;
