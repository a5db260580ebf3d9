//! One keep-alive HTTP/1.1 connection of the load generator.
//!
//! Each load worker owns exactly one [`Connection`] (hyper's low-level
//! client, no pool), so "N clients" means N TCP connections, each with at most
//! one request in flight: a closed loop in the strict sense.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("could not connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("the HTTP exchange failed: {0}")]
    Exchange(String),
}

/// A response as the load generator sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

pub struct Connection {
    addr: SocketAddr,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Connection, ConnectionError> {
        let connect_error = |reason: String| ConnectionError::Connect { addr, reason };
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        // Small requests must not wait for Nagle's algorithm.
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(e.to_string()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server
            // closes it; either way the worker notices on its next request.
            let _ = connection.await;
        });
        let host =
            HeaderValue::from_str(&addr.to_string()).map_err(|e| connect_error(e.to_string()))?;
        Ok(Connection { addr, host, sender })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// POSTs `body` as JSON to `path`, with `headers` (the bearer key and
    /// the signature, for an app's call), and reads the whole answer.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, ConnectionError> {
        let exchange = |e: hyper::Error| ConnectionError::Exchange(e.to_string());
        let mut request = Request::post(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            request = request.header(name, value.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ConnectionError::Exchange(e.to_string()))?;
        self.sender.ready().await.map_err(exchange)?;
        let response = self.sender.send_request(request).await.map_err(exchange)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(exchange)?
            .to_bytes();
        Ok(Answer { status, body })
    }
}
