//! Request path → file under the console directory, refusing anything that could leave it.

use std::path::{Path, PathBuf};

/// A file the console may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleFile {
    pub path: PathBuf,
    /// `index.html` (never cached) rather than a content-hashed asset.
    pub is_index: bool,
}

/// Why a request path is not served (all of them answer 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    #[error("not a console path")]
    NotConsole,
    #[error("bad percent-encoding")]
    BadEncoding,
    #[error("segment {0:?} is not a plain file name")]
    BadSegment(String),
    #[error("no such file")]
    Missing,
    #[error("resolves outside the console directory")]
    Outside,
}

/// Resolves the URL path `path` (as sent, still percent-encoded) against the canonical
/// directory `root`: `/` and `/index.html` are `index.html`; `/assets/a/b` is `assets/a/b`.
pub fn resolve(root: &Path, path: &str) -> Result<ConsoleFile, NotServed> {
    let (rel, is_index) = if path == "/" || path == "/index.html" {
        (PathBuf::from("index.html"), true)
    } else if let Some(rest) = path.strip_prefix("/assets/") {
        let mut rel = PathBuf::from("assets");
        for raw in rest.split('/') {
            let seg = percent_decode(raw)?;
            let plain = !seg.is_empty()
                && !seg.starts_with('.')
                && !seg.contains(['/', '\\', '\0'])
                && !seg.chars().any(char::is_control);
            if !plain {
                return Err(NotServed::BadSegment(seg));
            }
            rel.push(seg);
        }
        (rel, false)
    } else {
        return Err(NotServed::NotConsole);
    };
    // Symlinks are followed, then the result must still lie under the (canonical) root.
    let full = root
        .join(&rel)
        .canonicalize()
        .map_err(|_| NotServed::Missing)?;
    if !full.starts_with(root) {
        return Err(NotServed::Outside);
    }
    if !full.is_file() {
        return Err(NotServed::Missing);
    }
    Ok(ConsoleFile {
        path: full,
        is_index,
    })
}

/// `%XX` decoding of one path segment; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, NotServed> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(NotServed::BadEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| NotServed::BadEncoding)?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| NotServed::BadEncoding)?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| NotServed::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Result<(tempfile::TempDir, PathBuf), std::io::Error> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("console");
        std::fs::create_dir_all(root.join("assets/sub"))?;
        std::fs::write(root.join("index.html"), "<html>")?;
        std::fs::write(root.join("assets/app.js"), "js")?;
        std::fs::write(root.join("assets/sub/x.css"), "css")?;
        std::fs::write(root.join("assets/.stamp"), "hidden")?;
        std::fs::write(tmp.path().join("secret.txt"), "secret")?;
        std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("assets/link.txt"))?;
        let root = root.canonicalize()?;
        Ok((tmp, root))
    }

    #[test]
    fn serves_index_and_assets() -> Result<(), Box<dyn std::error::Error>> {
        let (_tmp, root) = tree()?;
        let f = resolve(&root, "/")?;
        assert!(f.is_index);
        assert_eq!(f.path, root.join("index.html"));
        assert_eq!(resolve(&root, "/index.html")?.path, root.join("index.html"));
        let a = resolve(&root, "/assets/app.js")?;
        assert!(!a.is_index);
        assert_eq!(a.path, root.join("assets/app.js"));
        assert_eq!(
            resolve(&root, "/assets/sub/x%2Ecss")?.path,
            root.join("assets/sub/x.css")
        );
        Ok(())
    }

    #[test]
    fn refuses_traversal_hidden_files_and_escaping_symlinks()
    -> Result<(), Box<dyn std::error::Error>> {
        let (_tmp, root) = tree()?;
        for (path, want) in [
            (
                "/assets/../../secret.txt",
                NotServed::BadSegment("..".into()),
            ),
            (
                "/assets/%2e%2e/%2e%2e/secret.txt",
                NotServed::BadSegment("..".into()),
            ),
            (
                "/assets/..%2f..%2fsecret.txt",
                NotServed::BadSegment("../../secret.txt".into()),
            ),
            (
                "/assets/..%5c..%5csecret.txt",
                NotServed::BadSegment("..\\..\\secret.txt".into()),
            ),
            ("/assets/./app.js", NotServed::BadSegment(".".into())),
            ("/assets//app.js", NotServed::BadSegment(String::new())),
            ("/assets/.stamp", NotServed::BadSegment(".stamp".into())),
            (
                "/assets/app.js%00.png",
                NotServed::BadSegment("app.js\0.png".into()),
            ),
            ("/assets/%zz", NotServed::BadEncoding),
            ("/assets/%ff", NotServed::BadEncoding),
            ("/assets/link.txt", NotServed::Outside),
            ("/assets/nope.js", NotServed::Missing),
            ("/assets/sub", NotServed::Missing),
            ("/secret.txt", NotServed::NotConsole),
            ("/../secret.txt", NotServed::NotConsole),
        ] {
            assert_eq!(resolve(&root, path), Err(want), "{path}");
        }
        Ok(())
    }
}
