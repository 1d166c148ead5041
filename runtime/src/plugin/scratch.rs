#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::test_support::*;
use super::*;
use quiver_policy::router::Router;
use std::time::{Duration, Instant};

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn scratch_memory_bomb_time() {
    let host = host_with_timeout(Duration::from_secs(2));
    let slot = RouterSlot::new(host.clone()).unwrap();
    slot.activate_wasm(
        host.compile(quiver_plugins_bundled::testing::HOSTILE_ROUTER).unwrap(),
        PluginSource::builtin("x"),
    )
    .unwrap();
    for _ in 0..3 {
        let mut r = samples::route_request(20, 3);
        r.collection = 2;
        let t = Instant::now();
        slot.route(&r);
        eprintln!("memory bomb: {:?} {:?}", t.elapsed(), slot.status().last_failure);
    }
}

#[test]
fn scratch_costs() {
    let host = host();
    let slot = RouterSlot::new(host.clone()).unwrap();
    let wasm = quiver_plugins_bundled::find("router", "round-robin").unwrap().wasm;
    slot.activate_wasm(host.compile(wasm).unwrap(), PluginSource::builtin("round-robin")).unwrap();
    for segs in [0usize, 10, 100, 1000] {
        let req = samples::route_request(segs, 3);
        let n = 20000;
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut c = Vec::new();
        let mut d = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let x = slot.route(&req);
            a.push(t.elapsed());
            let t = Instant::now();
            req.check(&x).unwrap();
            b.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(slot.try_invoke(|pool| pool.call(|e, s| e.route(s, &req)))).unwrap();
            c.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(quiver_policy::router::RoundRobin.route(&req));
            d.push(t.elapsed());
        }
        eprintln!(
            "{segs:5} segs: slot.route {:?} check {:?} raw call {:?} native {:?}",
            p50(a),
            p50(b),
            p50(c),
            p50(d)
        );
    }
}
