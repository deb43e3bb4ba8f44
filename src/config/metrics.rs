//! `[metrics]`: where the HTTP endpoint of `/metrics`, `/livez` and `/readyz` listens.
//! Absent, there is no endpoint. Shape only; `ops::http` serves it.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[metrics]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// TCP address of the endpoint, `"127.0.0.1:9812"`. It answers anyone who can connect,
    /// so keep it on loopback or a management network.
    pub listen: SocketAddr,
}
