//! Property tests: every frame type, in every number format, builds to bytes that parse back to
//! the same frame; any altered bit is refused; and no input makes the codec panic.

use edgeward_measurement::c37118::{
    Analog, AnalogChannel, AnalogKind, AnalogScale, AnalogUnit, Cfg3Pmu, Command, CommandFrame,
    CommonHeader, ConfigFrame, DataFormat, DataFrame, DataRate, DecodeError, Decoded, Decoder,
    DigitalUnit, DigitalWord, FracSec, Frame, FrameType, FramerEvent, Frequency, HeaderFrame,
    IdCode, NominalFrequency, Phasor, PhasorChannel, PhasorQuantity, PhasorScale, PhasorUnit,
    PmuConfig, PmuData, Rocof, ServiceClass, Stat, StreamFramer, TimeBase,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn header(frame_type: FrameType) -> impl Strategy<Value = CommonHeader> {
    (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(move |(idcode, soc, fracsec)| {
        CommonHeader::new(frame_type, IdCode(idcode), soc, FracSec::from_raw(fracsec))
    })
}

fn fixed_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{0,16}"
}

fn counted_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 _.äöü-]{0,40}"
}

fn finite() -> impl Strategy<Value = f32> {
    -1.0e6f32..1.0e6f32
}

fn phasor_scale(cfg3: bool) -> BoxedStrategy<PhasorScale> {
    if cfg3 {
        (any::<u16>(), any::<u8>(), any::<u8>(), finite(), finite())
            .prop_map(
                |(modification, phasor_type, user, magnitude_scale, angle_offset)| {
                    PhasorScale::Cfg3 {
                        modification,
                        phasor_type,
                        user,
                        magnitude_scale,
                        angle_offset,
                    }
                },
            )
            .boxed()
    } else {
        (any::<bool>(), 0u32..(1 << 24))
            .prop_map(|(current, factor)| {
                PhasorScale::Unit(PhasorUnit {
                    quantity: if current {
                        PhasorQuantity::Current
                    } else {
                        PhasorQuantity::Voltage
                    },
                    factor,
                })
            })
            .boxed()
    }
}

fn analog_scale(cfg3: bool) -> BoxedStrategy<AnalogScale> {
    if cfg3 {
        (finite(), finite())
            .prop_map(|(magnitude, offset)| AnalogScale::Cfg3 { magnitude, offset })
            .boxed()
    } else {
        (0u8..=255, -(1i32 << 23)..(1i32 << 23))
            .prop_map(|(kind, scale)| {
                let kind = match kind {
                    0 => AnalogKind::PointOnWave,
                    1 => AnalogKind::Rms,
                    2 => AnalogKind::Peak,
                    code => AnalogKind::Other(code),
                };
                AnalogScale::Unit(AnalogUnit { kind, scale })
            })
            .boxed()
    }
}

fn name(cfg3: bool) -> BoxedStrategy<String> {
    if cfg3 {
        counted_name().boxed()
    } else {
        fixed_name().boxed()
    }
}

fn cfg3_extra() -> impl Strategy<Value = Cfg3Pmu> {
    (
        any::<[u8; 16]>(),
        finite(),
        finite(),
        finite(),
        prop_oneof![
            Just(ServiceClass::M),
            Just(ServiceClass::P),
            (0u8..=255)
                .prop_filter("M and P are named", |code| *code != b'M' && *code != b'P')
                .prop_map(ServiceClass::Other)
        ],
        any::<i32>(),
        any::<i32>(),
    )
        .prop_map(
            |(
                global_pmu_id,
                latitude,
                longitude,
                elevation,
                service_class,
                window,
                group_delay,
            )| {
                Cfg3Pmu {
                    global_pmu_id,
                    latitude,
                    longitude,
                    elevation,
                    service_class,
                    window,
                    group_delay,
                }
            },
        )
}

fn pmu_config(cfg3: bool) -> impl Strategy<Value = PmuConfig> {
    (
        name(cfg3),
        any::<u16>(),
        any::<u16>(),
        vec((name(cfg3), phasor_scale(cfg3)), 0..5),
        vec((name(cfg3), analog_scale(cfg3)), 0..4),
        vec(
            (
                proptest::array::uniform16(name(cfg3)),
                any::<u16>(),
                any::<u16>(),
            ),
            0..3,
        ),
        any::<bool>(),
        any::<u16>(),
        cfg3_extra(),
    )
        .prop_map(
            move |(station, idcode, format, phasors, analogs, digitals, fifty, cfgcnt, extra)| {
                PmuConfig {
                    station,
                    idcode: IdCode(idcode),
                    format: DataFormat::from_raw(format),
                    phasors: phasors
                        .into_iter()
                        .map(|(name, scale)| PhasorChannel { name, scale })
                        .collect(),
                    analogs: analogs
                        .into_iter()
                        .map(|(name, scale)| AnalogChannel { name, scale })
                        .collect(),
                    digitals: digitals
                        .into_iter()
                        .map(|(names, normal, valid)| DigitalWord {
                            names,
                            unit: DigitalUnit { normal, valid },
                        })
                        .collect(),
                    nominal_frequency: if fifty {
                        NominalFrequency::Hz50
                    } else {
                        NominalFrequency::Hz60
                    },
                    cfgcnt,
                    cfg3: cfg3.then_some(extra),
                }
            },
        )
}

fn config(frame_type: FrameType) -> impl Strategy<Value = ConfigFrame> {
    let cfg3 = frame_type == FrameType::Cfg3;
    (
        header(frame_type),
        1u32..(1 << 24),
        any::<u8>(),
        vec(pmu_config(cfg3), 1..4),
        any::<i16>(),
    )
        .prop_map(|(header, base, flags, pmus, rate)| ConfigFrame {
            header,
            time_base: TimeBase::new((u32::from(flags) << 24) | base).expect("base is non-zero"),
            pmus,
            data_rate: DataRate(rate),
        })
}

fn any_config() -> impl Strategy<Value = ConfigFrame> {
    prop_oneof![
        config(FrameType::Cfg1),
        config(FrameType::Cfg2),
        config(FrameType::Cfg3)
    ]
}

fn phasor(format: DataFormat) -> BoxedStrategy<Phasor> {
    match (format.phasor_float(), format.polar()) {
        (false, false) => (any::<i16>(), any::<i16>())
            .prop_map(|(re, im)| Phasor::IntRectangular { re, im })
            .boxed(),
        (false, true) => (any::<u16>(), any::<i16>())
            .prop_map(|(magnitude, angle)| Phasor::IntPolar { magnitude, angle })
            .boxed(),
        (true, false) => (finite(), finite())
            .prop_map(|(re, im)| Phasor::FloatRectangular { re, im })
            .boxed(),
        (true, true) => (finite(), finite())
            .prop_map(|(magnitude, angle)| Phasor::FloatPolar { magnitude, angle })
            .boxed(),
    }
}

fn pmu_data(pmu: &PmuConfig) -> impl Strategy<Value = PmuData> {
    let format = pmu.format;
    let frequency: BoxedStrategy<(Frequency, Rocof)> = if format.freq_float() {
        (finite(), finite())
            .prop_map(|(f, r)| (Frequency::Float(f), Rocof::Float(r)))
            .boxed()
    } else {
        (any::<i16>(), any::<i16>())
            .prop_map(|(f, r)| (Frequency::IntDeviation(f), Rocof::IntHundredths(r)))
            .boxed()
    };
    let analog: BoxedStrategy<Analog> = if format.analog_float() {
        finite().prop_map(Analog::Float).boxed()
    } else {
        any::<i16>().prop_map(Analog::Int).boxed()
    };
    (
        any::<u16>(),
        vec(phasor(format), pmu.phasors.len()),
        frequency,
        vec(analog, pmu.analogs.len()),
        vec(any::<u16>(), pmu.digitals.len()),
    )
        .prop_map(
            |(stat, phasors, (frequency, rocof), analogs, digitals)| PmuData {
                stat: Stat(stat),
                phasors,
                frequency,
                rocof,
                analogs,
                digitals,
            },
        )
}

/// A CFG-2 or CFG-3 and a data frame of its stream.
fn config_and_data() -> impl Strategy<Value = (ConfigFrame, DataFrame)> {
    prop_oneof![config(FrameType::Cfg2), config(FrameType::Cfg3)].prop_flat_map(|config| {
        let blocks: Vec<_> = config.pmus.iter().map(pmu_data).collect();
        let idcode = config.header.idcode;
        (Just(config), blocks, any::<u32>(), any::<u32>()).prop_map(
            move |(config, pmus, soc, fracsec)| {
                let data = DataFrame {
                    header: CommonHeader::new(
                        FrameType::Data,
                        idcode,
                        soc,
                        FracSec::from_raw(fracsec),
                    ),
                    pmus,
                };
                (config, data)
            },
        )
    })
}

fn command() -> impl Strategy<Value = CommandFrame> {
    let command = prop_oneof![
        Just(Command::DataOff),
        Just(Command::DataOn),
        Just(Command::SendHeader),
        Just(Command::SendCfg1),
        Just(Command::SendCfg2),
        Just(Command::SendCfg3),
        vec(any::<[u8; 2]>(), 0..40).prop_map(|words| Command::Extended(words.concat())),
        (0x0100u16..=0x0FFF).prop_map(Command::UserDefined),
        prop_oneof![Just(0u16), Just(7u16), 9u16..0x0100, 0x1000u16..=u16::MAX]
            .prop_map(Command::Reserved),
    ];
    (header(FrameType::Command), command)
        .prop_map(|(header, command)| CommandFrame { header, command })
}

fn decode_with(config: &ConfigFrame, bytes: &[u8]) -> Result<Frame, DecodeError> {
    let mut decoder = Decoder::new();
    decoder.install_config(config.clone());
    match decoder.decode(bytes)? {
        Decoded::Frame(frame) => Ok(frame),
        Decoded::FragmentHeld { .. } => panic!("a whole frame is not a fragment"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn configuration_frames_round_trip(config in any_config()) {
        let bytes = config.encode().expect("a valid configuration encodes");
        let frame = Frame::decode(&bytes, None).expect("what we build, we parse");
        prop_assert_eq!(&frame, &Frame::Config(config));
        prop_assert_eq!(frame.encode().expect("re-encodes"), bytes);
    }

    #[test]
    fn data_frames_round_trip_in_every_format((config, data) in config_and_data()) {
        let bytes = data.encode().expect("data encodes");
        prop_assert_eq!(bytes.len(), config.data_frame_len());
        let frame = decode_with(&config, &bytes).expect("what we build, we parse");
        prop_assert_eq!(frame, Frame::Data(data));
    }

    #[test]
    fn fragmented_cfg3_reassembles(config in config(FrameType::Cfg3), max in 19usize..300) {
        let fragments = config.encode_cfg3_fragments(max).expect("fragments encode");
        prop_assert!(fragments.iter().all(|fragment| fragment.len() <= max));
        let mut decoder = Decoder::new();
        let mut result = None;
        for (index, fragment) in fragments.iter().enumerate() {
            match decoder.decode(fragment).expect("each fragment is valid") {
                Decoded::Frame(frame) => {
                    prop_assert_eq!(index, fragments.len() - 1, "only the last fragment completes");
                    result = Some(frame);
                }
                Decoded::FragmentHeld { .. } => {}
            }
        }
        prop_assert_eq!(result, Some(Frame::Config(config)));
    }

    #[test]
    fn command_and_header_frames_round_trip(
        command in command(),
        header in header(FrameType::Header),
        text in vec(any::<u8>(), 0..200),
    ) {
        let bytes = command.encode().expect("command encodes");
        prop_assert_eq!(Frame::decode(&bytes, None).expect("parses"), Frame::Command(command));
        let header = HeaderFrame { header, text };
        let bytes = header.encode().expect("header encodes");
        prop_assert_eq!(Frame::decode(&bytes, None).expect("parses"), Frame::Header(header));
    }

    #[test]
    fn any_altered_bit_is_refused((config, data) in config_and_data(), bit in any::<usize>()) {
        let mut bytes = data.encode().expect("data encodes");
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_with(&config, &bytes).is_err(), "flipped bit {} accepted", bit);
    }

    #[test]
    fn arbitrary_bytes_never_panic(config in any_config(), bytes in vec(any::<u8>(), 0..600)) {
        let _ = Frame::decode(&bytes, Some(&config));
        let mut framer = StreamFramer::new();
        framer.push(&bytes);
        let mut consumed = 0;
        while let Some(event) = framer.next_event() {
            consumed += match event {
                FramerEvent::Frame(frame) => frame.len(),
                FramerEvent::Discarded { bytes, .. } => bytes,
            };
        }
        consumed += framer.pending();
        prop_assert_eq!(consumed, bytes.len(), "every byte is a frame, a discard or pending");
    }

    #[test]
    fn a_stream_split_anywhere_gives_the_same_frames(
        (config, data) in config_and_data(),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let frame = data.encode().expect("encodes");
        let stream = [config.encode().expect("encodes"), frame.clone(), frame.clone()].concat();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % stream.len()).collect();
        cuts.sort_unstable();
        let mut framer = StreamFramer::new();
        let mut frames = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([stream.len()]) {
            framer.push(&stream[start..cut]);
            start = cut;
            while let Some(event) = framer.next_event() {
                match event {
                    FramerEvent::Frame(bytes) => frames.push(bytes.to_vec()),
                    FramerEvent::Discarded { .. } => prop_assert!(false, "nothing is discarded"),
                }
            }
        }
        prop_assert_eq!(frames.len(), 3);
        prop_assert_eq!(&frames[1], &frame);
    }
}

#[test]
fn refusals_name_what_is_wrong() {
    let command = CommandFrame {
        header: CommonHeader::new(FrameType::Command, IdCode(1), 0, FracSec::from_raw(0)),
        command: Command::DataOn,
    }
    .encode()
    .expect("encodes");
    let mut bad_sync = command.clone();
    bad_sync[0] = 0xAB;
    assert_eq!(
        Frame::decode(&bad_sync, None),
        Err(DecodeError::BadSync { found: 0xAB })
    );
    let mut bad_type = command.clone();
    bad_type[1] = 0x61;
    assert_eq!(
        Frame::decode(&bad_type, None),
        Err(DecodeError::UnknownFrameType { bits: 6 })
    );
    let mut bad_version = command.clone();
    bad_version[1] = 0x43;
    assert_eq!(
        Frame::decode(&bad_version, None),
        Err(DecodeError::UnsupportedVersion { version: 3 })
    );
    assert_eq!(
        Frame::decode(&command[..17], None),
        Err(DecodeError::FrameSizeMismatch {
            declared: 18,
            actual: 17
        })
    );
    assert!(matches!(
        Frame::decode(&command[..3], None),
        Err(DecodeError::Truncated { .. })
    ));
    let mut bad_crc = command.clone();
    bad_crc[17] ^= 0xFF;
    assert!(matches!(
        Frame::decode(&bad_crc, None),
        Err(DecodeError::CrcMismatch { .. })
    ));
}

#[test]
fn a_data_frame_needs_a_configuration_that_fits_it() {
    let config = ConfigFrame {
        header: CommonHeader::new(FrameType::Cfg2, IdCode(5), 0, FracSec::from_raw(0)),
        time_base: TimeBase::new(1_000_000).expect("non-zero"),
        pmus: vec![PmuConfig {
            station: "A".into(),
            idcode: IdCode(5),
            format: DataFormat::new(false, false, false, false),
            phasors: vec![],
            analogs: vec![],
            digitals: vec![],
            nominal_frequency: NominalFrequency::Hz60,
            cfgcnt: 4,
            cfg3: None,
        }],
        data_rate: DataRate(30),
    };
    let data = DataFrame {
        header: CommonHeader::new(FrameType::Data, IdCode(5), 0, FracSec::from_raw(0)),
        pmus: vec![PmuData {
            stat: Stat(0),
            phasors: vec![Phasor::IntRectangular { re: 1, im: 2 }],
            frequency: Frequency::IntDeviation(0),
            rocof: Rocof::IntHundredths(0),
            analogs: vec![],
            digitals: vec![],
        }],
    }
    .encode()
    .expect("encodes");
    assert_eq!(
        Frame::decode(&data, None),
        Err(DecodeError::NoConfiguration { idcode: 5 })
    );
    assert_eq!(
        Frame::decode(&data, Some(&config)),
        Err(DecodeError::DataSizeMismatch {
            idcode: 5,
            cfgcnt: 4,
            expected: 22,
            actual: 26
        })
    );
    // CFG-1 says what a PMU can send, not what it sends: it does not decode data.
    let mut decoder = Decoder::new();
    let mut cfg1 = config.clone();
    cfg1.header.frame_type = FrameType::Cfg1;
    decoder.install_config(cfg1);
    assert_eq!(
        decoder.decode(&data),
        Err(DecodeError::NoConfiguration { idcode: 5 })
    );
}

#[test]
fn engineering_units_follow_the_standard() {
    let volts = PhasorScale::Unit(PhasorUnit {
        quantity: PhasorQuantity::Voltage,
        factor: 915_527,
    });
    // C37.118.2 Annex D: 14635 counts x 9.15527 V = 133 987 V.
    let (re, im) = Phasor::IntRectangular { re: 14635, im: 0 }
        .to_engineering(&volts)
        .expect("present");
    assert!((re - 133_987.4).abs() < 0.1 && im == 0.0);
    let (re, im) = Phasor::IntPolar {
        magnitude: 1000,
        angle: 15708,
    }
    .to_engineering(&volts)
    .expect("present");
    assert!(re.abs() < 0.1 && (im - 9155.27).abs() < 0.01);
    assert_eq!(
        Phasor::IntRectangular {
            re: i16::MIN,
            im: 0
        }
        .to_engineering(&volts),
        None
    );
    assert_eq!(
        Frequency::IntDeviation(-25).hertz(NominalFrequency::Hz60),
        Some(59.975)
    );
    assert_eq!(
        Frequency::Float(49.98).hertz(NominalFrequency::Hz60),
        Some(f64::from(49.98f32))
    );
    assert_eq!(Rocof::IntHundredths(-12).hertz_per_second(), Some(-0.12));
    let cfg3 = PhasorScale::Cfg3 {
        modification: 0,
        phasor_type: 0,
        user: 0,
        magnitude_scale: 2.0,
        angle_offset: std::f32::consts::FRAC_PI_2,
    };
    let (re, im) = Phasor::FloatRectangular { re: 0.0, im: 10.0 }
        .to_engineering(&cfg3)
        .expect("present");
    assert!((re - 20.0).abs() < 1e-4 && im.abs() < 1e-4);
}
