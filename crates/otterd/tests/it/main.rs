//! Integration tests of otterd: each test starts a real server on 127.0.0.1:0 with its own
//! temporary data directory and talks HTTP to it.

mod backends;
mod harness;

mod access;
mod arduino;
mod audit;
mod checkin_read;
mod checkin_speed;
mod config_file;
mod connections;
mod crash;
mod dashboard_data;
mod device;
mod edge;
mod fleet;
mod github;
mod hygiene;
mod instances;
mod limits;
mod openapi;
mod payloads;
mod people;
mod preview;
mod process;
mod promote;
mod rollout_fleet;
mod rollouts;
mod s3;
mod store;
mod upload;
