//! `otpgate store copy`: moves everything a deployment keeps from one store to another
//! (SQLite to PostgreSQL when a single node becomes several, or back), through the `Store`
//! trait, so that both ends apply their own schema and constraints.
//!
//! What moves: users with their groups and reply attributes, tokens as they are (sealed
//! seeds, PIN hashes, counters, fail counts and locks), the challenges still open (as code
//! MACs, so a login under way may finish on the new store), and the audit trail in order.
//! What does not: breaker states (each node records its own) and the SMS send records of
//! the rolling limits (they age out within a day). Both stores must use the same key file:
//! seeds, PIN salts and code MACs are bound to it.

use super::{Store, StoreError, StoreResult};

/// Audit rows copied per transaction: bounded memory, whatever the trail's length.
const AUDIT_BATCH: usize = 5_000;

/// What a copy moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub tokens: usize,
    pub challenges: usize,
    pub audit_rows: usize,
}

/// Copies `from` into `to`, which must hold no user yet: a copy adds, it never merges
/// (two stores' counters and locks for one token cannot both be right). `now` decides which
/// challenges are still open.
pub fn copy(from: &dyn Store, to: &dyn Store, now: i64) -> StoreResult<Copied> {
    let present = to.users()?.len();
    if present > 0 {
        return Err(StoreError::Conflict(format!(
            "the destination already holds {present} user(s); store copy fills an empty store only"
        )));
    }
    let users = from.users()?;
    to.add_users(&users)?;
    for user in &users {
        let attributes = from.user_attributes(&user.name)?;
        if !attributes.is_empty() {
            to.set_user_attributes(&user.name, &attributes)?;
        }
    }
    let tokens = from.tokens(None)?;
    to.add_tokens(&tokens)?;
    let challenges = from.open_challenge_rows(now)?;
    to.add_challenges(&challenges)?;
    let mut copied = Copied {
        users: users.len(),
        tokens: tokens.len(),
        challenges: challenges.len(),
        audit_rows: 0,
    };
    let mut after = 0;
    loop {
        let page = from.audit_page(after, AUDIT_BATCH)?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let rows: Vec<_> = page.into_iter().map(|(_, row)| row).collect();
        to.add_audit_rows(&rows)?;
        copied.audit_rows += rows.len();
    }
    Ok(copied)
}
