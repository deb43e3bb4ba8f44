//! Connections to the directory servers with ldap3: two bounded pools (one bound as the
//! service account for searches, one whose connections only ever carry user binds), failover
//! over `urls` in order with a breaker per URL, StartTLS or LDAPS verified against `ca_file`
//! with rustls, and `timeout` on every connect, handshake and operation.
//!
//! A connection that failed an operation is dropped, never pooled again; a dead server is
//! found by its breaker, so later requests do not wait on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use tokio::sync::Semaphore;

use super::DirectoryError;
use crate::breaker::Breakers;
use crate::config::DirectoryConfig;

/// LDAP result codes (RFC 4511 appendix A.1) the checks tell apart.
const SUCCESS: u32 = 0;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const REFERRAL: u32 = 10;
const NO_SUCH_OBJECT: u32 = 32;
const INVALID_CREDENTIALS: u32 = 49;

/// What one search found, before it is read as a user.
pub(super) enum Found {
    /// No entry (or, for a base search, the base is gone).
    Nothing,
    One(SearchEntry),
    /// More than one entry matched: the name does not name one user.
    Several,
    /// The server sent a referral instead of (or besides) the entry.
    Referral,
}

/// The servers of `urls`, their breakers, and the two pools.
pub(super) struct Servers {
    urls: Vec<String>,
    settings: LdapConnSettings,
    timeout: Duration,
    breakers: Breakers,
    searches: Pool,
    binds: Pool,
    service: Option<(String, crate::config::Secret)>,
}

/// Idle connections, and a permit per connection that may exist: the pool never holds more
/// than `pool_size` connections, and a request waits at most `timeout` for one.
struct Pool {
    /// Each with the URL it is connected to.
    idle: Mutex<Vec<(Ldap, String)>>,
    permits: Arc<Semaphore>,
}

impl Servers {
    pub(super) fn new(config: &DirectoryConfig) -> Result<Servers, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.starttls);
        if let Some(file) = &config.ca_file {
            settings = settings.set_config(Arc::new(tls_config(file)?));
        }
        let pool = || Pool {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(config.pool_size)),
        };
        Ok(Servers {
            urls: config.urls.iter().map(|u| u.as_str().to_string()).collect(),
            settings,
            timeout: config.timeout,
            breakers: Breakers::of("directory server", config.breaker_backoff),
            searches: pool(),
            binds: pool(),
            service: config.service.clone(),
        })
    }

    pub(super) fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Searches `base` with `filter` for the `attributes`, on a service connection; at most
    /// two entries are read (two already mean "several").
    pub(super) async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: &[String],
    ) -> Result<Found, DirectoryError> {
        self.with_connection(&self.searches, true, |mut ldap| {
            let (base, filter, attributes) =
                (base.to_string(), filter.to_string(), attributes.to_vec());
            let timeout = self.timeout;
            async move {
                let found = search_on(&mut ldap, timeout, &base, scope, &filter, &attributes).await;
                (ldap, found)
            }
        })
        .await
    }

    /// A simple bind as `dn` on a bind connection: Ok(true) if the server took the password.
    /// The caller keeps empty passwords away (RFC 4513 section 5.1.2: an unauthenticated bind
    /// "succeeds").
    pub(super) async fn bind(&self, dn: &str, password: &str) -> Result<bool, DirectoryError> {
        if password.is_empty() {
            return Ok(false);
        }
        self.with_connection(&self.binds, false, |mut ldap| {
            let (dn, password) = (dn.to_string(), zeroize::Zeroizing::new(password.to_string()));
            let timeout = self.timeout;
            async move {
                let result = ldap.with_timeout(timeout).simple_bind(&dn, &password).await;
                let checked = match result {
                    Ok(done) if done.rc == SUCCESS => Ok(true),
                    Ok(done) if done.rc == INVALID_CREDENTIALS => Ok(false),
                    // A password policy refusal (locked by the directory, expired) is a
                    // refused password too, logged with its code.
                    Ok(done) => {
                        tracing::info!(rc = done.rc, text = %crate::logging::printable(&done.text), "directory refused a bind");
                        Ok(false)
                    }
                    Err(e) => Err(e),
                };
                (ldap, checked)
            }
        })
        .await
    }

    /// Runs `operation` on a pooled connection, or a new one; a connection whose operation
    /// failed is dropped and the operation tried once more on a fresh connection (an idle
    /// connection may have been closed by a server that restarted).
    async fn with_connection<F, Fut, T>(
        &self,
        pool: &Pool,
        as_service: bool,
        operation: F,
    ) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: std::future::Future<Output = (Ldap, Result<T, LdapError>)>,
    {
        let _permit = tokio::time::timeout(self.timeout, pool.permits.clone().acquire_owned())
            .await
            .map_err(|_| DirectoryError::Unavailable("every directory connection is busy".into()))?
            .map_err(|_| DirectoryError::Unavailable("the directory pool is closed".into()))?;
        let mut pooled = pool.take();
        loop {
            let (ldap, url, reused) = match pooled.take() {
                Some((ldap, url)) => (ldap, url, true),
                None => {
                    let (ldap, url) = self.connect(as_service).await?;
                    (ldap, url, false)
                }
            };
            match operation(ldap).await {
                (ldap, Ok(value)) => {
                    pool.put(ldap, url);
                    return Ok(value);
                }
                (_, Err(e)) => {
                    let error = describe(e);
                    tracing::warn!(url = %url, error = %error, "directory operation failed; connection dropped");
                    // A server that restarted closed its idle connections: only a fresh
                    // connection's failure counts against the server.
                    if !reused {
                        self.breakers.failed(&url, &error);
                        return Err(DirectoryError::Unavailable(format!("{url}: {error}")));
                    }
                }
            }
        }
    }

    /// A new connection to the first URL whose breaker allows it, bound as the service
    /// account for the search pool.
    async fn connect(&self, as_service: bool) -> Result<(Ldap, String), DirectoryError> {
        let mut errors = Vec::new();
        for url in &self.urls {
            if !self.breakers.allows(url) {
                errors.push(format!("{url}: skipped (breaker open)"));
                continue;
            }
            match tokio::time::timeout(self.timeout, self.open(url, as_service)).await {
                Ok(Ok(ldap)) => {
                    self.breakers.succeeded(url);
                    return Ok((ldap, url.clone()));
                }
                Ok(Err(e)) => {
                    self.breakers.failed(url, &e);
                    errors.push(format!("{url}: {e}"));
                }
                Err(_) => {
                    let e = format!("no answer within {:?}", self.timeout);
                    self.breakers.failed(url, &e);
                    errors.push(format!("{url}: {e}"));
                }
            }
        }
        Err(DirectoryError::Unavailable(errors.join("; ")))
    }

    async fn open(&self, url: &str, as_service: bool) -> Result<Ldap, String> {
        let (connection, mut ldap) = LdapConnAsync::with_settings(self.settings.clone(), url)
            .await
            .map_err(describe)?;
        tokio::spawn(async move {
            if let Err(e) = connection.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        if as_service && let Some((dn, password)) = &self.service {
            let bound = ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, password.expose())
                .await
                .map_err(describe)?;
            if bound.rc != SUCCESS {
                return Err(format!(
                    "the service account {} cannot bind (result {}: {})",
                    crate::logging::printable(dn),
                    bound.rc,
                    crate::logging::printable(&bound.text)
                ));
            }
        }
        Ok(ldap)
    }
}

impl Pool {
    fn take(&self) -> Option<(Ldap, String)> {
        self.lock().pop()
    }

    fn put(&self, ldap: Ldap, url: String) {
        self.lock().push((ldap, url));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Ldap, String)>> {
        // A push or a pop: a poisoned list is still a list.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One search, reading at most two entries.
async fn search_on(
    ldap: &mut Ldap,
    timeout: Duration,
    base: &str,
    scope: Scope,
    filter: &str,
    attributes: &[String],
) -> Result<Found, LdapError> {
    let mut stream = ldap
        .with_search_options(SearchOptions::new().sizelimit(2))
        .with_timeout(timeout)
        .streaming_search(base, scope, filter, attributes.to_vec())
        .await?;
    let mut entries = Vec::new();
    let mut referral = false;
    while let Some(entry) = stream.next().await? {
        if entry.is_ref() {
            referral = true;
        } else if !entry.is_intermediate() {
            entries.push(entry);
        }
        if entries.len() > 2 {
            // The server ignored the size limit: the connection is not trusted again.
            return Err(LdapError::from(ldap3::LdapResult {
                rc: SIZE_LIMIT_EXCEEDED,
                matched: String::new(),
                text: "more entries than the size limit".into(),
                refs: Vec::new(),
                ctrls: Vec::new(),
            }));
        }
    }
    let done = stream.finish().await;
    match done.rc {
        SUCCESS | SIZE_LIMIT_EXCEEDED | NO_SUCH_OBJECT | REFERRAL => {}
        _ => return Err(LdapError::from(done)),
    }
    // The base itself is elsewhere: nothing here answers for the name.
    if done.rc == REFERRAL {
        return Ok(Found::Referral);
    }
    if done.rc == NO_SUCH_OBJECT {
        return Ok(Found::Nothing);
    }
    let mut entries = entries.into_iter();
    Ok(match (entries.next(), entries.next()) {
        // Continuation references name parts of the tree held elsewhere (AD's DNS and
        // configuration partitions under a domain root): with the entry found here they
        // change nothing; without it the name may be there, which otpgate does not follow.
        (None, _) if referral => Found::Referral,
        (None, _) => Found::Nothing,
        (Some(_), Some(_)) => Found::Several,
        (Some(entry), None) => {
            // ldap3 panics on an entry that is not one: a hostile server must not take the
            // process down.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                SearchEntry::construct(entry)
            })) {
                Ok(entry) => Found::One(entry),
                Err(_) => {
                    return Err(LdapError::from(ldap3::LdapResult {
                        rc: 2,
                        matched: String::new(),
                        text: "a malformed search entry".into(),
                        refs: Vec::new(),
                        ctrls: Vec::new(),
                    }));
                }
            }
        }
    })
}

/// The rustls client config whose roots are the CA certificates of `file`.
fn tls_config(file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let located = |e: &dyn std::fmt::Display| format!("directory.ca_file: {}: {e}", file.display());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(file).map_err(|e| located(&e))? {
        let certificate = certificate.map_err(|e| located(&e))?;
        roots.add(certificate).map_err(|e| located(&e))?;
    }
    if roots.is_empty() {
        return Err(located(&"holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| located(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An ldap3 error as one line; a refused certificate says so plainly.
fn describe(e: LdapError) -> String {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        format!("TLS: the server's certificate is not trusted ({text}); check directory.ca_file")
    } else {
        text
    }
}
