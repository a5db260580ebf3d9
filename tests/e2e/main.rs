//! End-to-end tests: a real switch and real providers on 127.0.0.1, driven
//! over HTTP the way a calling app drives them. Nothing inside the switch is
//! mocked; the only stand-ins are upstreams a test needs to misbehave.

mod admin;
mod billing;
mod cli;
mod conversations;
mod core_api;
mod crash;
mod data_at_rest;
mod disk_full;
mod enquiries;
mod flood;
mod flows;
mod host_start;
mod joompay;
mod limits;
mod openapi;
mod otp_destinations;
mod postgres;
mod rejections;
mod resilience;
mod rig;
mod sdk_finance;
mod secrets;
mod signatures;
mod skopa;
mod tls;
mod toolchain;
