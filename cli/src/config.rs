//! The tfctl config file (docs/contracts.md): found through `--config`, else `$TFCTL_CONFIG`,
//! else `~/.config/tfctl/config.yaml`; paths in it are relative to the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Problems finding or reading the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no tfctl config: pass --config, set TFCTL_CONFIG, or create ~/.config/tfctl/config.yaml"
    )]
    NotFound,
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a tfctl config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: `ca` is required (the manager's CA certificate)")]
    NoCa { path: PathBuf },
    #[error("{path}: `cert` and `key` must be given together")]
    HalfIdentity { path: PathBuf },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    server: String,
    server_name: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    token: Option<String>,
}

/// A loaded config with its PEM files read.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: String,
    pub server_name: String,
    pub ca_pem: String,
    /// Client certificate and key, PEM.
    pub identity: Option<(String, String)>,
    pub token: Option<String>,
}

/// The config path by precedence: flag, env (both passed in by clap), home.
pub fn locate(flag: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or(ConfigError::NotFound)?;
    let p = home.join(".config/tfctl/config.yaml");
    if p.exists() {
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

/// Loads `path` and the files it names.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    let file: File = serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let ca = file.ca.as_ref().ok_or_else(|| ConfigError::NoCa {
        path: path.to_path_buf(),
    })?;
    let identity = match (&file.cert, &file.key) {
        (Some(c), Some(k)) => Some((read(&resolve(c))?, read(&resolve(k))?)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::HalfIdentity {
                path: path.to_path_buf(),
            });
        }
    };
    Ok(Config {
        server: file.server,
        server_name: file.server_name.unwrap_or_else(|| "localhost".to_string()),
        ca_pem: read(&resolve(ca))?,
        identity,
        token: file.token.filter(|t| !t.is_empty()),
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
        let c = load(&path)?;
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
        let c = load(&path)?;
        assert_eq!(
            (c.server_name.as_str(), c.token.as_deref()),
            ("mgr", Some("abc"))
        );
        assert!(c.identity.is_none());
        Ok(())
    }
}
