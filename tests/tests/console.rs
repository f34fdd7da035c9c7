//! The web console in a real browser: the two-Node lab (tests/topologies/two-node-policy.yaml:
//! real OVS, manager, adapter, agents), the console bundle built from manager/console and served
//! by that manager, and `node manager/console/tests/console.test.mjs` driving Debian's Chromium
//! through playwright-core: sign in with bearer tokens made through UserService, fill the form
//! with the Node and Namespace filters, an allowed trace across the tunnel and one a policy drops
//! (table rows, a component's details, the graph with the drop highlighted), history filtered by
//! phase, retrace and delete, a view-only user refused, a live trace, a narrow window, and
//! screenshots (form, allowed result, dropped result with graph, history) written into
//! target/console-screenshots/.
//!
//! Needs root, Open vSwitch, node (20+), npm and /usr/bin/chromium (scripts/lib.sh installs
//! them); fails loudly without them, never skips.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use common::{Lab, text, topology, trace};
use traceflow_proto::v1 as pb;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Panics with the fix when node, npm or Chromium is missing.
fn require_browser_prerequisites() {
    let mut missing = Vec::new();
    for (tool, arg) in [("node", "--version"), ("npm", "--version")] {
        if Command::new(tool).arg(arg).output().is_err() {
            missing.push(tool.to_string());
        }
    }
    let chromium =
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    if !Path::new(&chromium).is_file() {
        missing.push(chromium);
    }
    assert!(
        missing.is_empty(),
        "the console tests need node 20+, npm and Debian's Chromium (missing: {missing:?}).\n\
         Fix: apt-get install -y chromium nodejs npm (scripts/lib.sh install_deps does this). \
         These tests never skip."
    );
}

/// `npm ci` when node_modules is missing, then the (incremental) console build; returns dist/.
fn build_console() -> PathBuf {
    let dir = workspace().join("manager/console");
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program).args(args).current_dir(&dir).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "{program} {args:?} in {} failed: {}",
                dir.display(),
                text(&o)
            ),
            Err(e) => panic!("cannot run {program}: {e}"),
        }
    };
    if !dir.join("node_modules/.bin/esbuild").exists() {
        run("npm", &["ci", "--no-audit", "--no-fund"]);
    }
    run("node", &["scripts/build.mjs"]);
    let dist = dir.join("dist");
    assert!(
        dist.join("index.html").is_file(),
        "no {}/index.html",
        dist.display()
    );
    dist
}

#[test]
fn console_in_chromium_against_the_two_node_lab() {
    common::require_lab_prerequisites();
    trace::require_binaries();
    require_browser_prerequisites();
    let t0 = Instant::now();
    let dist = build_console();
    eprintln!("console bundle ready in {:?}", t0.elapsed());

    let mut lab = Lab::new("con");
    lab.env.push((
        "TRACEFLOW_MANAGER_CONSOLE_DIR".into(),
        dist.display().to_string(),
    ));
    let cfg = trace::up_with_config(&mut lab, &topology("two-node-policy.yaml"));
    let url = trace::manager_url(&cfg);
    let ca = cfg.parent().map(|d| d.join("ca.pem")).unwrap_or_default();
    assert!(ca.is_file(), "{} missing", ca.display());

    // Bearer tokens for an edit and a view user, through the real UserService (as the admin).
    let rt = trace::runtime();
    let tokens: Result<(String, String, String), String> = rt.block_on(async {
        let mut api = trace::Api::connect(&cfg).await?;
        let p1_ip = trace::pod_ip(&api.wait_pods("c1", 4).await?, "default/p1", false)?;
        let token = |name: &'static str, role: pb::Role| {
            let mut users = api.users.clone();
            async move {
                users
                    .create_user(pb::CreateUserRequest {
                        name: name.into(),
                        role: role as i32,
                        bearer_token: true,
                        csr_pem: String::new(),
                        token_ttl_seconds: 0,
                    })
                    .await
                    .map(|r| r.into_inner().token)
                    .map_err(|s| format!("CreateUser {name}: {s}"))
            }
        };
        let edit = token("console-edit", pb::Role::Edit).await?;
        let view = token("console-view", pb::Role::View).await?;
        // History to page through: 20 traces p0 → p2 (the console shows 20 per page), each
        // finished before the browser starts.
        for _ in 0..20 {
            let t = api
                .create(
                    "c1",
                    trace::spec("default/p0", trace::to_pod("default/p2"), None),
                )
                .await
                .map_err(|s| format!("CreateTraceflow: {s}"))?;
            let done = api
                .watch_done(&t.uid, std::time::Duration::from_secs(30))
                .await?;
            if trace::phase(&done) != "Succeeded" {
                return Err(format!("history trace: {:#}", trace::to_json(&done)));
            }
        }
        // A trace that fails (no such destination Pod), for the history's phase filter.
        let ghost = api
            .create(
                "c1",
                trace::spec("default/p0", trace::to_pod("default/ghost"), None),
            )
            .await
            .map_err(|s| format!("CreateTraceflow: {s}"))?;
        let done = api
            .watch_done(&ghost.uid, std::time::Duration::from_secs(30))
            .await?;
        if trace::phase(&done) != "Failed" {
            return Err(format!("ghost trace: {:#}", trace::to_json(&done)));
        }
        Ok((edit, view, p1_ip))
    });
    let (edit, view, p1_ip) = match tokens {
        Ok(t) => t,
        Err(e) => panic!("{e}\n{}", lab.dump()),
    };
    assert!(
        !edit.is_empty() && !view.is_empty(),
        "CreateUser returned no token"
    );

    let shots = workspace().join("target/console-screenshots");
    if let Err(e) = std::fs::create_dir_all(&shots) {
        panic!("{}: {e}", shots.display());
    }
    for shot in ["form", "allowed", "dropped", "history"] {
        // A stale file must not stand in for one this run failed to write.
        let _ = std::fs::remove_file(shots.join(format!("{shot}.png")));
    }
    let script = workspace().join("manager/console/tests/console.test.mjs");
    let t1 = Instant::now();
    let out = Command::new("node")
        .arg(&script)
        .current_dir(workspace().join("manager/console"))
        .env("TRACEFLOW_CONSOLE_URL", &url)
        .env("TRACEFLOW_CONSOLE_CA", &ca)
        .env("TRACEFLOW_EDIT_TOKEN", &edit)
        .env("TRACEFLOW_VIEW_TOKEN", &view)
        .env("TRACEFLOW_CLUSTER", "c1")
        .env("TRACEFLOW_LAB_BIN", env!("CARGO_BIN_EXE_traceflow-lab"))
        .env("TRACEFLOW_LAB_DIR", &lab.dir)
        .env("TRACEFLOW_P1_IP", &p1_ip)
        .env("TRACEFLOW_SCREENSHOT_DIR", &shots)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run node {}: {e}", script.display()),
    };
    let output = text(&out);
    println!("{output}");
    eprintln!("browser tests ran in {:?}", t1.elapsed());
    if !out.status.success() {
        panic!(
            "browser tests failed ({}):\n{output}\n{}",
            out.status,
            lab.dump()
        );
    }
    // node:test prints its counts; all eight tests ran and none failed.
    assert!(
        output.contains("# pass 8"),
        "expected 8 passing browser tests:\n{output}"
    );
    assert!(output.contains("# fail 0"), "{output}");
    for shot in ["form", "allowed", "dropped", "history"] {
        let png = shots.join(format!("{shot}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{} missing or empty ({size} bytes)",
            png.display()
        );
    }

    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}
