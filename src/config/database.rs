//! What `[server] database` names: a SQLite file or a PostgreSQL URL, and the URL as logs
//! may show it. Here, below the store, so that the config can check it without the store.

/// The libpq URL with its password masked, for logs and errors.
pub fn masked_url(url: &str) -> String {
    let mut out = url.to_string();
    // postgres://user:password@host...: the user info ends at the last '@' before the path.
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let (start, end) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
            out.replace_range(start..end, "****");
        }
    }
    // ...?password=secret&...
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let masked: Vec<String> = tail
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=****".to_string(),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

/// Whether `database` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}
