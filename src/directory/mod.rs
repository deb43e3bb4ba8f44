//! Users from LDAP / Active Directory (DESIGN section 10): a layer beside `store` and `sms`.
//! The engine asks it for a user (DN, phones in `phone_attributes` order, the `[group.NAME]`s
//! its directory groups map to, disabled or not) and to check a password by binding as the
//! user. It knows nothing of tokens, PINs or RADIUS.
//!
//! The user name is hostile: it reaches the directory only inside `user_filter`, escaped as
//! RFC 4515 says (ldap3's `ldap_escape`: `*`, `(`, `)`, `\` and NUL become `\2a` and so on).
//! DNs are never built from it: a bind uses the DN the search returned, so no RFC 4514
//! escaping is needed (and none is done by hand). An empty password never reaches a bind.

mod ldap;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ldap3::Scope;

use crate::breaker::BreakerView;
use crate::config::DirectoryConfig;
use crate::config::directory::{USER_TAG, normalise_dn};
use ldap::{Found, Servers};

/// A user as the directory has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    /// The values of `phone_attributes`, in that order of attributes.
    pub phones: Vec<String>,
    /// The `[group.NAME]`s whose `directory_group` the user is a member of, in config order.
    pub groups: Vec<String>,
    /// The user matches `disabled_filter`.
    pub disabled: bool,
}

/// What a lookup of one name found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Arc<DirectoryUser>),
    /// No entry matches the name.
    Unknown,
    /// Several entries match: the name does not name one user, nobody logs in with it.
    Several,
    /// The server answered with a referral, which otpgate does not follow.
    Referral,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    /// No server answered (or all are in back-off); never a reason to accept.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

/// The configured directory: its servers and the lookup cache.
pub struct Directory {
    config: DirectoryConfig,
    servers: Servers,
    /// Lookups by name, for `cache`; None when `cache` is zero.
    cache: Option<Mutex<lru::LruCache<String, (Instant, Lookup)>>>,
    /// A DN under `base_dn` that no entry has: the bind a request makes when it has no DN to
    /// bind as, so that an unknown user costs the binds a wrong password does.
    decoy_dn: String,
}

/// The longest user name looked up; longer ones are unknown without asking.
const MAX_NAME: usize = 256;

impl Directory {
    pub fn new(config: &DirectoryConfig) -> Result<Directory, String> {
        let servers = Servers::new(config)?;
        let cache = NonZeroUsize::new(config.cache_entries)
            .filter(|_| !config.cache.is_zero())
            .map(|size| Mutex::new(lru::LruCache::new(size)));
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| format!("no random bytes: {e}"))?;
        if config.allow_insecure
            && config.urls.iter().any(|u| u.scheme() == "ldap")
            && !config.starttls
        {
            tracing::warn!("directory: allow_insecure: passwords go to the directory in clear");
        }
        Ok(Directory {
            decoy_dn: format!(
                "cn=otpgate-decoy-{},{}",
                hex::encode(random),
                config.base_dn
            ),
            config: config.clone(),
            servers,
            cache,
        })
    }

    /// Whether a directory user without a token gets one at their first login.
    pub fn auto_enroll(&self) -> bool {
        self.config.auto_enroll
    }

    /// The breaker of each URL that has failed, for the CLI and logs.
    pub fn breakers(&self) -> Vec<BreakerView> {
        self.servers.breakers().snapshot()
    }

    /// The form of a name under which its user's tokens are kept: directory names match
    /// without regard to case or surrounding blanks (`uid`, `sAMAccountName`), so "Alice "
    /// and "alice" must count failures on the same token.
    pub fn canonical_name(name: &str) -> String {
        name.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    }

    /// Looks a user up by their (canonical) name, from the cache when it is fresh.
    pub async fn lookup(&self, name: &str) -> Result<Lookup, DirectoryError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Ok(Lookup::Unknown);
        }
        if let Some(cached) = self.cached(name) {
            return Ok(cached);
        }
        let lookup = self.search_user(name).await?;
        if let Some(cache) = &self.cache {
            lock(cache).put(name.to_string(), (Instant::now(), lookup.clone()));
        }
        Ok(lookup)
    }

    /// Binds as `dn` with `password`, or, without a DN, as the decoy (which fails). Ok(true)
    /// only when the directory took the password. A password that is empty or not UTF-8 is
    /// refused without reaching the directory as it is: the decoy bind runs instead, so the
    /// time is the same.
    pub async fn check_password(
        &self,
        dn: Option<&str>,
        password: &[u8],
    ) -> Result<bool, DirectoryError> {
        match (dn, std::str::from_utf8(password)) {
            (Some(dn), Ok(text)) if !text.is_empty() => self.servers.bind(dn, text).await,
            _ => self
                .servers
                .bind(&self.decoy_dn, "otpgate-decoy-password")
                .await
                .map(|_| false),
        }
    }

    fn cached(&self, name: &str) -> Option<Lookup> {
        let cache = self.cache.as_ref()?;
        let mut cache = lock(cache);
        match cache.get(name) {
            Some((at, lookup)) if at.elapsed() < self.config.cache => Some(lookup.clone()),
            Some(_) => {
                cache.pop(name);
                None
            }
            None => None,
        }
    }

    async fn search_user(&self, name: &str) -> Result<Lookup, DirectoryError> {
        let filter = self
            .config
            .user_filter
            .replace(USER_TAG, &ldap3::ldap_escape(name));
        let mut attributes = self.config.phone_attributes.clone();
        attributes.push(self.config.group_attribute.clone());
        let found = self
            .servers
            .search(&self.config.base_dn, Scope::Subtree, &filter, &attributes)
            .await?;
        let entry = match found {
            Found::One(entry) => entry,
            other => {
                // The search a found user's disabled_filter costs, against a base that does
                // not exist: a name that finds nobody costs the same round trips.
                if let Some(filter) = &self.config.disabled_filter {
                    self.servers
                        .search(&self.decoy_dn, Scope::Base, filter, &["1.1".to_string()])
                        .await?;
                }
                let user = crate::logging::printable(name);
                return Ok(match other {
                    Found::Several => {
                        tracing::warn!(user = %user, "directory: several entries match the user name; rejected");
                        Lookup::Several
                    }
                    Found::Referral => {
                        tracing::warn!(user = %user, "directory: no entry here, only a referral, which is not followed; rejected");
                        Lookup::Referral
                    }
                    _ => Lookup::Unknown,
                });
            }
        };
        let disabled = match &self.config.disabled_filter {
            Some(filter) => !matches!(
                self.servers
                    .search(&entry.dn, Scope::Base, filter, &["1.1".to_string()])
                    .await?,
                Found::Nothing
            ),
            None => false,
        };
        let values = |attribute: &str| -> Vec<String> {
            entry
                .attrs
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(attribute))
                .flat_map(|(_, values)| values.iter().cloned())
                .collect()
        };
        let phones = self
            .config
            .phone_attributes
            .iter()
            .flat_map(|attribute| values(attribute))
            .collect();
        let member_of: Vec<String> = values(&self.config.group_attribute)
            .iter()
            .map(|dn| normalise_dn(dn))
            .collect();
        let groups = self
            .config
            .groups
            .iter()
            .filter(|(dn, _)| member_of.contains(dn))
            .map(|(_, name)| name.clone())
            .collect();
        Ok(Lookup::Found(Arc::new(DirectoryUser {
            dn: entry.dn,
            phones,
            groups,
            disabled,
        })))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // One get or put at a time: a poisoned cache is still a cache.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_a_directory_matches_alike_share_one_canonical_form() {
        assert_eq!(Directory::canonical_name(" Alice "), "alice");
        assert_eq!(Directory::canonical_name("Jane  Doe"), "jane doe");
    }

    #[test]
    fn filter_metacharacters_of_a_name_are_escaped() {
        let filter = "(uid={user})".replace(USER_TAG, &ldap3::ldap_escape("*)(uid=*"));
        assert_eq!(filter, "(uid=\\2a\\29\\28uid=\\2a)");
        let nul = "(uid={user})".replace(USER_TAG, &ldap3::ldap_escape("a\0b\\"));
        assert_eq!(nul, "(uid=a\\00b\\5c)");
    }
}
