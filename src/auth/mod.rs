//! The authentication engine and what it works with: protocol-agnostic requests in,
//! decisions out (DESIGN section 4). `auth` never sees a RADIUS packet.

mod answer;
pub mod challenge;
mod directory_factor;
pub mod engine;
pub mod enroll;
pub mod keys;
pub mod otp;
pub mod pin;
pub mod pin_check;
pub mod pin_pool;
mod reason_class;
pub mod stats;
mod trigger;

use std::fmt;
use std::time::Duration;

use crate::config::{ClientMode, FirstFactor};
pub use challenge::TransactionId;
pub use engine::Engine;
pub use reason_class::reason_class;

/// What the engine needs to know of an Access-Request.
#[derive(Clone)]
pub struct Request {
    /// The configured client's name.
    pub client: String,
    pub mode: ClientMode,
    /// What the password of a request without State is checked against.
    pub first_factor: FirstFactor,
    pub user_name: String,
    /// User-Password as typed; None if the request had none.
    pub password: Option<Vec<u8>>,
    /// The State attribute, if any.
    pub state: Option<Vec<u8>>,
    pub nas_ip: Option<String>,
    pub nas_identifier: Option<String>,
    pub calling_station_id: Option<String>,
    /// Every request attribute by dictionary name, secrets redacted, for the audit trail.
    pub attributes: Vec<String>,
}

/// Requests hold a password: `Debug` leaves it out.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("client", &self.client)
            .field("user_name", &self.user_name)
            .field("has_password", &self.password.is_some())
            .field("has_state", &self.state.is_some())
            .finish()
    }
}

/// The answer to a request, as the NAS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(Grants),
    Challenge {
        state: TransactionId,
        /// Reply-Message.
        prompt: String,
        /// How long the challenge stays valid (Session-Timeout).
        timeout: Duration,
    },
    Reject {
        /// Reply-Message, if any.
        message: Option<String>,
    },
}

impl Decision {
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Accept(_) => "accept",
            Decision::Challenge { .. } => "challenge",
            Decision::Reject { .. } => "reject",
        }
    }
}

/// What an Access-Accept carries besides the accept itself. Attributes stay text here
/// (`Name=value`); the RADIUS layer encodes them with its dictionary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The user's group, whose `[group.NAME]` attributes apply.
    pub group: Option<String>,
    /// The user's own attributes.
    pub attributes: Vec<String>,
    /// The token that authenticated.
    pub serial: Option<String>,
}

/// A decision and why it was taken (for the log line and the audit row).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: String,
    pub serial: Option<String>,
    pub phone_masked: Option<String>,
    pub gateway: Option<String>,
}
