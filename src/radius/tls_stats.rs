//! RadSec counters: refused handshakes by reason, connections open and refused for
//! `max_connections`, connections closed for a bad Length field or for `idle_timeout`.
//! Cheap atomics, read for the periodic summary line like the UDP counters; refusals and
//! open connections also feed `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ops::metrics::Metrics;

/// Why a TLS connection was refused before it carried a request; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCertificate = 0,
    UnknownCa,
    Expired,
    BadCertificate,
    /// The certificate is valid but no client has its name or fingerprint.
    UnknownClient,
    AddressNotAllowed,
    /// The client requires RADIUS/1.1 and the connection did not negotiate it.
    Radius11Required,
    /// RADIUS/1.1 over a TLS version older than 1.3.
    Tls13Required,
    NoCommonAlpn,
    HandshakeTimeout,
    TlsError,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::NoCertificate,
        Refusal::UnknownCa,
        Refusal::Expired,
        Refusal::BadCertificate,
        Refusal::UnknownClient,
        Refusal::AddressNotAllowed,
        Refusal::Radius11Required,
        Refusal::Tls13Required,
        Refusal::NoCommonAlpn,
        Refusal::HandshakeTimeout,
        Refusal::TlsError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Expired => "expired",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::UnknownClient => "unknown_client",
            Refusal::AddressNotAllowed => "address_not_allowed",
            Refusal::Radius11Required => "radius_1_1_required",
            Refusal::Tls13Required => "tls_1_3_required",
            Refusal::NoCommonAlpn => "no_common_alpn",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::TlsError => "tls_error",
        }
    }
}

#[derive(Default)]
pub struct TlsStats {
    refused: [AtomicU64; Refusal::ALL.len()],
    open: AtomicU64,
    over_max_connections: AtomicU64,
    bad_length: AtomicU64,
    idle_closed: AtomicU64,
}

impl TlsStats {
    pub fn refused(&self, reason: Refusal) {
        if let Some(counter) = self.refused.get(reason as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Metrics::global()
            .radsec_refused
            .with_label_values(&[reason.label()])
            .inc();
    }
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        Metrics::global().radsec_connections.inc();
    }
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        Metrics::global().radsec_connections.dec();
    }
    pub fn over_max_connections(&self) {
        self.over_max_connections.fetch_add(1, Ordering::Relaxed);
    }
    pub fn bad_length(&self) {
        self.bad_length.fetch_add(1, Ordering::Relaxed);
    }
    pub fn idle_closed(&self) {
        self.idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// `radsec_open=3 radsec_refused/unknown_ca=1 ...`, zero counters left out (the open
    /// gauge is always shown once a connection was seen). Empty when RadSec saw nothing.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let open = self.open.load(Ordering::Relaxed);
        for (reason, counter) in Refusal::ALL.iter().zip(&self.refused) {
            let count = counter.load(Ordering::Relaxed);
            if count > 0 {
                parts.push(format!("radsec_refused/{}={count}", reason.label()));
            }
        }
        for (name, counter) in [
            ("radsec_over_max_connections", &self.over_max_connections),
            ("radsec_bad_length", &self.bad_length),
            ("radsec_idle_closed", &self.idle_closed),
        ] {
            let count = counter.load(Ordering::Relaxed);
            if count > 0 {
                parts.push(format!("{name}={count}"));
            }
        }
        if open > 0 || !parts.is_empty() {
            parts.insert(0, format!("radsec_open={open}"));
        }
        parts.join(" ")
    }
}
