//! Heartbeats on `heartbeats`, in the platform's shape (its monitor reads `host`,
//! `memory.percent`, `disks["/"].usage.percent`, `uptime.system` and `sensors.temp`), with the
//! agent's own figures under `edgeward`. The values are read by the agent and handed in; this is
//! only the shape.

use std::collections::BTreeMap;

use crate::topics::TopicSegment;

/// What one heartbeat reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub host: TopicSegment,
    pub interval_seconds: u64,
    pub uptime_seconds: f64,
    pub memory_percent: f64,
    pub disk_percent: f64,
    /// The CPU temperature in °C, when the machine has a thermal zone: a device without one
    /// reports none rather than an invented temperature.
    pub temperature: Option<f64>,
    pub buffer: BufferFigures,
    /// Each role of the agent and how it is (`running`, `restarting: …`, …).
    pub roles: BTreeMap<String, String>,
}

/// The durable buffer and the broker connection.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BufferFigures {
    pub messages: u64,
    pub bytes: u64,
    pub percent: f64,
    pub dropped: u64,
    pub acknowledged: u64,
    pub broker_connected: bool,
    pub samples_accepted: u64,
}

impl Heartbeat {
    pub fn payload(&self) -> Vec<u8> {
        let sensors = match self.temperature {
            Some(current) => serde_json::json!({"temp": {"cpu_thermal": [
                {"label": "", "current": current, "high": null, "critical": null}
            ]}}),
            None => serde_json::json!({"temp": {}}),
        };
        serde_json::json!({
            "host": self.host.as_str(),
            "hb_interval": self.interval_seconds,
            "uptime": {"system": self.uptime_seconds},
            "memory": {"percent": self.memory_percent},
            "disks": {"/": {"usage": {"percent": self.disk_percent}}},
            "sensors": sensors,
            "edgeward": {
                "buffer_messages": self.buffer.messages,
                "buffer_bytes": self.buffer.bytes,
                "buffer_percent": self.buffer.percent,
                "dropped": self.buffer.dropped,
                "acknowledged": self.buffer.acknowledged,
                "broker_connected": self.buffer.broker_connected,
                "samples_accepted": self.buffer.samples_accepted,
                "roles": self.roles,
            },
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_has_what_the_platforms_monitor_reads() {
        let beat = Heartbeat {
            host: TopicSegment::new("bay-1").expect("valid"),
            interval_seconds: 10,
            uptime_seconds: 12.5,
            memory_percent: 40.0,
            disk_percent: 3.0,
            temperature: None,
            buffer: BufferFigures {
                messages: 2,
                ..Default::default()
            },
            roles: [("stream".to_string(), "running".to_string())].into(),
        };
        let value: serde_json::Value = serde_json::from_slice(&beat.payload()).expect("JSON");
        assert_eq!(value["host"], "bay-1");
        assert_eq!(value["memory"]["percent"], 40.0);
        assert_eq!(value["disks"]["/"]["usage"]["percent"], 3.0);
        assert_eq!(value["uptime"]["system"], 12.5);
        assert_eq!(value["sensors"]["temp"], serde_json::json!({}));
        assert_eq!(value["edgeward"]["roles"]["stream"], "running");
        let warm = Heartbeat {
            temperature: Some(51.0),
            ..beat
        };
        let value: serde_json::Value = serde_json::from_slice(&warm.payload()).expect("JSON");
        assert_eq!(value["sensors"]["temp"]["cpu_thermal"][0]["current"], 51.0);
    }
}
