//! An OpenFlow 1.5 controller connection to one bridge (`<rundir>/<bridge>.mgmt`).
//!
//! ```text
//!  callers ──request/transact/bundle/send──▶ writer task ──▶ socket ──▶ ovs-vswitchd
//!     ▲  (oneshot per xid)                                                    │
//!     └──────────── reader task ◀─────────────────────────────────────────────┘
//!                    ├─ echo request → echo reply (answered here, never surfaced)
//!                    ├─ reply / error with a pending xid → that caller
//!                    └─ packet-in → PacketIn channel (bounded; backpressure to the socket)
//! ```
//!
//! Contract: after [`Switch::connect`] returns, version 1.5 is negotiated, the features are
//! known and `miss_send_len` is `OFPCML_NO_BUFFER`, so packet-ins carry whole packets. When the
//! connection dies, every pending call fails with [`OfError::Disconnected`] and
//! [`Switch::closed`] resolves; reconnecting is the caller's job (see `pipeline::run`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::OfError;
use super::action::NO_BUFFER;
use super::connection::{FrameReader, write_message};
use super::message::{
    BUNDLE_ATOMIC, BUNDLE_ORDERED, BundleAdd, BundleControl, ErrorMsg, Features, Message, PacketIn,
    bundle_ctrl, hello_allows_of15,
};

/// How long a request waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Packet-ins buffered between the reader task and the consumer.
const PACKET_IN_QUEUE: usize = 8192;

enum Pending {
    /// A request awaiting exactly one reply (or error).
    Reply(oneshot::Sender<Result<Message, ErrorMsg>>),
    /// A message with no reply of its own; errors are collected until the closing barrier.
    Collect(Arc<Mutex<Vec<ErrorMsg>>>),
}

type PendingMap = Arc<Mutex<HashMap<u32, Pending>>>;

/// A handle to a connected bridge; cheap to clone.
#[derive(Clone)]
pub struct Switch {
    out: mpsc::Sender<Bytes>,
    pending: PendingMap,
    xid: Arc<AtomicU32>,
    closed: CancellationToken,
    features: Features,
}

impl Switch {
    /// Connects to the bridge's management socket and completes the handshake.
    ///
    /// Returns the handle and the stream of packet-ins. Errors: the socket cannot be opened,
    /// the switch does not offer OpenFlow 1.5, or it does not answer in time.
    pub async fn connect(path: &Path) -> Result<(Self, mpsc::Receiver<PacketIn>), OfError> {
        let stream = UnixStream::connect(path).await?;
        let (rd, mut wr) = stream.into_split();
        let mut reader = FrameReader::new(rd);

        write_message(&mut wr, 0, &Message::hello()).await?;
        let hs = async {
            // The switch's hello comes first; anything else before it is a protocol error.
            match reader.read().await? {
                Some((h, Message::Hello { versions })) => {
                    if !hello_allows_of15(h.version, versions.as_deref()) {
                        return Err(OfError::Version(h.version));
                    }
                }
                Some((_, other)) => {
                    return Err(OfError::Protocol(format!(
                        "expected hello, got type {}",
                        other.kind()
                    )));
                }
                None => return Err(OfError::Disconnected),
            }
            write_message(&mut wr, 1, &Message::FeaturesRequest).await?;
            loop {
                match reader.read().await? {
                    Some((_, Message::FeaturesReply(f))) => return Ok(f),
                    Some((h, Message::EchoRequest(d))) => {
                        write_message(&mut wr, h.xid, &Message::EchoReply(d)).await?;
                    }
                    Some((_, Message::Error(e))) => return Err(OfError::Switch(e)),
                    Some(_) => {}
                    None => return Err(OfError::Disconnected),
                }
            }
        };
        let features = tokio::time::timeout(REPLY_TIMEOUT, hs)
            .await
            .map_err(|_| OfError::Timeout)??;
        write_message(
            &mut wr,
            2,
            &Message::SetConfig {
                flags: 0,
                miss_send_len: NO_BUFFER,
            },
        )
        .await?;

        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(4096);
        let (pin_tx, pin_rx) = mpsc::channel(PACKET_IN_QUEUE);
        let pending: PendingMap = Arc::default();
        let closed = CancellationToken::new();

        // Writer: the only owner of the write half, so messages from concurrent callers are
        // never interleaved mid-frame.
        let wclosed = closed.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = wclosed.cancelled() => break,
                    next = out_rx.recv() => {
                        let Some(bytes) = next else { break };
                        if let Err(error) = wr.write_all(&bytes).await {
                            debug!(%error, "openflow write failed");
                            wclosed.cancel();
                            break;
                        }
                    }
                }
            }
        });

        let rpending = pending.clone();
        let rclosed = closed.clone();
        let echo_out = out_tx.clone();
        tokio::spawn(async move {
            let result = read_loop(&mut reader, &rpending, &echo_out, &pin_tx, &rclosed).await;
            if let Err(error) = result {
                warn!(%error, "openflow connection failed");
            }
            rclosed.cancel();
            // Dropping the senders wakes every waiter with Disconnected.
            if let Ok(mut p) = rpending.lock() {
                p.clear();
            }
        });

        let sw = Self {
            out: out_tx,
            pending,
            xid: Arc::new(AtomicU32::new(16)),
            closed,
            features,
        };
        Ok((sw, pin_rx))
    }

    /// What the switch said in its features reply.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Resolves once the connection is gone.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Closes the connection (both tasks stop).
    pub fn close(&self) {
        self.closed.cancel();
    }

    fn next_xid(&self) -> u32 {
        self.xid.fetch_add(1, Ordering::Relaxed)
    }

    fn register(&self, xid: u32, p: Pending) {
        if let Ok(mut m) = self.pending.lock() {
            m.insert(xid, p);
        }
    }

    fn unregister(&self, xid: u32) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(&xid);
        }
    }

    async fn write(&self, xid: u32, msg: &Message) -> Result<(), OfError> {
        if self.closed.is_cancelled() {
            return Err(OfError::Disconnected);
        }
        let mut buf = BytesMut::new();
        msg.encode(xid, &mut buf);
        self.out
            .send(buf.freeze())
            .await
            .map_err(|_| OfError::Disconnected)
    }

    /// Sends a message that has no reply (packet-out). A later error for it is logged.
    pub async fn send(&self, msg: &Message) -> Result<(), OfError> {
        self.write(self.next_xid(), msg).await
    }

    /// Sends a request and waits for its reply; an `OFPT_ERROR` for it is [`OfError::Switch`].
    pub async fn request(&self, msg: &Message) -> Result<Message, OfError> {
        let xid = self.next_xid();
        let (tx, rx) = oneshot::channel();
        self.register(xid, Pending::Reply(tx));
        if let Err(e) = self.write(xid, msg).await {
            self.unregister(xid);
            return Err(e);
        }
        let reply = tokio::time::timeout(REPLY_TIMEOUT, rx).await;
        self.unregister(xid);
        match reply {
            Err(_) => Err(OfError::Timeout),
            Ok(Err(_)) => Err(OfError::Disconnected),
            Ok(Ok(Err(e))) => Err(OfError::Switch(e)),
            Ok(Ok(Ok(m))) => Ok(m),
        }
    }

    /// Round trip: everything sent before has been processed when this returns.
    pub async fn barrier(&self) -> Result<(), OfError> {
        match self.request(&Message::BarrierRequest).await? {
            Message::BarrierReply => Ok(()),
            other => Err(OfError::Protocol(format!(
                "barrier answered with type {}",
                other.kind()
            ))),
        }
    }

    /// Sends `msgs` in order followed by a barrier; fails with the first error the switch
    /// reported for any of them. Not atomic: earlier messages stay applied.
    pub async fn transact(&self, msgs: &[Message]) -> Result<(), OfError> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut xids = Vec::with_capacity(msgs.len());
        let mut result = Ok(());
        for m in msgs {
            let xid = self.next_xid();
            self.register(xid, Pending::Collect(errors.clone()));
            xids.push(xid);
            if let Err(e) = self.write(xid, m).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = self.barrier().await;
        }
        for x in xids {
            self.unregister(x);
        }
        result?;
        first_error(&errors)
    }

    /// Applies `msgs` atomically and in order as one OpenFlow bundle: either every message
    /// takes effect or none does.
    pub async fn bundle(&self, bundle_id: u32, msgs: &[Message]) -> Result<(), OfError> {
        let flags = BUNDLE_ATOMIC | BUNDLE_ORDERED;
        let ctl = |kind| {
            Message::BundleControl(BundleControl {
                bundle_id,
                kind,
                flags,
            })
        };
        expect_bundle_reply(
            self.request(&ctl(bundle_ctrl::OPEN_REQUEST)).await?,
            bundle_ctrl::OPEN_REPLY,
        )?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut xids = Vec::with_capacity(msgs.len());
        let mut sent = Ok(());
        for m in msgs {
            let xid = self.next_xid();
            self.register(xid, Pending::Collect(errors.clone()));
            xids.push(xid);
            let add = Message::BundleAdd(BundleAdd {
                bundle_id,
                flags,
                message: Box::new(m.clone()),
            });
            if let Err(e) = self.write(xid, &add).await {
                sent = Err(e);
                break;
            }
        }
        let commit = match sent {
            Ok(()) => self.request(&ctl(bundle_ctrl::COMMIT_REQUEST)).await,
            Err(e) => Err(e),
        };
        for x in xids {
            self.unregister(x);
        }
        match commit {
            Ok(reply) => {
                expect_bundle_reply(reply, bundle_ctrl::COMMIT_REPLY)?;
                first_error(&errors)
            }
            Err(OfError::Switch(commit_err)) => {
                // The per-message error explains the commit failure better than MSG_FAILED.
                first_error(&errors)?;
                Err(OfError::Switch(commit_err))
            }
            Err(e) => Err(e),
        }
    }
}

fn expect_bundle_reply(reply: Message, want: u16) -> Result<(), OfError> {
    match reply {
        Message::BundleControl(b) if b.kind == want => Ok(()),
        other => Err(OfError::Protocol(format!(
            "unexpected bundle reply type {}",
            other.kind()
        ))),
    }
}

fn first_error(errors: &Mutex<Vec<ErrorMsg>>) -> Result<(), OfError> {
    let first = errors.lock().ok().and_then(|mut e| {
        if e.is_empty() {
            None
        } else {
            Some(e.remove(0))
        }
    });
    match first {
        Some(e) => Err(OfError::Switch(e)),
        None => Ok(()),
    }
}

async fn read_loop(
    reader: &mut FrameReader<tokio::net::unix::OwnedReadHalf>,
    pending: &PendingMap,
    out: &mpsc::Sender<Bytes>,
    packet_ins: &mpsc::Sender<PacketIn>,
    closed: &CancellationToken,
) -> Result<(), OfError> {
    loop {
        let next = tokio::select! {
            _ = closed.cancelled() => return Ok(()),
            next = reader.read() => next?,
        };
        let Some((header, msg)) = next else {
            return Ok(());
        };
        match msg {
            Message::EchoRequest(data) => {
                let mut buf = BytesMut::new();
                Message::EchoReply(data).encode(header.xid, &mut buf);
                if out.send(buf.freeze()).await.is_err() {
                    return Ok(());
                }
            }
            Message::PacketIn(mut p) => {
                p.received_micros =
                    crate::trace::observe::unix_micros(std::time::SystemTime::now());
                if packet_ins.send(p).await.is_err() {
                    debug!("packet-in dropped: no consumer");
                }
            }
            Message::Error(e) => {
                let entry = pending
                    .lock()
                    .ok()
                    .and_then(|mut m| match m.remove(&header.xid) {
                        Some(Pending::Collect(c)) => {
                            // Keep the registration: a later error for the same xid is possible.
                            m.insert(header.xid, Pending::Collect(c.clone()));
                            Some(Pending::Collect(c))
                        }
                        other => other,
                    });
                match entry {
                    Some(Pending::Reply(tx)) => {
                        let _ = tx.send(Err(e));
                    }
                    Some(Pending::Collect(c)) => {
                        if let Ok(mut v) = c.lock() {
                            v.push(e);
                        }
                    }
                    None => warn!(xid = header.xid, error = %e, "unsolicited openflow error"),
                }
            }
            Message::PacketOut(_) | Message::FlowMod(_) | Message::GroupMod(_) => {
                debug!(
                    kind = msg.kind(),
                    "ignoring controller-to-switch message from switch"
                );
            }
            reply => {
                let entry = pending
                    .lock()
                    .ok()
                    .and_then(|mut m| match m.remove(&header.xid) {
                        Some(Pending::Reply(tx)) => Some(tx),
                        Some(other) => {
                            m.insert(header.xid, other);
                            None
                        }
                        None => None,
                    });
                if let Some(tx) = entry {
                    let _ = tx.send(Ok(reply));
                } else {
                    debug!(kind = reply.kind(), xid = header.xid, "unsolicited message");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovs::openflow::message::{ErrorType, PacketIn};
    use crate::ovs::openflow::oxm::{Match, Oxm};
    use crate::ovs::openflow::{FlowMod, frame::Header};
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, xid: u32, m: &Message) {
        let mut b = BytesMut::new();
        m.encode(xid, &mut b);
        w.write_all(&b).await.expect("fake switch write");
    }

    async fn recv(r: &mut FrameReader<tokio::net::unix::OwnedReadHalf>) -> (Header, Message) {
        r.read()
            .await
            .expect("fake switch read")
            .unwrap_or_else(|| panic!("client closed"))
    }

    /// A scripted switch on a unix socket: handshake, echo, packet-in, barrier, errors, close.
    #[tokio::test]
    async fn client_against_a_scripted_switch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("br-int.mgmt");
        let listener = UnixListener::bind(&path).unwrap();
        let switch = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = FrameReader::new(r);
            send(
                &mut w,
                1,
                &Message::Hello {
                    versions: Some(vec![0x40 | 0x10]),
                },
            )
            .await;
            let (h, m) = recv(&mut r).await;
            assert_eq!((h.version, m), (6, Message::hello()));
            let (h, m) = recv(&mut r).await;
            assert_eq!(m, Message::FeaturesRequest);
            let features = Features {
                datapath_id: 42,
                n_buffers: 0,
                n_tables: 254,
                auxiliary_id: 0,
                capabilities: 0x4f,
            };
            send(&mut w, h.xid, &Message::FeaturesReply(features)).await;
            let (_, m) = recv(&mut r).await;
            assert_eq!(
                m,
                Message::SetConfig {
                    flags: 0,
                    miss_send_len: 0xffff
                },
                "whole packets"
            );
            // The switch probes the controller; the client must answer by itself.
            send(&mut w, 77, &Message::EchoRequest(vec![1, 2, 3])).await;
            let (h, m) = recv(&mut r).await;
            assert_eq!((h.xid, m), (77, Message::EchoReply(vec![1, 2, 3])));
            let pin = PacketIn {
                buffer_id: u32::MAX,
                total_len: 3,
                reason: 1,
                table_id: 26,
                cookie: 0,
                fields: Match::new().with(Oxm::in_port(3)),
                data: vec![9, 9, 9],
                received_micros: 0,
            };
            send(&mut w, 0, &Message::PacketIn(pin)).await;
            // transact: a flow-mod the switch rejects, then the barrier.
            let (fm, _) = recv(&mut r).await;
            let (b, m) = recv(&mut r).await;
            assert_eq!(m, Message::BarrierRequest);
            let err = ErrorMsg {
                kind: ErrorType::BadMatch,
                code: 9,
                data: vec![],
            };
            send(&mut w, fm.xid, &Message::Error(err)).await;
            send(&mut w, b.xid, &Message::BarrierReply).await;
            // A plain barrier succeeds; an unknown message type on the way is ignored.
            let (b, _) = recv(&mut r).await;
            send(
                &mut w,
                0,
                &Message::Unknown {
                    version: 6,
                    kind: 12,
                    body: vec![0; 8],
                },
            )
            .await;
            send(&mut w, b.xid, &Message::BarrierReply).await;
            // Then the switch goes away.
        });

        let (sw, mut pins) = Switch::connect(&path).await.expect("connect");
        assert_eq!(sw.features().datapath_id, 42);
        let pin = tokio::time::timeout(Duration::from_secs(5), pins.recv())
            .await
            .unwrap_or_else(|_| panic!("no packet-in"))
            .unwrap_or_else(|| panic!("packet-in channel closed"));
        assert_eq!(
            (pin.table_id, pin.fields.in_port(), pin.data.as_slice()),
            (26, Some(3), &[9u8, 9, 9][..])
        );
        assert!(pin.received_micros > 0, "stamped when read");
        let bad = Message::FlowMod(FlowMod::add(0, 1, 0, Match::new(), vec![]));
        match sw.transact(&[bad]).await {
            Err(OfError::Switch(e)) => assert_eq!((e.kind, e.code), (ErrorType::BadMatch, 9)),
            other => panic!("expected the switch's error, got {other:?}"),
        }
        sw.barrier().await.expect("barrier");
        switch.await.expect("fake switch");
        tokio::time::timeout(Duration::from_secs(5), sw.closed())
            .await
            .unwrap_or_else(|_| panic!("closed() did not resolve after the switch went away"));
        assert!(matches!(sw.barrier().await, Err(OfError::Disconnected)));
    }

    #[tokio::test]
    async fn a_switch_without_openflow_15_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("br-int.mgmt");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (_r, mut w) = s.into_split();
            // OpenFlow 1.3 only.
            send(
                &mut w,
                1,
                &Message::Hello {
                    versions: Some(vec![1 << 4]),
                },
            )
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        match Switch::connect(&path).await {
            Err(e @ OfError::Version(_)) => assert!(e.to_string().contains("OpenFlow15")),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("connected to an OpenFlow 1.3 switch"),
        }
    }
}
