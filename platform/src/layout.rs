//! A measurement point's layout, retained on `metadata/measurements/<location>/<device>/<point>`
//! (outside `data/measurements/#`, which must hold nothing but VILLAS protobuf): the station,
//! IDCODE, rate and each signal's name, unit and type in the order of the samples' values
//! (phasors, frequency, ROCOF, analogs, digitals).

use edgeward_measurement::c37118::{ConfigFrame, PhasorQuantity, PhasorScale, PmuConfig};

/// The layout JSON of one PMU of a configuration.
pub fn point_layout(pmu: &PmuConfig, config: &ConfigFrame) -> String {
    let mut signals = Vec::new();
    for phasor in &pmu.phasors {
        let current = match &phasor.scale {
            PhasorScale::Unit(unit) => unit.quantity == PhasorQuantity::Current,
            PhasorScale::Cfg3 { phasor_type, .. } => phasor_type & 0x08 != 0,
        };
        let unit = if current { "A" } else { "V" };
        signals
            .push(serde_json::json!({"name": phasor.name.trim(), "unit": unit, "type": "complex"}));
    }
    signals.push(serde_json::json!({"name": "frequency", "unit": "Hz", "type": "float"}));
    signals.push(serde_json::json!({"name": "rocof", "unit": "Hz/s", "type": "float"}));
    for analog in &pmu.analogs {
        signals.push(serde_json::json!({"name": analog.name.trim(), "unit": "", "type": "float"}));
    }
    for word in &pmu.digitals {
        let names: Vec<&str> = word.names.iter().map(|name| name.trim()).collect();
        signals.push(serde_json::json!({"name": names.join(","), "unit": "", "type": "integer"}));
    }
    serde_json::json!({
        "station": pmu.station.trim(),
        "idcode": pmu.idcode.0,
        "rate": config.data_rate.0,
        "signals": signals,
    })
    .to_string()
}
