//! A load generator that speaks C37.118 over TCP as a PMU does: it answers SEND CFG-2 with its
//! configuration and, once DATA ON came, sends one data frame per 20 ms on the wall clock's 50/s
//! grid until DATA OFF or the connection ends.
//!
//! It exists for benchmarks that need many streams at once. pyPMU is the PMU the tests trust as
//! the independent peer, but each pyPMU server keeps a core busy polling its queue, so ten of
//! them on this machine's two cores would measure pyPMU rather than the agent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeward_measurement::c37118::{
    Command, CommonHeader, ConfigFrame, DataFormat, DataFrame, DataRate, FracSec, Frame, FrameType,
    Frequency, IdCode, NominalFrequency, Phasor, PhasorChannel, PhasorQuantity, PhasorScale,
    PhasorUnit, PmuConfig, PmuData, Rocof, Stat, TimeBase,
};

/// Frames per second of every simulated PMU.
pub const RATE: u32 = 50;

/// The CFG-2 of PMU `idcode`: one station, six integer rectangular phasors, 50 Hz, 50/s.
pub fn config(idcode: u16) -> ConfigFrame {
    let phasor = |name: &str, quantity| PhasorChannel {
        name: name.into(),
        scale: PhasorScale::Unit(PhasorUnit {
            quantity,
            factor: 915_527,
        }),
    };
    ConfigFrame {
        header: CommonHeader::new(
            FrameType::Cfg2,
            IdCode(idcode),
            1_700_000_000,
            FracSec::from_raw(0),
        ),
        time_base: TimeBase::new(1_000_000).expect("non-zero"),
        pmus: vec![PmuConfig {
            station: format!("PMU {idcode}"),
            idcode: IdCode(idcode),
            format: DataFormat::new(false, false, false, false),
            phasors: vec![
                phasor("VA", PhasorQuantity::Voltage),
                phasor("VB", PhasorQuantity::Voltage),
                phasor("VC", PhasorQuantity::Voltage),
                phasor("IA", PhasorQuantity::Current),
                phasor("IB", PhasorQuantity::Current),
                phasor("IC", PhasorQuantity::Current),
            ],
            analogs: vec![],
            digitals: vec![],
            nominal_frequency: NominalFrequency::Hz50,
            cfgcnt: 1,
            cfg3: None,
        }],
        data_rate: DataRate(RATE as i16),
    }
}

/// The encoded data frame of PMU `idcode` for `slot`, the index on the 50/s grid since the
/// Unix epoch.
pub fn data_frame(idcode: u16, slot: u64) -> Vec<u8> {
    let k = slot % 1_000;
    DataFrame {
        header: CommonHeader::new(
            FrameType::Data,
            IdCode(idcode),
            u32::try_from(slot / u64::from(RATE)).expect("a SOC before 2106"),
            FracSec::from_raw((slot % u64::from(RATE)) as u32 * (1_000_000 / RATE)),
        ),
        pmus: vec![PmuData {
            stat: Stat(0),
            phasors: (0..6)
                .map(|i| Phasor::IntRectangular {
                    re: 14_000 + (k % 100) as i16 + i,
                    im: -7_000 - i,
                })
                .collect(),
            frequency: Frequency::IntDeviation((k % 50) as i16 - 25),
            rocof: Rocof::IntHundredths(0),
            analogs: vec![],
            digitals: vec![],
        }],
    }
    .encode()
    .expect("encodes")
}

/// A simulated PMU listening on a loopback port; stops when dropped.
pub struct SimulatedPmu {
    pub port: u16,
    pub idcode: u16,
    stop: Arc<AtomicBool>,
}

impl SimulatedPmu {
    pub fn start(idcode: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        listener.set_nonblocking(true).expect("non-blocking accept");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((connection, _)) => serve(connection, idcode, &stopping),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, idcode, stop }
    }
}

impl Drop for SimulatedPmu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection: commands are read on their own thread, frames are sent on this one.
fn serve(connection: TcpStream, idcode: u16, stop: &AtomicBool) {
    let _ = connection.set_nodelay(true);
    let Ok(mut commands) = connection.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(connection));
    let sending = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicBool::new(true));
    {
        let (writer, sending, open) = (writer.clone(), sending.clone(), open.clone());
        std::thread::spawn(move || {
            while let Some(command) = read_command(&mut commands) {
                match command {
                    Command::SendCfg2 => {
                        let bytes = Frame::Config(config(idcode)).encode().expect("encodes");
                        if writer.lock().expect("writer").write_all(&bytes).is_err() {
                            break;
                        }
                    }
                    Command::DataOn => sending.store(true, Ordering::Relaxed),
                    Command::DataOff => sending.store(false, Ordering::Relaxed),
                    _ => {}
                }
            }
            open.store(false, Ordering::Relaxed);
        });
    }
    let period_ms = u64::from(1_000 / RATE);
    while open.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        let now_ms = now.as_millis() as u64;
        let slot = now_ms / period_ms + 1;
        std::thread::sleep(Duration::from_millis(slot * period_ms).saturating_sub(now));
        if sending.load(Ordering::Relaxed) {
            let bytes = data_frame(idcode, slot);
            if writer.lock().expect("writer").write_all(&bytes).is_err() {
                break;
            }
        }
    }
    let closing = writer.lock();
    if let Ok(connection) = closing {
        let _ = connection.shutdown(std::net::Shutdown::Both);
    }
}

/// The next command frame, or `None` when the connection ended or sent something else.
fn read_command(stream: &mut TcpStream) -> Option<Command> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).ok()?;
    let size = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut bytes = head.to_vec();
    bytes.resize(size.max(4), 0);
    stream.read_exact(&mut bytes[4..]).ok()?;
    match Frame::decode(&bytes, None).ok()? {
        Frame::Command(frame) => Some(frame.command),
        _ => None,
    }
}
