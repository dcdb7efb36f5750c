//! A TCP proxy between a host and its server that a test can cut, like a network partition:
//! every open connection drops at once, and new ones are refused until the test heals it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy on a free loopback port; it stops when dropped.
pub struct Proxy {
    port: u16,
    cuts: watch::Sender<u64>,
    refusing: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forward every connection made to the proxy's port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (cuts, _) = watch::channel(0u64);
        let refusing = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let accept = {
            let (cuts, refusing, forwarded) = (cuts.clone(), refusing.clone(), forwarded.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is reset
                    }
                    forwarded.fetch_add(1, Ordering::SeqCst);
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            port,
            cuts,
            refusing,
            forwarded,
            accept,
        }
    }

    /// How many connections were forwarded so far (refused ones not counted).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drop every open connection and refuse new ones until [`Self::heal`].
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accept connections again.
    pub fn heal(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}
