//! Every frame of the real C37.118 captures in ../shared/testdata/c37118 decodes to the
//! configuration and values that an independent decoder (the Zeek analyzer of
//! cisagov/icsnpp-synchrophasor, BSD-3-Clause) read from them.
//!
//! The baselines are sorted Zeek logs with masked timestamps, so records are compared as
//! multisets. Zeek prints doubles with six decimals and trailing zeros removed; our values are
//! printed the same way, which compares them at float32 precision.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use edgeward_measurement::c37118::{
    Analog, AnalogKind, AnalogScale, ConfigFrame, Frame, Frequency, Phasor, PhasorQuantity,
    PhasorScale, Rocof,
};
use edgeward_measurement::replay::{replay, ReplayItem};

/// Zeek's `%.6f` with trailing zeros trimmed (keeping one decimal).
fn zeek_double(value: f64) -> String {
    let text = format!("{value:.6}");
    let trimmed = text.trim_end_matches('0');
    if trimmed.ends_with('.') {
        format!("{trimmed}0")
    } else {
        trimmed.to_owned()
    }
}

fn zeek_bool(value: bool) -> String {
    if value { "T" } else { "F" }.to_owned()
}

fn zeek_list<T: ToString>(values: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = values.into_iter().map(|value| value.to_string()).collect();
    if items.is_empty() {
        "(empty)".into()
    } else {
        items.join(",")
    }
}

/// Reads a Zeek log into its rows, each a map from field name to value.
fn zeek_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).expect("baseline log is readable");
    let fields: Vec<&str> = text
        .lines()
        .find_map(|line| line.strip_prefix("#fields\t"))
        .expect("baseline has a #fields line")
        .split('\t')
        .collect();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            fields
                .iter()
                .map(|field| field.to_string())
                .zip(line.split('\t').map(str::to_owned))
                .collect()
        })
        .collect()
}

type DataFrames = Vec<(Frame, Arc<ConfigFrame>)>;

fn decoded(capture: &Path) -> (Vec<ConfigFrame>, DataFrames) {
    let bytes = std::fs::read(capture).expect("capture is readable");
    let mut configs = Vec::new();
    let mut data = Vec::new();
    for item in replay(&bytes).expect("capture is a libpcap file") {
        match item {
            ReplayItem::Frame {
                frame: Frame::Config(config),
                ..
            } => configs.push(config),
            ReplayItem::Frame {
                frame: frame @ Frame::Data(_),
                config,
                ..
            } => data.push((
                frame,
                config.expect("data frames carry their configuration"),
            )),
            ReplayItem::Frame { .. } => {}
            ReplayItem::Problem { problem, .. } => {
                panic!(
                    "{}: every frame must decode, but: {problem}",
                    capture.display()
                )
            }
        }
    }
    (configs, data)
}

/// Our configuration rows in the baseline's columns. Zeek reads PHUNIT and ANUNIT as a 24-bit
/// value in the high bytes and a kind in the low byte, the reverse of C37.118.2 Table 9, so the
/// raw words are rebuilt from its two columns and compared whole.
fn config_rows(configs: &[ConfigFrame]) -> Vec<String> {
    let mut rows = Vec::new();
    for config in configs {
        for (index, pmu) in config.pmus.iter().enumerate() {
            let format = pmu.format;
            let phunits = pmu.phasors.iter().map(|channel| match channel.scale {
                PhasorScale::Unit(unit) => {
                    let kind = u32::from(channel.scale.quantity() == PhasorQuantity::Current);
                    (kind << 24) | unit.factor
                }
                PhasorScale::Cfg3 { .. } => panic!("captures carry CFG-2 only"),
            });
            let anunits = pmu.analogs.iter().map(|channel| match channel.scale {
                AnalogScale::Unit(unit) => {
                    let kind = match unit.kind {
                        AnalogKind::PointOnWave => 0,
                        AnalogKind::Rms => 1,
                        AnalogKind::Peak => 2,
                        AnalogKind::Other(code) => u32::from(code),
                    };
                    (kind << 24) | (unit.scale as u32 & 0x00FF_FFFF)
                }
                AnalogScale::Cfg3 { .. } => panic!("captures carry CFG-2 only"),
            });
            let fnom = if pmu.nominal_frequency.hertz() == 50.0 {
                "1"
            } else {
                "0"
            };
            rows.push(
                [
                    index.to_string(),
                    pmu.station.clone(),
                    pmu.idcode.0.to_string(),
                    zeek_bool(format.polar()),
                    zeek_bool(format.phasor_float()),
                    zeek_bool(format.analog_float()),
                    zeek_bool(format.freq_float()),
                    pmu.phasors.len().to_string(),
                    pmu.analogs.len().to_string(),
                    pmu.digitals.len().to_string(),
                    zeek_list(pmu.phasors.iter().map(|channel| &channel.name)),
                    zeek_list(pmu.analogs.iter().map(|channel| &channel.name)),
                    zeek_list(pmu.digital_names()),
                    zeek_list(phunits),
                    zeek_list(anunits),
                    zeek_list(pmu.digitals.iter().map(|word| word.unit.normal)),
                    zeek_list(pmu.digitals.iter().map(|word| word.unit.valid)),
                    fnom.to_owned(),
                    pmu.cfgcnt.to_string(),
                ]
                .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

fn baseline_config_rows(path: &Path) -> Vec<String> {
    let mut rows: Vec<String> =
        zeek_rows(path)
            .iter()
            .map(|row| {
                let words =
                    |value: &str, kind: &str| -> String {
                        if value == "(empty)" {
                            return value.into();
                        }
                        let kinds: Vec<u32> = row[kind]
                            .split(',')
                            .map(|item| item.parse().expect("a count"))
                            .collect();
                        zeek_list(value.split(',').zip(kinds).map(|(value, kind)| {
                            (value.parse::<u32>().expect("a count") << 8) | kind
                        }))
                    };
                [
                    row["pmu_idx"].clone(),
                    row["station_name"].clone(),
                    row["data_source_id"].clone(),
                    row["phasor_shape"].clone(),
                    row["phasor_format"].clone(),
                    row["analog_format"].clone(),
                    row["freq_format"].clone(),
                    row["phnmr"].clone(),
                    row["annmr"].clone(),
                    row["dgnmr"].clone(),
                    row["phnam"].clone(),
                    row["annam"].clone(),
                    row["dgnam"].clone(),
                    words(&row["phasor_conv_phvalue"], "phasor_conv_phunit"),
                    words(
                        &row["analog_conv_user_defined_scaling"],
                        "analog_conv_analog_flags",
                    ),
                    row["digital_conv_normal_status_mask"].clone(),
                    row["digital_conv_valid_inputs_mask"].clone(),
                    row["fnom"].clone(),
                    row["cfgcnt"].clone(),
                ]
                .join("|")
            })
            .collect();
    rows.sort();
    rows
}

/// Raw values in Zeek's columns: rectangular and polar lists, the other one zero-filled.
fn data_rows(data: &DataFrames) -> Vec<String> {
    let mut rows = Vec::new();
    for (frame, _) in data {
        let Frame::Data(frame) = frame else { continue };
        for (index, block) in frame.pmus.iter().enumerate() {
            let stat = block.stat;
            let (mut re, mut im, mut magnitude, mut angle) = (vec![], vec![], vec![], vec![]);
            for phasor in &block.phasors {
                let (a, b, polar) = match *phasor {
                    Phasor::FloatRectangular { re, im } => (f64::from(re), f64::from(im), false),
                    Phasor::FloatPolar { magnitude, angle } => {
                        (f64::from(magnitude), f64::from(angle), true)
                    }
                    Phasor::IntRectangular { re, im } => (f64::from(re), f64::from(im), false),
                    Phasor::IntPolar { magnitude, angle } => {
                        (f64::from(magnitude), f64::from(angle), true)
                    }
                };
                if polar {
                    re.push(0.0);
                    im.push(0.0);
                    magnitude.push(a);
                    angle.push(b);
                } else {
                    re.push(a);
                    im.push(b);
                    magnitude.push(0.0);
                    angle.push(0.0);
                }
            }
            let frequency = match block.frequency {
                Frequency::IntDeviation(value) => f64::from(value),
                Frequency::Float(value) => f64::from(value),
            };
            let rocof = match block.rocof {
                Rocof::IntHundredths(value) => f64::from(value),
                Rocof::Float(value) => f64::from(value),
            };
            let analogs = block.analogs.iter().map(|value| match *value {
                Analog::Int(value) => zeek_double(f64::from(value)),
                Analog::Float(value) => zeek_double(f64::from(value)),
            });
            rows.push(
                [
                    index.to_string(),
                    (stat.0 & 0xF).to_string(),
                    ((stat.0 >> 4) & 0x3).to_string(),
                    ((stat.0 >> 6) & 0x7).to_string(),
                    zeek_bool(stat.data_modified()),
                    zeek_bool(stat.config_change()),
                    zeek_bool(stat.trigger()),
                    zeek_bool(stat.sorted_by_arrival()),
                    zeek_bool(stat.sync_error()),
                    (stat.0 >> 14).to_string(),
                    zeek_list(re.into_iter().map(zeek_double)),
                    zeek_list(im.into_iter().map(zeek_double)),
                    zeek_list(magnitude.into_iter().map(zeek_double)),
                    zeek_list(angle.into_iter().map(zeek_double)),
                    zeek_double(frequency),
                    zeek_double(rocof),
                    zeek_list(analogs),
                    zeek_list(&block.digitals),
                ]
                .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

fn baseline_data_rows(path: &Path) -> Vec<String> {
    let columns = [
        "pmu_idx",
        "trigger_reason",
        "unlocked_time",
        "pmu_time_quality",
        "data_modified",
        "config_change",
        "pmu_trigger_pickup",
        "data_sorting_type",
        "pmu_sync_error",
        "data_error_indicator",
        "est_rectangular_real",
        "est_rectangular_imaginary",
        "est_polar_magnitude",
        "est_polar_angle",
        "freq_dev_mhz",
        "rocof",
        "analog_data",
        "digital",
    ];
    let mut rows: Vec<String> = zeek_rows(path)
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| row[*column].clone())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

fn check_capture(capture: &str, baseline: &str, data_frames: usize) {
    let Some(dir) = edgeward_tests::testdata("c37118") else {
        return;
    };
    let (configs, data) = decoded(&dir.join(capture));
    assert_eq!(data.len(), data_frames, "{capture}: data frames decoded");
    let baseline_dir = dir.join("baseline").join(baseline);
    let ours = config_rows(&configs);
    let theirs = baseline_config_rows(&baseline_dir.join("synchrophasor_cfg_detail.log"));
    assert_eq!(
        ours, theirs,
        "{capture}: configuration differs from the baseline"
    );
    let ours = data_rows(&data);
    let theirs = baseline_data_rows(&baseline_dir.join("synchrophasor_data_detail.log"));
    assert_eq!(ours.len(), theirs.len(), "{capture}: PMU blocks");
    let differing: Vec<_> = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(
        differing.is_empty(),
        "{capture}: blocks differ from the baseline, first ones (ours, theirs): {differing:#?}"
    );
}

#[test]
fn one_pmu_over_tcp_matches_the_independent_decoder() {
    check_capture("C37.118_1PMU_TCP.pcap", "1PMU_TCP", 252);
}

#[test]
fn one_pmu_over_udp_matches_the_independent_decoder() {
    check_capture("C37.118_1PMU_UDP.pcap", "1PMU_UDP", 356);
}

#[test]
fn four_pmu_pdc_stream_matches_the_independent_decoder() {
    check_capture("C37.118_4in1PMU_TCP.pcap", "4in1PMU_TCP", 1342);
}

#[test]
fn data_frames_become_samples_in_the_platforms_signal_layout() {
    let Some(dir) = edgeward_tests::testdata("c37118") else {
        return;
    };
    let (_, data) = decoded(&dir.join("C37.118_4in1PMU_TCP.pcap"));
    let mut previous: BTreeMap<u16, u64> = BTreeMap::new();
    let mut gaps = 0;
    for (frame, config) in &data {
        let Frame::Data(frame) = frame else { continue };
        let samples = edgeward_measurement::sample::samples_from_data_frame(frame, config);
        assert_eq!(samples.len(), 4, "one sample per PMU of the PDC stream");
        for ((idcode, sample), pmu) in samples.iter().zip(&config.pmus) {
            assert_eq!(*idcode, pmu.idcode);
            // Phasors, frequency, ROCOF, analogs, digital words.
            assert_eq!(
                sample.values.len(),
                pmu.phasors.len() + 2 + pmu.analogs.len() + pmu.digitals.len()
            );
            assert!(matches!(
                sample.values[0],
                edgeward_measurement::sample::Value::Complex { .. }
            ));
            if let Some(before) = previous.insert(idcode.0, sample.sequence) {
                assert!(sample.sequence > before, "sequence grows with PMU time");
                if sample.sequence != before + 1 {
                    gaps += 1;
                }
            }
        }
    }
    // The capture has one 3.56 s gap in its data; it shows as a jump in every PMU's sequence.
    assert_eq!(gaps, 4, "one gap per PMU");
}
