//! Hostile callers against the real binary: each abuse gets a clear status, the data directory
//! barely grows, memory stays bounded, and a normal trace still succeeds afterwards.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use tonic::{
    Code, Request,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use traceflow_proto::v1 as pb;

use super::common::*;

/// Sends and receives raw bytes, so a test can put on the wire what no client library would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Calls unary `path` with `body` as the encoded request.
async fn raw_call(
    ch: tonic::transport::Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<tonic::Status, Error> {
    let mut grpc = tonic::client::Grpc::new(ch).max_encoding_message_size(64 << 20);
    grpc.ready().await?;
    let uri = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    match grpc.unary(Request::new(body), uri, RawCodec).await {
        Ok(_) => Err(format!("{path} accepted a hostile request").into()),
        Err(s) => Ok(s),
    }
}

fn dir_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(path)? {
        let e = e?;
        let md = e.metadata()?;
        total += if md.is_dir() {
            dir_bytes(&e.path())?
        } else {
            md.len()
        };
    }
    Ok(total)
}

fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// A status is clear: short, and repeats none of the input.
fn assert_clear(s: &tonic::Status, codes: &[Code], what: &str) {
    assert!(codes.contains(&s.code()), "{what}: {s:?}");
    assert!(s.message().len() < 400, "{what}: long message");
    assert!(!s.message().contains("aaaaaaaa"), "{what}: input echoed");
}

#[tokio::test]
async fn hostile_rpcs_get_clear_statuses_and_a_normal_trace_still_succeeds() -> TestResult {
    let m = Manager::start_process().await?;
    let pid = m.pid().ok_or("no pid")?;
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    let store_before = dir_bytes(&m.dir.join("store"))?;
    let rss_before = rss_kib(pid)?;
    let admin = m.admin().await?;

    // 20 registrations with a 3 MiB cluster name: refused at decode, nothing stored.
    let huge = "a".repeat(3 << 20);
    for _ in 0..20 {
        let s =
            pb::registration_service_client::RegistrationServiceClient::new(m.channel(None).await?)
                .max_encoding_message_size(64 << 20)
                .register(pb::RegisterRequest {
                    cluster: huge.clone(),
                    token: "tfb-x".into(),
                    csr_pem: String::new(),
                })
                .await
                .err()
                .ok_or("3 MiB name accepted")?;
        assert_clear(
            &s,
            &[Code::OutOfRange, Code::ResourceExhausted],
            "3 MiB name",
        );
    }
    // Under the byte limit, a 60 kB name is refused by the name rule.
    let s = pb::registration_service_client::RegistrationServiceClient::new(m.channel(None).await?)
        .register(pb::RegisterRequest {
            cluster: "a".repeat(60_000),
            token: "tfb-x".into(),
            csr_pem: String::new(),
        })
        .await
        .err()
        .ok_or("60 kB name accepted")?;
    assert_clear(&s, &[Code::InvalidArgument], "60 kB name");

    // Oversized strings in user calls: a 60 kB trace name, filter, uid.
    let mut t = traces(admin.clone());
    let mut req = create_req("alpha");
    req.name = "a".repeat(60_000);
    let s = t
        .create_traceflow(req)
        .await
        .err()
        .ok_or("huge trace name")?;
    assert_clear(&s, &[Code::InvalidArgument], "trace name");
    let s = t
        .list_traceflows(pb::ListTraceflowsRequest {
            source: "a".repeat(60_000),
            ..Default::default()
        })
        .await
        .err()
        .ok_or("huge filter")?;
    assert_clear(&s, &[Code::InvalidArgument], "filter");
    let s = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: "a".repeat(60_000),
            name: String::new(),
        })
        .await
        .err()
        .ok_or("huge uid")?;
    assert_clear(&s, &[Code::InvalidArgument], "uid");

    // Unknown enum values.
    let s = t
        .list_traceflows(pb::ListTraceflowsRequest {
            phase: 77,
            ..Default::default()
        })
        .await
        .err()
        .ok_or("phase 77")?;
    assert_clear(&s, &[Code::InvalidArgument], "unknown phase");
    let s = pb::user_service_client::UserServiceClient::new(admin.clone())
        .create_user(pb::CreateUserRequest {
            name: "u".into(),
            role: 99,
            bearer_token: true,
            csr_pem: String::new(),
            token_ttl_seconds: 0,
        })
        .await
        .err()
        .ok_or("role 99")?;
    assert_clear(&s, &[Code::InvalidArgument], "unknown role");

    // Invalid UTF-8 in a string field (RegisterRequest.cluster = 0xff 0xfe), and 100k nested
    // groups of an unknown field: decode errors, not crashes.
    let s = raw_call(
        m.channel(None).await?,
        "/traceflow.v1.RegistrationService/Register",
        vec![0x0a, 0x02, 0xff, 0xfe],
    )
    .await?;
    assert_clear(
        &s,
        &[Code::Internal, Code::InvalidArgument],
        "invalid utf-8",
    );
    let start_group = (99u32 << 3) | 3;
    let mut nested = Vec::new();
    for _ in 0..20_000 {
        prost::encoding::encode_varint(u64::from(start_group), &mut nested);
    }
    let s = raw_call(
        m.channel(None).await?,
        "/traceflow.v1.RegistrationService/Register",
        nested,
    )
    .await?;
    assert_clear(&s, &[Code::Internal, Code::InvalidArgument], "deep nesting");

    // 10k connections opened and closed (no handshake), 200 at a time.
    let started = Instant::now();
    for _ in 0..50 {
        let mut batch = Vec::new();
        for _ in 0..200 {
            let addr = m.addr.clone();
            batch.push(tokio::spawn(async move {
                let _ = tokio::net::TcpStream::connect(addr).await;
            }));
        }
        for b in batch {
            b.await?;
        }
    }
    let churn = started.elapsed();
    eprintln!("10k connections opened and closed in {churn:?}");
    assert!(churn < Duration::from_secs(20), "{churn:?}");

    // A watch that is never read, held open through the rest.
    let created = t.create_traceflow(create_req("alpha")).await?.into_inner();
    adapter.expect_start().await?;
    let _unread = t
        .watch_traceflow(pb::WatchTraceflowRequest {
            uid: created.uid.clone(),
            name: String::new(),
        })
        .await?;

    // 1k watches from one user: the cap answers RESOURCE_EXHAUSTED, the rest stay open.
    let mut open = Vec::new();
    let mut exhausted = 0;
    for _ in 0..1000 {
        match t
            .watch_traceflow(pb::WatchTraceflowRequest {
                uid: created.uid.clone(),
                name: String::new(),
            })
            .await
        {
            Ok(s) => open.push(s),
            Err(s) => {
                assert_clear(&s, &[Code::ResourceExhausted], "watch cap");
                exhausted += 1;
            }
        }
    }
    assert_eq!(open.len() + 1, 100, "the cap is 100 watches per user");
    assert_eq!(exhausted, 901);
    drop(open);

    // Bearer-token brute force: refused, then rate limited for this address.
    let mut codes = Vec::new();
    let guessing = std::time::Instant::now();
    for i in 0..40 {
        let mut req = Request::new(pb::ListTraceflowsRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer tfu-{i:064x}").parse()?);
        let s = traces(m.channel(None).await?)
            .list_traceflows(req)
            .await
            .err()
            .ok_or("guessed token accepted")?;
        codes.push(s.code());
    }
    // The failure bucket holds a burst of 20 and refills one a second, so the guesses a
    // slow run gets to make beyond the burst are bounded by its duration.
    let unauthenticated = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    let refilled = usize::try_from(guessing.elapsed().as_secs()).unwrap_or(usize::MAX) + 1;
    assert_eq!(codes[0], Code::Unauthenticated);
    assert!(
        codes.contains(&Code::ResourceExhausted) && unauthenticated <= 20 + refilled,
        "{unauthenticated} guesses answered in {:?}: {codes:?}",
        guessing.elapsed()
    );
    // Bootstrap-token brute force (anonymous): rate limited too.
    let mut limited = false;
    for i in 0..200 {
        let r = pb::registration_service_client::RegistrationServiceClient::new(admin.clone())
            .register(pb::RegisterRequest {
                cluster: "beta".into(),
                token: format!("tfb-{i:064x}"),
                csr_pem: "x".into(),
            })
            .await;
        match r {
            Err(s) if s.code() == Code::ResourceExhausted => {
                limited = true;
                break;
            }
            Err(s) => assert_clear(&s, &[Code::Unauthenticated, Code::InvalidArgument], "guess"),
            Ok(_) => return Err("guessed bootstrap token accepted".into()),
        }
    }
    assert!(limited, "200 bootstrap guesses were never rate limited");

    // A certificate holder is not locked out by the guesses from the same address, and a
    // normal trace succeeds within its usual latency.
    let began = Instant::now();
    let tr = t.create_traceflow(create_req("alpha")).await?.into_inner();
    let started = adapter.expect_start().await?;
    assert_eq!(started.uid, tr.uid);
    adapter
        .update(&tr.uid, pb::TraceflowPhase::Succeeded)
        .await?;
    eventually_phase(&t, &tr.uid, pb::TraceflowPhase::Succeeded, "normal trace").await?;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );

    let grown = dir_bytes(&m.dir.join("store"))?.saturating_sub(store_before);
    assert!(grown < 1 << 20, "store grew by {grown} bytes");
    let rss = rss_kib(pid)?;
    assert!(
        rss < rss_before + 200 * 1024,
        "manager RSS grew from {rss_before} KiB to {rss} KiB"
    );
    Ok(())
}

/// Connections beyond the per-address cap are closed on accept, open ones keep working, and
/// closing some lets new ones in.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_their_slots_come_back() -> TestResult {
    const CAP: usize = 16;
    let m = Manager::start_process_with(&["--max-connections-per-address", "16"]).await?;
    let admin = m.admin().await?;
    let mut t = traces(admin.clone());
    t.list_traceflows(pb::ListTraceflowsRequest::default())
        .await?;
    // The admin channel holds one slot; fill the rest with connections that never handshake.
    let mut held = Vec::new();
    for _ in 1..CAP {
        held.push(tokio::net::TcpStream::connect(&m.addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One more: accepted by the kernel, closed by the manager at once (EOF, not a hang).
    let mut extra = tokio::net::TcpStream::connect(&m.addr).await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut extra, &mut buf),
    )
    .await
    .map_err(|_| "a connection over the cap was left open")?;
    assert!(matches!(read, Ok(0) | Err(_)), "over the cap: {read:?}");
    // A held one is still open (the manager waits for its handshake).
    let still = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut held[0], &mut buf),
    )
    .await;
    assert!(
        still.is_err(),
        "an admitted connection was closed: {still:?}"
    );
    // A new client cannot get in; the established one still works.
    let refused = match m.admin().await {
        Err(_) => true,
        // The close may show only on the first call.
        Ok(c) => traces(c)
            .list_traceflows(pb::ListTraceflowsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a connection over the cap got through");
    t.list_traceflows(pb::ListTraceflowsRequest::default())
        .await?;
    // Closing the held connections frees their slots.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = match m.admin().await {
            Ok(c) => traces(c)
                .list_traceflows(pb::ListTraceflowsRequest::default())
                .await
                .is_ok(),
            Err(_) => false,
        };
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err("slots never came back after the connections closed".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
