//! The real kubectl 1.33 against a lab cluster's Kubernetes API, as a user of the cluster chart
//! would use it: `kubectl create -f` of Antrea's guide example (only apiVersion changed), `kubectl
//! get` by the short name with the CRD's printer columns until Succeeded, `delete`, and objects
//! the CRD's schema refuses with the field named. No `--validate=false`: kubectl reads the
//! lab's /openapi/v3 and validates server-side, as against a real API server.
//!
//! Needs root, Open vSwitch, the workspace's binaries and the pinned kubectl (scripts/lib.sh);
//! fails loudly without them, never skips.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{Lab, require_lab_prerequisites, text, topology};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/traceflows")
        .join(name)
}

/// kubectl with the lab's kubeconfig and a cache of its own (discovery and OpenAPI are cached).
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot run {}: {e}", self.bin.display()),
        };
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            if let Err(e) = pipe.write_all(input.as_bytes()) {
                panic!("writing kubectl's stdin: {e}");
            }
        }
        match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => panic!("kubectl {args:?}: {e}"),
        }
    }
}

/// The rows of `kubectl get` output: header cells, then each row's cells (split on 2+ spaces).
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

#[test]
fn real_kubectl_creates_lists_by_short_name_and_deletes_a_traceflow() {
    require_lab_prerequisites();
    common::trace::require_binaries();
    let bin = common::k8s_tools::kubectl();
    let mut lab = Lab::new("kc");
    lab.up(&topology("kubectl.yaml"), &["--ready-timeout", "60s"]);
    let cache = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    };
    let k = Kubectl {
        bin,
        kubeconfig: lab.dir.join("clusters/c1/kubeconfig"),
        cache,
    };
    let ok = |args: &[&str], stdin: Option<&str>| -> String {
        let out = k.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            text(&out),
            lab.dump()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Discovery names our short name, and Antrea's `tf` stays Antrea's.
    let resources = ok(&["api-resources", "--api-group=crd.traceflow.io"], None);
    assert!(
        resources.lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.first() == Some(&"traceflows") && c.get(1) == Some(&"tflow")
        }),
        "{resources}"
    );

    let example = fixture("tf-test.yaml");
    let example = example.display().to_string();
    let created = ok(&["create", "-f", &example], None);
    assert_eq!(
        created.trim(),
        "traceflow.crd.traceflow.io/tf-test created",
        "{created}"
    );

    // `kubectl get` of `args` until the first row's PHASE is Succeeded (or 40 s passed).
    let until_succeeded = |args: &[&str]| -> Vec<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let rows = table(&ok(args, None));
            let phase = rows.get(1).and_then(|r| r.get(1)).map(String::as_str);
            if phase == Some("Succeeded") || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };

    // Printer columns from the CRD, then Succeeded.
    let rows = until_succeeded(&["get", "tflow"]);
    assert_eq!(
        rows.first().map(Vec::as_slice),
        Some(&["NAME", "PHASE", "SOURCE-POD", "DESTINATION-POD", "AGE"].map(String::from)[..]),
        "{rows:?}"
    );
    let row = rows.get(1).cloned().unwrap_or_default();
    assert_eq!(
        row.get(..4),
        Some(&["tf-test", "Succeeded", "tcp-sts-0", "tcp-sts-2"].map(String::from)[..]),
        "{rows:?}\n{}",
        lab.dump()
    );
    let wide = table(&ok(&["get", "tflow", "tf-test", "-o", "wide"], None));
    assert!(
        wide.first()
            .is_some_and(|h| h.iter().any(|c| c == "LIVE-TRAFFIC")),
        "{wide:?}"
    );
    // The guide's IPv6 example through `apply` (client-side apply reads the OpenAPI too), and
    // `explain` from the served schema.
    let ipv6 = fixture("tf-test-ipv6.yaml").display().to_string();
    let applied = ok(&["apply", "-f", &ipv6], None);
    assert!(applied.contains("tf-test-ipv6 created"), "{applied}");
    let rows = until_succeeded(&["get", "tflow", "tf-test-ipv6"]);
    let phase = rows
        .get(1)
        .and_then(|r| r.get(1))
        .cloned()
        .unwrap_or_default();
    assert_eq!(phase, "Succeeded", "{}", lab.dump());
    let explained = ok(&["explain", "tflow.spec.timeout"], None);
    assert!(
        explained.contains("timeout\t<integer>") || explained.contains("timeout <integer>"),
        "{explained}"
    );
    ok(&["delete", "-f", &ipv6], None);

    // The whole object carries the adapter's results.
    let json = ok(
        &[
            "get",
            "traceflows.crd.traceflow.io",
            "tf-test",
            "-o",
            "json",
        ],
        None,
    );
    let obj: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => panic!("kubectl -o json: {e}: {json}"),
    };
    assert_eq!(
        obj.pointer("/status/results/0/observations/0/component"),
        Some(&serde_json::json!("SpoofGuard")),
        "{obj:#}"
    );
    // The lab lists our group first, so the plural alone is ours too; `tf` is Antrea's (empty).
    let plain = ok(&["get", "traceflows"], None);
    assert!(plain.contains("tf-test"), "{plain}");
    let antrea = k.run(&["get", "tf"], None);
    assert!(
        antrea.status.success() && !text(&antrea).contains("tf-test"),
        "{}",
        text(&antrea)
    );

    // A wrong type: 422 naming the field, nothing created.
    let wrong = fixture("tf-wrong-type.yaml").display().to_string();
    let refused = k.run(&["create", "-f", &wrong], None);
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("The Traceflow \"tf-wrong-type\" is invalid: spec.packet.ipHeader.protocol")
            && said.contains("must be of type integer"),
        "{said}"
    );
    // An unknown field: refused under kubectl's default strict validation, naming it.
    let unknown = "apiVersion: crd.traceflow.io/v1beta1\nkind: Traceflow\nmetadata:\n  \
                   name: tf-unknown\nspec:\n  sourcePod: tcp-sts-0\n";
    let refused = k.run(&["create", "-f", "-"], Some(unknown));
    let said = text(&refused);
    assert!(
        !refused.status.success() && said.contains("unknown field \"spec.sourcePod\""),
        "{said}"
    );
    let none = k.run(&["get", "tflow", "tf-wrong-type"], None);
    assert!(text(&none).contains("NotFound"), "{}", text(&none));

    let deleted = ok(&["delete", "tflow", "tf-test"], None);
    assert!(
        deleted.contains("traceflow.crd.traceflow.io \"tf-test\" deleted"),
        "{deleted}"
    );
    let empty = k.run(&["get", "tflow"], None);
    assert!(
        empty.status.success() && text(&empty).contains("No resources found"),
        "{}",
        text(&empty)
    );
    lab.down();
    lab.assert_gone();
}
