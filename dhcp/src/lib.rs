//! A DHCPv4 client without I/O (RFC 2131 §4.4): INIT → SELECTING → REQUESTING → BOUND, and
//! keeping the lease: at T1 it asks the server that gave it to extend it (RENEWING, unicast),
//! at T2 any server (REBINDING, broadcast), and when the lease runs out, or a server refuses it
//! with a NAK, it says the address is lost and starts over. The messages are `dhcproto`'s; the
//! agent's bring-up sends and receives them on the interface and drives the timers from
//! [`DhcpClient::deadline`].
//!
//! Every datagram is outside input (anyone on the LAN can answer a broadcast): what does not
//! parse, is not a reply to this transaction, or names no server is ignored, never an error.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// The shortest lease taken as given: a server offering less (or 0) would have the client
/// renew in a tight loop.
pub const MIN_LEASE: Duration = Duration::from_secs(10);

/// The shortest wait before a renewal or rebinding request is sent again (RFC 2131 §4.4.5).
pub const MIN_RETRY: Duration = Duration::from_secs(60);

/// What the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// How long the address is ours, counted from when the request was sent.
    pub lease: Duration,
    /// T1: when to ask `server` to extend it.
    pub renew: Duration,
    /// T2: when to ask any server.
    pub rebind: Duration,
}

impl Lease {
    /// When to renew (T1).
    pub fn renew_after(&self) -> Duration {
        self.renew
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Selecting,
    Requesting {
        offered: Ipv4Addr,
        server: Ipv4Addr,
        sent: Instant,
    },
    /// `start` is when the request that got the lease was sent: the lease's times count from it.
    Bound {
        lease: Lease,
        start: Instant,
    },
    Renewing {
        lease: Lease,
        start: Instant,
        sent: Instant,
        retry: Instant,
    },
    Rebinding {
        lease: Lease,
        start: Instant,
        sent: Instant,
        retry: Instant,
    },
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Broadcast these bytes.
    Send(Vec<u8>),
    /// Send these bytes to the server that gave the lease (port 67).
    SendTo(Vec<u8>, Ipv4Addr),
    /// The lease is ours, new or extended: (re)configure the address with this lifetime.
    Bound(Lease),
    /// The lease ran out or a server refused it: stop using the address, then broadcast
    /// [`DhcpClient::discover`] to start over.
    Lost(Lease),
    /// Nothing for us in that datagram, or nothing due yet.
    Ignore,
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("cannot encode a DHCP message: {0}")]
    Encode(String),
}

/// One client for one interface.
pub struct DhcpClient {
    mac: [u8; 6],
    xid: u32,
    state: State,
}

/// The prefix length of a subnet mask, if it is one (contiguous ones, at least one).
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (ones > 0 && bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// An address a server may lease: not unspecified, broadcast, loopback or multicast.
fn leasable(address: Ipv4Addr) -> bool {
    !(address.is_unspecified()
        || address.is_broadcast()
        || address.is_loopback()
        || address.is_multicast())
}

/// When to send a request again: half the time left to `until`, at least [`MIN_RETRY`].
fn retry_at(now: Instant, until: Instant) -> Instant {
    now + (until.saturating_duration_since(now) / 2).max(MIN_RETRY)
}

impl DhcpClient {
    /// A client for the interface with hardware address `mac`, transaction id `xid` (random).
    pub fn new(mac: [u8; 6], xid: u32) -> Self {
        Self {
            mac,
            xid,
            state: State::Selecting,
        }
    }

    /// The lease held, if any (also while renewing or rebinding it).
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => Some(lease),
            State::Selecting | State::Requesting { .. } => None,
        }
    }

    /// When the lease held runs out, if there is one.
    pub fn lease_ends(&self) -> Option<Instant> {
        match &self.state {
            State::Bound { lease, start }
            | State::Renewing { lease, start, .. }
            | State::Rebinding { lease, start, .. } => Some(*start + lease.lease),
            State::Selecting | State::Requesting { .. } => None,
        }
    }

    /// When [`DhcpClient::timeout`] has something to do: T1, a retry, T2, the lease's end.
    /// `None` while there is no lease (the driver repeats the DISCOVER at its own pace).
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Selecting | State::Requesting { .. } => None,
            State::Bound { lease, start } => Some(*start + lease.renew),
            State::Renewing {
                lease,
                start,
                retry,
                ..
            } => Some((*retry).min(*start + lease.rebind)),
            State::Rebinding {
                lease,
                start,
                retry,
                ..
            } => Some((*retry).min(*start + lease.lease)),
        }
    }

    fn message(&self, kind: MessageType, address: Option<Ipv4Addr>) -> Message {
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let mut message = Message::new_with_id(
            self.xid,
            address.unwrap_or(unspecified),
            unspecified,
            unspecified,
            unspecified,
            &self.mac,
        );
        message.set_opcode(Opcode::BootRequest);
        // Without an address yet, the answer must be broadcast to reach us; with one (renewing,
        // rebinding) it comes to that address.
        if address.is_none() {
            message.set_flags(Flags::default().set_broadcast());
        }
        let options = message.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        options.insert(DhcpOption::ClientIdentifier(client_id));
        options.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        message
    }

    fn encode(message: &Message) -> Result<Vec<u8>, DhcpError> {
        let mut bytes = Vec::new();
        message
            .encode(&mut Encoder::new(&mut bytes))
            .map_err(|error| DhcpError::Encode(error.to_string()))?;
        Ok(bytes)
    }

    /// The DISCOVER that starts (or starts again) the exchange.
    pub fn discover(&mut self) -> Result<Vec<u8>, DhcpError> {
        self.state = State::Selecting;
        Self::encode(&self.message(MessageType::Discover, None))
    }

    /// Does what is due at `now`: the renewal at T1 (unicast to the lease's server), the
    /// rebinding at T2 (broadcast), their retries, and at the lease's end [`Step::Lost`].
    pub fn timeout(&mut self, now: Instant) -> Result<Step, DhcpError> {
        let state = std::mem::replace(&mut self.state, State::Selecting);
        let (state, step) = match state {
            State::Bound { lease, start } if now >= start + lease.renew => {
                let retry = retry_at(now, start + lease.rebind);
                let request = self.renewal(&lease)?;
                let server = lease.server;
                (
                    State::Renewing {
                        lease,
                        start,
                        sent: now,
                        retry,
                    },
                    Step::SendTo(request, server),
                )
            }
            State::Renewing {
                lease,
                start,
                sent,
                retry,
            } => {
                if now >= start + lease.rebind {
                    let retry = retry_at(now, start + lease.lease);
                    let request = self.renewal(&lease)?;
                    (
                        State::Rebinding {
                            lease,
                            start,
                            sent: now,
                            retry,
                        },
                        Step::Send(request),
                    )
                } else if now >= retry {
                    let request = self.renewal(&lease)?;
                    let server = lease.server;
                    let retry = retry_at(now, start + lease.rebind);
                    (
                        State::Renewing {
                            lease,
                            start,
                            sent: now,
                            retry,
                        },
                        Step::SendTo(request, server),
                    )
                } else {
                    (
                        State::Renewing {
                            lease,
                            start,
                            sent,
                            retry,
                        },
                        Step::Ignore,
                    )
                }
            }
            State::Rebinding {
                lease,
                start,
                sent,
                retry,
            } => {
                if now >= start + lease.lease {
                    (State::Selecting, Step::Lost(lease))
                } else if now >= retry {
                    let request = self.renewal(&lease)?;
                    let retry = retry_at(now, start + lease.lease);
                    (
                        State::Rebinding {
                            lease,
                            start,
                            sent: now,
                            retry,
                        },
                        Step::Send(request),
                    )
                } else {
                    (
                        State::Rebinding {
                            lease,
                            start,
                            sent,
                            retry,
                        },
                        Step::Ignore,
                    )
                }
            }
            other => (other, Step::Ignore),
        };
        self.state = state;
        Ok(step)
    }

    /// The REQUEST that asks to extend `lease`: from its address, naming no server.
    fn renewal(&self, lease: &Lease) -> Result<Vec<u8>, DhcpError> {
        Self::encode(&self.message(MessageType::Request, Some(lease.address)))
    }

    /// Handles one datagram received at `now`.
    pub fn handle(&mut self, datagram: &[u8], now: Instant) -> Result<Step, DhcpError> {
        let Ok(reply) = Message::decode(&mut Decoder::new(datagram)) else {
            return Ok(Step::Ignore);
        };
        if reply.opcode() != Opcode::BootReply
            || reply.xid() != self.xid
            || reply.chaddr().get(..6) != Some(&self.mac[..])
        {
            return Ok(Step::Ignore);
        }
        let server = match reply.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(server)) => *server,
            _ => return Ok(Step::Ignore),
        };
        let kind = reply.opts().msg_type();
        match (&self.state, kind) {
            (State::Selecting, Some(MessageType::Offer)) if leasable(reply.yiaddr()) => {
                let offered = reply.yiaddr();
                let mut request = self.message(MessageType::Request, None);
                let options = request.opts_mut();
                options.insert(DhcpOption::RequestedIpAddress(offered));
                options.insert(DhcpOption::ServerIdentifier(server));
                self.state = State::Requesting {
                    offered,
                    server,
                    sent: now,
                };
                Ok(Step::Send(Self::encode(&request)?))
            }
            (
                State::Requesting {
                    offered,
                    server: chosen,
                    sent,
                },
                Some(MessageType::Ack),
            ) if reply.yiaddr() == *offered && server == *chosen => {
                let (address, start) = (*offered, *sent);
                Ok(self.bind(&reply, address, server, start))
            }
            (State::Requesting { .. }, Some(MessageType::Nak)) => Ok(Step::Send(self.discover()?)),
            // Renewing, only the lease's server answers; rebinding, any server may extend the
            // lease, but only for the address held.
            (
                State::Renewing { lease, sent, .. } | State::Rebinding { lease, sent, .. },
                Some(MessageType::Ack),
            ) if reply.yiaddr() == lease.address
                && (server == lease.server || matches!(self.state, State::Rebinding { .. })) =>
            {
                let (address, start) = (lease.address, *sent);
                Ok(self.bind(&reply, address, server, start))
            }
            (
                State::Renewing { lease, .. } | State::Rebinding { lease, .. },
                Some(MessageType::Nak),
            ) if server == lease.server || matches!(self.state, State::Rebinding { .. }) => {
                let lease = lease.clone();
                self.state = State::Selecting;
                Ok(Step::Lost(lease))
            }
            _ => Ok(Step::Ignore),
        }
    }

    /// The lease an ACK gives for `address`, counted from `start`.
    fn bind(
        &mut self,
        reply: &Message,
        address: Ipv4Addr,
        server: Ipv4Addr,
        start: Instant,
    ) -> Step {
        let options = reply.opts();
        // No mask, or one that is not a mask: the classful /24 of QEMU and most LANs.
        let prefix = match options.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask).unwrap_or(24),
            _ => 24,
        };
        let router = match options.get(OptionCode::Router) {
            Some(DhcpOption::Router(routers)) => {
                routers.first().copied().filter(|router| leasable(*router))
            }
            _ => None,
        };
        let dns = match options.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
            _ => Vec::new(),
        };
        let seconds = |code| match options.get(code) {
            Some(
                DhcpOption::AddressLeaseTime(seconds)
                | DhcpOption::Renewal(seconds)
                | DhcpOption::Rebinding(seconds),
            ) => Some(Duration::from_secs(u64::from(*seconds))),
            _ => None,
        };
        let lease = seconds(OptionCode::AddressLeaseTime)
            .unwrap_or(Duration::from_secs(3600))
            .max(MIN_LEASE);
        // T1 and T2 as the server sets them when they are in order (T1 < T2 < lease), else
        // RFC 2131's defaults: half and seven eighths of the lease.
        let (renew, rebind) = match (seconds(OptionCode::Renewal), seconds(OptionCode::Rebinding)) {
            (Some(t1), Some(t2)) if !t1.is_zero() && t1 < t2 && t2 < lease => (t1, t2),
            _ => (lease / 2, lease / 8 * 7),
        };
        let lease = Lease {
            address,
            prefix,
            router,
            dns,
            server,
            lease,
            renew,
            rebind,
        };
        self.state = State::Bound {
            lease: lease.clone(),
            start,
        };
        Step::Bound(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const DAY: u32 = 86_400;

    /// A reply from `server` as QEMU's user-network DHCP server makes it, with `extra` options.
    fn reply_from(
        server: Ipv4Addr,
        request: &[u8],
        kind: MessageType,
        address: Ipv4Addr,
        extra: &[DhcpOption],
    ) -> Vec<u8> {
        let request = Message::decode(&mut Decoder::new(request)).expect("a request");
        let mut reply = Message::new_with_id(
            request.xid(),
            Ipv4Addr::UNSPECIFIED,
            address,
            server,
            Ipv4Addr::UNSPECIFIED,
            request.chaddr(),
        );
        reply.set_opcode(Opcode::BootReply);
        let options = reply.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ServerIdentifier(server));
        options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        options.insert(DhcpOption::Router(vec![server]));
        options.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        options.insert(DhcpOption::AddressLeaseTime(DAY));
        for option in extra {
            options.insert(option.clone());
        }
        let mut bytes = Vec::new();
        reply
            .encode(&mut Encoder::new(&mut bytes))
            .expect("encodes");
        bytes
    }

    fn reply(request: &[u8], kind: MessageType, address: Ipv4Addr) -> Vec<u8> {
        reply_from(SERVER, request, kind, address, &[])
    }

    fn parse(bytes: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(bytes)).expect("a DHCP message")
    }

    /// A client bound at `now` to a lease with `extra` options in its ACK.
    fn bound(now: Instant, extra: &[DhcpOption]) -> (DhcpClient, Lease) {
        let mut client = DhcpClient::new(MAC, 0x1234_5678);
        let discover = client.discover().expect("discover");
        let offer = reply(&discover, MessageType::Offer, ADDRESS);
        let Step::Send(request) = client.handle(&offer, now).expect("handled") else {
            panic!("an offer is answered with a request")
        };
        let ack = reply_from(SERVER, &request, MessageType::Ack, ADDRESS, extra);
        let Step::Bound(lease) = client.handle(&ack, now).expect("handled") else {
            panic!("an ack binds")
        };
        (client, lease)
    }

    #[test]
    fn discover_offer_request_ack_gives_the_lease() {
        let now = Instant::now();
        let mut client = DhcpClient::new(MAC, 0x1234_5678);
        let discover = client.discover().expect("discover");
        let offer = reply(&discover, MessageType::Offer, ADDRESS);
        let Step::Send(request) = client.handle(&offer, now).expect("handled") else {
            panic!("an offer is answered with a request")
        };
        let parsed = parse(&request);
        assert_eq!(parsed.opts().msg_type(), Some(MessageType::Request));
        assert!(matches!(
            parsed.opts().get(OptionCode::RequestedIpAddress),
            Some(DhcpOption::RequestedIpAddress(address)) if *address == ADDRESS
        ));
        let ack = reply(&request, MessageType::Ack, ADDRESS);
        let Step::Bound(lease) = client.handle(&ack, now).expect("handled") else {
            panic!("an ack binds")
        };
        assert_eq!(
            lease,
            Lease {
                address: ADDRESS,
                prefix: 24,
                router: Some(SERVER),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                server: SERVER,
                lease: Duration::from_secs(86_400),
                renew: Duration::from_secs(43_200),
                rebind: Duration::from_secs(75_600),
            }
        );
        assert_eq!(client.lease(), Some(&lease));
        assert_eq!(client.deadline(), Some(now + Duration::from_secs(43_200)));
        assert_eq!(client.lease_ends(), Some(now + Duration::from_secs(86_400)));
    }

    #[test]
    fn at_t1_the_lease_is_renewed_with_its_server() {
        let start = Instant::now();
        let (mut client, lease) = bound(start, &[]);
        assert_eq!(
            client
                .timeout(start + lease.renew - Duration::from_secs(1))
                .expect("t"),
            Step::Ignore
        );
        let t1 = start + lease.renew;
        let Step::SendTo(request, to) = client.timeout(t1).expect("t") else {
            panic!("T1 sends a renewal to the server")
        };
        assert_eq!(to, SERVER);
        let parsed = parse(&request);
        assert_eq!(parsed.opts().msg_type(), Some(MessageType::Request));
        // From the address held, naming neither address nor server (RFC 2131, table 5).
        assert_eq!(parsed.ciaddr(), ADDRESS);
        assert!(!parsed.flags().broadcast());
        assert!(parsed.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert!(parsed.opts().get(OptionCode::ServerIdentifier).is_none());
        // Still ours meanwhile.
        assert_eq!(client.lease(), Some(&lease));
        // An answer for another address, or from another server, is not an extension.
        let other = reply(&request, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 16));
        assert_eq!(client.handle(&other, t1).expect("h"), Step::Ignore);
        let stranger = reply_from(
            Ipv4Addr::new(10, 0, 2, 9),
            &request,
            MessageType::Ack,
            ADDRESS,
            &[],
        );
        assert_eq!(client.handle(&stranger, t1).expect("h"), Step::Ignore);
        let ack = reply(&request, MessageType::Ack, ADDRESS);
        assert_eq!(
            client.handle(&ack, t1).expect("h"),
            Step::Bound(lease.clone())
        );
        // The extended lease counts from the renewal.
        assert_eq!(client.deadline(), Some(t1 + lease.renew));
    }

    #[test]
    fn unanswered_renewals_are_retried_then_any_server_is_asked_then_the_lease_is_lost() {
        let start = Instant::now();
        let (mut client, lease) = bound(start, &[]);
        let t1 = start + lease.renew;
        assert!(matches!(client.timeout(t1).expect("t"), Step::SendTo(..)));
        // Half the 9 h to T2.
        let retry = t1 + (lease.rebind - lease.renew) / 2;
        assert_eq!(client.deadline(), Some(retry));
        assert!(matches!(
            client.timeout(retry).expect("t"),
            Step::SendTo(..)
        ));
        let t2 = start + lease.rebind;
        let Step::Send(request) = client.timeout(t2).expect("t") else {
            panic!("T2 broadcasts the request")
        };
        assert_eq!(parse(&request).ciaddr(), ADDRESS);
        // Close to the end the retries keep at least a minute apart, and the end still comes.
        let near_end = start + lease.lease - Duration::from_secs(30);
        assert!(matches!(
            client.timeout(near_end).expect("t"),
            Step::Send(_)
        ));
        assert_eq!(client.deadline(), Some(start + lease.lease));
        assert_eq!(
            client.timeout(start + lease.lease).expect("t"),
            Step::Lost(lease)
        );
        assert_eq!(client.lease(), None);
        assert_eq!(client.deadline(), None);
        let again = client.discover().expect("discover");
        assert_eq!(parse(&again).opts().msg_type(), Some(MessageType::Discover));
    }

    #[test]
    fn rebinding_takes_an_extension_from_any_server() {
        let start = Instant::now();
        let (mut client, lease) = bound(start, &[]);
        client.timeout(start + lease.renew).expect("t");
        let t2 = start + lease.rebind;
        let Step::Send(request) = client.timeout(t2).expect("t") else {
            panic!("a broadcast")
        };
        let other = Ipv4Addr::new(10, 0, 2, 9);
        let ack = reply_from(other, &request, MessageType::Ack, ADDRESS, &[]);
        let Step::Bound(extended) = client.handle(&ack, t2).expect("h") else {
            panic!("rebound")
        };
        assert_eq!(extended.server, other);
        assert_eq!(client.deadline(), Some(t2 + extended.renew));
    }

    #[test]
    fn a_nak_while_renewing_loses_the_address_but_only_from_the_lease_server() {
        let start = Instant::now();
        let (mut client, lease) = bound(start, &[]);
        let t1 = start + lease.renew;
        let Step::SendTo(request, _) = client.timeout(t1).expect("t") else {
            panic!("a renewal")
        };
        let stranger = reply_from(
            Ipv4Addr::new(10, 0, 2, 9),
            &request,
            MessageType::Nak,
            Ipv4Addr::UNSPECIFIED,
            &[],
        );
        assert_eq!(client.handle(&stranger, t1).expect("h"), Step::Ignore);
        let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        assert_eq!(client.handle(&nak, t1).expect("h"), Step::Lost(lease));
        assert_eq!(client.lease(), None);
    }

    #[test]
    fn the_servers_t1_and_t2_are_used_when_they_are_in_order() {
        let start = Instant::now();
        let (_, lease) = bound(
            start,
            &[DhcpOption::Renewal(600), DhcpOption::Rebinding(1200)],
        );
        assert_eq!(
            (lease.renew, lease.rebind),
            (Duration::from_secs(600), Duration::from_secs(1200))
        );
        // Out of order, or past the lease: RFC 2131's defaults.
        for (t1, t2) in [(1200, 600), (600, DAY + 1), (0, 10)] {
            let (_, lease) = bound(start, &[DhcpOption::Renewal(t1), DhcpOption::Rebinding(t2)]);
            assert_eq!(lease.renew, Duration::from_secs(43_200), "{t1} {t2}");
            assert_eq!(lease.rebind, Duration::from_secs(75_600), "{t1} {t2}");
        }
        // A lease of nothing is taken as the shortest one.
        let (_, lease) = bound(start, &[DhcpOption::AddressLeaseTime(0)]);
        assert_eq!(lease.lease, MIN_LEASE);
        assert_eq!(lease.renew, MIN_LEASE / 2);
    }

    #[test]
    fn masks_and_addresses_are_checked() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(prefix_of(Ipv4Addr::UNSPECIFIED), None);
        let now = Instant::now();
        let mut client = DhcpClient::new(MAC, 9);
        let discover = client.discover().expect("discover");
        for bad in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::LOCALHOST,
        ] {
            let offer = reply(&discover, MessageType::Offer, bad);
            assert_eq!(
                client.handle(&offer, now).expect("handled"),
                Step::Ignore,
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_for_others_garbage_and_a_nak_are_handled() {
        let now = Instant::now();
        let mut client = DhcpClient::new(MAC, 7);
        let discover = client.discover().expect("discover");
        // Another client's transaction.
        let mut other = DhcpClient::new([2; 6], 8);
        let theirs = reply(
            &other.discover().expect("d"),
            MessageType::Offer,
            [10, 0, 2, 16].into(),
        );
        assert_eq!(client.handle(&theirs, now).expect("handled"), Step::Ignore);
        assert_eq!(
            client.handle(b"not dhcp", now).expect("handled"),
            Step::Ignore
        );
        // An ACK before any offer is not ours to take.
        let early = reply(&discover, MessageType::Ack, ADDRESS);
        assert_eq!(client.handle(&early, now).expect("handled"), Step::Ignore);
        let offer = reply(&discover, MessageType::Offer, ADDRESS);
        let Step::Send(request) = client.handle(&offer, now).expect("handled") else {
            panic!("a request")
        };
        let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        let Step::Send(again) = client.handle(&nak, now).expect("handled") else {
            panic!("a NAK starts over")
        };
        assert_eq!(parse(&again).opts().msg_type(), Some(MessageType::Discover));
    }
}
