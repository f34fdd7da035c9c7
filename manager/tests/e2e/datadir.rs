//! The data directory under pressure: full (a small tmpfs filled up) and read-only. Needs root
//! (mount); fails loudly without it.

use std::{io::Write, path::Path, process::Command, time::Duration};

use traceflow_proto::v1 as pb;

use super::common::*;

/// A tmpfs mounted on a directory for one test, unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Result<SmallDisk, Error> {
        std::fs::create_dir_all(path)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(path)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "mount tmpfs on {} failed (this test needs root): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Writes a 0600 file until the disk is full; returns its path.
    fn fill(&self) -> Result<std::path::PathBuf, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let filler = self.path.join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&filler)?;
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The last partial pages too.
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        Ok(filler)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_full_data_directory_refuses_writes_clearly_and_the_store_stays_intact() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let disk = SmallDisk::mount(&data, "24m")?;
    let mut m = Manager::start_in(&data).await?;
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    let mut t = traces(m.admin().await?);
    let before = t.create_traceflow(create_req("alpha")).await?.into_inner();
    adapter.expect_start().await?;
    adapter
        .update(&before.uid, pb::TraceflowPhase::Succeeded)
        .await?;
    eventually_phase(&t, &before.uid, pb::TraceflowPhase::Succeeded, "stored").await?;

    let filler = disk.fill()?;
    // Writes fail, promptly and saying why; nothing hangs.
    let mut refused = None;
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            t.create_traceflow(create_req("alpha")),
        )
        .await
        .map_err(|_| "CreateTraceflow hung on a full disk")?;
        match r {
            Err(s) => {
                refused = Some(s);
                break;
            }
            // A write may still fit in a page sled had already allocated.
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let s = refused.ok_or("20 traces created on a full disk")?;
    eprintln!("full disk: {:?} {}", s.code(), s.message());
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    assert!(
        s.message().contains("data directory") && s.message().contains("free space"),
        "the error should say what to do: {}",
        s.message()
    );
    // Reads still answer.
    assert_eq!(
        phase_now(&mut t, &before.uid).await?,
        pb::TraceflowPhase::Succeeded
    );

    // Space again, and a restart: what was stored is intact and writes work.
    std::fs::remove_file(&filler)?;
    // sled stops writing after an I/O error until it is reopened: the error said to restart.
    drop(adapter);
    m.stop().await;
    let mut m = Manager::start_in(&data).await?;
    let mut t = traces(m.admin().await?);
    assert_eq!(
        phase_now(&mut t, &before.uid).await?,
        pb::TraceflowPhase::Succeeded
    );
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    let after = t.create_traceflow(create_req("alpha")).await?.into_inner();
    assert_eq!(adapter.expect_start().await?.uid, after.uid);
    m.stop().await;
    drop(adapter);

    // Read-only: the manager refuses to start, naming the directory and the fix.
    let out = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&data)
        .output()?;
    assert!(out.status.success(), "remount ro: {out:?}");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .output(),
    )
    .await
    .map_err(|_| "the manager kept running on a read-only data directory")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains("read-only"),
        "the error should name the directory and say it is read-only: {stderr}"
    );
    Ok(())
}
