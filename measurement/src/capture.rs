//! Reading C37.118 traffic out of packet captures: classic libpcap files with Ethernet, Linux
//! cooked or raw IP links, IPv4 or IPv6, UDP datagrams and TCP streams reassembled per direction.
//!
//! Sans-I/O: the caller reads the file and hands over its bytes; what comes back is the
//! application payload of each flow in capture order, ready for the C37.118 framer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_parser::pcap::{parse_pcap_frame, parse_pcap_frame_be, parse_pcap_header};
use pcap_parser::Linktype;
use thiserror::Error;

/// Why a capture could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("not a classic libpcap file (magic {magic:#010x})")]
    NotPcap { magic: u32 },
    #[error("pcapng captures are not read; convert with `editcap -F pcap IN OUT`")]
    PcapNg,
    #[error("truncated libpcap global header")]
    TruncatedHeader,
    #[error("link type {linktype} is not supported (Ethernet, Linux cooked and raw IP are)")]
    UnsupportedLinkType { linktype: i32 },
}

/// Whether `bytes` start like a capture file (classic libpcap or pcapng).
pub fn looks_like_capture(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(..4),
        Some([0xd4, 0xc3, 0xb2, 0xa1])
            | Some([0xa1, 0xb2, 0xc3, 0xd4])
            | Some([0x4d, 0x3c, 0xb2, 0xa1])
            | Some([0xa1, 0xb2, 0x3c, 0x4d])
            | Some([0x0a, 0x0d, 0x0d, 0x0a])
    )
}

/// The transport a flow's bytes came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// One direction of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

impl Flow {
    /// The two hosts regardless of direction and port: C37.118 in TCP/UDP mode sends its
    /// configuration over TCP and its data over UDP between the same two hosts.
    pub fn hosts(&self) -> (IpAddr, IpAddr) {
        let (a, b) = (self.source.ip(), self.destination.ip());
        if a <= b {
            (a, b)
        } else {
            (b, a)
        }
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        write!(f, "{transport} {} -> {}", self.source, self.destination)
    }
}

/// What the capture yields, in capture order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureEvent {
    /// A UDP datagram's payload, or the next in-order bytes of a TCP stream.
    Payload { flow: Flow, bytes: Vec<u8> },
    /// Bytes of a TCP stream that were never captured; the stream continues after them.
    Gap { flow: Flow, missing: u32 },
    /// A packet that carries no readable TCP or UDP payload (ARP, ICMP, IP fragment, damage).
    Skipped { packet: usize, reason: String },
    /// The file ends inside a packet record.
    Truncated { packet: usize },
}

/// Reads every packet of a classic libpcap capture.
pub fn read_capture(bytes: &[u8]) -> Result<Vec<CaptureEvent>, CaptureError> {
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        return Err(CaptureError::PcapNg);
    }
    let (mut rest, header) = parse_pcap_header(bytes).map_err(|_| match bytes.get(..4) {
        Some(magic) if bytes.len() >= 24 => CaptureError::NotPcap {
            magic: u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]),
        },
        _ => CaptureError::TruncatedHeader,
    })?;
    let link = header.network;
    if ![
        Linktype::ETHERNET,
        Linktype::LINUX_SLL,
        Linktype::RAW,
        Linktype::IPV4,
    ]
    .contains(&link)
    {
        return Err(CaptureError::UnsupportedLinkType { linktype: link.0 });
    }
    let mut events = Vec::new();
    let mut tcp = TcpReassembler::new();
    let mut packet = 0usize;
    while !rest.is_empty() {
        let parsed = if header.is_bigendian() {
            parse_pcap_frame_be(rest)
        } else {
            parse_pcap_frame(rest)
        };
        let Ok((next, block)) = parsed else {
            events.push(CaptureEvent::Truncated { packet });
            break;
        };
        rest = next;
        let sliced = match link {
            Linktype::ETHERNET => SlicedPacket::from_ethernet(block.data),
            Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(block.data),
            _ => SlicedPacket::from_ip(block.data),
        };
        match sliced {
            Ok(sliced) => read_packet(packet, &sliced, &mut tcp, &mut events),
            Err(error) => events.push(CaptureEvent::Skipped {
                packet,
                reason: error.to_string(),
            }),
        }
        packet += 1;
    }
    tcp.finish(&mut events);
    Ok(events)
}

fn read_packet(
    packet: usize,
    sliced: &SlicedPacket<'_>,
    tcp: &mut TcpReassembler,
    events: &mut Vec<CaptureEvent>,
) {
    let (source, destination, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            IpAddr::from(ip.header().source_addr()),
            IpAddr::from(ip.header().destination_addr()),
            ip.is_payload_fragmented(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            IpAddr::from(ip.header().source_addr()),
            IpAddr::from(ip.header().destination_addr()),
            ip.is_payload_fragmented(),
        ),
        _ => {
            events.push(CaptureEvent::Skipped {
                packet,
                reason: "not an IP packet".into(),
            });
            return;
        }
    };
    if fragmented {
        events.push(CaptureEvent::Skipped {
            packet,
            reason: "IP fragment (fragmented datagrams are not reassembled)".into(),
        });
        return;
    }
    match &sliced.transport {
        Some(TransportSlice::Tcp(segment)) => {
            let flow = Flow {
                transport: Transport::Tcp,
                source: SocketAddr::new(source, segment.source_port()),
                destination: SocketAddr::new(destination, segment.destination_port()),
            };
            tcp.segment(
                flow,
                segment.sequence_number(),
                segment.syn(),
                segment.payload(),
                events,
            );
        }
        Some(TransportSlice::Udp(datagram)) => events.push(CaptureEvent::Payload {
            flow: Flow {
                transport: Transport::Udp,
                source: SocketAddr::new(source, datagram.source_port()),
                destination: SocketAddr::new(destination, datagram.destination_port()),
            },
            bytes: datagram.payload().to_vec(),
        }),
        _ => events.push(CaptureEvent::Skipped {
            packet,
            reason: "neither TCP nor UDP".into(),
        }),
    }
}

#[derive(Debug, Default)]
struct TcpDirection {
    /// The sequence number of the next byte to deliver, once known.
    next: Option<u32>,
    /// Segments that arrived ahead of `next`.
    ahead: Vec<(u32, Vec<u8>)>,
    ahead_bytes: usize,
}

/// Puts the segments of each TCP direction back in order: retransmitted and overlapping bytes
/// are delivered once, segments that arrive early wait for the ones before them, and a hole that
/// never fills is reported as a [`CaptureEvent::Gap`] once too much waits behind it or the
/// capture ends.
#[derive(Debug, Default)]
pub struct TcpReassembler {
    flows: HashMap<Flow, TcpDirection>,
}

impl TcpReassembler {
    /// Bytes allowed to wait behind a hole before the hole is given up on.
    pub const MAX_AHEAD_BYTES: usize = 1 << 20;

    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one segment; in-order bytes that become available are appended to `events`.
    pub fn segment(
        &mut self,
        flow: Flow,
        sequence: u32,
        syn: bool,
        payload: &[u8],
        events: &mut Vec<CaptureEvent>,
    ) {
        let direction = self.flows.entry(flow).or_default();
        // SYN takes one sequence number; data starts after it.
        let first = if syn {
            sequence.wrapping_add(1)
        } else {
            sequence
        };
        let next = *direction.next.get_or_insert(first);
        if payload.is_empty() {
            return;
        }
        // Signed distance from the expected byte, modulo 2^32.
        let offset = first.wrapping_sub(next) as i32;
        if offset > 0 {
            if direction.ahead_bytes + payload.len() > Self::MAX_AHEAD_BYTES {
                Self::skip_hole(flow, direction, events);
            }
            direction.ahead_bytes += payload.len();
            direction.ahead.push((first, payload.to_vec()));
            // Skipping a hole may have made this very segment the next one.
            Self::drain_ahead(flow, direction, events);
            return;
        }
        let already = offset.unsigned_abs() as usize;
        if already < payload.len() {
            Self::deliver(flow, direction, &payload[already..], events);
        }
        Self::drain_ahead(flow, direction, events);
    }

    /// Ends the capture: gives up on every hole and delivers what waited behind it.
    pub fn finish(&mut self, events: &mut Vec<CaptureEvent>) {
        for (flow, direction) in &mut self.flows {
            while !direction.ahead.is_empty() {
                Self::skip_hole(*flow, direction, events);
                Self::drain_ahead(*flow, direction, events);
            }
        }
    }

    fn deliver(
        flow: Flow,
        direction: &mut TcpDirection,
        bytes: &[u8],
        events: &mut Vec<CaptureEvent>,
    ) {
        let next = direction.next.unwrap_or(0);
        direction.next = Some(next.wrapping_add(bytes.len() as u32));
        events.push(CaptureEvent::Payload {
            flow,
            bytes: bytes.to_vec(),
        });
    }

    /// Delivers every waiting segment that now starts at or before the expected byte.
    fn drain_ahead(flow: Flow, direction: &mut TcpDirection, events: &mut Vec<CaptureEvent>) {
        loop {
            let next = direction.next.unwrap_or(0);
            let Some(index) = direction
                .ahead
                .iter()
                .position(|(sequence, _)| sequence.wrapping_sub(next) as i32 <= 0)
            else {
                return;
            };
            let (sequence, bytes) = direction.ahead.swap_remove(index);
            direction.ahead_bytes -= bytes.len();
            let already = next.wrapping_sub(sequence) as usize;
            if already < bytes.len() {
                Self::deliver(flow, direction, &bytes[already..], events);
            }
        }
    }

    /// Moves the expected byte to the nearest waiting segment, reporting the hole.
    fn skip_hole(flow: Flow, direction: &mut TcpDirection, events: &mut Vec<CaptureEvent>) {
        let next = direction.next.unwrap_or(0);
        if let Some(nearest) = direction
            .ahead
            .iter()
            .map(|(sequence, _)| *sequence)
            .min_by_key(|sequence| sequence.wrapping_sub(next))
        {
            events.push(CaptureEvent::Gap {
                flow,
                missing: nearest.wrapping_sub(next),
            });
            direction.next = Some(nearest);
            Self::drain_ahead(flow, direction, events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            transport: Transport::Tcp,
            source: "10.0.0.1:4712".parse().expect("address"),
            destination: "10.0.0.2:50000".parse().expect("address"),
        }
    }

    fn delivered(events: &[CaptureEvent]) -> Vec<u8> {
        events
            .iter()
            .flat_map(|event| match event {
                CaptureEvent::Payload { bytes, .. } => bytes.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn reorders_and_drops_retransmissions_across_sequence_wrap() {
        let mut tcp = TcpReassembler::new();
        let mut events = Vec::new();
        let start = u32::MAX - 2;
        tcp.segment(flow(), start - 1, true, b"", &mut events);
        tcp.segment(flow(), start.wrapping_add(4), false, b"efgh", &mut events);
        tcp.segment(flow(), start, false, b"abcd", &mut events);
        tcp.segment(flow(), start.wrapping_add(2), false, b"cdef", &mut events);
        tcp.segment(flow(), start.wrapping_add(8), false, b"ij", &mut events);
        tcp.finish(&mut events);
        assert_eq!(delivered(&events), b"abcdefghij");
        assert!(!events
            .iter()
            .any(|event| matches!(event, CaptureEvent::Gap { .. })));
    }

    #[test]
    fn reports_a_hole_that_never_fills() {
        let mut tcp = TcpReassembler::new();
        let mut events = Vec::new();
        tcp.segment(flow(), 100, false, b"abc", &mut events);
        tcp.segment(flow(), 110, false, b"xyz", &mut events);
        tcp.finish(&mut events);
        assert_eq!(delivered(&events), b"abcxyz");
        assert!(events.contains(&CaptureEvent::Gap {
            flow: flow(),
            missing: 7
        }));
    }

    #[test]
    fn refuses_what_is_not_a_capture() {
        assert_eq!(
            read_capture(&[0u8; 40]),
            Err(CaptureError::NotPcap { magic: 0 })
        );
        assert_eq!(
            read_capture(&[0xd4, 0xc3]),
            Err(CaptureError::TruncatedHeader)
        );
        assert_eq!(
            read_capture(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0]),
            Err(CaptureError::PcapNg)
        );
    }
}
