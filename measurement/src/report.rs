//! The JSON shape of decoded frames that `edgeward c37118 decode --json` and
//! `edgeward c37118 read --json` print, one object per frame. Other tools parse it, so its field
//! names are a contract: add fields, never rename them.
//!
//! Values are in engineering units: phasors as `[re, im]` in volts or amperes, frequency in
//! absolute hertz, ROCOF in hertz per second; absent data (0x8000 or NaN) is `null`.

use serde_json::{json, Map, Value};

use crate::c37118::{
    AnalogKind, AnalogScale, ClockState, CommonHeader, ConfigFrame, DataError, DataFrame, Frame,
    LeapDirection, PhasorQuantity, PhasorScale, PmuConfig, PmuData, PmuTimeQuality, ServiceClass,
    TimeQuality, TriggerReason, UnlockedTime,
};

/// The report of one frame. A data frame needs its stream's configuration; other frames ignore
/// `config`. Returns `None` for a data frame without one.
pub fn frame_report(frame: &Frame, config: Option<&ConfigFrame>) -> Option<Value> {
    let mut object = header_fields(frame.header());
    match frame {
        Frame::Data(data) => {
            let config = config?;
            object.insert("timestamp".into(), json!(data.timestamp(config)));
            object.insert("pmus".into(), data_pmus(data, config));
        }
        Frame::Config(config) => {
            object.insert("time_base".into(), json!(config.time_base.base()));
            object.insert("data_rate".into(), json!(config.data_rate.0));
            object.insert(
                "stations".into(),
                Value::Array(config.pmus.iter().map(station).collect()),
            );
        }
        Frame::Cfg3Fragment(fragment) => {
            object.insert("cont_idx".into(), json!(fragment.cont_idx));
        }
        Frame::Header(header) => {
            object.insert("text".into(), json!(header.text_lossy()));
        }
        Frame::Command(command) => {
            object.insert("command".into(), json!(command.command.name()));
            object.insert("cmd".into(), json!(command.command.code()));
        }
    }
    Some(Value::Object(object))
}

fn header_fields(header: &CommonHeader) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("type".into(), json!(header.frame_type.name()));
    object.insert("idcode".into(), json!(header.idcode.0));
    object.insert("soc".into(), json!(header.soc));
    object.insert("fracsec".into(), json!(header.fracsec.count()));
    object.insert(
        "time_quality".into(),
        time_quality(header.fracsec.quality()),
    );
    object
}

fn time_quality(quality: TimeQuality) -> Value {
    let clock = quality.clock();
    json!({
        "raw": quality.raw(),
        "clock": match clock {
            ClockState::Locked => "locked",
            ClockState::Unlocked { .. } => "unlocked",
            ClockState::Reserved { .. } => "reserved",
            ClockState::Failure => "failure",
        },
        "message_tq": clock.code(),
        "max_error_s": clock.max_error_seconds(),
        "leap_pending": quality.leap_pending(),
        "leap_occurred": quality.leap_occurred(),
        "leap_direction": match quality.leap_direction() {
            LeapDirection::Add => "add",
            LeapDirection::Delete => "delete",
        },
    })
}

fn data_pmus(data: &DataFrame, config: &ConfigFrame) -> Value {
    Value::Array(
        data.pmus
            .iter()
            .zip(&config.pmus)
            .map(|(block, pmu)| data_pmu(block, pmu))
            .collect(),
    )
}

fn data_pmu(block: &PmuData, pmu: &PmuConfig) -> Value {
    let phasors: Vec<Value> = block
        .phasors
        .iter()
        .zip(&pmu.phasors)
        .map(
            |(phasor, channel)| match phasor.to_engineering(&channel.scale) {
                Some((re, im)) => json!([re, im]),
                None => Value::Null,
            },
        )
        .collect();
    let analog: Vec<Value> = block
        .analogs
        .iter()
        .zip(&pmu.analogs)
        .map(|(value, channel)| json!(value.to_engineering(&channel.scale)))
        .collect();
    let stat = block.stat;
    json!({
        "idcode": pmu.idcode.0,
        "station": pmu.station,
        "stat": stat.0,
        "stat_fields": {
            "data_error": match stat.data_error() {
                DataError::Good => "good",
                DataError::PmuErrorNoInformation => "pmu_error_no_information",
                DataError::TestMode => "test_mode",
                DataError::PmuErrorDoNotUse => "pmu_error_do_not_use",
            },
            "sync_error": stat.sync_error(),
            "sorted_by_arrival": stat.sorted_by_arrival(),
            "trigger": stat.trigger(),
            "config_change": stat.config_change(),
            "data_modified": stat.data_modified(),
            "time_quality": match stat.time_quality() {
                PmuTimeQuality::NotUsed => json!("not_used"),
                PmuTimeQuality::Unknown => json!("unknown"),
                PmuTimeQuality::Within { .. } => json!(stat.time_quality().max_error_seconds()),
            },
            "unlocked_time": match stat.unlocked_time() {
                UnlockedTime::LessThan10s => "<10s",
                UnlockedTime::From10To100s => "10-100s",
                UnlockedTime::From100To1000s => "100-1000s",
                UnlockedTime::MoreThan1000s => ">1000s",
            },
            "trigger_reason": match stat.trigger_reason() {
                TriggerReason::Manual => json!("manual"),
                TriggerReason::MagnitudeLow => json!("magnitude_low"),
                TriggerReason::MagnitudeHigh => json!("magnitude_high"),
                TriggerReason::PhaseAngleDifference => json!("phase_angle_difference"),
                TriggerReason::Frequency => json!("frequency"),
                TriggerReason::RateOfChangeOfFrequency => json!("rocof"),
                TriggerReason::Digital => json!("digital"),
                TriggerReason::Other(code) => json!(code),
            },
        },
        "phasors": phasors,
        "freq": block.frequency.hertz(pmu.nominal_frequency),
        "dfreq": block.rocof.hertz_per_second(),
        "analog": analog,
        "digital": block.digitals,
    })
}

fn station(pmu: &PmuConfig) -> Value {
    let phasor_units: Vec<Value> = pmu
        .phasors
        .iter()
        .map(|channel| {
            let quantity = match channel.scale.quantity() {
                PhasorQuantity::Voltage => "V",
                PhasorQuantity::Current => "A",
            };
            match channel.scale {
                PhasorScale::Unit(unit) => json!({"quantity": quantity, "factor": unit.factor}),
                PhasorScale::Cfg3 {
                    modification,
                    phasor_type,
                    user,
                    magnitude_scale,
                    angle_offset,
                } => json!({
                    "quantity": quantity,
                    "modification": modification,
                    "phasor_type": phasor_type,
                    "user": user,
                    "magnitude_scale": magnitude_scale,
                    "angle_offset": angle_offset,
                }),
            }
        })
        .collect();
    let analog_units: Vec<Value> = pmu
        .analogs
        .iter()
        .map(|channel| match channel.scale {
            AnalogScale::Unit(unit) => json!({
                "kind": match unit.kind {
                    AnalogKind::PointOnWave => json!("point_on_wave"),
                    AnalogKind::Rms => json!("rms"),
                    AnalogKind::Peak => json!("peak"),
                    AnalogKind::Other(code) => json!(code),
                },
                "scale": unit.scale,
            }),
            AnalogScale::Cfg3 { magnitude, offset } => {
                json!({"magnitude": magnitude, "offset": offset})
            }
        })
        .collect();
    let mut object = json!({
        "name": pmu.station,
        "idcode": pmu.idcode.0,
        "format": {
            "raw": pmu.format.raw(),
            "polar": pmu.format.polar(),
            "phasor_float": pmu.format.phasor_float(),
            "analog_float": pmu.format.analog_float(),
            "freq_float": pmu.format.freq_float(),
        },
        "phasor_names": pmu.phasors.iter().map(|channel| &channel.name).collect::<Vec<_>>(),
        "analog_names": pmu.analogs.iter().map(|channel| &channel.name).collect::<Vec<_>>(),
        "digital_names": pmu.digital_names().collect::<Vec<_>>(),
        "phasor_units": phasor_units,
        "analog_units": analog_units,
        "digital_units": pmu.digitals.iter()
            .map(|word| json!({"normal": word.unit.normal, "valid": word.unit.valid}))
            .collect::<Vec<_>>(),
        "fnom": pmu.nominal_frequency.hertz(),
        "cfgcnt": pmu.cfgcnt,
    });
    if let (Some(extra), Value::Object(map)) = (pmu.cfg3, &mut object) {
        let global_id: String = extra
            .global_pmu_id
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        map.insert("global_pmu_id".into(), json!(global_id));
        map.insert("latitude".into(), json!(extra.latitude));
        map.insert("longitude".into(), json!(extra.longitude));
        map.insert("elevation".into(), json!(extra.elevation));
        map.insert(
            "service_class".into(),
            match extra.service_class {
                ServiceClass::M => json!("M"),
                ServiceClass::P => json!("P"),
                ServiceClass::Other(code) => json!(code),
            },
        );
        map.insert("window_us".into(), json!(extra.window));
        map.insert("group_delay_us".into(), json!(extra.group_delay));
    }
    object
}
