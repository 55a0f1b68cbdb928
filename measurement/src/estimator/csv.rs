//! The raw-sample CSV of `edgeward pmu estimate`: a header `t,va,vb,vc,ia,ib,ic`, then one row per
//! sample: seconds since a UTC second boundary and the six instantaneous values.
//!
//! Sans-I/O: the caller feeds lines. Rows must be uniformly spaced at 1/fs (within a quarter of a
//! sample, which any printing with microsecond precision at up to 1 MS/s keeps), because the
//! estimator places every sample by its index; a gap or a jitter is an error, not a guess.

use super::{Channel, SampleSet};
use crate::sample::Timestamp;

/// The header every file starts with.
pub const HEADER: &str = "t,va,vb,vc,ia,ib,ic";

/// Why a line was refused, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    #[error("line {line}: expected the header `{HEADER}`, found `{found}`")]
    Header { line: u64, found: String },
    #[error("line {line}: expected 7 columns (t and six channels), found {found}")]
    Columns { line: u64, found: usize },
    #[error("line {line}: column {column} is not a number: `{text}`")]
    Number {
        line: u64,
        column: &'static str,
        text: String,
    },
    #[error("line {line}: column {column} is not finite")]
    NotFinite { line: u64, column: &'static str },
    #[error(
        "line {line}: t = {t} is outside 0 ≤ t < {MAX_T}; t counts seconds after a UTC second \
         boundary"
    )]
    TimeOutOfRange { line: u64, t: f64 },
    #[error(
        "line {line}: t = {t} s, but uniform sampling at the given rate puts this sample at \
         {expected} s (a gap, a repeated row or the wrong --fs)"
    )]
    NotUniform { line: u64, t: f64, expected: f64 },
}

/// Reads the CSV line by line.
#[derive(Debug, Clone)]
pub struct SampleCsv {
    fs: f64,
    line: u64,
    header_seen: bool,
    first: Option<f64>,
    samples: u64,
}

/// The largest t accepted: Unix time fits (until 2286), and f64 still resolves it to a
/// microsecond.
pub const MAX_T: f64 = 1e10;

/// Longest excerpt of a bad field quoted back in an error.
const EXCERPT: usize = 40;

fn excerpt(text: &str) -> String {
    text.chars().take(EXCERPT).collect()
}

impl SampleCsv {
    pub fn new(fs: u32) -> Self {
        Self {
            fs: f64::from(fs),
            line: 0,
            header_seen: false,
            first: None,
            samples: 0,
        }
    }

    /// The instant of the first sample, relative to the UTC second boundary `t` counts from
    /// (second 0); `None` before the first row.
    pub fn start(&self) -> Option<Timestamp> {
        let first = self.first?;
        let mut sec = first.floor();
        let mut nsec = ((first - sec) * 1e9).round();
        if nsec >= 1e9 {
            sec += 1.0;
            nsec = 0.0;
        }
        Some(Timestamp {
            sec: sec as u64,
            nsec: nsec as u32,
        })
    }

    /// Rows read so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Takes one line (without its line ending). Returns the sample set of a data row, `None` for
    /// the header and blank lines.
    pub fn line(&mut self, text: &str) -> Result<Option<SampleSet>, CsvError> {
        self.line += 1;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if !self.header_seen {
            let normalised: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            if normalised != HEADER {
                return Err(CsvError::Header {
                    line: self.line,
                    found: excerpt(text),
                });
            }
            self.header_seen = true;
            return Ok(None);
        }
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if fields.len() != 7 {
            return Err(CsvError::Columns {
                line: self.line,
                found: fields.len(),
            });
        }
        let t = self.number(fields[0], "t")?;
        if !(0.0..MAX_T).contains(&t) {
            return Err(CsvError::TimeOutOfRange { line: self.line, t });
        }
        let mut set = [0.0; 6];
        for (channel, field) in Channel::ALL.iter().zip(&fields[1..]) {
            set[channel.index()] = self.number(field, channel.name())?;
        }
        let first = *self.first.get_or_insert(t);
        let expected = first + self.samples as f64 / self.fs;
        if ((t - expected) * self.fs).abs() > 0.25 {
            return Err(CsvError::NotUniform {
                line: self.line,
                t,
                expected,
            });
        }
        self.samples += 1;
        Ok(Some(set))
    }

    fn number(&self, field: &str, column: &'static str) -> Result<f64, CsvError> {
        let value: f64 = field.parse().map_err(|_| CsvError::Number {
            line: self.line,
            column,
            text: excerpt(field),
        })?;
        if !value.is_finite() {
            return Err(CsvError::NotFinite {
                line: self.line,
                column,
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, fs: u32) -> Result<Vec<SampleSet>, CsvError> {
        let mut csv = SampleCsv::new(fs);
        let mut rows = Vec::new();
        for line in text.lines() {
            rows.extend(csv.line(line)?);
        }
        Ok(rows)
    }

    #[test]
    fn rows_after_the_header_are_sample_sets_in_channel_order() {
        let rows = read(
            "t,va,vb,vc,ia,ib,ic\r\n0.5,1,2,3,4,5,6\n0.5001,-1,-2,-3,-4,-5,-6e0\n\n",
            10_000,
        )
        .expect("valid");
        assert_eq!(
            rows,
            vec![
                [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]
            ]
        );
        let mut csv = SampleCsv::new(10_000);
        csv.line(HEADER).expect("header");
        csv.line("3.25,0,0,0,0,0,0").expect("row");
        assert_eq!(
            csv.start(),
            Some(Timestamp {
                sec: 3,
                nsec: 250_000_000
            })
        );
    }

    #[test]
    fn every_malformed_input_is_refused_with_its_line() {
        type Expect = fn(&CsvError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("t,va,vb\n", |e| {
                matches!(e, CsvError::Header { line: 1, .. })
            }),
            ("t,va,vb,vc,ia,ib,ic\n0,1,2,3\n", |e| {
                matches!(e, CsvError::Columns { line: 2, found: 4 })
            }),
            ("t,va,vb,vc,ia,ib,ic\n0,1,2,x,4,5,6\n", |e| {
                matches!(
                    e,
                    CsvError::Number {
                        line: 2,
                        column: "vc",
                        ..
                    }
                )
            }),
            ("t,va,vb,vc,ia,ib,ic\n0,1,2,3,NaN,5,6\n", |e| {
                matches!(
                    e,
                    CsvError::NotFinite {
                        line: 2,
                        column: "ia"
                    }
                )
            }),
            ("t,va,vb,vc,ia,ib,ic\n-0.1,1,2,3,4,5,6\n", |e| {
                matches!(e, CsvError::TimeOutOfRange { line: 2, .. })
            }),
            ("t,va,vb,vc,ia,ib,ic\n1e300,1,2,3,4,5,6\n", |e| {
                matches!(e, CsvError::TimeOutOfRange { line: 2, .. })
            }),
            // The third sample is missing.
            (
                "t,va,vb,vc,ia,ib,ic\n0,1,2,3,4,5,6\n0.001,1,2,3,4,5,6\n0.003,1,2,3,4,5,6\n",
                |e| matches!(e, CsvError::NotUniform { line: 4, .. }),
            ),
        ];
        for (text, expected) in cases {
            let error = read(text, 1000).expect_err(text);
            assert!(expected(&error), "{text:?} gave {error}");
        }
    }
}
