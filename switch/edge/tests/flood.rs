//! A connection flood from one address: 5,000 idle sockets and 200
//! slowloris connections from 127.0.0.1, while a client on 127.0.0.2 makes
//! 50 requests. Every request is answered, and every flood socket is
//! closed by the server soon after.
//!
//! This is the attack that found the old accept loop wanting: it stopped
//! accepting when its 4,096 permits were held, so the backlog filled and
//! nobody got in, and it had no header or idle timeout, so the sockets it
//! did accept stayed open for minutes. The flood is bigger than
//! `max_connections` here (1,024), so the global cap alone would let
//! 127.0.0.1 take every slot; only the per-address cap keeps room for
//! 127.0.0.2.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{connect_from, read_response, TestServer, CAP, LOCALHOST, OTHER_LOCALHOST};
use manifold_edge::EdgeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

const IDLE_SOCKETS: usize = 5_000;
const SLOW_SOCKETS: usize = 200;
const REQUESTS: usize = 50;
/// The header and idle timeouts of the server under attack.
const TIMEOUT: Duration = Duration::from_secs(3);
/// A slowloris connection sends one more header byte this often...
const TRICKLE_EVERY: Duration = Duration::from_millis(300);
/// ...this many times at most (12 s): far past `TIMEOUT`.
const TRICKLE_BYTES: usize = 40;

/// Raises the soft limit on open files as far as `needed`; `Err` says why
/// the flood cannot run here.
fn raise_open_file_limit(needed: u64) -> Result<(), String> {
    match rlimit::increase_nofile_limit(needed) {
        Ok(limit) if limit >= needed => Ok(()),
        Ok(limit) => Err(format!(
            "the open-file limit is {limit} and the flood needs {needed}"
        )),
        Err(error) => Err(format!("the open-file limit cannot be raised: {error}")),
    }
}

/// One slowloris connection: a request line and a header, then one more
/// header byte every `TRICKLE_EVERY`, never finishing the head. Returns how
/// long the server kept it open, or `None` if it was still open after all
/// `TRICKLE_BYTES`.
async fn slowloris(stream: TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let trickle = async {
        write
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await?;
        for _ in 0..TRICKLE_BYTES {
            tokio::time::sleep(TRICKLE_EVERY).await;
            write.write_all(b"X").await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let closed = async {
        let mut chunk = [0u8; 512];
        while let Ok(read) = read.read(&mut chunk).await {
            if read == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = closed => Some(started.elapsed()),
        trickled = trickle => match trickled {
            // A failed write means the server closed it.
            Err(_) => Some(started.elapsed()),
            Ok(()) => None,
        },
    }
}

/// One idle socket: connects, reports that it is connected, then waits
/// (capped) for the server to close it. Returns whether it did.
async fn idle_socket(
    server: std::net::SocketAddr,
    connecting: Arc<Semaphore>,
    connected: mpsc::UnboundedSender<()>,
) -> bool {
    let stream = {
        // Bounded concurrency: 5,000 simultaneous SYNs would overflow the
        // listen backlog and stall in SYN retries, which tests the kernel.
        let _permit = connecting.acquire().await.unwrap();
        connect_from(LOCALHOST, server).await
    };
    let _ = connected.send(());
    let Ok(mut stream) = stream else {
        // Refused at connect: closed by the server as far as we care.
        return true;
    };
    common::closed_by_server(&mut stream, CAP + TIMEOUT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_neither_locks_out_another_nor_stays_open() {
    let options = EdgeOptions {
        header_read_timeout: TIMEOUT,
        idle_timeout: TIMEOUT,
        max_connections: 1024,
        max_connections_per_address: 256,
        ..EdgeOptions::default()
    };
    let flood = IDLE_SOCKETS + SLOW_SOCKETS;
    assert!(
        flood > options.max_connections,
        "the flood must be able to fill the global cap on its own"
    );
    // Our end of every flood socket, the server's end of those it holds,
    // and room for the test itself.
    let needed = (flood + options.max_connections + 512) as u64;
    if let Err(reason) = raise_open_file_limit(needed) {
        // CI must run it: a flood test that quietly skips proves nothing.
        assert!(
            std::env::var_os("CI").is_none(),
            "the flood test cannot run: {reason}"
        );
        eprintln!("skipping the flood test: {reason}");
        return;
    }
    let server = TestServer::start_answering(options).await;

    // Slowloris connections first, so that they are admitted (200 is under
    // the per-address cap) and it is the header deadline that must end them.
    let mut slow = Vec::with_capacity(SLOW_SOCKETS);
    for _ in 0..SLOW_SOCKETS {
        let stream = connect_from(LOCALHOST, server.address).await.unwrap();
        slow.push(tokio::spawn(slowloris(stream)));
    }
    let connecting = Arc::new(Semaphore::new(128));
    let (connected_tx, mut connected) = mpsc::unbounded_channel();
    let idle: Vec<_> = (0..IDLE_SOCKETS)
        .map(|_| {
            tokio::spawn(idle_socket(
                server.address,
                connecting.clone(),
                connected_tx.clone(),
            ))
        })
        .collect();
    drop(connected_tx);
    // Wait until every idle socket has connected: the flood is in place.
    let all_connected = async {
        for _ in 0..IDLE_SOCKETS {
            connected.recv().await.expect("an idle socket task died");
        }
    };
    tokio::time::timeout(CAP, all_connected)
        .await
        .expect("the flood could not connect within the cap");
    let flood_in_place = Instant::now();

    // Meanwhile, another address: each request on a new connection, so each
    // one has to get past the caps.
    for n in 0..REQUESTS {
        let mut stream = connect_from(OTHER_LOCALHOST, server.address)
            .await
            .unwrap_or_else(|error| panic!("request {n}: connect failed: {error}"));
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|error| panic!("request {n}: send failed: {error}"));
        let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stream))
            .await
            .ok()
            .flatten();
        assert_eq!(
            answer,
            Some((200, "ok".to_owned())),
            "request {n} from 127.0.0.2 was not answered during the flood"
        );
    }
    eprintln!(
        "{REQUESTS} requests from 127.0.0.2 answered {:?} after the flood was in place",
        flood_in_place.elapsed()
    );

    // And the flood is cleared away: refused sockets at once, admitted ones
    // by the header (slowloris) or first-request (idle) deadline.
    for (n, task) in slow.into_iter().enumerate() {
        let kept_open = task.await.unwrap();
        let kept_open =
            kept_open.unwrap_or_else(|| panic!("slowloris connection {n} was never closed"));
        assert!(
            kept_open >= TIMEOUT - Duration::from_millis(500),
            "slowloris connection {n} closed after {kept_open:?}: it was refused, not timed out"
        );
    }
    let mut still_open = 0;
    for task in idle {
        if !task.await.unwrap() {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "idle sockets the server never closed");
    server.stop().await;
}
