//! A DHCPv4 client without I/O (RFC 2131 §4.4, the INIT → SELECTING → REQUESTING → BOUND
//! path): it makes the DISCOVER, takes the first OFFER for its transaction, makes the REQUEST,
//! and reads the lease from the ACK (a NAK starts it over). The messages are `dhcproto`'s; the
//! agent's bring-up sends and receives them on the interface.
//!
//! Every datagram is outside input (anyone on the LAN can answer a broadcast): what does not
//! parse, is not a reply to this transaction, or names no server is ignored, never an error.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// What the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease: Duration,
}

impl Lease {
    /// When to renew (T1, half the lease).
    pub fn renew_after(&self) -> Duration {
        self.lease / 2
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Selecting,
    Requesting { offered: Ipv4Addr, server: Ipv4Addr },
    Bound(Lease),
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Broadcast these bytes.
    Send(Vec<u8>),
    /// The lease is ours.
    Bound(Lease),
    /// Nothing for us in that datagram.
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

impl DhcpClient {
    /// A client for the interface with hardware address `mac`, transaction id `xid` (random).
    pub fn new(mac: [u8; 6], xid: u32) -> Self {
        Self {
            mac,
            xid,
            state: State::Selecting,
        }
    }

    fn message(&self, kind: MessageType) -> Message {
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let mut message = Message::new_with_id(
            self.xid,
            unspecified,
            unspecified,
            unspecified,
            unspecified,
            &self.mac,
        );
        message.set_opcode(Opcode::BootRequest);
        // Without an address yet, the answer must be broadcast to reach us.
        message.set_flags(Flags::default().set_broadcast());
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
        Self::encode(&self.message(MessageType::Discover))
    }

    /// Handles one received datagram.
    pub fn handle(&mut self, datagram: &[u8]) -> Result<Step, DhcpError> {
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
        match (&self.state, reply.opts().msg_type()) {
            (State::Selecting, Some(MessageType::Offer)) if leasable(reply.yiaddr()) => {
                let offered = reply.yiaddr();
                let mut request = self.message(MessageType::Request);
                let options = request.opts_mut();
                options.insert(DhcpOption::RequestedIpAddress(offered));
                options.insert(DhcpOption::ServerIdentifier(server));
                self.state = State::Requesting { offered, server };
                Ok(Step::Send(Self::encode(&request)?))
            }
            (
                State::Requesting {
                    offered,
                    server: chosen,
                },
                Some(MessageType::Ack),
            ) if reply.yiaddr() == *offered && server == *chosen => {
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
                let lease = match options.get(OptionCode::AddressLeaseTime) {
                    Some(DhcpOption::AddressLeaseTime(seconds)) => u64::from(*seconds),
                    _ => 3600,
                };
                let lease = Lease {
                    address: *offered,
                    prefix,
                    router,
                    dns,
                    server,
                    lease: Duration::from_secs(lease.max(60)),
                };
                self.state = State::Bound(lease.clone());
                Ok(Step::Bound(lease))
            }
            (State::Requesting { .. }, Some(MessageType::Nak)) => Ok(Step::Send(self.discover()?)),
            _ => Ok(Step::Ignore),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A reply as QEMU's user-network DHCP server makes it.
    fn reply(request: &[u8], kind: MessageType, address: Ipv4Addr) -> Vec<u8> {
        let request = Message::decode(&mut Decoder::new(request)).expect("a request");
        let mut reply = Message::new_with_id(
            request.xid(),
            Ipv4Addr::UNSPECIFIED,
            address,
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            request.chaddr(),
        );
        reply.set_opcode(Opcode::BootReply);
        let options = reply.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        options.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        options.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        options.insert(DhcpOption::AddressLeaseTime(86_400));
        let mut bytes = Vec::new();
        reply
            .encode(&mut Encoder::new(&mut bytes))
            .expect("encodes");
        bytes
    }

    #[test]
    fn discover_offer_request_ack_gives_the_lease() {
        let mut client = DhcpClient::new(MAC, 0x1234_5678);
        let discover = client.discover().expect("discover");
        let offer = reply(&discover, MessageType::Offer, Ipv4Addr::new(10, 0, 2, 15));
        let Step::Send(request) = client.handle(&offer).expect("handled") else {
            panic!("an offer is answered with a request")
        };
        let parsed = Message::decode(&mut Decoder::new(&request)).expect("a request");
        assert_eq!(parsed.opts().msg_type(), Some(MessageType::Request));
        assert!(matches!(
            parsed.opts().get(OptionCode::RequestedIpAddress),
            Some(DhcpOption::RequestedIpAddress(address)) if *address == Ipv4Addr::new(10, 0, 2, 15)
        ));
        let ack = reply(&request, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 15));
        let Step::Bound(lease) = client.handle(&ack).expect("handled") else {
            panic!("an ack binds")
        };
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease: Duration::from_secs(86_400),
            }
        );
        assert_eq!(lease.renew_after(), Duration::from_secs(43_200));
    }

    #[test]
    fn masks_and_addresses_are_checked() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(prefix_of(Ipv4Addr::UNSPECIFIED), None);
        let mut client = DhcpClient::new(MAC, 9);
        let discover = client.discover().expect("discover");
        for bad in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::LOCALHOST,
        ] {
            let offer = reply(&discover, MessageType::Offer, bad);
            assert_eq!(
                client.handle(&offer).expect("handled"),
                Step::Ignore,
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_for_others_garbage_and_a_nak_are_handled() {
        let mut client = DhcpClient::new(MAC, 7);
        let discover = client.discover().expect("discover");
        // Another client's transaction.
        let mut other = DhcpClient::new([2; 6], 8);
        let theirs = reply(
            &other.discover().expect("d"),
            MessageType::Offer,
            [10, 0, 2, 16].into(),
        );
        assert_eq!(client.handle(&theirs).expect("handled"), Step::Ignore);
        assert_eq!(client.handle(b"not dhcp").expect("handled"), Step::Ignore);
        // An ACK before any offer is not ours to take.
        let early = reply(&discover, MessageType::Ack, [10, 0, 2, 15].into());
        assert_eq!(client.handle(&early).expect("handled"), Step::Ignore);
        let offer = reply(&discover, MessageType::Offer, [10, 0, 2, 15].into());
        let Step::Send(request) = client.handle(&offer).expect("handled") else {
            panic!("a request")
        };
        let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        let Step::Send(again) = client.handle(&nak).expect("handled") else {
            panic!("a NAK starts over")
        };
        let again = Message::decode(&mut Decoder::new(&again)).expect("decodes");
        assert_eq!(again.opts().msg_type(), Some(MessageType::Discover));
    }
}
