//! The connection caps: how many connections are open in all and per client
//! address, as slots that are given back when dropped.
//!
//! The accept loop asks for a [`ConnectionSlot`] for each accepted socket and
//! closes the socket at once if there is none; the connection's task holds
//! the slot until it ends, and dropping it (however the task ends) gives it
//! back. The per-address table only holds addresses with an open connection,
//! so it never has more entries than `max_connections`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The address that connection and authentication limits count against.
///
/// An IPv4 address counts as itself. An IPv6 address counts as its /64
/// network: one host is routinely given a whole /64, so counting single
/// IPv6 addresses would give one client 2^64 quotas. An IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`, what a dual-stack listener reports for an IPv4
/// client) counts as the IPv4 address it carries.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !(u128::MAX >> 64);
            IpAddr::V6(Ipv6Addr::from(network))
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Full,
    /// `max_connections_per_address` are open from this client address.
    AddressFull,
}

#[derive(Debug, Default)]
struct Occupancy {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The open-connection counts, shared by the accept loop and the slots.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    occupancy: Arc<Mutex<Occupancy>>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Self {
        ConnectionLimits {
            max_total,
            max_per_address,
            occupancy: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, if both caps allow it.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let key = client_key(ip);
        // A panic while holding this lock cannot leave the counts half
        // updated (each update is one statement), so a poisoned lock is
        // still correct to use.
        let mut occupancy = self
            .occupancy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if occupancy.total >= self.max_total {
            return Err(Refusal::Full);
        }
        let from_address = occupancy.per_address.entry(key).or_insert(0);
        if *from_address >= self.max_per_address {
            // `or_insert(0)` may just have added this entry; a cap of zero
            // must not leave it behind.
            if *from_address == 0 {
                occupancy.per_address.remove(&key);
            }
            return Err(Refusal::AddressFull);
        }
        *from_address += 1;
        occupancy.total += 1;
        Ok(ConnectionSlot {
            key,
            occupancy: self.occupancy.clone(),
        })
    }

    /// `(open connections, client addresses with an open connection)`.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let occupancy = self.occupancy.lock().unwrap();
        (occupancy.total, occupancy.per_address.len())
    }
}

/// One admitted connection; dropping it releases its place under both caps.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    key: IpAddr,
    occupancy: Arc<Mutex<Occupancy>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut occupancy = self
            .occupancy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        occupancy.total = occupancy.total.saturating_sub(1);
        if let Some(from_address) = occupancy.per_address.get_mut(&self.key) {
            *from_address = from_address.saturating_sub(1);
            // Forget the address with its last connection: the table holds
            // only addresses that are connected, so it stays as small as the
            // number of open connections.
            if *from_address == 0 {
                occupancy.per_address.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(client_key(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            client_key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(client_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn each_cap_refuses_and_dropping_a_slot_gives_it_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.try_acquire(ip("127.0.0.1")).unwrap();
        let a2 = limits.try_acquire(ip("127.0.0.1")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("127.0.0.1")).unwrap_err(),
            Refusal::AddressFull
        );
        let b1 = limits.try_acquire(ip("127.0.0.2")).unwrap();
        assert_eq!(
            limits.try_acquire(ip("127.0.0.3")).unwrap_err(),
            Refusal::Full
        );
        assert_eq!(limits.counts(), (3, 2));

        drop(a1);
        let a3 = limits.try_acquire(ip("127.0.0.1")).unwrap();
        drop((a2, a3, b1));
        // Nothing is remembered about addresses that left.
        assert_eq!(limits.counts(), (0, 0));
    }

    #[test]
    fn a_zero_cap_refuses_without_remembering_the_address() {
        let limits = ConnectionLimits::new(10, 0);
        for n in 0..100u8 {
            let refused = limits.try_acquire(IpAddr::from([10, 0, 0, n]));
            assert_eq!(refused.unwrap_err(), Refusal::AddressFull);
        }
        assert_eq!(limits.counts(), (0, 0));
    }
}
