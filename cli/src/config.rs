//! The tfctl config file (docs/contracts.md): found through `--config`, else `$TFCTL_CONFIG`,
//! else `~/.config/tfctl/config.yaml`; paths in it are relative to the file.
//!
//! Two shapes are read, so every file the lab and `traceflow-manager user create` wrote keeps
//! working:
//!
//! ```yaml
//! # single context (what the lab writes): the context is named "default"
//! server: https://127.0.0.1:7443
//! ca: ca.pem
//! cert: admin.pem
//! key: admin-key.pem
//!
//! # contexts (what `tfctl config set-context` writes)
//! currentContext: lab
//! contexts:
//! - name: lab
//!   server: https://127.0.0.1:7443
//!   ca: ca.pem
//!   token: ...
//!   cluster: c1            # default --cluster
//! ```
//!
//! A file with top-level `server:` and `contexts:` has both; the top-level one is "default".
//! `set-context` on a single-context file rewrites it in the contexts shape, keeping the old
//! context as "default". Files are written 0600 (they may hold a bearer token).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the context a single-context file holds.
pub const DEFAULT_CONTEXT: &str = "default";

/// Problems finding, reading or writing the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no tfctl config: pass --config, set TFCTL_CONFIG, or create one with `tfctl config set-context NAME --server URL --ca FILE ...`"
    )]
    NotFound,
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write the config: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a tfctl config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error(
        "{path}: context {context:?} has no `server`: set it with `tfctl config set-context {context} --server URL`"
    )]
    NoServer { path: PathBuf, context: String },
    #[error(
        "{path}: context {context:?} has no `ca` (the manager's CA certificate): set it with `tfctl config set-context {context} --ca FILE`"
    )]
    NoCa { path: PathBuf, context: String },
    #[error("{path}: context {context:?}: `cert` and `key` must be given together")]
    HalfIdentity { path: PathBuf, context: String },
    #[error("{path}: no context named {name:?}; `tfctl config get-contexts` lists them")]
    NoContext { path: PathBuf, name: String },
    #[error(
        "{path}: no contexts; add one with `tfctl config set-context NAME --server URL --ca FILE`"
    )]
    Empty { path: PathBuf },
}

/// One context as stored: where the manager is and who we are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The cluster used when a command is given no `--cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl Context {
    /// Sets every field `update` has (its name is ignored).
    pub fn merge(&mut self, update: Context) {
        macro_rules! take {
            ($($f:ident),*) => { $( if update.$f.is_some() { self.$f = update.$f; } )* };
        }
        take!(server, server_name, ca, cert, key, token, cluster);
    }

    /// How this context authenticates, for `get-contexts`.
    pub fn auth(&self) -> &'static str {
        match (&self.cert, &self.token) {
            (Some(_), _) => "certificate",
            (None, Some(t)) if !t.is_empty() => "token",
            _ => "none",
        }
    }
}

/// The file as stored (either shape, see the module doc).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigFile {
    /// The single-context shape's fields, flattened at the top level.
    #[serde(flatten)]
    pub top: Context,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<Context>,
}

impl ConfigFile {
    /// Every context: the top-level one (as "default") when it names a server, then the list.
    pub fn all(&self) -> Vec<Context> {
        let mut out = Vec::new();
        if self.top.server.is_some() {
            let mut top = self.top.clone();
            top.name = DEFAULT_CONTEXT.into();
            out.push(top);
        }
        out.extend(self.contexts.iter().cloned());
        out
    }

    /// The current context's name: `currentContext`, else the first one.
    pub fn current(&self) -> Option<String> {
        self.current_context
            .clone()
            .or_else(|| self.all().first().map(|c| c.name.clone()))
    }

    /// Creates or updates context `name` with the fields `update` has. A single-context file
    /// is converted to the contexts shape first (its context keeps working as "default").
    pub fn set_context(&mut self, name: &str, update: Context) {
        if self.top.server.is_some() || self.top != Context::default() {
            let mut top = std::mem::take(&mut self.top);
            top.name = DEFAULT_CONTEXT.into();
            self.current_context
                .get_or_insert_with(|| DEFAULT_CONTEXT.into());
            self.contexts.insert(0, top);
        }
        match self.contexts.iter_mut().find(|c| c.name == name) {
            Some(c) => c.merge(update),
            None => {
                let mut c = Context {
                    name: name.into(),
                    ..Default::default()
                };
                c.merge(update);
                self.contexts.push(c);
            }
        }
        self.current_context.get_or_insert_with(|| name.into());
    }
}

/// A loaded context with its PEM files read: what a connection needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub context: String,
    pub server: String,
    pub server_name: String,
    pub ca_pem: String,
    /// Client certificate and key, PEM.
    pub identity: Option<(String, String)>,
    pub token: Option<String>,
    /// The default cluster, if the context names one.
    pub cluster: Option<String>,
}

/// The config path by precedence: flag, env (both passed in by clap), home. `must_exist`
/// false gives the home path even when it does not exist yet (for `set-context`).
pub fn locate(flag: Option<PathBuf>, must_exist: bool) -> Result<PathBuf, ConfigError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or(ConfigError::NotFound)?;
    let p = home.join(".config/tfctl/config.yaml");
    if p.exists() || !must_exist {
        Ok(p)
    } else {
        Err(ConfigError::NotFound)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the file as stored; a missing file is an empty config when `missing_ok`.
pub fn read_file(path: &Path, missing_ok: bool) -> Result<ConfigFile, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ConfigFile::default());
        }
        other => other.map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?,
    };
    serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `file` to `path` with mode 0600 (creating the directory 0700 when missing).
pub fn write_file(path: &Path, file: &ConfigFile) -> Result<(), ConfigError> {
    use std::{
        io::Write,
        os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    };
    let err = |source| ConfigError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_yaml::to_string(file).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let tmp = path.with_extension("yaml.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Loads context `name` (or the current one) from `path` and reads the files it names.
pub fn load(path: &Path, name: Option<&str>) -> Result<Config, ConfigError> {
    let file = read_file(path, false)?;
    let all = file.all();
    let wanted = match name.map(str::to_string).or_else(|| file.current()) {
        Some(n) => n,
        None => {
            return Err(ConfigError::Empty {
                path: path.to_path_buf(),
            });
        }
    };
    let ctx = all
        .into_iter()
        .find(|c| c.name == wanted)
        .ok_or_else(|| ConfigError::NoContext {
            path: path.to_path_buf(),
            name: wanted.clone(),
        })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let server = ctx.server.clone().ok_or_else(|| ConfigError::NoServer {
        path: path.to_path_buf(),
        context: wanted.clone(),
    })?;
    let ca = ctx.ca.as_ref().ok_or_else(|| ConfigError::NoCa {
        path: path.to_path_buf(),
        context: wanted.clone(),
    })?;
    let identity = match (&ctx.cert, &ctx.key) {
        (Some(c), Some(k)) => Some((read(&resolve(c))?, read(&resolve(k))?)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::HalfIdentity {
                path: path.to_path_buf(),
                context: wanted,
            });
        }
    };
    Ok(Config {
        context: wanted,
        server,
        server_name: ctx.server_name.unwrap_or_else(|| "localhost".to_string()),
        ca_pem: read(&resolve(ca))?,
        identity,
        token: ctx.token.filter(|t| !t.is_empty()),
        cluster: ctx.cluster.filter(|c| !c.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_dir() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.pem"), "CA")?;
        std::fs::write(dir.path().join("admin.pem"), "CERT")?;
        std::fs::write(dir.path().join("admin-key.pem"), "KEY")?;
        let path = dir.path().join("admin.tfctl.yaml");
        std::fs::write(
            &path,
            "server: https://127.0.0.1:7443\nca: ca.pem\ncert: admin.pem\nkey: admin-key.pem\n",
        )?;
        let c = load(&path, None)?;
        assert_eq!(c.context, "default");
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.ca_pem, "CA");
        assert_eq!(c.identity, Some(("CERT".into(), "KEY".into())));
        assert_eq!(c.token, None);
        Ok(())
    }

    #[test]
    fn token_config_without_cert() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.pem"), "CA")?;
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "server: https://x:1\nserverName: mgr\nca: ca.pem\ntoken: abc\n",
        )?;
        let c = load(&path, None)?;
        assert_eq!(
            (c.server_name.as_str(), c.token.as_deref()),
            ("mgr", Some("abc"))
        );
        assert!(c.identity.is_none());
        Ok(())
    }

    #[test]
    fn set_context_converts_a_single_context_file_and_keeps_it_as_default()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.pem"), "CA")?;
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "server: https://a:1\nca: ca.pem\ntoken: t1\n")?;
        let mut file = read_file(&path, false)?;
        file.set_context(
            "other",
            Context {
                server: Some("https://b:2".into()),
                ca: Some("ca.pem".into()),
                cluster: Some("c2".into()),
                ..Default::default()
            },
        );
        write_file(&path, &file)?;
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        // Still the old context by default; the new one by name, with its default cluster.
        let d = load(&path, None)?;
        assert_eq!(
            (d.context.as_str(), d.server.as_str()),
            ("default", "https://a:1")
        );
        assert_eq!(d.token.as_deref(), Some("t1"));
        let o = load(&path, Some("other"))?;
        assert_eq!(
            (o.server.as_str(), o.cluster.as_deref()),
            ("https://b:2", Some("c2"))
        );
        assert!(matches!(
            load(&path, Some("nope")),
            Err(ConfigError::NoContext { .. })
        ));
        Ok(())
    }

    #[test]
    fn set_context_merges_only_given_fields() {
        let mut file = ConfigFile::default();
        file.set_context(
            "a",
            Context {
                server: Some("https://a:1".into()),
                token: Some("t".into()),
                ..Default::default()
            },
        );
        file.set_context(
            "a",
            Context {
                cluster: Some("c1".into()),
                ..Default::default()
            },
        );
        let a = &file.all()[0];
        assert_eq!(a.server.as_deref(), Some("https://a:1"));
        assert_eq!(a.cluster.as_deref(), Some("c1"));
        assert_eq!(a.auth(), "token");
        assert_eq!(file.current().as_deref(), Some("a"));
    }
}
