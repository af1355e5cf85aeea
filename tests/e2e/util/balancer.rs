//! A load balancer on loopback for the rolling-restart test, doing what nginx or a Kubernetes
//! Service does: each client connection goes to a backend whose `/-/ready` answered 200 at the
//! last probe (every 200 ms), round robin; a backend that refuses the connection is skipped
//! (nginx's `proxy_next_upstream error`). Connections are spliced whole, so a client's
//! keep-alive connection stays on one backend until either side closes it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
struct Backend {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
}

pub struct Balancer {
    pub base: String,
    backends: Arc<Mutex<Vec<Backend>>>,
    stop: Arc<AtomicBool>,
}

fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

fn probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /-/ready HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

impl Balancer {
    /// Balances over `backends` (base URLs such as `http://127.0.0.1:PORT`).
    pub fn start(backends: &[&str]) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let list: Vec<Backend> =
            backends.iter().map(|b| Backend { addr: addr_of(b), ready: Arc::new(AtomicBool::new(true)) }).collect();
        let backends = Arc::new(Mutex::new(list));
        let stop = Arc::new(AtomicBool::new(false));
        let (probed, stopping) = (backends.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let list = probed.lock().unwrap().clone();
                for b in list {
                    b.ready.store(probe(b.addr), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let (served, stopping) = (backends.clone(), stop.clone());
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let list = served.lock().unwrap().clone();
                let start = next.fetch_add(1, Ordering::Relaxed);
                // Ready backends first, then the rest (a probe may lag behind a restart).
                let mut order: Vec<&Backend> = (0..list.len()).map(|i| &list[(start + i) % list.len()]).collect();
                order.sort_by_key(|b| !b.ready.load(Ordering::Relaxed));
                let upstream =
                    order.iter().find_map(|b| TcpStream::connect_timeout(&b.addr, Duration::from_secs(1)).ok());
                match upstream {
                    Some(upstream) => splice(client, upstream),
                    None => drop(client),
                }
            }
        });
        Balancer { base, backends, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A backend restarted on a new address: new connections go there from now on.
    pub fn replace(&self, old: &str, new: &str) {
        let mut list = self.backends.lock().unwrap();
        for b in list.iter_mut() {
            if b.addr == addr_of(old) {
                *b = Backend { addr: addr_of(new), ready: Arc::new(AtomicBool::new(false)) };
            }
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(addr_of(&self.base)); // wake the accept loop
    }
}

fn splice(client: TcpStream, upstream: TcpStream) {
    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    std::thread::spawn(move || pipe(client, upstream));
    std::thread::spawn(move || pipe(u2, c2));
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
