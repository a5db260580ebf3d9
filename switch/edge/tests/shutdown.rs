//! Graceful shutdown: an in-flight request still gets its answer, idle
//! connections are closed at once, and a request that outlives the grace
//! period does not hold shutdown hostage.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{closed_by_server, connect_from, get, read_response, TestServer, CAP, LOCALHOST};
use http::Response;
use http_body_util::Full;
use manifold_edge::EdgeOptions;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// A server whose `/slow` tells `started` it has begun, then answers
/// `finished` only when `release` is notified; other paths as usual.
async fn server_with_slow_path(
    options: EdgeOptions,
) -> (TestServer, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let handler = {
        let release = release.clone();
        move |request: http::Request<hyper::body::Incoming>, peer| {
            let started = started_tx.clone();
            let release = release.clone();
            async move {
                if request.uri().path() != "/slow" {
                    return common::answer(request, peer).await;
                }
                let _ = started.send(());
                release.notified().await;
                Response::new(Full::new(Bytes::from_static(b"finished")))
            }
        }
    };
    (TestServer::start(options, handler).await, started, release)
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let (mut server, mut started, release) = server_with_slow_path(EdgeOptions::default()).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(CAP, started.recv())
        .await
        .expect("the request reached the handler");

    let mut serving = server.begin_shutdown();
    // `serve` waits for the request rather than returning under it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut serving)
            .await
            .is_err(),
        "serve returned with a request in flight"
    );
    release.notify_one();
    assert_eq!(
        read_response(&mut stream).await,
        Some((200, "finished".to_owned()))
    );
    // Its connection closes after the answer: no keep-alive while draining.
    assert!(closed_by_server(&mut stream, CAP).await);
    tokio::time::timeout(CAP, serving)
        .await
        .expect("serve returned once the request was answered")
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    // The idle timeout (two minutes) is not what closes it.
    let server = TestServer::start_answering(EdgeOptions::default()).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    assert_eq!(get(&mut stream, "/health").await.unwrap().0, 200);
    let stopped = tokio::spawn(server.stop());
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    tokio::time::timeout(CAP, stopped).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_a_request_that_outlives_the_grace_period() {
    let grace = Duration::from_millis(500);
    let options = EdgeOptions {
        shutdown_grace: grace,
        ..EdgeOptions::default()
    };
    // `release` is never notified: the handler hangs.
    let (mut server, mut started, _release) = server_with_slow_path(options).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(CAP, started.recv())
        .await
        .expect("the request reached the handler");

    let shutting_down = Instant::now();
    tokio::time::timeout(CAP, server.begin_shutdown())
        .await
        .expect("serve returned after the grace period")
        .unwrap();
    assert!(shutting_down.elapsed() >= grace - Duration::from_millis(50));
    // The hung request's connection was dropped, unanswered, rather than
    // left open behind a `serve` that has returned.
    assert!(closed_by_server(&mut stream, Duration::from_secs(2)).await);
}
