use precall_protocol::client::{ClientEvent, SetupPath};
use precall_protocol::sim::{sample_caps, Directory, Sim};
use precall_protocol::{LoginWith, ServerConfig, TerminalId, UserId};

fn u(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

#[test]
fn smoke() {
    let mut d = Directory::default();
    for n in ["alice", "bob", "carol"] {
        d.add_user(&u(n), "pw");
    }
    d.befriend(&u("alice"), &u("bob"));
    d.befriend(&u("alice"), &u("carol"));
    let t = TerminalId::new("bob-phone").unwrap();
    d.register(&t, &u("bob"), sample_caps(&["vp8", "h264"], 1280, 30));
    let mut sim = Sim::new(d, 3, ServerConfig::default());
    sim.login(
        0,
        &u("alice"),
        "pw",
        LoginWith::Capabilities(sample_caps(&["h264"], 1920, 30)),
    );
    sim.login(1, &u("bob"), "pw", LoginWith::TerminalId(t));
    sim.login(
        2,
        &u("carol"),
        "pw",
        LoginWith::Capabilities(sample_caps(&["av1", "h264"], 3840, 60)),
    );
    sim.settle().unwrap();
    assert_eq!(sim.client(0).peers().count(), 2);
    assert_eq!(sim.client(1).peers().count(), 1);
    let bob = sim.endpoint(1).unwrap();
    let now = sim.now;
    sim.client_mut(0).place_call(&bob, now).unwrap();
    sim.settle().unwrap();
    let call = sim.terminals[1]
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .unwrap();
    sim.client_mut(1).answer(call, true, now).unwrap();
    sim.settle().unwrap();
    assert!(
        sim.terminals[0].events.iter().any(|e| matches!(
            e,
            ClientEvent::CallEstablished {
                path: SetupPath::Fast,
                ..
            }
        )),
        "{:#?}",
        sim.terminals[0].events
    );
    assert_eq!(sim.terminals[0].call_caps_bytes, 0);
    println!("{:#?}", sim.terminals[0].events);
    sim.drop_connection(1);
    sim.settle().unwrap();
    assert_eq!(sim.client(0).peers().count(), 1);
    assert!(
        sim.recorded_violations().is_empty(),
        "{:?}",
        sim.recorded_violations()
    );
}
