//! The server core's presence fan-out: one presence change of a subject's terminal
//! delivered to N watcher terminals (N = 50, 500, 5,000), the core alone, every event
//! drained with [`Server::poll_event`](precall_protocol::Server::poll_event) as an embedder does.
//!
//! Every watcher is a user logged in who lists the subject and whom the subject lists
//! (so each is entitled to see it, spec "Visibility"). A contact list holds at most
//! [`MAX_CONTACTS`] (500) users, so N = 5,000 is 500 watcher users with 10 terminals
//! each; N = 50 and 500 are one terminal per user.
//!
//! - `fanout/update_caps/N`: the subject sends `update_caps` (alternating between two
//!   capability sets); the core pushes one shared `online` frame to the N watchers
//!   and acknowledges with `caps_ack` (N + 1 frames).
//! - `fanout/logout/N`: the subject's second terminal logs out; the core pushes
//!   `offline` to the N watchers. Its login again before the next iteration is not
//!   timed.
//!
//! Throughput is counted in deliveries (N per iteration): criterion's "elem/s" is
//! presence deliveries per second of one core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use precall_protocol::server::MAX_CONTACTS;

mod support;
use support::{config, drain, subject, update_caps_frame, watcher, World, NOW};

/// (watcher users, terminals per user) for each N.
const SHAPES: [(usize, usize); 3] = [(50, 1), (500, 1), (MAX_CONTACTS, 10)];

fn update_caps(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/update_caps");
    for (users, per_user) in SHAPES {
        let n = users * per_user;
        let frames = [update_caps_frame(1, 1), update_caps_frame(2, 0)];
        // Set up once, and only if this benchmark is selected.
        let mut setup = None;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let (world, conn) = setup.get_or_insert_with(|| {
                let mut world = World::new(config(per_user));
                let conn = world.watched_subject(users, per_user);
                // The routine really reaches every watcher.
                for frame in &frames {
                    world.server.receive(conn, frame, NOW);
                    assert_eq!(drain(&mut world.server).frames, n + 1);
                }
                (world, conn)
            });
            let mut i = 0;
            b.iter(|| {
                i += 1;
                world.server.receive(*conn, &frames[i % 2], NOW);
                black_box(drain(&mut world.server))
            })
        });
    }
    group.finish();
}

// The harness times the core with the wall clock; the core never reads it.
#[allow(clippy::disallowed_methods)]
fn logout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/logout");
    for (users, per_user) in SHAPES {
        let n = users * per_user;
        let contacts: Vec<_> = (0..users).map(watcher).collect();
        let mut setup = None;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let world = setup.get_or_insert_with(|| {
                let mut world = World::new(config(per_user));
                world.watched_subject(users, per_user);
                let (conn, _) = world.log_in(&subject(), contacts.clone());
                assert_eq!(
                    world.log_out(conn).frames,
                    n + 1,
                    "offline to each, logged_out"
                );
                world
            });
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let (conn, _) = world.log_in(&subject(), contacts.clone());
                    let start = Instant::now();
                    black_box(world.log_out(conn));
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, update_caps, logout);
criterion_main!(benches);
