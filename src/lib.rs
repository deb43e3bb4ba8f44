//! otpgate: a RADIUS server that adds a second factor by SMS.
//!
//! # Layout
//! - `config`: the TOML file, parsed and checked at start-up.
//! - `radius`: bytes on the wire: listener, clients, guard, dedup, packet codec, reply.
//! - `auth`: the decision (`Engine::decide`), HOTP, PIN hashing, keys, lockout.
//! - `store`: users, tokens, challenges, audit (SQLite by default).
//! - `sms`: gateways, chains, message templates and SMS encodings.
//! - `breaker`: circuit breakers of peers that fail (SMS gateways, directory servers).
//! - `directory`: users from LDAP / Active Directory: DN, phones, groups, password binds.
//! - `limits`: number checks: which countries and number types SMS may go to.
//! - `events`: `[[event]]` rules that turn what happened into notifications.
//! - `ops`: metrics (a leaf every layer feeds), the health endpoint, systemd notify, reload.
//! - `cli`: the `otpgate` commands; `main.rs` only dispatches to it.
//! - `files`: the modes of the database and key file (owner only).
//! - `phone`: E.164 numbers (libphonenumber), masking, and the formats gateways want.
//! - `template`: `{tag}` templates of prompts, SMS texts and gateway requests, parsed at load.
//! - `time`: the wall clock in Unix milliseconds, shared by `auth` and `events`.
//! - `logging`: the tracing subscriber, and `printable` for request values in logs and tables.

pub mod auth;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod directory;
pub mod events;
pub mod files;
pub mod limits;
pub mod logging;
pub mod ops;
pub mod phone;
pub mod radius;
pub mod sms;
pub mod store;
pub mod template;
pub mod time;
