//! `AuthFailureLimiter` on tokio's paused clock: locking, unlocking,
//! windows, per-address counting and the bound on memory.

use std::net::IpAddr;
use std::time::Duration;

use manifold_edge::{AuthFailureLimiter, AuthFailureLimits, Locked};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn limiter(max_failures: u32, max_tracked_addresses: usize) -> AuthFailureLimiter {
    AuthFailureLimiter::new(AuthFailureLimits {
        max_failures,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(60),
        max_tracked_addresses,
    })
}

async fn advance(secs: f64) {
    tokio::time::advance(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn max_failures_in_a_window_lock_the_address_for_the_lockout() {
    let limiter = limiter(3, 100);
    let guesser = ip("203.0.113.7");
    for _ in 0..2 {
        limiter.record_failure(guesser);
        assert_eq!(limiter.check(guesser), Ok(()));
    }
    limiter.record_failure(guesser);
    assert_eq!(
        limiter.check(guesser),
        Err(Locked {
            retry_after_secs: 60
        })
    );
    // Retry-After counts down and rounds up to whole seconds.
    advance(59.5).await;
    assert_eq!(
        limiter.check(guesser),
        Err(Locked {
            retry_after_secs: 1
        })
    );
    advance(0.5).await;
    assert_eq!(limiter.check(guesser), Ok(()));

    // After the lockout the address starts afresh: one failure is not a lock.
    limiter.record_failure(guesser);
    assert_eq!(limiter.check(guesser), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn failures_while_locked_do_not_extend_the_lockout() {
    let limiter = limiter(2, 100);
    let guesser = ip("203.0.113.7");
    limiter.record_failure(guesser);
    limiter.record_failure(guesser);
    advance(30.0).await;
    for _ in 0..50 {
        limiter.record_failure(guesser);
    }
    assert_eq!(
        limiter.check(guesser),
        Err(Locked {
            retry_after_secs: 30
        })
    );
    advance(30.0).await;
    assert_eq!(limiter.check(guesser), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn failures_spread_over_more_than_a_window_do_not_lock() {
    let limiter = limiter(3, 100);
    let client = ip("198.51.100.1");
    limiter.record_failure(client);
    limiter.record_failure(client);
    advance(61.0).await;
    limiter.record_failure(client);
    limiter.record_failure(client);
    assert_eq!(limiter.check(client), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn addresses_are_counted_apart_and_ipv6_per_slash_64() {
    let limiter = limiter(2, 100);
    limiter.record_failure(ip("192.0.2.1"));
    limiter.record_failure(ip("192.0.2.1"));
    assert!(limiter.check(ip("192.0.2.1")).is_err());
    assert_eq!(limiter.check(ip("192.0.2.2")), Ok(()));

    // Two addresses of one /64 are one client; the next /64 is another.
    limiter.record_failure(ip("2001:db8:0:1::a"));
    limiter.record_failure(ip("2001:db8:0:1::b"));
    assert!(limiter.check(ip("2001:db8:0:1::c")).is_err());
    assert_eq!(limiter.check(ip("2001:db8:0:2::a")), Ok(()));
    // An IPv4 client seen through a dual-stack socket is the same client.
    assert!(limiter.check(ip("::ffff:192.0.2.1")).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_full_table_fails_open_for_new_addresses_and_keeps_counting_known_ones() {
    let limiter = limiter(2, 3);
    let known = [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")];
    for address in known {
        limiter.record_failure(address);
    }
    assert_eq!(limiter.tracked_addresses(), 3);

    // A new address is not tracked while the table is full of live entries.
    let newcomer = ip("192.0.2.99");
    for _ in 0..10 {
        limiter.record_failure(newcomer);
    }
    assert_eq!(limiter.check(newcomer), Ok(()));
    assert_eq!(limiter.tracked_addresses(), 3);
    // A known one still is.
    limiter.record_failure(known[0]);
    assert!(limiter.check(known[0]).is_err());

    // Once their windows (and known[0]'s lockout) are over they are pruned,
    // and the newcomer is counted.
    advance(61.0).await;
    limiter.record_failure(newcomer);
    limiter.record_failure(newcomer);
    assert!(limiter.check(newcomer).is_err());
    assert!(limiter.tracked_addresses() <= 3);
}
