//! What the edge's integration tests share: a real server on 127.0.0.1 with
//! a small handler, and a raw HTTP/1.1 client that can misbehave on purpose
//! (stop half way through a head, trickle a body, never read).
//!
//! Every wait here is capped: a test that would hang fails instead.

#![allow(dead_code)] // Each test binary uses a different part of this.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use manifold_edge::{read_request_body, serve, Body, BodyError, EdgeOptions, Peer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single step of a test may take before it fails.
pub const CAP: Duration = Duration::from_secs(15);

pub const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
pub const OTHER_LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// `serve` running on 127.0.0.1:0 in its own task.
pub struct TestServer {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start<H, F>(options: EdgeOptions, handler: H) -> TestServer
    where
        H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, handler, options, async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The server with [`answer`] as its handler.
    pub async fn start_answering(options: EdgeOptions) -> TestServer {
        TestServer::start(options, answer).await
    }

    /// Begins a graceful shutdown and returns `serve`'s task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("the server is running")
    }

    /// Shuts the server down and waits (capped) for `serve` to return.
    pub async fn stop(mut self) {
        let task = self.begin_shutdown();
        tokio::time::timeout(CAP, task)
            .await
            .expect("serve returned after shutdown")
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// `GET /health` → 200 `ok`; `GET /peer` → the client's IP;
/// `POST /body` → the body's length after `read_request_body`, or the
/// error: 413 `too_large`, 408 `timed_out`, 400 `unreadable`.
pub async fn answer(request: Request<Incoming>, peer: Peer) -> Response<Body> {
    match request.uri().path() {
        "/health" => text(StatusCode::OK, "ok"),
        "/peer" => text(StatusCode::OK, peer.address.ip().to_string()),
        "/body" => match read_request_body(request).await {
            Ok(body) => text(StatusCode::OK, body.len().to_string()),
            Err(BodyError::TooLarge { .. }) => text(StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Err(BodyError::TimedOut) => text(StatusCode::REQUEST_TIMEOUT, "timed_out"),
            Err(BodyError::Unreadable(_)) => text(StatusCode::BAD_REQUEST, "unreadable"),
        },
        _ => text(StatusCode::NOT_FOUND, "no such path"),
    }
}

/// A TCP connection to `server` from `from` (127.0.0.1 or 127.0.0.2).
pub async fn connect_from(from: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(CAP, socket.connect(server))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// One response read off `stream`: `(status, body)`. `None` if the server
/// closed the connection (or did not answer within [`CAP`]) first.
pub async fn read_response<R: AsyncRead + Unpin>(stream: &mut R) -> Option<(u16, String)> {
    let read = async {
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string();
        Some((status, body))
    };
    tokio::time::timeout(CAP, read).await.ok().flatten()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Sends `GET path` on `stream` (keep-alive) and reads the answer.
pub async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_response(stream).await
}

/// Waits (at most `within`) for the server to close `stream`: a read that
/// returns end of file or an error. Anything the server sends first is
/// skipped. `false` if the connection is still open after `within`.
pub async fn closed_by_server<R: AsyncRead + Unpin>(stream: &mut R, within: Duration) -> bool {
    let closed = async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, closed).await.is_ok()
}

/// Short timeouts for tests that watch them fire.
pub fn quick_options(header: Duration, idle: Duration) -> EdgeOptions {
    EdgeOptions {
        header_read_timeout: header,
        idle_timeout: idle,
        body_read_timeout: Duration::from_secs(1),
        ..EdgeOptions::default()
    }
}
