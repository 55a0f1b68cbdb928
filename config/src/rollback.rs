//! A configuration older than the one an appliance has run is refused. A signature proves who
//! wrote a configuration, not that it is the latest: someone with the disk in hand could put
//! back last year's configuration, signed by the operator, with a retired broker or a verifier
//! since compromised. So every configuration carries a `serial`, one more with each issue. The
//! appliance keeps the highest serial it has run in a TPM counter: the counter only goes up, it
//! survives a wiped disk, and a counter defined anew starts at the highest value any counter of
//! that TPM ever held.
//!
//! The judgement is here, without a TPM: the serial and the counter's value in, what to do out.

use thiserror::Error;

/// The highest serial a configuration may carry.
pub const MAX_SERIAL: u64 = 1 << 32;

/// How far ahead of the counter a serial may be. The counter is advanced one increment at a
/// time (a TPM counter cannot be set), so a serial like a date (2026120401) would take
/// billions; the operator's serial goes up by one per issue.
pub const MAX_ADVANCE: u64 = 1000;

/// What the appliance does with its counter before it runs a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The configuration the counter records: run it.
    Current,
    /// A newer configuration: increment the counter this many times, then run it.
    Advance(u64),
}

/// Why a configuration's serial is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RollbackError {
    #[error(
        "the configuration's serial {serial} is older than serial {counter}, which this \
         appliance has already run (its TPM counter): an old configuration put back is refused; \
         sign the current one with serial {counter} or higher"
    )]
    Older { serial: u64, counter: u64 },
    #[error(
        "the configuration's serial {serial} is more than {MAX_ADVANCE} ahead of this \
         appliance's TPM counter ({counter}): raise the serial by one per configuration issued"
    )]
    TooFar { serial: u64, counter: u64 },
}

/// Judges a configuration's `serial` against the appliance's `counter`.
pub fn judge(serial: u64, counter: u64) -> Result<Verdict, RollbackError> {
    if serial < counter {
        return Err(RollbackError::Older { serial, counter });
    }
    match serial - counter {
        0 => Ok(Verdict::Current),
        ahead if ahead > MAX_ADVANCE => Err(RollbackError::TooFar { serial, counter }),
        ahead => Ok(Verdict::Advance(ahead)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_serial_runs_a_newer_one_advances_an_older_one_is_refused() {
        assert_eq!(judge(5, 5), Ok(Verdict::Current));
        assert_eq!(judge(6, 5), Ok(Verdict::Advance(1)));
        assert_eq!(judge(1, 0), Ok(Verdict::Advance(1)), "a new appliance");
        assert_eq!(
            judge(4, 5),
            Err(RollbackError::Older {
                serial: 4,
                counter: 5
            })
        );
        let refusal = judge(4, 5).expect_err("older").to_string();
        assert!(
            refusal.contains("serial 4 is older than serial 5"),
            "{refusal}"
        );
    }

    #[test]
    fn a_serial_far_ahead_is_refused_rather_than_counted_to() {
        assert_eq!(judge(1005, 5), Ok(Verdict::Advance(1000)));
        assert_eq!(
            judge(1006, 5),
            Err(RollbackError::TooFar {
                serial: 1006,
                counter: 5
            })
        );
        assert!(matches!(
            judge(2_026_120_401, 0),
            Err(RollbackError::TooFar { .. })
        ));
    }
}
