//! tfctl against a real manager: the two-Node lab (tests/topologies/two-node-policy.yaml, real
//! OVS, adapter, agents), every verb and output format, the exit codes (0 Succeeded, 1 Failed,
//! 2 usage / invalid spec / connection / refused), the table in a pseudo-terminal (colour and
//! the spinner, through util-linux `script`) and in a pipe (neither), contexts with a view
//! user's token.
//!
//! Needs root, Open vSwitch, `script` (bsdutils) and the workspace's binaries
//! (`cargo build --workspace --bins`); fails loudly without them, never skips.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{Lab, bin_dir, text, topology, trace};
use serde_json::Value;
use traceflow_proto::v1 as pb;

/// tfctl with `cfg` and extra environment.
fn tfctl_env(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin_dir().join("tfctl"));
    cmd.args(args)
        .env("TFCTL_CONFIG", cfg)
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run tfctl: {e}"),
    }
}

/// tfctl in a pseudo-terminal (`script -q -e -c CMD /dev/null`): stdout and stderr both go
/// to the terminal, so the captured text holds both.
fn tfctl_pty(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let quoted: Vec<String> = std::iter::once(bin_dir().join("tfctl").display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &quoted.join(" "), "/dev/null"])
        .env("TFCTL_CONFIG", cfg)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run script (util-linux, package bsdutils): {e}"),
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Records a failure unless `cond`.
fn check(failures: &mut Vec<String>, cond: bool, what: &str, o: &Output) {
    if !cond {
        failures.push(format!("{what}: exit {:?}\n{}", o.status.code(), text(o)));
    }
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// The table's rows (after the `#  NODE ...` header) split into words.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("#  NODE"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// A copy of the lab's config next to it, so contexts can be added without touching the
/// file the other helpers read.
fn copy_config(cfg: &Path) -> PathBuf {
    let copy = cfg.with_file_name("contexts.tfctl.yaml");
    if let Err(e) = std::fs::copy(cfg, &copy) {
        panic!("copy {}: {e}", cfg.display());
    }
    copy
}

#[test]
fn tfctl_every_verb_and_format_against_the_lab() {
    common::require_lab_prerequisites();
    trace::require_binaries();
    let mut lab = Lab::new("tfc");
    let cfg = trace::up_with_config(&mut lab, &topology("two-node-policy.yaml"));
    let rt = trace::runtime();
    let view_token = rt.block_on(async {
        let mut api = trace::Api::connect(&cfg).await?;
        api.wait_pods("c1", 4).await?;
        api.users
            .create_user(pb::CreateUserRequest {
                name: "tfctl-view".into(),
                role: pb::Role::View as i32,
                bearer_token: true,
                csr_pem: String::new(),
                token_ttl_seconds: 0,
            })
            .await
            .map(|r| r.into_inner().token)
            .map_err(|s| format!("CreateUser: {s}"))
    });
    let view_token = match view_token {
        Ok(t) => t,
        Err(e) => panic!("{e}\n{}", lab.dump()),
    };
    let started = std::time::Instant::now();
    let mut f: Vec<String> = Vec::new();
    let run = |args: &[&str]| tfctl_env(&cfg, args, &[]);
    let tf = |extra: &[&str]| {
        let mut a = vec!["traceflow", "--cluster", "c1"];
        a.extend_from_slice(extra);
        tfctl_env(&cfg, &a, &[])
    };

    // traceflow, default table in a pipe: no colour, no spinner, exit 0.
    let o = tf(&["-S", "default/p0", "-D", "default/p2"]);
    let table = out(&o);
    check(&mut f, o.status.code() == Some(0), "table: exit 0", &o);
    check(
        &mut f,
        !table.contains('\x1b') && !err(&o).contains('⠋'),
        "pipe: no colour, no spinner",
        &o,
    );
    check(
        &mut f,
        table.contains("Phase:     Succeeded")
            && table.contains("Path:      default/p0 -> default/p2")
            && table.contains("Duration:"),
        "table header",
        &o,
    );
    let r = rows(&table);
    // Hop order across both Nodes: sender rows first, sequence 1.., a tunnel on the way.
    let seqs: Vec<String> = r.iter().filter_map(|w| w.first().cloned()).collect();
    let want: Vec<String> = (1..=r.len()).map(|i| i.to_string()).collect();
    check(
        &mut f,
        r.len() >= 3 && seqs == want,
        "rows numbered in hop order",
        &o,
    );
    check(
        &mut f,
        r.first().is_some_and(|w| {
            w[1] == "n1"
                && w[2] == "sender"
                && w[3] == "SpoofGuard"
                && w.last().is_some_and(|x| x == "+0µs")
        }),
        "first row: n1 sender SpoofGuard +0µs",
        &o,
    );
    check(
        &mut f,
        r.iter()
            .any(|w| w.iter().any(|x| x.starts_with("tunnelDstIP="))),
        "a row with the tunnel IP",
        &o,
    );
    check(
        &mut f,
        r.last().is_some_and(|w| {
            w[1] == "n2" && w[2] == "receiver" && w.contains(&"Delivered".to_string())
        }),
        "last row: n2 receiver Delivered",
        &o,
    );
    let name = table
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    check(
        &mut f,
        name.starts_with("default-p0-to-default-p2-"),
        "trace name in the header",
        &o,
    );

    // -o wide: absolute times; -o yaml / json: antctl's object.
    let o = tf(&[
        "-S",
        "default/p0",
        "-D",
        "default/web",
        "-f",
        "tcp,tcp_dst=80",
        "-o",
        "wide",
    ]);
    check(
        &mut f,
        o.status.code() == Some(0)
            && out(&o).contains("TIME (UTC)")
            && out(&o).contains("UID:")
            && out(&o).contains("translatedDstIP="),
        "wide: time column, uid, LB translation",
        &o,
    );
    let o = tf(&["-S", "default/p0", "-D", "default/p1", "-o", "yaml"]);
    check(
        &mut f,
        o.status.code() == Some(0)
            && out(&o).starts_with("name: default-p0-to-default-p1-")
            && out(&o).contains("phase: Succeeded"),
        "yaml",
        &o,
    );
    let o = tf(&["-S", "default/p0", "-D", "default/p1", "-o", "json"]);
    check(
        &mut f,
        o.status.code() == Some(0)
            && json(&o)["phase"] == "Succeeded"
            && json(&o)["results"].is_array(),
        "json",
        &o,
    );

    // A dropped trace is a Succeeded trace (Antrea) whose last row is the red Dropped.
    let o = tfctl_pty(
        &cfg,
        &[
            "traceflow",
            "--cluster",
            "c1",
            "-S",
            "default/p0",
            "-D",
            "default/db",
        ],
        &[],
    );
    let tty = out(&o);
    check(&mut f, o.status.code() == Some(0), "pty: exit 0", &o);
    check(
        &mut f,
        tty.contains("\x1b[1;31mDropped\x1b[0m"),
        "pty: Dropped in red",
        &o,
    );
    check(
        &mut f,
        tty.contains("\x1b[32mSucceeded\x1b[0m") && tty.contains("\x1b[32mForwarded\x1b[0m"),
        "pty: phase and Forwarded in green",
        &o,
    );
    check(
        &mut f,
        tty.contains('⠋') && tty.contains("\x1b[2K"),
        "pty: spinner on stderr, line cleared",
        &o,
    );
    check(
        &mut f,
        tty.contains("AntreaClusterNetworkPolicy:deny-db") && tty.contains("drop-clients"),
        "pty: the policy that dropped",
        &o,
    );
    let o = tfctl_pty(
        &cfg,
        &[
            "traceflow",
            "--cluster",
            "c1",
            "-S",
            "default/p0",
            "-D",
            "default/db",
        ],
        &[("NO_COLOR", "1")],
    );
    check(
        &mut f,
        o.status.code() == Some(0)
            && !out(&o).contains("\x1b[1;31m")
            && !out(&o).contains("\x1b[32m")
            && out(&o).contains("Dropped"),
        "pty with NO_COLOR: no colour",
        &o,
    );
    let o = tf(&["-S", "default/p0", "-D", "default/db"]);
    check(
        &mut f,
        rows(&out(&o))
            .last()
            .is_some_and(|w| w.contains(&"Dropped".to_string()) && w[1] == "n2"),
        "pipe: dropped on n2",
        &o,
    );

    // Exit codes: 1 for a Failed trace (after printing it), 2 for a refused spec, a usage
    // error or no connection.
    let o = tf(&["-S", "default/p0", "-D", "default/ghost"]);
    check(
        &mut f,
        o.status.code() == Some(1)
            && out(&o).contains("Phase:     Failed")
            && out(&o).contains("Reason:")
            && err(&o).contains("failed: "),
        "Failed trace: exit 1, table, reason",
        &o,
    );
    let o = tf(&["-S", "default/nope", "-D", "default/p1"]);
    check(
        &mut f,
        o.status.code() == Some(2)
            && o.stdout.is_empty()
            && err(&o).contains("requested source Pod default/nope not found"),
        "invalid spec: exit 2",
        &o,
    );
    let o = tf(&["-S", "default/p0"]);
    check(
        &mut f,
        o.status.code() == Some(2) && err(&o).contains("Please provide destination"),
        "missing -D: exit 2",
        &o,
    );
    let o = run(&["list", "--phase", "Sideways"]);
    check(
        &mut f,
        o.status.code() == Some(2) && err(&o).contains("use Pending, Running, Succeeded or Failed"),
        "bad phase: exit 2",
        &o,
    );
    let dead = cfg.with_file_name("dead.tfctl.yaml");
    let _ = std::fs::write(
        &dead,
        "server: https://127.0.0.1:1\nca: ca.pem\ncert: admin.pem\nkey: admin-key.pem\n",
    );
    let o = tfctl_env(&dead, &["cluster", "list"], &[]);
    check(
        &mut f,
        o.status.code() == Some(2) && err(&o).contains("cannot connect to the manager"),
        "no manager: exit 2",
        &o,
    );

    // get: by name in every format, by uid.
    for (fmt, want) in [
        ("table", "Phase:     Succeeded"),
        ("wide", "TIME (UTC)"),
        ("yaml", "phase: Succeeded"),
        ("json", "\"phase\": \"Succeeded\""),
    ] {
        let o = run(&["get", &name, "-o", fmt]);
        check(
            &mut f,
            o.status.code() == Some(0) && out(&o).contains(want),
            &format!("get -o {fmt}"),
            &o,
        );
    }
    let uid = json(&run(&["get", &name, "-o", "json"]))["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let o = run(&["get", &uid]);
    check(
        &mut f,
        o.status.code() == Some(0) && out(&o).contains(&name),
        "get by uid",
        &o,
    );

    // list: filters and paging. Made so far: p0->p2, p0->web, p0->p1 x2, p0->db x3, p0->ghost.
    let names = |o: &Output| -> Vec<String> {
        json(o)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let o = run(&["list", "--cluster", "c1", "--phase", "Failed", "-o", "json"]);
    check(
        &mut f,
        names(&o).len() == 1 && names(&o)[0].contains("ghost"),
        "list --phase Failed",
        &o,
    );
    let o = run(&[
        "list",
        "--phase",
        "succeeded",
        "--destination",
        "default/db",
        "-o",
        "json",
    ]);
    check(
        &mut f,
        names(&o).len() == 3,
        "list --destination default/db (phase case-insensitive)",
        &o,
    );
    let o = run(&[
        "list",
        "--source",
        "default/p0",
        "--since",
        "1h",
        "-o",
        "yaml",
    ]);
    check(
        &mut f,
        o.status.code() == Some(0)
            && out(&o)
                .lines()
                .filter(|l| l.starts_with("- name: "))
                .count()
                == 8,
        "list --source --since -o yaml",
        &o,
    );
    let o = run(&["list", "--since", "1h", "--cluster", "nope", "-o", "json"]);
    check(
        &mut f,
        names(&o).is_empty(),
        "list --cluster nope: empty",
        &o,
    );
    let o = run(&["list", "--limit", "3"]);
    let token = err(&o)
        .split("--continue ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    check(
        &mut f,
        o.status.code() == Some(0)
            && out(&o).lines().count() == 4
            && out(&o).starts_with("NAME")
            && !token.is_empty(),
        "list --limit 3: a table of 3 and the next token on stderr",
        &o,
    );
    let page2 = run(&["list", "--limit", "3", "--continue", &token, "-o", "json"]);
    let first = names(&run(&["list", "--limit", "3", "-o", "json"]));
    check(
        &mut f,
        names(&page2).len() == 3 && names(&page2).iter().all(|n| !first.contains(n)),
        "list --continue: the next page",
        &page2,
    );
    let o = run(&["list", "--limit", "2", "--all", "-o", "json"]);
    check(&mut f, names(&o).len() == 8, "list --all: every page", &o);
    let o = run(&["list", "-o", "wide"]);
    check(
        &mut f,
        out(&o).contains("CREATED BY") && out(&o).contains("admin"),
        "list -o wide",
        &o,
    );

    // watch: a finished trace ends at once; exit code follows its phase.
    let o = run(&["watch", &name]);
    check(
        &mut f,
        o.status.code() == Some(0) && out(&o).contains("Succeeded") && out(&o).contains("#  NODE"),
        "watch: a line then the table",
        &o,
    );
    let ghost = names(&run(&["list", "--phase", "Failed", "-o", "json"]))
        .first()
        .cloned()
        .unwrap_or_default();
    let o = run(&["watch", &ghost, "-o", "json"]);
    check(
        &mut f,
        o.status.code() == Some(1) && json(&o)["phase"] == "Failed",
        "watch a Failed trace: exit 1",
        &o,
    );
    // watch a running one: created with --nowait, followed to its end.
    let o = tf(&[
        "-S",
        "default/p0",
        "-D",
        "default/p2",
        "--nowait",
        "-o",
        "json",
    ]);
    let fresh = json(&o)["name"].as_str().unwrap_or_default().to_string();
    let o = run(&["watch", &fresh, "-o", "yaml"]);
    check(
        &mut f,
        o.status.code() == Some(0) && out(&o).contains("phase: Succeeded"),
        "watch --nowait trace to Succeeded",
        &o,
    );

    // retrace: a new trace of the same spec; delete: gone afterwards.
    let o = run(&["retrace", &name, "-o", "json"]);
    let re = json(&o)["name"].as_str().unwrap_or_default().to_string();
    check(
        &mut f,
        o.status.code() == Some(0)
            && json(&o)["phase"] == "Succeeded"
            && !re.is_empty()
            && re != name
            && json(&o)["destination"] == "default/p2",
        "retrace",
        &o,
    );
    let o = run(&["retrace", &ghost]);
    check(
        &mut f,
        o.status.code() == Some(1),
        "retrace of a Failed trace fails again: exit 1",
        &o,
    );
    let o = run(&["delete", &re]);
    check(
        &mut f,
        o.status.code() == Some(0) && out(&o).contains("deleted"),
        "delete",
        &o,
    );
    let o = run(&["get", &re]);
    check(
        &mut f,
        o.status.code() == Some(2) && err(&o).contains("NotFound"),
        "get after delete: exit 2 NotFound",
        &o,
    );

    // clusters and inventory.
    let o = run(&["namespaces", "--cluster", "c1", "-o", "json"]);
    let namespaces = json(&o)["namespaces"]
        .as_array()
        .map_or(0, Vec::len)
        .to_string();
    let o = run(&["cluster", "list"]);
    let c1: Vec<String> = out(&o)
        .lines()
        .find(|l| l.starts_with("c1"))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    check(
        &mut f,
        c1.get(1..8)
            .is_some_and(|w| w == ["Up", "2/2", "2", &namespaces, "4", "1", "1"]),
        "cluster list: Up 2/2, 2 nodes, the namespaces, 4 pods, 1 service, 1 policy",
        &o,
    );
    let o = run(&["cluster", "get", "c1", "-o", "json"]);
    check(
        &mut f,
        json(&o)["name"] == "c1"
            && json(&o)["inventory"]["pods"] == 4
            && json(&o)["health"] == "Up",
        "cluster get -o json",
        &o,
    );
    let o = run(&["clusters", "-o", "yaml"]);
    check(
        &mut f,
        out(&o).contains("name: c1") && out(&o).contains("pods: 4"),
        "clusters -o yaml",
        &o,
    );
    let o = run(&["cluster", "get", "nope"]);
    check(
        &mut f,
        o.status.code() == Some(2),
        "cluster get nope: exit 2",
        &o,
    );
    let o = run(&["pods", "--cluster", "c1", "-n", "default", "--node", "n2"]);
    let listed = out(&o);
    let pods: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    check(&mut f, pods == ["db", "p2"], "pods --node n2", &o);
    let o = run(&["pods", "--cluster", "c1", "-o", "json"]);
    check(
        &mut f,
        json(&o)["pods"].as_array().map(Vec::len) == Some(4),
        "pods -o json",
        &o,
    );
    let o = run(&["pods", "--cluster", "c1", "-o", "wide"]);
    check(
        &mut f,
        out(&o).contains("app=db"),
        "pods -o wide: labels",
        &o,
    );
    let o = run(&["services", "--cluster", "c1", "-n", "default"]);
    check(
        &mut f,
        out(&o).contains("web") && out(&o).contains("http:80/TCP->80"),
        "services",
        &o,
    );
    let o = run(&["nodes", "--cluster", "c1", "-o", "yaml"]);
    check(
        &mut f,
        out(&o).contains("name: n1") && out(&o).contains("name: n2"),
        "nodes -o yaml",
        &o,
    );
    let o = run(&["namespaces", "--cluster", "c1"]);
    check(
        &mut f,
        out(&o).starts_with("NAME")
            && out(&o).lines().count().to_string()
                == (namespaces.parse::<usize>().unwrap_or(0) + 1).to_string(),
        "namespaces: a row each",
        &o,
    );
    let o = run(&["pods"]);
    check(
        &mut f,
        o.status.code() == Some(2) && err(&o).contains("--cluster"),
        "pods without a cluster: exit 2",
        &o,
    );

    // version, contexts with a view user's token: reads work, edits are refused with exit 2.
    let o = run(&["version"]);
    check(
        &mut f,
        out(&o).contains(&format!("Server Version: {}", env!("CARGO_PKG_VERSION"))),
        "version: server",
        &o,
    );
    let ctx = copy_config(&cfg);
    let with = |args: &[&str]| tfctl_env(&ctx, args, &[]);
    let o = with(&[
        "config",
        "set-context",
        "viewer",
        "--server",
        &trace::manager_url(&cfg),
        "--ca",
        "ca.pem",
        "--token",
        &view_token,
        "--cluster",
        "c1",
    ]);
    check(&mut f, o.status.code() == Some(0), "set-context viewer", &o);
    let o = with(&["config", "use-context", "viewer"]);
    check(&mut f, o.status.code() == Some(0), "use-context viewer", &o);
    let o = with(&["config", "get-contexts"]);
    check(
        &mut f,
        out(&o).lines().any(|l| {
            l.starts_with('*') && l.contains("viewer") && l.contains("token") && l.contains("c1")
        }) && out(&o).contains("certificate"),
        "get-contexts",
        &o,
    );
    let o = with(&["pods"]);
    check(
        &mut f,
        o.status.code() == Some(0) && out(&o).contains("p0"),
        "viewer: pods with the context's cluster",
        &o,
    );
    let o = with(&["delete", &name]);
    check(
        &mut f,
        o.status.code() == Some(2)
            && err(&o).contains("PermissionDenied")
            && err(&o).contains("ask an admin"),
        "viewer: delete refused",
        &o,
    );
    let o = with(&["traceflow", "-S", "default/p0", "-D", "default/p1"]);
    check(
        &mut f,
        o.status.code() == Some(2) && err(&o).contains("PermissionDenied"),
        "viewer: traceflow refused",
        &o,
    );
    let o = with(&["--context", "default", "get", &name, "-o", "json"]);
    check(
        &mut f,
        o.status.code() == Some(0) && json(&o)["name"] == name.as_str(),
        "--context default: the admin again",
        &o,
    );

    eprintln!("tfctl checks ran in {:?}", started.elapsed());
    if !f.is_empty() {
        panic!(
            "{} tfctl check(s) failed:\n{}\n{}",
            f.len(),
            f.join("\n\n"),
            lab.dump()
        );
    }
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}
