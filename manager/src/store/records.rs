//! Records kept as JSON in the store (traces are kept proto-encoded instead).

use serde::{Deserialize, Serialize};

/// A registered cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterRecord {
    pub name: String,
    /// Lower-case hex serial of the only certificate that may speak for this cluster.
    pub certificate_serial: String,
    /// Seconds since the epoch when that certificate expires.
    pub certificate_not_after: i64,
    pub registered_micros: i64,
    /// Last heartbeat seen, persisted on connect and disconnect (the live value is in memory).
    #[serde(default)]
    pub last_heartbeat_micros: i64,
}

/// What a token authenticates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Single-use, expiring: registers the cluster named `subject`.
    Bootstrap,
    /// A user's bearer token: authenticates `subject` with that user's role.
    User,
}

/// A token, stored under the SHA-256 of its secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub kind: TokenKind,
    /// Cluster name (bootstrap) or user name (bearer).
    pub subject: String,
    pub created_micros: i64,
    /// 0 = never.
    pub expires_micros: i64,
    /// 0 = not used yet (bootstrap tokens only).
    #[serde(default)]
    pub used_micros: i64,
}

/// A user and their role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// "view", "edit" or "admin".
    pub role: String,
    pub created_micros: i64,
    /// Lower-case hex serial of the only client certificate that may speak for this user;
    /// empty: none (a certificate then is refused). Re-issuing replaces it, deleting the user
    /// drops it: either revokes the old certificate.
    #[serde(default)]
    pub certificate_serial: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    pub micros: i64,
    /// Who did it: user name, "cluster:<name>", "local" (command line) or "anonymous".
    pub actor: String,
    /// What happened, e.g. "register", "register-refused", "token-create", "deregister".
    pub action: String,
    /// What it happened to (cluster or user name).
    pub subject: String,
    /// Human-readable outcome.
    pub detail: String,
}
