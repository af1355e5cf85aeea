//! A fault-injecting TCP proxy on loopback (issue 27): put between Larder and the bucket
//! (SeaweedFS) or the upstream index, it passes bytes through untouched (S3 signatures stay
//! valid) until told to misbehave: add latency, answer every request with an error status,
//! reset connections, stall or cut a response mid-body. It counts the requests it saw, so a test can tell backed-off retries from a retry storm.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Bytes pass through untouched.
    None,
    /// Each chunk the client sends waits this long before it is passed on.
    Latency(Duration),
    /// Every request is answered with this status line, headers and body, then the connection
    /// is closed (503 SlowDown, 500, 429 with Retry-After).
    Answer { status: &'static str, headers: Vec<(&'static str, String)>, body: String },
    /// Every connection is reset as soon as it is accepted.
    Reset,
    /// Responses stop after this many bytes: the connection stays open, silent.
    Stall(usize),
    /// Response bodies are cut after this many bytes (counted after the response head): the
    /// connection is closed mid-body. Answers without a body (304) pass whole.
    Cut(usize),
}

impl Fault {
    /// The S3 error a throttled bucket sends.
    pub fn slow_down() -> Fault {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".to_string();
        Fault::Answer { status: "503 Slow Down", headers: vec![("Content-Type", "application/xml".into())], body }
    }

    pub fn internal_error() -> Fault {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected</Message></Error>".to_string();
        Fault::Answer {
            status: "500 Internal Server Error",
            headers: vec![("Content-Type", "application/xml".into())],
            body,
        }
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Fault {
        Fault::Answer {
            status: "429 Too Many Requests",
            headers: vec![("Retry-After", retry_after_secs.to_string())],
            body: "slow down".into(),
        }
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicU64>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FaultProxy {
    /// A proxy to `target` (a loopback `host:port`).
    pub fn start(target: SocketAddr) -> FaultProxy {
        let fault = Arc::new(Mutex::new(Fault::None));
        let requests = Arc::new(AtomicU64::new(0));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (f, r) = (fault.clone(), requests.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            let fault = f.lock().unwrap().clone();
                            tokio::spawn(serve(client, target, fault, f.clone(), r.clone()));
                        }
                        _ = &mut shutdown_rx => break,
                    }
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        FaultProxy { addr, fault, requests, _shutdown: shutdown_tx }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, new connections (and, for latency and stalls, traffic on open ones) get `fault`.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Requests seen so far (request lines from clients, and requests answered by a fault).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Request lines start with a method; counting them in the client's bytes is exact for the
/// bodies these tests send (blobs of arbitrary bytes could fake one: a small overcount).
fn count_requests(buf: &[u8], requests: &AtomicU64) {
    for method in [&b"GET /"[..], b"PUT /", b"POST /", b"HEAD /", b"DELETE /"] {
        let n = buf.windows(method.len()).filter(|w| *w == method).count();
        requests.fetch_add(n as u64, Ordering::SeqCst);
    }
}

async fn serve(client: TcpStream, target: SocketAddr, fault: Fault, live: Arc<Mutex<Fault>>, requests: Arc<AtomicU64>) {
    if fault == Fault::Reset {
        requests.fetch_add(1, Ordering::SeqCst);
        // Zero linger: the close is a reset (RST), and nothing blocks on it.
        #[allow(deprecated)]
        let _ = client.set_linger(Some(Duration::ZERO));
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else { return };
    let (mut cr, cw) = client.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let (mut sr, mut sw) = server.into_split();
    // Client to server: every fault is read again per chunk, so connections a client keeps
    // alive get it too (a pooled connection is how most requests travel).
    let (up_live, up_cw) = (live.clone(), cw.clone());
    let upward = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            count_requests(&buf[..n], &requests);
            let fault = up_live.lock().unwrap().clone();
            match fault {
                Fault::Reset => return,
                Fault::Answer { status, headers, body } => {
                    let mut resp =
                        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                    for (k, v) in headers {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    resp.push_str(&body);
                    let mut w = up_cw.lock().await;
                    let _ = w.write_all(resp.as_bytes()).await;
                    let _ = w.shutdown().await;
                    drop(w);
                    // Drain what the client still sends, so it reads the answer, not a reset.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while matches!(cr.read(&mut buf).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    return;
                }
                Fault::Latency(d) => tokio::time::sleep(d).await,
                _ => {}
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    // Server to client: stalls and cuts count the bytes since the fault was first seen here.
    let downward = async move {
        let mut buf = vec![0u8; 16 * 1024];
        // (bytes passed since the fault began, the response head so far, its length once known)
        let mut since: Option<(usize, Vec<u8>, Option<usize>)> = None;
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let fault = live.lock().unwrap().clone();
            let allowed = match fault {
                Fault::Stall(k) | Fault::Cut(k) => {
                    let (sent, head, head_len) = since.get_or_insert((0, Vec::new(), None));
                    if head_len.is_none() {
                        head.extend_from_slice(&buf[..n]);
                        *head_len = head.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
                    }
                    let allowed = match fault {
                        Fault::Cut(_) => head_len.map_or(usize::MAX, |h| h + k),
                        _ => k,
                    };
                    let room = allowed.saturating_sub(*sent);
                    *sent += n;
                    (n > room).then_some(room)
                }
                _ => {
                    since = None;
                    None
                }
            };
            let mut w = cw.lock().await;
            match allowed {
                None => {
                    if w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                Some(room) => {
                    let _ = w.write_all(&buf[..room]).await;
                    drop(w);
                    // A stall holds the connection open, silent, until the fault is lifted;
                    // a cut closes it at once. Either way the reader never gets the rest.
                    while matches!(&*live.lock().unwrap(), Fault::Stall(_)) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    return;
                }
            }
        }
        let _ = cw.lock().await.shutdown().await;
    };
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
    }
}
