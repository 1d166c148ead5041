//! Hosts with their own addresses on one machine: Linux network namespaces on a bridge (iproute2,
//! root). Host `i` is namespace `q<net>h<i>` with address `10.201.<net>.<10 + i>`, joined by a
//! veth pair to bridge `q<net>br`, which has `10.201.<net>.1` in the test's own namespace (where
//! the nats-server, the proxy and the test client stay). [`Hosts::cut`] takes a host's link
//! down: its connections go silent, as when a machine's network fails; [`Hosts::heal`] brings it
//! back. Everything is removed when the value is dropped.
//!
//! Only the network is separate: the hosts share the file system (the cluster's data dir and its
//! local object store), as machines sharing an object store would.
//!
//! Like [`crate::harness`], it fails the calling test on any error, as `assert!` does.

#![allow(clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Hosts {
    net: u32,
    count: usize,
}

/// Runs `ip` with `args`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Hosts {
    /// Whether this process may make namespaces (root with iproute2): tests that need hosts
    /// check this first.
    pub fn available() -> bool {
        let name = format!("qprobe{}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &name]).output().is_ok_and(|o| o.status.success());
        if made {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
        made
    }

    /// `count` hosts on a new bridge.
    pub fn create(count: usize) -> Hosts {
        // A subnet no other test of this machine uses now: pid and a counter.
        let net = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % 200 + 20;
        let hosts = Hosts { net, count: 0 };
        let bridge = hosts.bridge();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", hosts.gateway()), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut hosts = hosts;
        for i in 1..=count {
            let (ns, outer, inner) = (hosts.ns(i), hosts.outer(i), format!("q{net}p{i}"));
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            ip(&["netns", "add", &ns]);
            hosts.count = i;
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", &bridge, "up"]);
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{}/24", hosts.address(i)), "dev", &inner]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        hosts
    }

    fn bridge(&self) -> String {
        format!("q{}br", self.net)
    }

    /// The root-namespace end of host `i`'s veth pair.
    fn outer(&self, i: usize) -> String {
        format!("q{}v{i}", self.net)
    }

    /// Host `i`'s namespace (1-based).
    pub fn ns(&self, i: usize) -> String {
        format!("q{}h{i}", self.net)
    }

    /// Host `i`'s address.
    pub fn address(&self, i: usize) -> String {
        format!("10.201.{}.{}", self.net, 10 + i)
    }

    /// The test's own address on the bridge (where the nats-server listens).
    pub fn gateway(&self) -> String {
        format!("10.201.{}.1", self.net)
    }

    /// Cuts host `i` off: its link goes down, its packets go nowhere.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.outer(i), "down"]);
    }

    /// Reconnects host `i`.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.outer(i), "up"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 1..=self.count {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).output();
    }
}
