//! A login on the server core with C online contacts (C = 50, 500), from the credential
//! verdict ([`Server::complete_auth`](precall_protocol::Server::complete_auth)) to
//! `synced`: the contact list interned and checked, `login_ok`, the snapshot (C shared
//! `online` frames), `synced`, and the push of the new terminal's `online` to the C
//! contacts, every event drained as an embedder does.
//!
//! Each contact is logged in on one terminal and lists the user, so every one is in the
//! snapshot and is pushed to. The connection, the `login` frame and the credential check
//! before, and the logout after (which pushes `offline` to the C contacts), are not
//! timed. The verdict's contact list is cloned before the timer starts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use precall_protocol::AuthVerdict;

mod support;
use support::{caps, config, drain, subject, watcher, World, NOW};

// The harness times the core with the wall clock; the core never reads it.
#[allow(clippy::disallowed_methods)]
fn login_snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("login_snapshot");
    for contacts in [50, 500] {
        let list: Vec<_> = (0..contacts).map(watcher).collect();
        let login = |world: &mut World| {
            let (conn, ticket) = world.begin_login(&subject(), caps(0));
            let verdict = AuthVerdict::Accepted {
                contacts: list.clone(),
                registered: None,
            };
            let start = Instant::now();
            world.server.complete_auth(ticket, verdict, NOW).unwrap();
            let drained = drain(&mut world.server);
            let elapsed = start.elapsed();
            (conn, drained, elapsed)
        };
        // Set up once, and only if this benchmark is selected.
        let mut setup = None;
        group.throughput(Throughput::Elements(contacts as u64));
        group.bench_function(BenchmarkId::from_parameter(contacts), |b| {
            let world = setup.get_or_insert_with(|| {
                let mut world = World::new(config(1));
                for i in 0..contacts {
                    world.log_in(&watcher(i), vec![subject()]);
                }
                // login_ok, C online frames, synced to the user; C pushes.
                let (conn, drained, _) = login(&mut world);
                assert_eq!(drained.frames, 2 * contacts + 2);
                world.log_out(conn);
                world
            });
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let (conn, drained, elapsed) = login(world);
                    black_box(drained);
                    timed += elapsed;
                    world.log_out(conn);
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, login_snapshot);
criterion_main!(benches);
