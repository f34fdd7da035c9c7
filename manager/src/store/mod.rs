//! Durable state of the manager, behind one small interface.
//!
//! ```text
//!   api / fleet / auth ──▶ Store ──▶ sled trees: meta (CA), traces (+ uid/name indexes),
//!                                    clusters, tokens (sha256), users, audit
//! ```
//!
//! Contract: a write is durable only after [`Store::durable`] returned; every caller that
//! acknowledges something to a user or a peer calls it first. Concurrent callers are batched
//! into one `flush` (group commit). Everything the API and fleet code need goes through the
//! methods here, so the sled backend can later be replaced by a replicated engine.

mod records;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prost::Message;
use sha2::{Digest, Sha256};
use traceflow_proto::v1 as pb;

pub use records::{AuditEvent, ClusterRecord, TokenKind, TokenRecord, UserRecord};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store holds a record that cannot be decoded ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("store flush task failed: {0}")]
    Join(String),
}

impl StoreError {
    /// Why the data directory cannot take writes, when that is the cause: no space (or quota)
    /// left, a read-only file system, or no permission.
    pub fn unwritable(&self) -> Option<&'static str> {
        let StoreError::Sled(sled::Error::Io(e)) = self else {
            return None;
        };
        match (e.kind(), e.raw_os_error()) {
            (std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded, _)
            | (_, Some(28 | 122)) => Some("no space left on its device"),
            (std::io::ErrorKind::ReadOnlyFilesystem, _) | (_, Some(30)) => {
                Some("its file system is read-only")
            }
            (std::io::ErrorKind::PermissionDenied, _) => Some("permission denied"),
            _ => None,
        }
    }

    /// Whether opening failed because another process holds the store.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Io(e))
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(11)
                || e.to_string().contains("lock"))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The CA as stored: PEM certificate and key.
#[derive(Debug, Clone)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Page of traces, newest first.
#[derive(Debug, Default)]
pub struct TracePage {
    pub traces: Vec<pb::Traceflow>,
    /// Empty when there is nothing after this page.
    pub next_page_token: String,
}

/// What [`Store::update_trace`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceChange {
    /// Written; the trace as stored now.
    Changed(pb::Traceflow),
    /// The change declined (e.g. the trace had already ended); the trace as stored.
    Unchanged(pb::Traceflow),
    /// No such trace (never existed, or deleted): nothing was written.
    Missing,
}

/// Filter for [`Store::list_traces`]; empty fields match everything.
#[derive(Debug, Default, Clone)]
pub struct TraceFilter {
    pub cluster: String,
    pub phase: i32,
    pub source: String,
    pub destination: String,
    pub created_after_micros: i64,
    pub created_before_micros: i64,
}

impl TraceFilter {
    fn matches(&self, t: &pb::Traceflow) -> bool {
        if !self.cluster.is_empty() && t.cluster != self.cluster {
            return false;
        }
        if self.phase != 0 && t.status.as_ref().map(|s| s.phase).unwrap_or(0) != self.phase {
            return false;
        }
        let spec = t.spec.clone().unwrap_or_default();
        if !self.source.is_empty() {
            let src = spec.source.unwrap_or_default();
            let pod = format!("{}/{}", src.namespace, src.pod);
            if self.source != pod && self.source != src.ip && self.source != src.pod {
                return false;
            }
        }
        if !self.destination.is_empty() {
            let d = spec.destination.unwrap_or_default();
            let pod = format!("{}/{}", d.namespace, d.pod);
            let svc = format!("{}/{}", d.namespace, d.service);
            let hit = (!d.pod.is_empty() && (self.destination == pod || self.destination == d.pod))
                || (!d.service.is_empty()
                    && (self.destination == svc || self.destination == d.service))
                || (!d.ip.is_empty() && self.destination == d.ip);
            if !hit {
                return false;
            }
        }
        true
    }
}

/// The manager's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    traces: sled::Tree,
    trace_uid: sled::Tree,
    trace_name: sled::Tree,
    clusters: sled::Tree,
    tokens: sled::Tree,
    users: sled::Tree,
    audit: sled::Tree,
    inventory: sled::Tree,
    written: AtomicU64,
    flushed: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// How long a spent or expired token is kept before [`Store::purge_tokens`] deletes it.
pub const TOKEN_PURGE_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Lower-case hex SHA-256 of a secret; tokens are stored and looked up only by this.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Primary key of a trace: inverted creation time (so ascending order is newest first) + uid.
fn trace_key(creation_micros: i64, uid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + uid.len());
    key.extend_from_slice(&(u64::MAX - creation_micros.max(0) as u64).to_be_bytes());
    key.extend_from_slice(uid.as_bytes());
    key
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn tx_err(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
            what: "transaction",
            detail: "aborted".into(),
        },
    }
}

fn decode_trace(bytes: &[u8]) -> Result<pb::Traceflow> {
    pb::Traceflow::decode(bytes).map_err(|e| StoreError::Corrupt {
        what: "trace",
        detail: e.to_string(),
    })
}

impl Store {
    /// Opens (or creates) the store in `dir`. Fails with [`StoreError::is_locked`] when another
    /// process has it open.
    pub fn open(dir: &std::path::Path) -> Result<Self> {
        let db = sled::Config::new().path(dir).open()?;
        let inner = Inner {
            meta: db.open_tree("meta")?,
            traces: db.open_tree("traces")?,
            trace_uid: db.open_tree("trace_uid")?,
            trace_name: db.open_tree("trace_name")?,
            clusters: db.open_tree("clusters")?,
            tokens: db.open_tree("tokens")?,
            users: db.open_tree("users")?,
            audit: db.open_tree("audit")?,
            inventory: db.open_tree("inventory")?,
            db,
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    fn wrote(&self) {
        self.inner.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Makes every write done before this call durable. Concurrent callers share one flush.
    pub async fn durable(&self) -> Result<()> {
        let target = self.inner.written.load(Ordering::SeqCst);
        if self.inner.flushed.load(Ordering::SeqCst) >= target && target > 0 {
            return Ok(());
        }
        let _guard = self.inner.flush_lock.lock().await;
        if self.inner.flushed.load(Ordering::SeqCst) >= target && target > 0 {
            return Ok(());
        }
        // Everything written up to now is covered by this flush.
        let covered = self.inner.written.load(Ordering::SeqCst);
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Join(e.to_string()))??;
        self.inner.flushed.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// Synchronous flush, for the command-line paths that run without a runtime.
    pub fn flush_blocking(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    // ----- CA -----------------------------------------------------------------------------

    pub fn ca(&self) -> Result<Option<StoredCa>> {
        let cert = self.inner.meta.get("ca_cert")?;
        let key = self.inner.meta.get("ca_key")?;
        match (cert, key) {
            (Some(c), Some(k)) => Ok(Some(StoredCa {
                cert_pem: String::from_utf8_lossy(&c).into_owned(),
                key_pem: String::from_utf8_lossy(&k).into_owned(),
            })),
            _ => Ok(None),
        }
    }

    pub fn put_ca(&self, ca: &StoredCa) -> Result<()> {
        self.inner.meta.insert("ca_cert", ca.cert_pem.as_bytes())?;
        self.inner.meta.insert("ca_key", ca.key_pem.as_bytes())?;
        self.wrote();
        Ok(())
    }

    // ----- traces -------------------------------------------------------------------------

    /// Inserts or replaces a trace (keyed by its uid and creation time). The trace and its
    /// uid and name indexes change in one transaction.
    pub fn put_trace(&self, t: &pb::Traceflow) -> Result<()> {
        use sled::Transactional;
        let key = trace_key(t.creation_time_micros, &t.uid);
        let value = t.encode_to_vec();
        let i = &self.inner;
        (&i.traces, &i.trace_uid, &i.trace_name)
            .transaction(|(traces, uids, names)| {
                traces.insert(key.as_slice(), value.as_slice())?;
                uids.insert(t.uid.as_bytes(), key.as_slice())?;
                names.insert(t.name.as_bytes(), t.uid.as_bytes())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_err)?;
        self.wrote();
        Ok(())
    }

    /// Inserts a new trace only if no trace has its name (atomically, with its indexes);
    /// false when the name is taken.
    pub fn insert_trace(&self, t: &pb::Traceflow) -> Result<bool> {
        use sled::Transactional;
        let key = trace_key(t.creation_time_micros, &t.uid);
        let value = t.encode_to_vec();
        let i = &self.inner;
        let inserted = (&i.traces, &i.trace_uid, &i.trace_name)
            .transaction(|(traces, uids, names)| {
                if names.get(t.name.as_bytes())?.is_some() {
                    return Ok(false);
                }
                traces.insert(key.as_slice(), value.as_slice())?;
                uids.insert(t.uid.as_bytes(), key.as_slice())?;
                names.insert(t.name.as_bytes(), t.uid.as_bytes())?;
                Ok::<bool, sled::transaction::ConflictableTransactionError<()>>(true)
            })
            .map_err(tx_err)?;
        if inserted {
            self.wrote();
        }
        Ok(inserted)
    }

    /// Compare-and-swap on a stored trace: `change` sees the current trace and returns whether
    /// it changed it; the change is written only if nothing else wrote the trace meanwhile
    /// (otherwise `change` runs again on the newer one). A deleted trace is never written back.
    pub fn update_trace(
        &self,
        uid: &str,
        change: impl Fn(&mut pb::Traceflow) -> bool,
    ) -> Result<TraceChange> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError as Tx;
        let i = &self.inner;
        let result = (&i.traces, &i.trace_uid).transaction(|(traces, uids)| {
            let Some(key) = uids.get(uid.as_bytes())? else {
                return Ok(TraceChange::Missing);
            };
            let Some(bytes) = traces.get(&key)? else {
                return Ok(TraceChange::Missing);
            };
            let mut t = pb::Traceflow::decode(&*bytes).map_err(|e| Tx::Abort(e.to_string()))?;
            if !change(&mut t) {
                return Ok(TraceChange::Unchanged(t));
            }
            traces.insert(&key, t.encode_to_vec())?;
            Ok::<TraceChange, Tx<String>>(TraceChange::Changed(t))
        });
        let change = match result {
            Ok(c) => c,
            Err(sled::transaction::TransactionError::Storage(e)) => return Err(e.into()),
            Err(sled::transaction::TransactionError::Abort(detail)) => {
                return Err(StoreError::Corrupt {
                    what: "trace",
                    detail,
                });
            }
        };
        if matches!(change, TraceChange::Changed(_)) {
            self.wrote();
        }
        Ok(change)
    }

    pub fn get_trace(&self, uid: &str) -> Result<Option<pb::Traceflow>> {
        let Some(key) = self.inner.trace_uid.get(uid.as_bytes())? else {
            return Ok(None);
        };
        match self.inner.traces.get(key)? {
            Some(bytes) => decode_trace(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn trace_uid_by_name(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .inner
            .trace_name
            .get(name.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Deletes a trace and its indexes in one transaction; false when it did not exist.
    pub fn delete_trace(&self, uid: &str) -> Result<bool> {
        use sled::Transactional;
        let i = &self.inner;
        let existed = (&i.traces, &i.trace_uid, &i.trace_name)
            .transaction(|(traces, uids, names)| {
                let Some(key) = uids.remove(uid.as_bytes())? else {
                    return Ok(false);
                };
                if let Some(bytes) = traces.remove(key)?
                    && let Ok(t) = decode_trace(&bytes)
                {
                    names.remove(t.name.as_bytes())?;
                }
                Ok::<bool, sled::transaction::ConflictableTransactionError<()>>(true)
            })
            .map_err(tx_err)?;
        self.wrote();
        Ok(existed)
    }

    /// Every trace, newest first (for startup recovery and retention).
    pub fn all_traces(&self) -> impl Iterator<Item = Result<pb::Traceflow>> + '_ {
        self.inner.traces.iter().map(|r| {
            let (_, v) = r?;
            decode_trace(&v)
        })
    }

    pub fn trace_count(&self) -> usize {
        self.inner.traces.len()
    }

    /// A page of traces matching `filter`, newest first. `page_token` is the one returned by
    /// the previous page; an unknown token yields [`None`].
    pub fn list_traces(
        &self,
        filter: &TraceFilter,
        page_size: usize,
        page_token: &str,
    ) -> Result<Option<TracePage>> {
        use std::ops::Bound;
        let mut start: Bound<Vec<u8>> = Bound::Unbounded;
        if filter.created_before_micros > 0 {
            // Keys at or before this bound are created strictly before created_before.
            start = Bound::Excluded(trace_key(filter.created_before_micros, "\u{10ffff}"));
        }
        if !page_token.is_empty() {
            let Ok(key) = hex::decode(page_token) else {
                return Ok(None);
            };
            start = Bound::Excluded(key);
        }
        let mut page = TracePage::default();
        let mut last_key = Vec::new();
        for item in self.inner.traces.range((start, Bound::Unbounded)) {
            let (k, v) = item?;
            let t = decode_trace(&v)?;
            if filter.created_after_micros > 0
                && t.creation_time_micros < filter.created_after_micros
            {
                break;
            }
            if filter.created_before_micros > 0
                && t.creation_time_micros >= filter.created_before_micros
            {
                continue;
            }
            if !filter.matches(&t) {
                continue;
            }
            if page.traces.len() == page_size {
                page.next_page_token = hex::encode(&last_key);
                break;
            }
            last_key = k.to_vec();
            page.traces.push(t);
        }
        Ok(Some(page))
    }

    // ----- clusters -----------------------------------------------------------------------

    pub fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>> {
        self.inner
            .clusters
            .get(name.as_bytes())?
            .map(|v| from_json("cluster", &v))
            .transpose()
    }

    pub fn put_cluster(&self, c: &ClusterRecord) -> Result<()> {
        self.inner.clusters.insert(c.name.as_bytes(), json(c))?;
        self.wrote();
        Ok(())
    }

    /// Makes `serial` (valid until `not_after`, seconds) the cluster's only certificate, if
    /// `expected` is still its current one: atomic against a concurrent deregistration or
    /// renewal (other changes to the record, such as heartbeats, are kept). `false` when the
    /// cluster is gone or its serial is no longer `expected`.
    pub fn replace_cluster_serial(
        &self,
        name: &str,
        expected: &str,
        serial: &str,
        not_after: i64,
    ) -> Result<bool> {
        loop {
            let Some(old) = self.inner.clusters.get(name.as_bytes())? else {
                return Ok(false);
            };
            let mut rec: ClusterRecord = from_json("cluster", &old)?;
            if rec.certificate_serial != expected {
                return Ok(false);
            }
            rec.certificate_serial = serial.to_string();
            rec.certificate_not_after = not_after;
            let swapped = self.inner.clusters.compare_and_swap(
                name.as_bytes(),
                Some(old),
                Some(json(&rec)),
            )?;
            if swapped.is_ok() {
                self.wrote();
                return Ok(true);
            }
        }
    }

    pub fn delete_cluster(&self, name: &str) -> Result<bool> {
        let existed = self.inner.clusters.remove(name.as_bytes())?.is_some();
        self.wrote();
        Ok(existed)
    }

    /// Clusters by name after `after` (exclusive; empty: from the first), at most `limit`, and
    /// whether more follow. Reads only that page from the store.
    pub fn clusters_page(&self, after: &str, limit: usize) -> Result<(Vec<ClusterRecord>, bool)> {
        use std::ops::Bound;
        let start = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after.as_bytes().to_vec())
        };
        let mut it = self
            .inner
            .clusters
            .range::<Vec<u8>, _>((start, Bound::Unbounded));
        let mut page = Vec::new();
        for r in it.by_ref().take(limit) {
            let (_, v) = r?;
            page.push(from_json("cluster", &v)?);
        }
        Ok((page, it.next().is_some()))
    }

    pub fn clusters(&self) -> Result<Vec<ClusterRecord>> {
        self.inner
            .clusters
            .iter()
            .map(|r| {
                let (_, v) = r?;
                from_json("cluster", &v)
            })
            .collect()
    }

    // ----- tokens -------------------------------------------------------------------------

    /// Stores a token under the hash of its secret.
    pub fn put_token(&self, secret_hash: &str, rec: &TokenRecord) -> Result<()> {
        self.inner
            .tokens
            .insert(secret_hash.as_bytes(), json(rec))?;
        self.wrote();
        Ok(())
    }

    pub fn token(&self, secret_hash: &str) -> Result<Option<TokenRecord>> {
        self.inner
            .tokens
            .get(secret_hash.as_bytes())?
            .map(|v| from_json("token", &v))
            .transpose()
    }

    /// Marks a bootstrap token used, atomically: returns the record as it was before, or
    /// `None` when the token is unknown. The caller decides from the old record whether the use
    /// was valid; a second concurrent use always sees `used_micros` set.
    pub fn use_token(&self, secret_hash: &str, now: i64) -> Result<Option<TokenRecord>> {
        let mut before: Option<TokenRecord> = None;
        let mut corrupt = None;
        self.inner
            .tokens
            .fetch_and_update(secret_hash.as_bytes(), |old| {
                let old = old?;
                match serde_json::from_slice::<TokenRecord>(old) {
                    Ok(mut rec) => {
                        before = Some(rec.clone());
                        if rec.used_micros == 0 {
                            rec.used_micros = now;
                        }
                        Some(json(&rec))
                    }
                    Err(e) => {
                        corrupt = Some(e.to_string());
                        Some(old.to_vec())
                    }
                }
            })?;
        if let Some(detail) = corrupt {
            return Err(StoreError::Corrupt {
                what: "token",
                detail,
            });
        }
        self.wrote();
        Ok(before)
    }

    /// Deletes tokens spent or expired more than [`TOKEN_PURGE_GRACE`] before `now` (the grace
    /// keeps "already used" and "expired" answers meaningful for a while); returns how many.
    pub fn purge_tokens(&self, now: i64) -> Result<usize> {
        let before = now - TOKEN_PURGE_GRACE.as_micros() as i64;
        let mut doomed = Vec::new();
        for item in self.inner.tokens.iter() {
            let (k, v) = item?;
            let Ok(rec) = serde_json::from_slice::<TokenRecord>(&v) else {
                continue;
            };
            let spent = rec.kind == TokenKind::Bootstrap
                && rec.used_micros != 0
                && rec.used_micros < before;
            let expired = rec.expires_micros != 0 && rec.expires_micros < before;
            if spent || expired {
                doomed.push(k);
            }
        }
        for k in &doomed {
            self.inner.tokens.remove(k)?;
        }
        if !doomed.is_empty() {
            self.wrote();
        }
        Ok(doomed.len())
    }

    /// Removes the one user bearer token whose hash starts with `prefix`; returns its user,
    /// or `None` when no user token (or more than one) matches.
    pub fn delete_user_token_by_prefix(&self, prefix: &str) -> Result<Option<String>> {
        let mut found = Vec::new();
        for item in self.inner.tokens.scan_prefix(prefix.as_bytes()).take(2) {
            let (k, v) = item?;
            let rec: TokenRecord = from_json("token", &v)?;
            if rec.kind == TokenKind::User {
                found.push((k, rec.subject));
            }
        }
        if found.len() != 1 {
            return Ok(None);
        }
        let (key, subject) = found.remove(0);
        self.inner.tokens.remove(key)?;
        self.wrote();
        Ok(Some(subject))
    }

    /// Removes every bearer token of a user.
    pub fn delete_user_tokens(&self, user: &str) -> Result<()> {
        let mut doomed = Vec::new();
        for item in self.inner.tokens.iter() {
            let (k, v) = item?;
            if let Ok(rec) = serde_json::from_slice::<TokenRecord>(&v)
                && rec.kind == TokenKind::User
                && rec.subject == user
            {
                doomed.push(k);
            }
        }
        for k in doomed {
            self.inner.tokens.remove(k)?;
        }
        self.wrote();
        Ok(())
    }

    // ----- users --------------------------------------------------------------------------

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.inner
            .users
            .get(name.as_bytes())?
            .map(|v| from_json("user", &v))
            .transpose()
    }

    pub fn put_user(&self, u: &UserRecord) -> Result<()> {
        self.inner.users.insert(u.name.as_bytes(), json(u))?;
        self.wrote();
        Ok(())
    }

    pub fn delete_user(&self, name: &str) -> Result<bool> {
        let existed = self.inner.users.remove(name.as_bytes())?.is_some();
        self.wrote();
        Ok(existed)
    }

    pub fn users(&self) -> Result<Vec<UserRecord>> {
        self.inner
            .users
            .iter()
            .map(|r| {
                let (_, v) = r?;
                from_json("user", &v)
            })
            .collect()
    }

    // ----- inventory snapshots ---------------------------------------------------------------

    /// Replaces the stored inventory snapshot of `cluster` (a cache: not flushed by itself).
    pub fn put_inventory(&self, cluster: &str, inv: &pb::Inventory) -> Result<()> {
        self.inner
            .inventory
            .insert(cluster.as_bytes(), inv.encode_to_vec())?;
        self.wrote();
        Ok(())
    }

    pub fn delete_inventory(&self, cluster: &str) -> Result<()> {
        self.inner.inventory.remove(cluster.as_bytes())?;
        self.wrote();
        Ok(())
    }

    /// Every stored inventory snapshot, by cluster.
    pub fn inventories(&self) -> Result<Vec<(String, pb::Inventory)>> {
        self.inner
            .inventory
            .iter()
            .map(|r| {
                let (k, v) = r?;
                let inv = pb::Inventory::decode(&*v).map_err(|e| StoreError::Corrupt {
                    what: "inventory",
                    detail: e.to_string(),
                })?;
                Ok((String::from_utf8_lossy(&k).into_owned(), inv))
            })
            .collect()
    }

    // ----- audit --------------------------------------------------------------------------

    /// Appends an audit event (durable with the next [`Store::durable`]).
    pub fn audit(&self, event: &AuditEvent) -> Result<()> {
        let id = self.inner.db.generate_id()?;
        let mut key = (event.micros.max(0) as u64).to_be_bytes().to_vec();
        key.extend_from_slice(&id.to_be_bytes());
        self.inner.audit.insert(key, json(event))?;
        self.wrote();
        Ok(())
    }

    /// Deletes audit events older than `oldest_micros`, then the oldest beyond `max_count`;
    /// returns how many went.
    pub fn prune_audit(&self, max_count: usize, oldest_micros: i64) -> Result<usize> {
        let audit = &self.inner.audit;
        let mut removed = 0;
        let cutoff = (oldest_micros.max(0) as u64).to_be_bytes();
        for item in audit.range(..cutoff.as_slice()) {
            audit.remove(item?.0)?;
            removed += 1;
        }
        let excess = audit.len().saturating_sub(max_count);
        for item in audit.iter().take(excess) {
            audit.remove(item?.0)?;
            removed += 1;
        }
        if removed > 0 {
            self.wrote();
        }
        Ok(removed)
    }

    /// Audit events, oldest first.
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        self.inner
            .audit
            .iter()
            .map(|r| {
                let (_, v) = r?;
                from_json("audit event", &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_trace(uid: &str, micros: i64, cluster: &str) -> pb::Traceflow {
        pb::Traceflow {
            uid: uid.into(),
            name: format!("n-{uid}"),
            cluster: cluster.into(),
            creation_time_micros: micros,
            ..Default::default()
        }
    }

    #[test]
    fn list_is_newest_first_and_pages() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Join(e.to_string()))?;
        let store = Store::open(dir.path())?;
        for i in 0..5 {
            store.put_trace(&mk_trace(&format!("u{i}"), 1000 + i, "a"))?;
        }
        let f = TraceFilter::default();
        let p1 = store.list_traces(&f, 2, "")?.unwrap_or_default();
        let uids: Vec<_> = p1.traces.iter().map(|t| t.uid.as_str()).collect();
        assert_eq!(uids, ["u4", "u3"]);
        let p2 = store
            .list_traces(&f, 2, &p1.next_page_token)?
            .unwrap_or_default();
        let uids: Vec<_> = p2.traces.iter().map(|t| t.uid.as_str()).collect();
        assert_eq!(uids, ["u2", "u1"]);
        let p3 = store
            .list_traces(&f, 2, &p2.next_page_token)?
            .unwrap_or_default();
        assert_eq!(p3.traces.len(), 1);
        assert!(p3.next_page_token.is_empty());
        let bounded = TraceFilter {
            created_after_micros: 1001,
            created_before_micros: 1004,
            ..Default::default()
        };
        let p = store.list_traces(&bounded, 10, "")?.unwrap_or_default();
        let uids: Vec<_> = p.traces.iter().map(|t| t.uid.as_str()).collect();
        assert_eq!(uids, ["u3", "u2", "u1"]);
        Ok(())
    }

    #[test]
    fn names_are_unique_and_updates_never_resurrect() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Join(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let a = mk_trace("a", 1, "c");
        assert!(store.insert_trace(&a)?);
        let mut same_name = mk_trace("b", 2, "c");
        same_name.name = a.name.clone();
        assert!(!store.insert_trace(&same_name)?, "a taken name is refused");
        assert!(store.get_trace("b")?.is_none());

        // Concurrent updates: every one of 8 threads × 50 increments lands (no lost update).
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _ = store.update_trace("a", |t| {
                            t.created_by =
                                (t.created_by.parse::<u32>().unwrap_or(0) + 1).to_string();
                            true
                        });
                    }
                });
            }
        });
        let t = store.get_trace("a")?.map(|t| t.created_by);
        assert_eq!(t.as_deref(), Some("400"));

        assert!(store.delete_trace("a")?);
        assert_eq!(store.update_trace("a", |_| true)?, TraceChange::Missing);
        assert!(
            store.get_trace("a")?.is_none(),
            "a deleted trace never comes back"
        );
        assert!(store.insert_trace(&same_name)?, "the name is free again");
        Ok(())
    }

    #[test]
    fn audit_is_bounded_by_age_and_count() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Join(e.to_string()))?;
        let store = Store::open(dir.path())?;
        for micros in 1..=10 {
            store.audit(&AuditEvent {
                micros,
                actor: "a".into(),
                action: "x".into(),
                subject: String::new(),
                detail: String::new(),
            })?;
        }
        assert_eq!(store.prune_audit(100, 4)?, 3);
        assert_eq!(store.prune_audit(5, 0)?, 2);
        let left: Vec<i64> = store.audit_events()?.iter().map(|e| e.micros).collect();
        assert_eq!(left, [6, 7, 8, 9, 10]);
        Ok(())
    }

    #[test]
    fn token_is_used_once() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Join(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let rec = TokenRecord {
            kind: TokenKind::Bootstrap,
            subject: "c1".into(),
            created_micros: 1,
            expires_micros: 10,
            used_micros: 0,
        };
        store.put_token("h", &rec)?;
        let first = store.use_token("h", 5)?;
        assert_eq!(first.map(|r| r.used_micros), Some(0));
        let second = store.use_token("h", 6)?;
        assert_eq!(second.map(|r| r.used_micros), Some(5));
        assert!(store.use_token("nope", 6)?.is_none());
        let grace = TOKEN_PURGE_GRACE.as_micros() as i64;
        assert_eq!(
            store.purge_tokens(grace)?,
            0,
            "spent within the grace: kept"
        );
        assert_eq!(store.purge_tokens(grace + 6)?, 1);
        assert!(store.token("h")?.is_none());
        Ok(())
    }
}
