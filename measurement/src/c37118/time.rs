//! FRACSEC: the fraction of a second and the time-quality flags carried in its top byte.

/// Direction of a pending or past leap second (FRACSEC bit 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeapDirection {
    Add,
    Delete,
}

/// The clock state in MSG_TQ, the low four bits of the FRACSEC flags (C37.118.2 Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    /// 0: locked to UTC traceable time.
    Locked,
    /// 1..=0xB: unlocked, with a maximum error of 10^(code−10) s (1 ns … 10 s).
    Unlocked { code: u8 },
    /// 0xC..=0xE: reserved codes.
    Reserved { code: u8 },
    /// 0xF: clock failure, time not reliable.
    Failure,
}

impl ClockState {
    fn from_code(code: u8) -> Self {
        match code & 0x0F {
            0 => Self::Locked,
            c @ 1..=0x0B => Self::Unlocked { code: c },
            0x0F => Self::Failure,
            c => Self::Reserved { code: c },
        }
    }

    /// The 4-bit MSG_TQ code.
    pub fn code(self) -> u8 {
        match self {
            Self::Locked => 0,
            Self::Unlocked { code } | Self::Reserved { code } => code,
            Self::Failure => 0x0F,
        }
    }

    /// The largest time error the code admits, in seconds; `None` when the code gives no bound.
    pub fn max_error_seconds(self) -> Option<f64> {
        match self {
            Self::Locked => Some(0.0),
            Self::Unlocked { code } => Some(10f64.powi(i32::from(code) - 10)),
            Self::Reserved { .. } | Self::Failure => None,
        }
    }
}

/// The time-quality byte of FRACSEC (bits 31–24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeQuality {
    raw: u8,
}

impl TimeQuality {
    pub fn from_raw(raw: u8) -> Self {
        // Bit 7 is reserved; it is kept so that re-encoding gives the same bytes.
        Self { raw }
    }

    pub fn raw(self) -> u8 {
        self.raw
    }

    pub fn leap_direction(self) -> LeapDirection {
        if self.raw & 0x40 != 0 {
            LeapDirection::Delete
        } else {
            LeapDirection::Add
        }
    }

    pub fn leap_occurred(self) -> bool {
        self.raw & 0x20 != 0
    }

    pub fn leap_pending(self) -> bool {
        self.raw & 0x10 != 0
    }

    pub fn clock(self) -> ClockState {
        ClockState::from_code(self.raw)
    }
}

/// FRACSEC: time-quality flags and a 24-bit count of TIME_BASE fractions of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FracSec {
    raw: u32,
}

impl FracSec {
    pub fn from_raw(raw: u32) -> Self {
        Self { raw }
    }

    /// Builds FRACSEC from its parts; `count` is truncated to its 24 bits.
    pub fn new(quality: TimeQuality, count: u32) -> Self {
        Self {
            raw: (u32::from(quality.raw()) << 24) | (count & 0x00FF_FFFF),
        }
    }

    pub fn raw(self) -> u32 {
        self.raw
    }

    pub fn count(self) -> u32 {
        self.raw & 0x00FF_FFFF
    }

    pub fn quality(self) -> TimeQuality {
        TimeQuality::from_raw((self.raw >> 24) as u8)
    }
}
