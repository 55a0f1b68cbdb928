//! Decode throughput of the C37.118 codec, with pyPMU's parser timed on the same frames in the
//! same run.
//!
//! Frames: the 52-byte single-PMU data frame of C37.118.2 Annex D (4 integer phasors, integer
//! frequency, 3 float analogs, 1 digital word, as pyPMU's sample PMU sends it) and the 456-byte
//! 4-PMU data frames of ../shared/testdata/c37118/C37.118_4in1PMU_TCP.pcap.
//!
//! Run: `cargo bench -p edgeward-measurement --bench decode` (pyPMU from `.venv`, or
//! `EDGEWARD_PYTHON`). Results go to docs/benchmarks.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use edgeward_measurement::c37118::{Analog, Frequency};
use edgeward_measurement::c37118::{
    AnalogChannel, AnalogKind, AnalogScale, AnalogUnit, CommonHeader, ConfigFrame, DataFormat,
    DataFrame, DataRate, DigitalUnit, DigitalWord, FracSec, Frame, FrameType, IdCode,
    NominalFrequency, Phasor, PhasorChannel, PhasorQuantity, PhasorScale, PhasorUnit, PmuConfig,
    PmuData, Rocof, Stat, TimeBase,
};
use edgeward_measurement::replay::{replay, ReplayItem};

/// A named set of data frames with the configuration that decodes them.
struct Workload {
    name: &'static str,
    config: ConfigFrame,
    frames: Vec<Vec<u8>>,
}

fn annex_d() -> Workload {
    let volts = |name: &str| PhasorChannel {
        name: name.into(),
        scale: PhasorScale::Unit(PhasorUnit {
            quantity: PhasorQuantity::Voltage,
            factor: 915_527,
        }),
    };
    let config = ConfigFrame {
        header: CommonHeader::new(
            FrameType::Cfg2,
            IdCode(7734),
            1_149_577_200,
            FracSec::from_raw(0),
        ),
        time_base: TimeBase::new(1_000_000).expect("non-zero"),
        pmus: vec![PmuConfig {
            station: "Station A".into(),
            idcode: IdCode(7734),
            format: DataFormat::new(false, false, true, false),
            phasors: vec![
                volts("VA"),
                volts("VB"),
                volts("VC"),
                PhasorChannel {
                    name: "I1".into(),
                    scale: PhasorScale::Unit(PhasorUnit {
                        quantity: PhasorQuantity::Current,
                        factor: 45_776,
                    }),
                },
            ],
            analogs: ["ANALOG1", "ANALOG2", "ANALOG3"]
                .iter()
                .map(|name| AnalogChannel {
                    name: (*name).into(),
                    scale: AnalogScale::Unit(AnalogUnit {
                        kind: AnalogKind::PointOnWave,
                        scale: 1,
                    }),
                })
                .collect(),
            digitals: vec![DigitalWord {
                names: std::array::from_fn(|bit| format!("BREAKER {bit}")),
                unit: DigitalUnit {
                    normal: 0,
                    valid: 0xFFFF,
                },
            }],
            nominal_frequency: NominalFrequency::Hz60,
            cfgcnt: 22,
            cfg3: None,
        }],
        data_rate: DataRate(30),
    };
    let frames = (0..30u32)
        .map(|k| {
            DataFrame {
                header: CommonHeader::new(
                    FrameType::Data,
                    IdCode(7734),
                    1_149_580_800,
                    FracSec::from_raw(k * 33_333),
                ),
                pmus: vec![PmuData {
                    stat: Stat(0),
                    phasors: vec![
                        Phasor::IntRectangular { re: 14635, im: 0 },
                        Phasor::IntRectangular {
                            re: -7318,
                            im: -12676,
                        },
                        Phasor::IntRectangular {
                            re: -7318,
                            im: 12675,
                        },
                        Phasor::IntRectangular { re: 1092, im: 0 },
                    ],
                    frequency: Frequency::IntDeviation(2500),
                    rocof: Rocof::IntHundredths(0),
                    analogs: vec![
                        Analog::Float(100.0),
                        Analog::Float(1000.0),
                        Analog::Float(10000.0),
                    ],
                    digitals: vec![0x3C12],
                }],
            }
            .encode()
            .expect("encodes")
        })
        .collect::<Vec<_>>();
    assert!(frames.iter().all(|frame| frame.len() == 52));
    Workload {
        name: "annex_d_52_byte_1_pmu",
        config,
        frames,
    }
}

fn testdata() -> PathBuf {
    std::env::var_os("EDGEWARD_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"))
}

fn four_pmu_capture() -> Option<Workload> {
    let path = testdata().join("c37118/C37.118_4in1PMU_TCP.pcap");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("skipping the 4-PMU capture: {} is missing", path.display());
        return None;
    };
    let mut config = None;
    let mut frames = Vec::new();
    for item in replay(&bytes).expect("the capture reads") {
        if let ReplayItem::Frame {
            frame: frame @ Frame::Data(_),
            config: Some(frame_config),
            ..
        } = item
        {
            frames.push(frame.encode().expect("re-encodes"));
            config = Some(frame_config.as_ref().clone());
        }
    }
    Some(Workload {
        name: "capture_4in1_456_byte_4_pmu",
        config: config.expect("the capture has a configuration"),
        frames,
    })
}

fn decode_all(workload: &Workload) {
    for frame in &workload.frames {
        let decoded = Frame::decode(black_box(frame), Some(&workload.config));
        black_box(decoded.expect("decodes"));
    }
}

/// The stream hot path: every frame decoded into one reused `DataFrame`, every value read.
fn decode_all_into(workload: &Workload, frame: &mut DataFrame) {
    for bytes in &workload.frames {
        frame
            .decode_into(black_box(bytes), &workload.config)
            .expect("decodes");
        black_box(&*frame);
    }
}

/// Frames per second over about one second, for the ratio to pyPMU.
fn measure_rust(workload: &Workload, mut decode: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut decoded = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        decode();
        decoded += workload.frames.len();
    }
    decoded as f64 / start.elapsed().as_secs_f64()
}

/// pyPMU refuses user-defined ANUNIT kinds (65-255, such as the capture's 70) with a KeyError,
/// although they do not change how data frames are laid out; it gets the same configuration with
/// those kinds read as point-on-wave, so it can decode the very same data frames.
fn pypmu_config(config: &ConfigFrame) -> ConfigFrame {
    let mut config = config.clone();
    for pmu in &mut config.pmus {
        for channel in &mut pmu.analogs {
            if let AnalogScale::Unit(unit) = &mut channel.scale {
                if matches!(unit.kind, AnalogKind::Other(_)) {
                    unit.kind = AnalogKind::PointOnWave;
                }
            }
        }
    }
    config
}

fn measure_pypmu(workload: &Workload) -> Option<f64> {
    let python = std::env::var_os("EDGEWARD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let dir = std::env::temp_dir().join(format!("edgeward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let config_path = dir.join(format!("{}.cfg", workload.name));
    let data_path = dir.join(format!("{}.data", workload.name));
    std::fs::write(&config_path, pypmu_config(&workload.config).encode().ok()?).ok()?;
    std::fs::write(&data_path, workload.frames.concat()).ok()?;
    let output = Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/pypmu_decode.py"))
        .arg(&config_path)
        .arg(&data_path)
        .arg("3")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match output {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().parse().ok()
        }
        Ok(output) => {
            eprintln!("pyPMU failed: {}", String::from_utf8_lossy(&output.stderr));
            None
        }
        Err(error) => {
            eprintln!("cannot run {}: {error}", python.display());
            None
        }
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let workloads: Vec<Workload> = std::iter::once(annex_d())
        .chain(four_pmu_capture())
        .collect();
    for workload in &workloads {
        let bytes: usize = workload.frames.iter().map(Vec::len).sum();
        let mut group = criterion.benchmark_group("c37118_decode");
        group.throughput(Throughput::Elements(workload.frames.len() as u64));
        group.bench_function(format!("{}/frames", workload.name), |b| {
            b.iter(|| decode_all(workload))
        });
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("{}/bytes", workload.name), |b| {
            b.iter(|| decode_all(workload))
        });
        group.throughput(Throughput::Elements(workload.frames.len() as u64));
        let mut reused = DataFrame::empty();
        group.bench_function(format!("{}/frames_reused", workload.name), |b| {
            b.iter(|| decode_all_into(workload, &mut reused))
        });
        group.finish();
    }
    criterion.final_summary();

    println!("\nedgeward vs pyPMU, same frames, same run, one core (frames/s):");
    println!(
        "{:<30} {:<14} {:>12} {:>9} {:>10} {:>7}",
        "workload", "edgeward path", "edgeward", "MB/s", "pyPMU", "ratio"
    );
    for workload in &workloads {
        let frame_len = workload.frames.iter().map(Vec::len).sum::<usize>() as f64
            / workload.frames.len() as f64;
        let theirs = measure_pypmu(workload);
        let mut reused = DataFrame::empty();
        let paths = [
            (
                "Frame::decode",
                measure_rust(workload, || decode_all(workload)),
            ),
            (
                "decode_into",
                measure_rust(workload, || decode_all_into(workload, &mut reused)),
            ),
        ];
        for (path, ours) in paths {
            println!(
                "{:<30} {:<14} {:>12.0} {:>9.1} {:>10} {:>7}",
                workload.name,
                path,
                ours,
                ours * frame_len / 1e6,
                theirs.map_or("-".into(), |rate| format!("{rate:.0}")),
                theirs.map_or("-".into(), |rate| format!("{:.0}x", ours / rate)),
            );
        }
    }
}
