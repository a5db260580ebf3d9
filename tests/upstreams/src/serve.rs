//! What every simulation shares: serving a router on a loopback listener
//! with the project's own edge, and JSON answers.

use std::future::Future;
use std::net::SocketAddr;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
pub use manifold_edge::{json_response as json, Body};
use manifold_edge::{serve, EdgeOptions, Peer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A simulation's server: stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Serves `handler` on `listener` until the handle is dropped.
    pub fn start<H, F>(listener: TcpListener, handler: H) -> std::io::Result<Running>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_with(listener, handler, EdgeOptions::default())
    }

    /// As [`Running::start`], with the edge's `options` (TLS, say).
    pub fn start_with<H, F>(
        listener: TcpListener,
        handler: H,
        options: EdgeOptions,
    ) -> std::io::Result<Running>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            move |request: Request<Incoming>, _peer: Peer| handler(request),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Running {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// `{"error": code}` with `status`: the error shape of the Flask-style
/// services the seeds show.
pub fn error(status: StatusCode, code: &str) -> Response<Body> {
    manifold_edge::json_response(status, &serde_json::json!({ "error": code }))
}
