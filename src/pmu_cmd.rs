//! `edgeward pmu`: the appliance's own PMU, run on recorded raw samples.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use edgeward_measurement::c37118::{ClockState, NominalFrequency};
use edgeward_measurement::estimator::csv::SampleCsv;
use edgeward_measurement::estimator::{Channel, Class, Estimator, EstimatorConfig, Report};

#[derive(Clone, Copy, ValueEnum)]
pub enum ClassArg {
    #[value(name = "P")]
    P,
    #[value(name = "M")]
    M,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum NominalArg {
    #[value(name = "50")]
    Hz50,
    #[value(name = "60")]
    Hz60,
}

#[derive(Subcommand)]
pub enum PmuCommand {
    /// Estimate synchrophasors (C37.118.1 P or M class) from raw samples: a CSV with the header
    /// `t,va,vb,vc,ia,ib,ic`, t in seconds after a UTC second boundary, uniformly sampled at --fs.
    Estimate {
        #[arg(long)]
        input: PathBuf,
        /// Samples per second of the input.
        #[arg(long, value_name = "HZ")]
        fs: u32,
        /// Nominal frequency.
        #[arg(long, value_enum)]
        f0: NominalArg,
        /// Reports per second (10, 25, 50, 100 at 50 Hz; 10, 12, 15, 20, 30, 60, 120 at 60 Hz).
        #[arg(long, value_name = "FPS")]
        rate: u32,
        #[arg(long, value_enum, ignore_case = true)]
        class: ClassArg,
        /// One JSON object per report: {"t", "phasors": {"va": [re, im], …}, "freq", "rocof"}.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: PmuCommand) -> Result<()> {
    match command {
        PmuCommand::Estimate {
            input,
            fs,
            f0,
            rate,
            class,
            json,
        } => estimate(&input, fs, f0, rate, class, json),
    }
}

fn estimate(
    input: &PathBuf,
    fs: u32,
    f0: NominalArg,
    rate: u32,
    class: ClassArg,
    json: bool,
) -> Result<()> {
    let nominal = match f0 {
        NominalArg::Hz50 => NominalFrequency::Hz50,
        NominalArg::Hz60 => NominalFrequency::Hz60,
    };
    let class = match class {
        ClassArg::P => Class::P,
        ClassArg::M => Class::M,
    };
    let config = EstimatorConfig::new(class, nominal, rate, fs)?;
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut csv = SampleCsv::new(fs);
    let mut estimator: Option<Estimator> = None;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut reports = 0u64;
    let span = tracing::info_span!("pmu estimate", input = %input.display(), fs, rate, %class);
    let _entered = span.enter();
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", input.display()))?;
        let Some(set) = csv
            .line(&line)
            .with_context(|| input.display().to_string())?
        else {
            continue;
        };
        let estimator = match &mut estimator {
            Some(estimator) => estimator,
            None => {
                let start = csv.start().context("the first row sets the start")?;
                estimator.insert(Estimator::new(config, start))
            }
        };
        // A file carries no clock state: its t is taken as UTC-locked.
        if let Some(report) = estimator.push(&set, ClockState::Locked) {
            reports += 1;
            let text = if json {
                report_json(&report)?
            } else {
                report_text(&report)
            };
            writeln!(out, "{text}")?;
        }
    }
    out.flush()?;
    tracing::info!(samples = csv.samples(), reports, "estimated");
    if reports == 0 {
        let needed = config.window_latency() * 2.0;
        bail!(
            "no report: {} samples ({:.3} s) at {fs} Hz do not fill one {class}-class window at \
             {rate} fps (about {needed:.3} s)",
            csv.samples(),
            csv.samples() as f64 / f64::from(fs),
        );
    }
    Ok(())
}

/// One report as `--json` prints it; fields in this order.
#[derive(serde::Serialize)]
struct ReportJson {
    t: f64,
    phasors: PhasorsJson,
    freq: f64,
    rocof: f64,
}

/// [re, im] of each channel, RMS.
#[derive(serde::Serialize)]
struct PhasorsJson {
    va: [f64; 2],
    vb: [f64; 2],
    vc: [f64; 2],
    ia: [f64; 2],
    ib: [f64; 2],
    ic: [f64; 2],
}

fn report_json(report: &Report) -> Result<String> {
    let pair = |channel: Channel| {
        let phasor = report.phasor(channel);
        [phasor.re, phasor.im]
    };
    Ok(serde_json::to_string(&ReportJson {
        t: report.time.seconds_since(0),
        phasors: PhasorsJson {
            va: pair(Channel::Va),
            vb: pair(Channel::Vb),
            vc: pair(Channel::Vc),
            ia: pair(Channel::Ia),
            ib: pair(Channel::Ib),
            ic: pair(Channel::Ic),
        },
        freq: report.frequency,
        rocof: report.rocof,
    })?)
}

fn report_text(report: &Report) -> String {
    let mut text = format!(
        "t={:.6} f={:.6} Hz rocof={:.4} Hz/s",
        report.time.seconds_since(0),
        report.frequency,
        report.rocof
    );
    for channel in Channel::ALL {
        let phasor = report.phasor(channel);
        let _ = write!(
            text,
            " {}={:.4}∠{:.3}°",
            channel.name(),
            phasor.norm(),
            phasor.arg().to_degrees()
        );
    }
    text
}
