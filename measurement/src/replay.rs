//! Decoding recorded C37.118 traffic: a libpcap capture or a raw file of concatenated frames,
//! frame by frame, with every frame that cannot be read reported rather than fatal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::c37118::{ConfigFrame, Decoded, Decoder, Frame, FrameType, FramerEvent, StreamFramer};
use crate::capture::{
    looks_like_capture, read_capture, CaptureError, CaptureEvent, Flow, Transport,
};

/// One decoded frame, or why something could not be decoded.
#[derive(Debug, Clone)]
pub enum ReplayItem {
    Frame {
        /// `None` for a raw frame file.
        flow: Option<Flow>,
        frame: Frame,
        /// The configuration a data frame was read with.
        config: Option<Arc<ConfigFrame>>,
    },
    Problem {
        flow: Option<Flow>,
        problem: String,
    },
}

/// Decodes every frame in `bytes`: a classic libpcap capture when it starts with a pcap magic,
/// otherwise a raw stream of frames.
pub fn replay(bytes: &[u8]) -> Result<Vec<ReplayItem>, CaptureError> {
    let mut replayer = Replayer::default();
    if looks_like_capture(bytes) {
        for event in read_capture(bytes)? {
            replayer.capture_event(event);
        }
        replayer.finish_streams();
    } else {
        let mut framer = StreamFramer::new();
        framer.push(bytes);
        let mut decoder = Decoder::new();
        replayer.drain(None, &mut framer, &mut decoder);
        if let Some(event) = framer.finish() {
            replayer.framer_event(None, event, &mut decoder);
        }
    }
    Ok(replayer.items)
}

#[derive(Default)]
struct Replayer {
    items: Vec<ReplayItem>,
    framers: HashMap<Flow, StreamFramer>,
    /// One decoder per pair of hosts, so that a configuration sent over TCP decodes data sent
    /// over UDP between the same hosts.
    decoders: HashMap<(IpAddr, IpAddr), Decoder>,
}

impl Replayer {
    fn capture_event(&mut self, event: CaptureEvent) {
        match event {
            CaptureEvent::Payload { flow, bytes } => {
                let mut decoder = self.decoders.remove(&flow.hosts()).unwrap_or_default();
                match flow.transport {
                    Transport::Tcp => {
                        let mut framer = self.framers.remove(&flow).unwrap_or_default();
                        framer.push(&bytes);
                        self.drain(Some(flow), &mut framer, &mut decoder);
                        self.framers.insert(flow, framer);
                    }
                    Transport::Udp => {
                        let mut framer = StreamFramer::new();
                        framer.push(&bytes);
                        self.drain(Some(flow), &mut framer, &mut decoder);
                        if let Some(event) = framer.finish() {
                            self.framer_event(Some(flow), event, &mut decoder);
                        }
                    }
                }
                self.decoders.insert(flow.hosts(), decoder);
            }
            CaptureEvent::Gap { flow, missing } => self.items.push(ReplayItem::Problem {
                flow: Some(flow),
                problem: format!("{missing} bytes of the TCP stream were not captured"),
            }),
            CaptureEvent::Truncated { packet } => self.items.push(ReplayItem::Problem {
                flow: None,
                problem: format!("capture ends inside packet record {packet}"),
            }),
            // Other traffic in the capture (ARP, ICMP, …) is not C37.118's business.
            CaptureEvent::Skipped { .. } => {}
        }
    }

    fn finish_streams(&mut self) {
        let framers: Vec<(Flow, StreamFramer)> = self.framers.drain().collect();
        for (flow, mut framer) in framers {
            if let Some(event) = framer.finish() {
                let mut decoder = self.decoders.remove(&flow.hosts()).unwrap_or_default();
                self.framer_event(Some(flow), event, &mut decoder);
                self.decoders.insert(flow.hosts(), decoder);
            }
        }
    }

    fn drain(&mut self, flow: Option<Flow>, framer: &mut StreamFramer, decoder: &mut Decoder) {
        while let Some(event) = framer.next_event() {
            self.framer_event(flow, event, decoder);
        }
    }

    fn framer_event(&mut self, flow: Option<Flow>, event: FramerEvent<'_>, decoder: &mut Decoder) {
        match event {
            FramerEvent::Frame(bytes) => match decoder.decode(bytes) {
                Ok(Decoded::Frame(frame)) => {
                    let config = match frame.header().frame_type {
                        FrameType::Data => decoder.config(frame.header().idcode).cloned(),
                        _ => None,
                    };
                    self.items.push(ReplayItem::Frame {
                        flow,
                        frame,
                        config,
                    });
                }
                Ok(Decoded::FragmentHeld { .. }) => {}
                Err(error) => self.items.push(ReplayItem::Problem {
                    flow,
                    problem: format!("undecodable frame: {error}"),
                }),
            },
            FramerEvent::Discarded { bytes, reason } => self.items.push(ReplayItem::Problem {
                flow,
                problem: format!("dropped {bytes} bytes: {reason}"),
            }),
        }
    }
}
