//! A driver for TI's ADS131M08, an 8-channel simultaneous-sampling 24-bit delta-sigma ADC on SPI
//! with a data-ready pin, generic over the `embedded-hal` 1.0 traits (datasheet SBAS950: §8.5
//! the SPI frame, §8.5.1.9 the CRC, §8.6 the registers).
//!
//! Six of the eight channels carry Va, Vb, Vc, Ia, Ib, Ic (which ones is configured), each
//! scaled from volts at the ADC pin to volts or amperes at the primary by its front end (a
//! divider, a CT and its burden). The ADC's conversions are paced by its own clock: the
//! integrator disciplines that clock to UTC (a GPS-locked oscillator) and starts conversions on
//! a second boundary (SYNC/RESET on the PPS edge); the driver is told the UTC instant of the first
//! sample and the clock's state and keeps the count.
//!
//! The data-ready wait is a trait of its own: [`PolledReady`] polls any `InputPin`; a Linux
//! binding with GPIO edge events is in [`linux`] (feature `linux-adc`).

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::InputPin;
use embedded_hal::spi::{Operation, SpiDevice};

use super::SampleSource;
use crate::c37118::ClockState;
use crate::estimator::SampleSet;
use crate::sample::Timestamp;

/// Channels of the ADS131M08.
pub const CHANNELS: usize = 8;
/// Bytes in one SPI word (the reset word length, 24 bits).
const WORD: usize = 3;
/// Words in a frame: the response, eight channels, the CRC.
const FRAME_WORDS: usize = CHANNELS + 2;

const CMD_NULL: u16 = 0x0000;
const CMD_RESET: u16 = 0x0011;
const CMD_UNLOCK: u16 = 0x0655;
const REG_ID: u8 = 0x00;
const REG_CLOCK: u8 = 0x03;
const REG_GAIN1: u8 = 0x04;
const REG_GAIN2: u8 = 0x05;
/// The RESET acknowledgement of an 8-channel device.
const RESET_ACK: u16 = 0xFF28;

fn rreg(address: u8) -> u16 {
    0xA000 | (u16::from(address) << 7)
}

fn wreg(address: u8) -> u16 {
    0x6000 | (u16::from(address) << 7)
}

/// The WREG acknowledgement for one register.
fn wreg_ack(address: u8) -> u16 {
    0x4000 | (u16::from(address) << 7)
}

/// Oversampling ratio: the data rate is f_CLKIN / 2 / OSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Osr {
    X128,
    X256,
    X512,
    X1024,
    X2048,
    X4096,
    X8192,
    X16256,
}

impl Osr {
    pub fn ratio(self) -> u32 {
        match self {
            Self::X128 => 128,
            Self::X256 => 256,
            Self::X512 => 512,
            Self::X1024 => 1024,
            Self::X2048 => 2048,
            Self::X4096 => 4096,
            Self::X8192 => 8192,
            Self::X16256 => 16256,
        }
    }

    fn code(self) -> u16 {
        self as u16
    }
}

/// Programmable gain of one channel: 1 to 128; full scale is ±1.2 V / gain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gain(u8);

impl Gain {
    /// `None` unless `gain` is a power of two from 1 to 128.
    pub fn new(gain: u8) -> Option<Self> {
        (gain.is_power_of_two() && gain <= 128).then_some(Self(gain))
    }

    pub fn value(self) -> u8 {
        self.0
    }

    fn code(self) -> u16 {
        self.0.trailing_zeros() as u16
    }
}

/// How the ADC is wired and run.
#[derive(Debug, Clone, PartialEq)]
pub struct AdcConfig {
    /// f_CLKIN in Hz (8.192 MHz nominal; 10.24 MHz with OSR 512 gives 10 kHz).
    pub clock_hz: u32,
    pub osr: Osr,
    pub gains: [Gain; CHANNELS],
    /// The ADC channel of Va, Vb, Vc, Ia, Ib, Ic.
    pub channels: [u8; 6],
    /// Primary volts or amperes per volt at the ADC pin, per Va … Ic.
    pub scale: [f64; 6],
}

/// What went wrong talking to the ADC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdcError<S, R>
where
    S: std::fmt::Debug,
    R: std::fmt::Debug,
{
    #[error("SPI: {0:?}")]
    Spi(S),
    #[error("data-ready: {0:?}")]
    Ready(R),
    #[error("the device answered RESET with {found:#06x}, not an ADS131M08's {RESET_ACK:#06x}")]
    NotAnAds131m08 { found: u16 },
    #[error("the ID register reads {found:#06x}: not an 8-channel ADS131M0x")]
    WrongId { found: u16 },
    #[error("writing register {address:#04x} was acknowledged with {found:#06x}")]
    WriteRejected { address: u8, found: u16 },
    #[error("a frame's CRC is {found:#06x}, its data gives {computed:#06x}: the frame is dropped")]
    Crc { found: u16, computed: u16 },
    #[error("{clock_hz} Hz / 2 / OSR {osr} is not a whole number of samples per second")]
    Rate { clock_hz: u32, osr: u32 },
    #[error("ADC channel {channel} does not exist (0–7)")]
    Channel { channel: u8 },
    #[error("scale {scale} of {what} is not a positive finite number")]
    Scale { what: &'static str, scale: f64 },
}

/// Waits for the data-ready pin to go low.
pub trait DataReady {
    type Error: std::fmt::Debug;
    fn wait(&mut self) -> Result<(), Self::Error>;
}

/// Data-ready by polling an input pin every `interval_us`, giving up after `limit` polls.
pub struct PolledReady<P, D> {
    pin: P,
    delay: D,
    interval_us: u32,
    limit: u32,
}

/// The pin did not go low in time, or could not be read.
#[derive(Debug)]
pub enum PollError<E> {
    Pin(E),
    Timeout { waited_us: u64 },
}

impl<P: InputPin, D: DelayNs> PolledReady<P, D> {
    pub fn new(pin: P, delay: D, interval_us: u32, limit: u32) -> Self {
        Self {
            pin,
            delay,
            interval_us,
            limit,
        }
    }
}

impl<P: InputPin, D: DelayNs> DataReady for PolledReady<P, D> {
    type Error = PollError<P::Error>;

    fn wait(&mut self) -> Result<(), Self::Error> {
        for _ in 0..self.limit {
            if self.pin.is_low().map_err(PollError::Pin)? {
                return Ok(());
            }
            self.delay.delay_us(self.interval_us);
        }
        Err(PollError::Timeout {
            waited_us: u64::from(self.limit) * u64::from(self.interval_us),
        })
    }
}

/// CRC-16-CCITT (x¹⁶ + x¹² + x⁵ + 1, seed 0xFFFF), as the device computes it.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Sign-extends a 24-bit two's complement word.
fn sample_of(word: &[u8]) -> i32 {
    let raw = (u32::from(word[0]) << 16) | (u32::from(word[1]) << 8) | u32::from(word[2]);
    ((raw << 8) as i32) >> 8
}

/// The ADS131M08 on `spi`, with data-ready `ready`.
pub struct Ads131m<SPI, R> {
    spi: SPI,
    ready: R,
    config: AdcConfig,
    fs: u32,
    start: Timestamp,
    clock: ClockState,
    /// Volts at the pin per count, per ADC channel.
    volts_per_count: [f64; CHANNELS],
    frames: u64,
    crc_errors: u64,
}

type AdcResult<T, SPI, R> =
    Result<T, AdcError<<SPI as embedded_hal::spi::ErrorType>::Error, <R as DataReady>::Error>>;

impl<SPI: SpiDevice, R: DataReady> Ads131m<SPI, R> {
    /// Resets and configures the device: checks it is an ADS131M08, sets the OSR (all channels
    /// on) and the gains, and reads back nothing it did not write. `start` is the UTC instant of
    /// the first conversion after this returns.
    pub fn new(spi: SPI, ready: R, config: AdcConfig, start: Timestamp) -> AdcResult<Self, SPI, R> {
        let modulator = config.clock_hz / 2;
        if !config.clock_hz.is_multiple_of(2) || !modulator.is_multiple_of(config.osr.ratio()) {
            return Err(AdcError::Rate {
                clock_hz: config.clock_hz,
                osr: config.osr.ratio(),
            });
        }
        for &channel in &config.channels {
            if usize::from(channel) >= CHANNELS {
                return Err(AdcError::Channel { channel });
            }
        }
        let names = ["va", "vb", "vc", "ia", "ib", "ic"];
        for (what, &scale) in names.iter().zip(&config.scale) {
            if !scale.is_finite() || scale <= 0.0 {
                return Err(AdcError::Scale { what, scale });
            }
        }
        let mut volts_per_count = [0.0; CHANNELS];
        for (slot, gain) in volts_per_count.iter_mut().zip(&config.gains) {
            *slot = 1.2 / f64::from(gain.value()) / f64::from(1u32 << 23);
        }
        let mut adc = Self {
            spi,
            ready,
            fs: modulator / config.osr.ratio(),
            config,
            start,
            clock: ClockState::Locked,
            volts_per_count,
            frames: 0,
            crc_errors: 0,
        };
        // RESET is answered in the next frame.
        adc.command(CMD_RESET, None)?;
        let ack = adc.command(CMD_NULL, None)?;
        if ack != RESET_ACK {
            return Err(AdcError::NotAnAds131m08 { found: ack });
        }
        adc.command(CMD_UNLOCK, None)?;
        adc.command(rreg(REG_ID), None)?;
        let id = adc.command(CMD_NULL, None)?;
        if id & 0x0F00 != 0x0800 {
            return Err(AdcError::WrongId { found: id });
        }
        // CLOCK: every channel on, the OSR, high-resolution power mode.
        let clock = 0xFF00 | (adc.config.osr.code() << 2) | 0b10;
        let gains = &adc.config.gains;
        let gain1 = (0..4).fold(0u16, |word, n| word | (gains[n].code() << (4 * n)));
        let gain2 = (0..4).fold(0u16, |word, n| word | (gains[n + 4].code() << (4 * n)));
        for (address, value) in [(REG_CLOCK, clock), (REG_GAIN1, gain1), (REG_GAIN2, gain2)] {
            adc.command(wreg(address), Some(value))?;
            let ack = adc.command(CMD_NULL, None)?;
            if ack != wreg_ack(address) {
                return Err(AdcError::WriteRejected {
                    address,
                    found: ack,
                });
            }
        }
        Ok(adc)
    }

    /// Samples per second.
    pub fn rate(&self) -> u32 {
        self.fs
    }

    /// Frames dropped for a CRC mismatch so far.
    pub fn crc_errors(&self) -> u64 {
        self.crc_errors
    }

    /// The UTC instant of the next conversion: where an estimator restarts after a dropped
    /// frame, so that no sample is placed at another's time.
    pub fn next_time(&self) -> Timestamp {
        let nanos =
            self.start.as_nanos() + u128::from(self.frames) * 1_000_000_000 / u128::from(self.fs);
        Timestamp {
            sec: (nanos / 1_000_000_000) as u64,
            nsec: (nanos % 1_000_000_000) as u32,
        }
    }

    /// The time source's state, as the owner of the clock learns it (GPS lock, holdover).
    pub fn set_clock(&mut self, clock: ClockState) {
        self.clock = clock;
    }

    /// One frame: `command` (and one register word) out; the response word back.
    fn command(&mut self, command: u16, data: Option<u16>) -> AdcResult<u16, SPI, R> {
        let mut frame = [0u8; FRAME_WORDS * WORD];
        frame[..2].copy_from_slice(&command.to_be_bytes());
        if let Some(data) = data {
            frame[WORD..WORD + 2].copy_from_slice(&data.to_be_bytes());
        }
        self.spi
            .transaction(&mut [Operation::TransferInPlace(&mut frame)])
            .map_err(AdcError::Spi)?;
        Ok(u16::from_be_bytes([frame[0], frame[1]]))
    }

    /// Waits for data-ready and reads one conversion of all eight channels, in counts.
    pub fn read_counts(&mut self) -> AdcResult<[i32; CHANNELS], SPI, R> {
        self.ready.wait().map_err(AdcError::Ready)?;
        let mut frame = [0u8; FRAME_WORDS * WORD];
        self.spi
            .transaction(&mut [Operation::TransferInPlace(&mut frame)])
            .map_err(AdcError::Spi)?;
        let crc_at = (FRAME_WORDS - 1) * WORD;
        let found = u16::from_be_bytes([frame[crc_at], frame[crc_at + 1]]);
        let computed = crc16(&frame[..crc_at]);
        self.frames += 1;
        if found != computed {
            self.crc_errors += 1;
            return Err(AdcError::Crc { found, computed });
        }
        let mut counts = [0i32; CHANNELS];
        for (index, count) in counts.iter_mut().enumerate() {
            let at = (index + 1) * WORD;
            *count = sample_of(&frame[at..at + WORD]);
        }
        Ok(counts)
    }
}

impl<SPI, R> SampleSource for Ads131m<SPI, R>
where
    SPI: SpiDevice,
    SPI::Error: Send + Sync + 'static,
    R: DataReady,
    R::Error: Send + Sync + 'static,
{
    type Error = AdcError<SPI::Error, R::Error>;

    fn rate(&self) -> u32 {
        self.fs
    }

    fn start(&self) -> Timestamp {
        self.start
    }

    /// A frame whose CRC does not match is an error the caller must treat as a gap (the sample
    /// count no longer matches the time); it is never passed on as data.
    fn next_set(&mut self) -> Result<(SampleSet, ClockState), Self::Error> {
        let counts = self.read_counts()?;
        let mut set = [0.0; 6];
        for (slot, (channel, scale)) in set
            .iter_mut()
            .zip(self.config.channels.iter().zip(&self.config.scale))
        {
            let channel = usize::from(*channel);
            *slot = f64::from(counts[channel]) * self.volts_per_count[channel] * scale;
        }
        Ok((set, self.clock))
    }
}

/// The Linux binding: spidev for the SPI device and a GPIO character-device line's falling
/// edges for data-ready, through `linux-embedded-hal`.
#[cfg(feature = "linux-adc")]
pub mod linux {
    use linux_embedded_hal::gpio_cdev::{Chip, EventRequestFlags, EventType, LineRequestFlags};
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    use linux_embedded_hal::{gpio_cdev, SpidevDevice};

    use super::{AdcConfig, AdcError, Ads131m, DataReady};
    use crate::sample::Timestamp;

    /// How long data-ready may stay quiet: the slowest rate the device has (8.192 MHz / 2 /
    /// 16256) is a conversion every 4 ms, so a second without one is a device that stopped (or
    /// lost its clock): the wait ends with that reason instead of a thread waiting forever, and
    /// the appliance reports it and opens the ADC again.
    const SILENCE_LIMIT_MS: u16 = 1000;

    /// Data-ready from the kernel's edge events: no polling.
    pub struct EdgeReady {
        events: gpio_cdev::LineEventHandle,
    }

    /// Why data-ready did not come.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum EdgeReadyError {
        #[error("the GPIO line: {0}")]
        Gpio(#[from] gpio_cdev::errors::Error),
        #[error("waiting for the GPIO line: {0}")]
        Poll(#[from] nix::Error),
        #[error("no data-ready edge for {SILENCE_LIMIT_MS} ms: the ADC stopped converting")]
        Silent,
    }

    impl DataReady for EdgeReady {
        type Error = EdgeReadyError;

        fn wait(&mut self) -> Result<(), Self::Error> {
            use nix::poll::{poll, PollFd, PollFlags};
            use std::os::fd::AsFd;
            loop {
                let mut fds = [PollFd::new(self.events.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, SILENCE_LIMIT_MS) {
                    Ok(0) => return Err(EdgeReadyError::Silent),
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(error) => return Err(error.into()),
                }
                if self.events.get_event()?.event_type() == EventType::FallingEdge {
                    return Ok(());
                }
            }
        }
    }

    /// Why the ADC could not be opened.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum OpenError {
        #[error("opening {path}: {source}")]
        Spi {
            path: String,
            source: std::io::Error,
        },
        #[error("data-ready line {line} of {chip}: {source}")]
        Gpio {
            chip: String,
            line: u32,
            source: gpio_cdev::errors::Error,
        },
        #[error("the ADC: {0}")]
        Adc(#[from] AdcError<linux_embedded_hal::SPIError, EdgeReadyError>),
    }

    /// Opens `spi` (`/dev/spidevB.C`, SPI mode 1 at `spi_hz`) and the data-ready `line` of
    /// `chip` (`/dev/gpiochipN`), and configures the ADC.
    pub fn open(
        spi: &str,
        spi_hz: u32,
        chip: &str,
        line: u32,
        config: AdcConfig,
        start: Timestamp,
    ) -> Result<Ads131m<SpidevDevice, EdgeReady>, OpenError> {
        let spi_error = |source: std::io::Error| OpenError::Spi {
            path: spi.to_owned(),
            source,
        };
        let mut device = SpidevDevice::open(spi).map_err(|error| {
            let inner = error.inner();
            spi_error(std::io::Error::new(inner.kind(), inner.to_string()))
        })?;
        device
            .configure(
                &SpidevOptions::new()
                    .bits_per_word(8)
                    .max_speed_hz(spi_hz)
                    .mode(SpiModeFlags::SPI_MODE_1)
                    .build(),
            )
            .map_err(spi_error)?;
        let gpio_error = |source| OpenError::Gpio {
            chip: chip.to_owned(),
            line,
            source,
        };
        let events = Chip::new(chip)
            .and_then(|mut chip| chip.get_line(line))
            .and_then(|line| {
                line.events(
                    LineRequestFlags::INPUT,
                    EventRequestFlags::FALLING_EDGE,
                    "edgeward-adc",
                )
            })
            .map_err(gpio_error)?;
        Ok(Ads131m::new(device, EdgeReady { events }, config, start)?)
    }
}

#[cfg(test)]
mod tests {
    //! Against a model of the device as its datasheet describes it (registers, command
    //! responses a frame later, 24-bit two's complement data, the output CRC): no ADS131M08 is
    //! attached to this machine.

    use std::cell::RefCell;
    use std::convert::Infallible;
    use std::rc::Rc;

    use super::*;
    use crate::estimator::signal::{Nameplate, TestSignal, Waveform};
    use crate::estimator::{Channel, Class, Estimator, EstimatorConfig};

    struct Device {
        registers: [u16; 64],
        response: u16,
        reset_ack: u16,
        waveform: Waveform,
        config: AdcConfig,
        fs: f64,
        /// Conversions made so far.
        conversions: u64,
        corrupt_next: bool,
    }

    #[derive(Clone)]
    struct Model(Rc<RefCell<Device>>);

    impl embedded_hal::spi::ErrorType for Model {
        type Error = Infallible;
    }

    impl SpiDevice for Model {
        fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
            let mut device = self.0.borrow_mut();
            for operation in operations {
                let Operation::TransferInPlace(frame) = operation else {
                    panic!("the driver only transfers in place");
                };
                let command = u16::from_be_bytes([frame[0], frame[1]]);
                let data = u16::from_be_bytes([frame[3], frame[4]]);
                let response = device.response;
                device.response = match command {
                    CMD_RESET => device.reset_ack,
                    CMD_UNLOCK => CMD_UNLOCK,
                    CMD_NULL => device.registers[1],
                    command if command & 0xE000 == 0xA000 => {
                        device.registers[usize::from((command >> 7) & 0x3F)]
                    }
                    command if command & 0xE000 == 0x6000 => {
                        let address = (command >> 7) & 0x3F;
                        device.registers[usize::from(address)] = data;
                        0x4000 | (address << 7)
                    }
                    other => panic!("the driver sent an unknown command {other:#06x}"),
                };
                frame.fill(0);
                frame[..2].copy_from_slice(&response.to_be_bytes());
                // The latest conversion, per channel, in counts at its gain.
                let t = device.conversions.saturating_sub(1) as f64 / device.fs;
                let primary = device.waveform.sample(t);
                for adc_channel in 0..CHANNELS {
                    let count = match device
                        .config
                        .channels
                        .iter()
                        .position(|&c| usize::from(c) == adc_channel)
                    {
                        Some(slot) => {
                            let volts = primary[slot] / device.config.scale[slot];
                            let lsb = 1.2
                                / f64::from(device.config.gains[adc_channel].value())
                                / f64::from(1u32 << 23);
                            (volts / lsb).round().clamp(-8_388_608.0, 8_388_607.0) as i32
                        }
                        None => 0,
                    };
                    let at = (adc_channel + 1) * WORD;
                    frame[at..at + WORD].copy_from_slice(&count.to_be_bytes()[1..]);
                }
                let crc_at = (FRAME_WORDS - 1) * WORD;
                let crc = crc16(&frame[..crc_at]);
                frame[crc_at..crc_at + 2].copy_from_slice(&crc.to_be_bytes());
                if std::mem::take(&mut device.corrupt_next) {
                    frame[WORD + 2] ^= 0x01;
                }
            }
            Ok(())
        }
    }

    /// Each wait is one new conversion.
    impl DataReady for Model {
        type Error = Infallible;
        fn wait(&mut self) -> Result<(), Infallible> {
            self.0.borrow_mut().conversions += 1;
            Ok(())
        }
    }

    fn config() -> AdcConfig {
        let gain = |g| Gain::new(g).expect("a valid gain");
        AdcConfig {
            clock_hz: 10_240_000,
            osr: Osr::X512,
            gains: [
                gain(1),
                gain(1),
                gain(1),
                gain(4),
                gain(4),
                gain(4),
                gain(1),
                gain(1),
            ],
            channels: [0, 1, 2, 3, 4, 5],
            // 400 V per volt at the pin (a divider), 40 A per volt (a CT and burden).
            scale: [400.0, 400.0, 400.0, 40.0, 40.0, 40.0],
        }
    }

    fn model(frequency: f64) -> Model {
        let mut registers = [0u16; 64];
        registers[usize::from(REG_ID)] = 0x2811;
        registers[1] = 0x0500;
        Model(Rc::new(RefCell::new(Device {
            registers,
            response: 0,
            reset_ack: RESET_ACK,
            waveform: Waveform::new(
                TestSignal::Steady {
                    frequency,
                    magnitude: 1.0,
                },
                Nameplate::default(),
                50.0,
            ),
            config: config(),
            fs: 10_000.0,
            conversions: 0,
            corrupt_next: false,
        })))
    }

    const START: Timestamp = Timestamp {
        sec: 1_800_000_000,
        nsec: 0,
    };

    #[test]
    fn the_device_is_configured_and_read_in_volts_and_amperes() {
        let device = model(50.0);
        let mut adc = Ads131m::new(device.clone(), device.clone(), config(), START).expect("opens");
        assert_eq!(adc.rate(), 10_000);
        {
            let state = device.0.borrow();
            // Every channel on, OSR 512 (code 2), high resolution.
            assert_eq!(state.registers[usize::from(REG_CLOCK)], 0xFF0A);
            // Channels 3 (gain 4, code 2) in GAIN1's top nibble; 4 and 5 in GAIN2's low ones.
            assert_eq!(state.registers[usize::from(REG_GAIN1)], 0x2000);
            assert_eq!(state.registers[usize::from(REG_GAIN2)], 0x0022);
        }
        let (set, clock) = adc.next_set().expect("a set");
        assert_eq!(clock, ClockState::Locked);
        let truth = Waveform::new(
            TestSignal::Steady {
                frequency: 50.0,
                magnitude: 1.0,
            },
            Nameplate::default(),
            50.0,
        )
        .sample(0.0);
        for (index, (got, expected)) in set.iter().zip(truth).enumerate() {
            let lsb = 1.2 / f64::from(1u32 << 23) * if index < 3 { 400.0 } else { 40.0 / 4.0 };
            assert!(
                (got - expected).abs() <= lsb,
                "channel {index}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn the_estimator_on_the_adc_meets_the_steady_state_target() {
        let device = model(50.3);
        let mut adc = Ads131m::new(device.clone(), device, config(), START).expect("opens");
        let estimator_config = EstimatorConfig::new(
            Class::P,
            crate::c37118::NominalFrequency::Hz50,
            50,
            adc.rate(),
        )
        .expect("valid");
        let mut estimator = Estimator::new(estimator_config, adc.start());
        let mut checked = 0;
        for _ in 0..12_000 {
            let (set, clock) = adc.next_set().expect("a set");
            if let Some(report) = estimator.push(&set, clock) {
                let t = report.time.seconds_since(START.sec);
                let truth = Waveform::new(
                    TestSignal::Steady {
                        frequency: 50.3,
                        magnitude: 1.0,
                    },
                    Nameplate::default(),
                    50.0,
                )
                .truth(t);
                for channel in Channel::ALL {
                    let expected = truth.phasors[channel.index()];
                    let tve = (report.phasor(channel) - expected).norm() / expected.norm();
                    assert!(tve <= 0.001, "{channel:?} at {t}: TVE {tve}");
                }
                assert!((report.frequency - 50.3).abs() <= 0.0005);
                checked += 1;
            }
        }
        assert!(checked >= 50, "{checked} reports");
    }

    #[test]
    fn a_corrupted_frame_is_refused_counted_and_its_time_skipped() {
        let device = model(50.0);
        let mut adc = Ads131m::new(device.clone(), device.clone(), config(), START).expect("opens");
        adc.next_set().expect("a good set");
        device.0.borrow_mut().corrupt_next = true;
        assert!(matches!(adc.next_set(), Err(AdcError::Crc { .. })));
        assert_eq!(adc.crc_errors(), 1);
        // Two conversions were taken: the next is 0.2 ms after the start.
        assert_eq!(
            adc.next_time(),
            Timestamp {
                sec: START.sec,
                nsec: 200_000
            }
        );
        adc.next_set().expect("the next frame is good again");
    }

    #[test]
    fn another_device_and_impossible_settings_are_refused() {
        let device = model(50.0);
        device.0.borrow_mut().reset_ack = 0xFF24;
        assert!(matches!(
            Ads131m::new(device.clone(), device, config(), START),
            Err(AdcError::NotAnAds131m08 { found: 0xFF24 })
        ));
        let device = model(50.0);
        device.0.borrow_mut().registers[usize::from(REG_ID)] = 0x2411;
        assert!(matches!(
            Ads131m::new(device.clone(), device, config(), START),
            Err(AdcError::WrongId { found: 0x2411 })
        ));
        let device = model(50.0);
        let odd = AdcConfig {
            clock_hz: 8_192_000,
            osr: Osr::X16256,
            ..config()
        };
        assert!(matches!(
            Ads131m::new(device.clone(), device, odd, START),
            Err(AdcError::Rate { .. })
        ));
        let device = model(50.0);
        let wrong = AdcConfig {
            channels: [0, 1, 2, 3, 4, 9],
            ..config()
        };
        assert!(matches!(
            Ads131m::new(device.clone(), device, wrong, START),
            Err(AdcError::Channel { channel: 9 })
        ));
        assert!(Gain::new(3).is_none() && Gain::new(128).is_some());
    }

    struct Pin {
        low_after: u32,
        polls: u32,
    }

    impl embedded_hal::digital::ErrorType for Pin {
        type Error = Infallible;
    }

    impl InputPin for Pin {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            self.is_low().map(|low| !low)
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            self.polls += 1;
            Ok(self.polls > self.low_after)
        }
    }

    struct NoDelay;

    impl DelayNs for NoDelay {
        fn delay_ns(&mut self, _: u32) {}
    }

    #[test]
    fn polling_data_ready_waits_for_low_and_gives_up_at_its_limit() {
        let mut ready = PolledReady::new(
            Pin {
                low_after: 3,
                polls: 0,
            },
            NoDelay,
            10,
            5,
        );
        assert!(ready.wait().is_ok());
        let mut never = PolledReady::new(
            Pin {
                low_after: u32::MAX,
                polls: 0,
            },
            NoDelay,
            10,
            5,
        );
        assert!(matches!(
            never.wait(),
            Err(PollError::Timeout { waited_us: 50 })
        ));
    }

    #[test]
    fn the_crc_is_the_ccitt_one_the_device_uses() {
        // CRC-16/CCITT-FALSE of "123456789" is 0x29B1.
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }
}
