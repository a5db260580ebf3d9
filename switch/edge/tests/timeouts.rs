//! The per-connection limits, each watched firing on a real socket: the
//! head deadline, the idle deadline (and that the two are separate), the
//! body deadline and size limit, the head size limit, and the per-address
//! cap giving a slot back when a connection ends.
//!
//! Timeouts are short (hundreds of milliseconds) and every wait is capped.
//! The accept loop this crate replaced had none of these limits, so each
//! test here failed against it: its connections stayed open and its body
//! reads waited forever.

mod common;

use std::time::Duration;

use common::{
    closed_by_server, connect_from, get, quick_options, read_response, TestServer, CAP, LOCALHOST,
    OTHER_LOCALHOST,
};
use manifold_edge::EdgeOptions;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const SHORT: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_half_sent_request_line_is_cut_off_after_the_header_timeout() {
    let server = TestServer::start_answering(quick_options(SHORT, LONG)).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    stream.write_all(b"GET /hea").await.unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut stream, CAP).await, "still open");
    let waited = started.elapsed();
    assert!(
        waited >= SHORT - Duration::from_millis(50),
        "closed too early: {waited:?}"
    );
    assert!(waited < LONG, "closed by something else: {waited:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_off_all_the_same() {
    let server = TestServer::start_answering(quick_options(SHORT, LONG)).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // Each byte arrives well within the header timeout; the head as a whole
    // does not. A deadline that restarted on every read would never fire.
    let mut closed = false;
    for _ in 0..100 {
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        if closed_by_server(&mut stream, Duration::from_millis(100)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled head kept the connection open for 10 s");
    assert!(started.elapsed() < SHORT * 5, "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn a_new_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = TestServer::start_answering(quick_options(SHORT, LONG)).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut stream, CAP).await, "still open");
    assert!(started.elapsed() < LONG / 2, "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_closes_after_the_idle_timeout(
) {
    let header = Duration::from_millis(500);
    let idle = Duration::from_millis(1500);
    let server = TestServer::start_answering(quick_options(header, idle)).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    assert_eq!(get(&mut stream, "/health").await.unwrap().0, 200);
    let answered = Instant::now();

    // hyper's own header timer runs while a keep-alive connection is idle;
    // had it been set to the header timeout, this connection would close
    // here, after 500 ms.
    assert!(
        !closed_by_server(&mut stream, header * 2).await,
        "closed by the header timeout while idle"
    );
    assert!(closed_by_server(&mut stream, CAP).await, "never closed");
    let idle_for = answered.elapsed();
    assert!(
        idle_for >= idle - Duration::from_millis(100),
        "{idle_for:?}"
    );
    // Closed by the idle deadline, not by hyper's backstop (idle + header).
    assert!(
        idle_for < idle + header - Duration::from_millis(150),
        "{idle_for:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_connection_used_back_to_back_stays_open_past_the_idle_timeout() {
    let idle = Duration::from_millis(500);
    let server = TestServer::start_answering(quick_options(SHORT, idle)).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let started = Instant::now();
    // Ten requests 200 ms apart: two seconds in all, four idle timeouts,
    // but never 500 ms of quiet.
    for n in 0..10 {
        let answer = get(&mut stream, "/health").await;
        assert_eq!(answer.map(|a| a.0), Some(200), "request {n} not answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() > idle * 3);
    server.stop().await;
}

/// Sends a POST to `/body` announcing `length` bytes, then writes `first`
/// at once and one more byte every `every`, while reading the answer.
async fn trickle_body(
    server: &TestServer,
    length: usize,
    first: usize,
    every: Duration,
) -> Option<(u16, String)> {
    let stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!("POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
    write.write_all(head.as_bytes()).await.unwrap();
    write.write_all(&vec![b'a'; first]).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in first..length {
            tokio::time::sleep(every).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
        // Dropping the write half would half-close the connection, which
        // hyper takes as the client leaving; hold it until the answer is in.
        std::future::pending::<()>().await;
    });
    let answer = read_response(&mut read).await;
    trickle.abort();
    answer
}

#[tokio::test]
async fn a_body_that_trickles_past_its_deadline_is_refused_as_timed_out() {
    let options = EdgeOptions {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: LONG,
        body_read_timeout: Duration::from_secs(1),
        ..EdgeOptions::default()
    };
    let server = TestServer::start_answering(options).await;
    let started = Instant::now();
    // 100 bytes at 10 a second: ten seconds, past the one-second deadline.
    // The header timeout (300 ms) must not cut the body short: the head was
    // complete, and the body has its own deadline.
    let answer = trickle_body(&server, 100, 10, Duration::from_millis(100)).await;
    assert_eq!(answer, Some((408, "timed_out".to_owned())));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_within_its_deadline_is_read_whole() {
    let options = EdgeOptions {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_secs(5),
        ..EdgeOptions::default()
    };
    let server = TestServer::start_answering(options).await;
    // Slower than the header timeout, well within the body's.
    let answer = trickle_body(&server, 20, 10, Duration::from_millis(60)).await;
    assert_eq!(answer, Some((200, "20".to_owned())));
    server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_as_too_large() {
    let options = EdgeOptions {
        max_body_bytes: 1024,
        ..EdgeOptions::default()
    };
    let server = TestServer::start_answering(options).await;

    // Declared too large: refused before it is read.
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let mut request = b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'a'; 2000]);
    stream.write_all(&request).await.unwrap();
    assert_eq!(
        read_response(&mut stream).await,
        Some((413, "too_large".to_owned()))
    );

    // Chunked, so only counting finds out.
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let mut request =
        b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"1f4\r\n");
        request.extend_from_slice(&[b'a'; 500]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    assert_eq!(
        read_response(&mut stream).await,
        Some((413, "too_large".to_owned()))
    );

    // Exactly the limit is fine.
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let mut request = b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'a'; 1024]);
    stream.write_all(&request).await.unwrap();
    assert_eq!(
        read_response(&mut stream).await,
        Some((200, "1024".to_owned()))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_head_over_the_size_limit_is_refused() {
    let options = EdgeOptions {
        max_header_bytes: 4 * 1024,
        ..EdgeOptions::default()
    };
    let server = TestServer::start_answering(options).await;
    let mut stream = connect_from(LOCALHOST, server.address).await.unwrap();
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(8 * 1024)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await.map(|a| a.0), Some(431));
    server.stop().await;
}

#[tokio::test]
async fn the_per_address_cap_refuses_the_extra_connection_and_frees_a_slot_when_one_ends() {
    let options = EdgeOptions {
        max_connections_per_address: 2,
        ..EdgeOptions::default()
    };
    let server = TestServer::start_answering(options).await;
    let mut first = connect_from(LOCALHOST, server.address).await.unwrap();
    let mut second = connect_from(LOCALHOST, server.address).await.unwrap();
    // Answered requests prove both were admitted before the third arrives.
    assert_eq!(get(&mut first, "/health").await.unwrap().0, 200);
    assert_eq!(get(&mut second, "/health").await.unwrap().0, 200);

    let mut third = connect_from(LOCALHOST, server.address).await.unwrap();
    assert!(
        closed_by_server(&mut third, CAP).await,
        "a third connection from one address was kept"
    );

    // Another address is not affected, and the handler sees who it is.
    let mut other = connect_from(OTHER_LOCALHOST, server.address).await.unwrap();
    assert_eq!(
        get(&mut other, "/peer").await,
        Some((200, "127.0.0.2".to_owned()))
    );

    // When a connection ends, its slot comes back. The server learns of the
    // close asynchronously, so try again until it has (capped).
    drop(first);
    let deadline = Instant::now() + CAP;
    loop {
        let mut again = connect_from(LOCALHOST, server.address).await.unwrap();
        if get(&mut again, "/health").await.map(|a| a.0) == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
