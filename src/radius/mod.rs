//! RADIUS on the wire: receiving, client lookup, sanity and Message-Authenticator checks,
//! duplicate detection, request decoding and reply encoding (DESIGN sections 1 and 3).
//! `radius` never sees a token, a PIN hash or a gateway: it hands `auth::Request`s to the
//! engine and turns `auth::Decision`s into packets. Requests come over UDP (`listener`) or
//! RadSec, RADIUS over TLS (`tls`), and take the same path from the guard on.

pub mod clients;
pub mod dedup;
pub mod dialect;
pub mod dictionary;
pub mod drop_warnings;
pub mod framing;
pub mod fuzzing;
pub mod guard;
pub mod listener;
pub mod packet;
pub mod reply;
pub mod request;
pub mod socket;
pub mod stats;
pub mod tls;
pub mod tls_clients;
pub mod tls_config;
pub mod tls_stats;

pub use guard::DropReason;
