//! The platform's topics: where a measurement point's samples and layout go, and the shared
//! topics for time-stamp tokens, device signatures, heartbeats and notifications. Each level is
//! a [`TopicSegment`], a name safe as a topic level, a directory of the platform's bucket and an
//! ACL pattern.

/// One segment of a topic: a location, device or measurement point name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicSegment(String);

/// Why a name cannot be a topic segment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name:?} cannot name a topic level: use 1-64 of A-Z a-z 0-9 - _ .")]
pub struct SegmentError {
    pub name: String,
}

impl TopicSegment {
    /// MQTT forbids nothing but `/`, `+`, `#` and NUL, but the segment also names a directory in
    /// the platform's bucket and an ACL pattern, so it is held to a portable set.
    pub fn new(name: &str) -> Result<Self, SegmentError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(SegmentError {
                name: name.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A device identity's level: its characters are a subset of a segment's.
    pub(crate) fn from_identity(id: &crate::identity::DeviceId) -> Self {
        Self(id.as_str().to_owned())
    }
}

impl std::fmt::Display for TopicSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one PMU data source's samples go: `data/measurements/<location>/<device>/<point>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PointTopic {
    pub location: TopicSegment,
    pub device: TopicSegment,
    pub point: TopicSegment,
}

impl PointTopic {
    /// The sample topic: nothing but VILLAS protobuf may be published under it.
    pub fn samples(&self) -> String {
        format!(
            "data/measurements/{}/{}/{}",
            self.location, self.device, self.point
        )
    }

    /// The retained topic with the layout's channel names and units, outside
    /// `data/measurements/#` because the platform's recorder fails on anything but protobuf.
    pub fn metadata(&self) -> String {
        format!(
            "metadata/measurements/{}/{}/{}",
            self.location, self.device, self.point
        )
    }

    /// Parses a sample topic back (the recorder's side).
    pub fn parse_samples(topic: &str) -> Option<Self> {
        let rest = topic.strip_prefix("data/measurements/")?;
        let mut parts = rest.split('/');
        let (location, device, point) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            location: TopicSegment::new(location).ok()?,
            device: TopicSegment::new(device).ok()?,
            point: TopicSegment::new(point).ok()?,
        })
    }
}

/// The platform's topics for timestamp tokens and device signatures.
pub const TSR_TOPIC: &str = "signatures/tsr";
pub const SIGNATURE_TOPIC: &str = "signatures/sig";
pub const HEARTBEAT_TOPIC: &str = "heartbeats";
pub const NOTIFICATION_TOPIC: &str = "notifications";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_hold_portable_names_only() {
        let topic = PointTopic {
            location: TopicSegment::new("sub-7").expect("valid"),
            device: TopicSegment::new("pmu1").expect("valid"),
            point: TopicSegment::new("bay_3").expect("valid"),
        };
        assert_eq!(topic.samples(), "data/measurements/sub-7/pmu1/bay_3");
        assert_eq!(PointTopic::parse_samples(&topic.samples()), Some(topic));
        for bad in ["", "a/b", "+", "#", "..", "é", &"x".repeat(65)] {
            assert!(TopicSegment::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(PointTopic::parse_samples("data/measurements/a/b"), None);
        assert_eq!(PointTopic::parse_samples("data/measurements/a/b/c/d"), None);
    }
}
