//! RADIUS on the wire: receiving, client lookup, sanity and Message-Authenticator checks,
//! duplicate detection, request decoding and reply encoding (DESIGN sections 1 and 3).
//! `radius` never sees a token, a PIN hash or a gateway: it hands `auth::Request`s to the
//! engine and turns `auth::Decision`s into packets.

pub mod clients;
pub mod dedup;
pub mod dictionary;
pub mod drop_warnings;
pub mod fuzzing;
pub mod guard;
pub mod listener;
pub mod packet;
pub mod reply;
pub mod request;
pub mod socket;
pub mod stats;

pub use guard::DropReason;
