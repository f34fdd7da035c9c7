//! The one valid agent certificate per Node: `AD/agent-serials/<node>` holds the serial (and
//! issue time) of the certificate the Node may use. Whoever signs an agent certificate with
//! the agent CA records it here (`traceflow-adapter agent-cert`, renewal over the agent
//! stream), so re-issuing a Node's certificate revokes the previous one.
//!
//! ```text
//!   agent-cert CLI ──record──▶ AD/agent-serials/<node>  ◀──record── RenewCertificate
//!                                     │ read on every call
//!                                     ▼
//!   agent (mTLS, CN = node) ──▶ AgentServer::authorize: serial == recorded?  else UNAUTHENTICATED
//! ```
//!
//! Files are read on every call (another process, the `agent-cert` command, may write them
//! while the adapter runs), written atomically (temporary file + rename), 0600 in a 0700
//! directory, and survive restarts.

use std::path::{Path, PathBuf};

use traceflow_pki::PeerIdentity;

use super::pki::{AgentPkiError, write_file};

/// The certificate recorded as a Node's only valid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Lower-case hex, as [`PeerIdentity::serial`].
    pub serial: String,
    /// The certificate's notBefore, seconds since the Unix epoch.
    pub not_before: i64,
}

/// Why an agent's certificate is not the one recorded for its Node.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error(
        "no certificate is recorded for Node {node:?} in this adapter's data dir; re-issue the \
         Node's certificate (traceflow-adapter agent-cert --data-dir AD --node {node} --out DIR) \
         and restart its agent with it"
    )]
    NotRecorded { node: String },
    #[error(
        "certificate of Node {node:?} (serial {serial}) is revoked or superseded by a newer one; \
         restart the agent with its latest certificate, or re-issue the Node's certificate \
         (traceflow-adapter agent-cert --data-dir AD --node {node} --out DIR)"
    )]
    Superseded { node: String, serial: String },
    #[error("Node name {0:?} cannot name a serial file: it is not a DNS-1123 subdomain")]
    BadNodeName(String),
    #[error(transparent)]
    Files(#[from] AgentPkiError),
}

/// The serial records of one adapter data directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentSerials {
    dir: PathBuf,
}

impl AgentSerials {
    /// The records kept in `data_dir/agent-serials`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("agent-serials"),
        }
    }

    fn path(&self, node: &str) -> Result<PathBuf, SerialError> {
        // Node names are DNS subdomains: never '/', never '..', never empty.
        if !traceflow_core::naming::is_dns_subdomain(node) {
            return Err(SerialError::BadNodeName(
                node.chars().take(64).collect::<String>(),
            ));
        }
        Ok(self.dir.join(node))
    }

    /// Makes `serial` (issued `not_before`) the only valid certificate of `node`.
    pub fn record(&self, node: &str, serial: &str, not_before: i64) -> Result<(), SerialError> {
        let path = self.path(node)?;
        crate::agents::pki::create_private_dir(&self.dir)?;
        write_file(&path, &format!("{serial} {not_before}\n"), true)?;
        Ok(())
    }

    /// The certificate recorded for `node`, if any. A record that does not parse counts as
    /// none (the Node then needs a new certificate).
    pub fn current(&self, node: &str) -> Result<Option<Recorded>, SerialError> {
        let path = self.path(node)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(AgentPkiError::Io { path, source }.into()),
        };
        let mut words = text.split_whitespace();
        let serial = words.next().map(str::to_string);
        let not_before = words.next().and_then(|w| w.parse().ok());
        Ok(serial
            .zip(not_before)
            .map(|(serial, not_before)| Recorded { serial, not_before }))
    }

    /// Whether the verified certificate `id` is its Node's valid one.
    ///
    /// With `adopt_newer`, a certificate issued after the recorded one (or for a Node with no
    /// record) becomes the recorded one: for deployments where agent certificates are issued
    /// elsewhere by the same CA (the Helm chart's init container); an older one is still
    /// refused. Returns whether `id` was adopted.
    pub fn check(&self, id: &PeerIdentity, adopt_newer: bool) -> Result<bool, SerialError> {
        let recorded = self.current(&id.name)?;
        match recorded {
            Some(r) if r.serial == id.serial => Ok(false),
            Some(r) if adopt_newer && id.not_before > r.not_before => {
                self.record(&id.name, &id.serial, id.not_before)?;
                Ok(true)
            }
            None if adopt_newer => {
                self.record(&id.name, &id.serial, id.not_before)?;
                Ok(true)
            }
            Some(_) => Err(SerialError::Superseded {
                node: id.name.clone(),
                serial: id.serial.clone(),
            }),
            None => Err(SerialError::NotRecorded {
                node: id.name.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use traceflow_pki::IdentityKind;

    use super::*;

    fn id(node: &str, serial: &str, not_before: i64) -> PeerIdentity {
        PeerIdentity {
            name: node.into(),
            kind: IdentityKind::Agent,
            serial: serial.into(),
            not_before,
            not_after: not_before + 100,
        }
    }

    #[test]
    fn only_the_recorded_serial_passes_and_a_record_survives_a_new_instance()
    -> Result<(), SerialError> {
        let dir = tempfile::tempdir().map_err(|source| AgentPkiError::Io {
            path: PathBuf::new(),
            source,
        })?;
        let serials = AgentSerials::new(dir.path());
        assert!(matches!(
            serials.check(&id("n1", "aa", 1), false),
            Err(SerialError::NotRecorded { .. })
        ));
        serials.record("n1", "aa", 1)?;
        assert!(!serials.check(&id("n1", "aa", 1), false)?);
        // Re-issued: the old one is refused, by another instance too (another process).
        serials.record("n1", "bb", 2)?;
        let again = AgentSerials::new(dir.path());
        let err = again
            .check(&id("n1", "aa", 1), false)
            .map_err(|e| e.to_string());
        assert!(
            err.as_ref().is_err_and(|m| m.contains("re-issue")),
            "{err:?}"
        );
        assert!(!again.check(&id("n1", "bb", 2), false)?);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0)
            };
            assert_eq!(mode(&dir.path().join("agent-serials")), 0o700);
            assert_eq!(mode(&dir.path().join("agent-serials/n1")), 0o600);
        }
        Ok(())
    }

    #[test]
    fn adopting_takes_only_newer_certificates() -> Result<(), SerialError> {
        let dir = tempfile::tempdir().map_err(|source| AgentPkiError::Io {
            path: PathBuf::new(),
            source,
        })?;
        let serials = AgentSerials::new(dir.path());
        assert!(serials.check(&id("n1", "aa", 10), true)?);
        assert!(!serials.check(&id("n1", "aa", 10), true)?);
        assert!(serials.check(&id("n1", "bb", 20), true)?);
        assert!(matches!(
            serials.check(&id("n1", "aa", 10), true),
            Err(SerialError::Superseded { .. })
        ));
        assert!(matches!(
            serials.check(&id("n1", "cc", 20), true),
            Err(SerialError::Superseded { .. })
        ));
        assert!(matches!(
            serials.check(&id("../x", "cc", 20), true),
            Err(SerialError::BadNodeName(_))
        ));
        Ok(())
    }
}
