//! The texts of the crate's errors, as an insta snapshot: what an embedder logs or shows
//! a person for each error variant. A changed or lost text shows up for review.

use precall_protocol::server::{AuthTicket, StoreTicket};
use precall_protocol::{
    CallId, ClientError, ConnId, DecodeError, Endpoint, FrameError, InvalidValue, ReqId,
    ServerError, SessionId, UserId, Violation,
};

fn lines<E: std::fmt::Display + std::fmt::Debug>(errors: &[E]) -> String {
    errors.iter().map(|e| format!("{e:?}\n    {e}\n")).collect()
}

#[test]
fn every_error_text() {
    let bob = UserId::new("bob").unwrap();
    let endpoint = Endpoint {
        user: bob.clone(),
        session: SessionId(3),
    };
    let mut out = String::new();
    out += &lines(&[
        ClientError::NotLoggedIn,
        ClientError::NotDetached,
        ClientError::AlreadyLoggedIn,
        ClientError::UnknownPeer(endpoint),
        ClientError::UnknownCall(CallId(5)),
        ClientError::CallSetupInProgress,
        ClientError::UnsupportedVersion(2),
        ClientError::Framing(FrameError::Empty),
    ]);
    out += &lines(&[
        Violation::NotOnline("online"),
        Violation::UnexpectedLogin,
        Violation::NotAContact(bob.clone()),
        Violation::UnexpectedCall {
            what: "call_accepted",
            call: CallId(5),
        },
        Violation::UnexpectedReq {
            what: "caps_ack",
            req: ReqId(7),
        },
        Violation::Unexpected("resumed"),
        Violation::UnknownType("presence".into()),
        Violation::Malformed("missing field `user`".into()),
    ]);
    out += &lines(&[
        ServerError::DuplicateConn(ConnId(1)),
        ServerError::UnknownTicket(AuthTicket(4)),
        ServerError::RosterFull(bob),
        ServerError::UnknownStoreTicket(StoreTicket(9)),
    ]);
    out += &lines(&[
        InvalidValue::Length {
            what: "user id",
            len: 65,
            max: 64,
        },
        InvalidValue::Character {
            what: "user id",
            pos: 3,
        },
        InvalidValue::Range {
            what: "camera fps",
            value: 0,
            min: 1,
            max: 240,
        },
        InvalidValue::Duplicate {
            what: "encode codecs",
            pos: 1,
        },
        InvalidValue::Missing {
            what: "screen size",
        },
    ]);
    out += &lines(&[
        FrameError::TooLarge {
            len: 70_000,
            max: 65_536,
        },
        FrameError::Empty,
    ]);
    out += &lines(&[
        DecodeError::Malformed("expected value at line 1 column 1".into()),
        DecodeError::UnknownType("presence".into()),
        DecodeError::UnsupportedVersion(2),
    ]);
    insta::assert_snapshot!(out);
}
