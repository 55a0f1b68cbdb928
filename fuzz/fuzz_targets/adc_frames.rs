//! ADS131M08 frames from untrusted bytes, as a faulty or hostile SPI bus could deliver them:
//! the driver's start-up handshake and its frame reading (CRC, 24-bit words, scaling) on
//! whatever the bus returns.
#![no_main]

use std::convert::Infallible;

use edgeward_measurement::sample::Timestamp;
use edgeward_measurement::source::ads131m::{AdcConfig, Ads131m, DataReady, Gain, Osr};
use edgeward_measurement::source::SampleSource;
use embedded_hal::spi::{ErrorType, Operation, SpiDevice};
use libfuzzer_sys::fuzz_target;

/// A bus that answers every transfer with the next fuzzed bytes.
struct Bus<'a> {
    data: &'a [u8],
}

impl ErrorType for Bus<'_> {
    type Error = Infallible;
}

impl SpiDevice for Bus<'_> {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        for operation in operations {
            if let Operation::TransferInPlace(frame) = operation {
                for byte in frame.iter_mut() {
                    let (first, rest) = self.data.split_first().unwrap_or((&0, &[]));
                    *byte = *first;
                    self.data = rest;
                }
            }
        }
        Ok(())
    }
}

struct Ready;

impl DataReady for Ready {
    type Error = Infallible;
    fn wait(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(gain) = Gain::new(1) else {
        return;
    };
    let config = AdcConfig {
        clock_hz: 10_240_000,
        osr: Osr::X512,
        gains: [gain; 8],
        channels: [0, 1, 2, 3, 4, 5],
        scale: [400.0, 400.0, 400.0, 40.0, 40.0, 40.0],
    };
    let start = Timestamp { sec: 0, nsec: 0 };
    if let Ok(mut adc) = Ads131m::new(Bus { data }, Ready, config, start) {
        for _ in 0..8 {
            if let Ok((set, _)) = adc.next_set() {
                assert!(set.iter().all(|value| value.is_finite()));
            }
        }
    }
});
