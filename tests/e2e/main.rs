//! End-to-end tests: real guest components, the real embedded store, the real binary.

mod api;
mod console;
mod contract;
mod crash;
mod dashboard;
mod examples;
mod failover;
mod failure_policy;
mod foreign;
mod host_faults;
mod hostile;
mod hosts;
mod hot_deploy;
mod import;
mod languages;
mod mongo;
mod mongo_trust;
mod one_build;
mod prepare;
mod query_differential;
mod refold_test;
mod scaffold;
mod setup;
mod trace;
mod upcasting;
