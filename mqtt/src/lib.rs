//! The device's side of an MQTT 3.1.1 connection, without I/O: it turns publishes into bytes to
//! write and the broker's bytes into events, and keeps the packet ids and the keep-alive.
//!
//! Why not rumqttc's event loop: it writes and flushes every request on its own, so ten topics
//! publishing at one instant cost ten TLS records and ten `writev`s, and that per-message cost was
//! what kept the agent above its CPU budget (decision 0031). Here everything queued between two
//! writes leaves in one buffer, which the caller writes once. The packets themselves are
//! rumqttc's (`mqttbytes::v4`): only the session, a few dozen lines of state, is ours.
//!
//! The device only publishes, at QoS 1, on a clean session. A broker that sends anything a
//! publisher never asked for (a PUBLISH, a SUBACK, a PUBACK for an id not awaiting one) is
//! breaking the protocol, and the session ends with an error instead of guessing; the caller
//! reconnects and sends again everything not acknowledged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, PingReq, Publish};
use rumqttc::mqttbytes::{self, QoS};

/// Why the session cannot go on. Every one ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    #[error("the broker sent a malformed packet: {0}")]
    Malformed(mqttbytes::Error),
    #[error("the broker sent {0}, which a device that only publishes never asks for")]
    Unexpected(&'static str),
    #[error("the broker acknowledged packet id {0}, which awaits no acknowledgement")]
    UnknownAck(u16),
    #[error("the broker sent {0} before accepting the connection")]
    BeforeConnAck(&'static str),
    #[error("the broker did not accept the connection within {0:?}")]
    ConnAckTimeout(Duration),
    #[error("the broker did not answer a ping within {0:?}")]
    PingTimeout(Duration),
    #[error("the broker closed the session (DISCONNECT)")]
    Disconnected,
    #[error("publishing before the broker accepted the connection")]
    NotConnected,
    #[error("no packet id is free: {0} publishes await PUBACK")]
    NoPacketId(usize),
    #[error("cannot encode a packet: {0}")]
    Encode(mqttbytes::Error),
}

/// What the broker's bytes meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<K> {
    /// CONNACK with success: publishes may be queued.
    Connected,
    /// The PUBACK of the publish queued with this key.
    Acknowledged(K),
}

/// The largest packet the broker may send. A publisher only receives CONNACK, PUBACK and
/// PINGRESP (2 to 4 bytes); anything near this is not a packet it asked for.
const MAX_INCOMING: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnAck { since: Instant },
    Connected,
}

/// One connection's session. `K` is the caller's name for a message (the buffer's id), handed
/// back when its PUBACK arrives.
pub struct Session<K> {
    state: State,
    keep_alive: Duration,
    /// Publishes awaiting PUBACK, by packet id.
    in_flight: HashMap<u16, K>,
    next_id: u16,
    outgoing: BytesMut,
    incoming: BytesMut,
    /// When a packet was last queued: keep-alive counts from the client's last packet.
    last_queued: Instant,
    ping_sent: Option<Instant>,
}

impl<K: Copy> Session<K> {
    /// A session that starts with CONNECT (clean session) queued. `keep_alive` is rounded
    /// down to whole seconds, at least one, as the protocol counts it.
    pub fn new(client_id: &str, keep_alive: Duration, now: Instant) -> Result<Self, SessionError> {
        let seconds = keep_alive.as_secs().clamp(1, u64::from(u16::MAX));
        let mut connect = Connect::new(client_id);
        connect.keep_alive = seconds as u16;
        connect.clean_session = true;
        let mut outgoing = BytesMut::with_capacity(16 * 1024);
        connect.write(&mut outgoing).map_err(SessionError::Encode)?;
        Ok(Self {
            state: State::AwaitingConnAck { since: now },
            keep_alive: Duration::from_secs(seconds),
            in_flight: HashMap::new(),
            next_id: 1,
            outgoing,
            incoming: BytesMut::with_capacity(4096),
            last_queued: now,
            ping_sent: None,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Publishes queued and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues a QoS 1 publish; its PUBACK comes back as [`Event::Acknowledged`] with `key`.
    pub fn publish(
        &mut self,
        key: K,
        topic: &str,
        payload: Bytes,
        retain: bool,
        now: Instant,
    ) -> Result<(), SessionError> {
        if !self.is_connected() {
            return Err(SessionError::NotConnected);
        }
        let pkid = self.free_id()?;
        let mut publish = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
        publish.retain = retain;
        publish.pkid = pkid;
        publish
            .write(&mut self.outgoing)
            .map_err(SessionError::Encode)?;
        self.in_flight.insert(pkid, key);
        self.last_queued = now;
        Ok(())
    }

    /// The next packet id not awaiting a PUBACK, in turn from 1 to 65535.
    fn free_id(&mut self) -> Result<u16, SessionError> {
        if self.in_flight.len() >= usize::from(u16::MAX) {
            return Err(SessionError::NoPacketId(self.in_flight.len()));
        }
        loop {
            let id = self.next_id;
            self.next_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.in_flight.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    /// Takes in bytes read from the broker; what they complete is appended to `events`. A
    /// packet cut between two reads waits for the rest. When the bytes break the protocol, the
    /// events of the packets before the offending one are still in `events` (a PUBACK the broker
    /// sent is its acknowledgement whatever follows it), and the session is over.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        events: &mut Vec<Event<K>>,
    ) -> Result<(), SessionError> {
        self.incoming.extend_from_slice(bytes);
        loop {
            let packet = match Packet::read(&mut self.incoming, MAX_INCOMING) {
                Ok(packet) => packet,
                Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
                Err(error) => return Err(SessionError::Malformed(error)),
            };
            self.handle(packet, events)?;
        }
    }

    fn handle(&mut self, packet: Packet, events: &mut Vec<Event<K>>) -> Result<(), SessionError> {
        if let State::AwaitingConnAck { .. } = self.state {
            return match packet {
                Packet::ConnAck(ack) => {
                    if ack.code != ConnectReturnCode::Success {
                        return Err(SessionError::Refused(format!("{:?}", ack.code)));
                    }
                    self.state = State::Connected;
                    events.push(Event::Connected);
                    Ok(())
                }
                other => Err(SessionError::BeforeConnAck(name(&other))),
            };
        }
        match packet {
            Packet::PubAck(ack) => {
                let key = self
                    .in_flight
                    .remove(&ack.pkid)
                    .ok_or(SessionError::UnknownAck(ack.pkid))?;
                events.push(Event::Acknowledged(key));
                Ok(())
            }
            Packet::PingResp => {
                self.ping_sent = None;
                Ok(())
            }
            Packet::Disconnect => Err(SessionError::Disconnected),
            other => Err(SessionError::Unexpected(name(&other))),
        }
    }

    /// Keeps the connection alive: queues a PINGREQ when nothing was sent for the keep-alive
    /// interval, and fails when the broker let a ping (or the CONNECT) go unanswered for as
    /// long. Call it at [`Session::next_deadline`].
    pub fn tick(&mut self, now: Instant) -> Result<(), SessionError> {
        if let State::AwaitingConnAck { since } = self.state {
            if now.saturating_duration_since(since) >= self.keep_alive {
                return Err(SessionError::ConnAckTimeout(self.keep_alive));
            }
            return Ok(());
        }
        if let Some(sent) = self.ping_sent {
            if now.saturating_duration_since(sent) >= self.keep_alive {
                return Err(SessionError::PingTimeout(self.keep_alive));
            }
        } else if now.saturating_duration_since(self.last_queued) >= self.keep_alive {
            PingReq
                .write(&mut self.outgoing)
                .map_err(SessionError::Encode)?;
            self.ping_sent = Some(now);
            self.last_queued = now;
        }
        Ok(())
    }

    /// When [`Session::tick`] has something to do next.
    pub fn next_deadline(&self) -> Instant {
        match (self.state, self.ping_sent) {
            (State::AwaitingConnAck { since }, _) => since + self.keep_alive,
            (State::Connected, Some(sent)) => sent + self.keep_alive,
            (State::Connected, None) => self.last_queued + self.keep_alive,
        }
    }

    /// Everything queued since the last call, to be written in one go (empty when nothing is).
    pub fn take_outgoing(&mut self) -> Bytes {
        self.outgoing.split().freeze()
    }
}

fn name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{ConnAck, PingResp, PubAck, SubAck, SubscribeReasonCode};

    const KEEP: Duration = Duration::from_secs(5);

    fn bytes(write: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        write(&mut out);
        out.to_vec()
    }

    fn connack(code: ConnectReturnCode) -> Vec<u8> {
        bytes(|out| {
            ConnAck::new(code, false).write(out).expect("encodes");
        })
    }

    fn puback(id: u16) -> Vec<u8> {
        bytes(|out| {
            PubAck::new(id).write(out).expect("encodes");
        })
    }

    /// The packets in a written buffer, as the broker would read them.
    fn packets(mut written: BytesMut) -> Vec<Packet> {
        let mut out = Vec::new();
        while !written.is_empty() {
            out.push(Packet::read(&mut written, 1 << 20).expect("a whole packet"));
        }
        out
    }

    fn connected(now: Instant) -> Session<u64> {
        let mut session = Session::new("bay-1", KEEP, now).expect("accepted");
        let mut events = Vec::new();
        session
            .receive(&connack(ConnectReturnCode::Success), &mut events)
            .expect("accepted");
        assert_eq!(events, [Event::Connected]);
        session.take_outgoing();
        session
    }

    #[test]
    fn connect_comes_first_and_publishing_waits_for_connack() {
        let now = Instant::now();
        let mut session: Session<u64> = Session::new("bay-1", KEEP, now).expect("accepted");
        match packets(session.take_outgoing().into()).as_slice() {
            [Packet::Connect(connect)] => {
                assert_eq!(connect.client_id, "bay-1");
                assert_eq!(connect.keep_alive, 5);
                assert!(connect.clean_session);
            }
            other => panic!("expected one CONNECT, got {other:?}"),
        }
        assert!(matches!(
            session.publish(1, "t", Bytes::from_static(b"x"), false, now),
            Err(SessionError::NotConnected)
        ));
    }

    #[test]
    fn everything_queued_between_writes_leaves_in_one_buffer() {
        let now = Instant::now();
        let mut session = connected(now);
        for id in 0..10u64 {
            let topic = format!("data/measurements/s/d/p{id}");
            session
                .publish(
                    100 + id,
                    &topic,
                    Bytes::from(vec![id as u8; 300]),
                    false,
                    now,
                )
                .expect("accepted");
        }
        let written = packets(session.take_outgoing().into());
        assert_eq!(written.len(), 10);
        let mut ids = Vec::new();
        for (n, packet) in written.iter().enumerate() {
            let Packet::Publish(publish) = packet else {
                panic!("expected PUBLISH, got {packet:?}")
            };
            assert_eq!(publish.qos, QoS::AtLeastOnce);
            assert_eq!(publish.topic, format!("data/measurements/s/d/p{n}"));
            assert_eq!(publish.payload.len(), 300);
            ids.push(publish.pkid);
        }
        assert_eq!(session.in_flight(), 10);
        assert!(session.take_outgoing().is_empty(), "the buffer was taken");

        // PUBACKs in any order, one of them cut between two reads, give back the caller's keys.
        let mut acks = Vec::new();
        for id in ids.iter().rev() {
            acks.extend(puback(*id));
        }
        let mut events = Vec::new();
        session.receive(&acks[..3], &mut events).expect("accepted");
        assert_eq!(events, []);
        session.receive(&acks[3..], &mut events).expect("accepted");
        let keys: Vec<u64> = events
            .iter()
            .map(|event| match event {
                Event::Acknowledged(key) => *key,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, (100..110).rev().collect::<Vec<_>>());
        assert_eq!(session.in_flight(), 0);
    }

    #[test]
    fn packet_ids_skip_those_still_in_flight_when_they_wrap() {
        let now = Instant::now();
        let mut session = connected(now);
        session.next_id = u16::MAX - 1;
        session
            .publish(1, "t", Bytes::new(), false, now)
            .expect("accepted");
        session.in_flight.insert(1, 99); // id 1 still awaits its PUBACK
        session
            .publish(2, "t", Bytes::new(), false, now)
            .expect("accepted");
        session
            .publish(3, "t", Bytes::new(), false, now)
            .expect("accepted");
        let ids: Vec<u16> = packets(session.take_outgoing().into())
            .into_iter()
            .map(|packet| match packet {
                Packet::Publish(publish) => publish.pkid,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [u16::MAX - 1, u16::MAX, 2]);
    }

    #[test]
    fn a_refused_connection_says_why() {
        let mut session: Session<u64> =
            Session::new("bay-1", KEEP, Instant::now()).expect("accepted");
        let error = session
            .receive(&connack(ConnectReturnCode::NotAuthorized), &mut Vec::new())
            .expect_err("refused");
        assert!(matches!(error, SessionError::Refused(_)));
        assert!(error.to_string().contains("NotAuthorized"), "{error}");
    }

    #[test]
    fn what_a_publisher_never_asked_for_ends_the_session() {
        let now = Instant::now();
        // A PUBACK before CONNACK.
        let mut session: Session<u64> = Session::new("bay-1", KEEP, now).expect("accepted");
        assert!(matches!(
            session.receive(&puback(1), &mut Vec::new()),
            Err(SessionError::BeforeConnAck("PUBACK"))
        ));
        // A PUBACK nobody awaits (a replayed or invented acknowledgement must not make the
        // device drop a message the broker never took).
        let mut session = connected(now);
        session
            .publish(7, "t", Bytes::new(), false, now)
            .expect("accepted");
        assert!(matches!(
            session.receive(&puback(2), &mut Vec::new()),
            Err(SessionError::UnknownAck(2))
        ));
        // A SUBACK.
        let mut session = connected(now);
        let suback = bytes(|out| {
            SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])
                .write(out)
                .expect("accepted");
        });
        assert!(matches!(
            session.receive(&suback, &mut Vec::new()),
            Err(SessionError::Unexpected("SUBACK"))
        ));
        // A second CONNACK.
        let mut session = connected(now);
        assert!(matches!(
            session.receive(&connack(ConnectReturnCode::Success), &mut Vec::new()),
            Err(SessionError::Unexpected("CONNACK"))
        ));
        // Garbage.
        let mut session = connected(now);
        assert!(matches!(
            session.receive(&[0xf0, 0x00], &mut Vec::new()),
            Err(SessionError::Malformed(_))
        ));
    }

    #[test]
    fn acknowledgements_before_a_protocol_error_still_count() {
        let now = Instant::now();
        let mut session = connected(now);
        for id in [10, 11] {
            session
                .publish(id, "t", Bytes::new(), false, now)
                .expect("accepted");
        }
        let mut read = puback(1);
        read.extend_from_slice(&puback(9));
        let mut events = Vec::new();
        assert!(matches!(
            session.receive(&read, &mut events),
            Err(SessionError::UnknownAck(9))
        ));
        assert_eq!(events, [Event::Acknowledged(10)]);
    }

    #[test]
    fn an_idle_connection_pings_and_a_silent_broker_ends_it() {
        let start = Instant::now();
        let mut session = connected(start);
        assert_eq!(session.next_deadline(), start + KEEP);
        session
            .tick(start + KEEP - Duration::from_millis(1))
            .expect("accepted");
        assert!(
            session.take_outgoing().is_empty(),
            "no ping before the interval"
        );

        session.tick(start + KEEP).expect("accepted");
        assert!(matches!(
            packets(session.take_outgoing().into()).as_slice(),
            [Packet::PingReq]
        ));
        // Answered: the next ping is due an interval after the last one.
        let pong = bytes(|out| {
            PingResp.write(out).expect("encodes");
        });
        session.receive(&pong, &mut Vec::new()).expect("accepted");
        assert_eq!(session.next_deadline(), start + KEEP * 2);
        session.tick(start + KEEP * 2).expect("accepted");
        assert_eq!(packets(session.take_outgoing().into()).len(), 1);
        // Not answered within an interval: the session fails.
        assert!(matches!(
            session.tick(start + KEEP * 3),
            Err(SessionError::PingTimeout(_))
        ));
    }

    #[test]
    fn publishing_keeps_the_connection_alive_without_pings() {
        let start = Instant::now();
        let mut session = connected(start);
        let later = start + Duration::from_secs(4);
        session
            .publish(1, "t", Bytes::new(), false, later)
            .expect("accepted");
        session.take_outgoing();
        session.tick(start + KEEP).expect("accepted");
        assert!(session.take_outgoing().is_empty());
        assert_eq!(session.next_deadline(), later + KEEP);
    }

    #[test]
    fn a_broker_that_never_accepts_times_out() {
        let start = Instant::now();
        let mut session: Session<u64> = Session::new("bay-1", KEEP, start).expect("accepted");
        session
            .tick(start + Duration::from_secs(1))
            .expect("accepted");
        assert!(matches!(
            session.tick(start + KEEP),
            Err(SessionError::ConnAckTimeout(_))
        ));
    }
}
