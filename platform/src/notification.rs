//! Notifications on `notifications`, in the platform's shape (its notifier forwards them with
//! Apprise): `{title, body, notify_type, body_format, attachments, tag}`. Each notice the agent
//! raises has one constructor here, so its wording and kind are decided in one place.

use crate::topics::TopicSegment;

/// Apprise's notification types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyType {
    Info,
    Success,
    Warning,
    Failure,
}

impl NotifyType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Success => "success",
            Self::Warning => "warning",
            Self::Failure => "failure",
        }
    }
}

/// One notification. `tag` groups notices of one concern (`buffer`, `tsa`, `pmu/<name>/clock`)
/// and is published under the device: `<device>/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub title: String,
    pub body: String,
    pub kind: NotifyType,
    pub tag: String,
}

impl Notification {
    /// The JSON payload, tagged with the device that raised it.
    pub fn payload(&self, device: &TopicSegment) -> Vec<u8> {
        serde_json::json!({
            "title": self.title,
            "body": self.body,
            "notify_type": self.kind.as_str(),
            "body_format": "text",
            "attachments": [],
            "tag": format!("{device}/{}", self.tag),
        })
        .to_string()
        .into_bytes()
    }

    /// The buffer dropped its oldest messages to make room.
    pub fn buffer_full(device: &TopicSegment, dropped: u64) -> Self {
        Self {
            title: "Edgeward buffer full".into(),
            body: format!("{device}: dropped the {dropped} oldest messages to keep live data"),
            kind: NotifyType::Failure,
            tag: "buffer".into(),
        }
    }

    /// The buffer is filling (the broker has been away a while).
    pub fn buffer_filling(device: &TopicSegment, percent: f64, max_bytes: u64) -> Self {
        Self {
            title: "Edgeward buffer above 80 %".into(),
            body: format!(
                "{device}: {percent:.0} % of {max_bytes} bytes used; the oldest data is dropped when full"
            ),
            kind: NotifyType::Warning,
            tag: "buffer".into(),
        }
    }

    pub fn tsa_unreachable(device: &TopicSegment, error: &str) -> Self {
        Self {
            title: "TSA unreachable".into(),
            body: format!(
                "{device}: {error}; blocks wait in the buffer and are time-stamped when it answers"
            ),
            kind: NotifyType::Warning,
            tag: "tsa".into(),
        }
    }

    pub fn tsa_reachable(device: &TopicSegment) -> Self {
        Self {
            title: "TSA reachable again".into(),
            body: format!("{device}: blocks are time-stamped again"),
            kind: NotifyType::Success,
            tag: "tsa".into(),
        }
    }

    /// A PMU's STAT sync-error bit changed.
    pub fn pmu_clock(stream: &str, idcode: u16, unlocked: bool) -> Self {
        Self {
            title: if unlocked {
                "PMU clock unlocked".into()
            } else {
                "PMU clock locked again".into()
            },
            body: format!(
                "{stream} (IDCODE {idcode}): {}",
                if unlocked {
                    "the PMU reports a sync error; its timestamps are not GPS-locked"
                } else {
                    "the PMU is synchronised again"
                }
            ),
            kind: if unlocked {
                NotifyType::Warning
            } else {
                NotifyType::Success
            },
            tag: format!("pmu/{stream}/clock"),
        }
    }

    pub fn stream_ended(stream: &str) -> Self {
        Self {
            title: "PMU stream ended".into(),
            body: format!("{stream}: the PMU client stopped"),
            kind: NotifyType::Failure,
            tag: format!("pmu/{stream}"),
        }
    }

    /// The appliance's own PMU lost its sample source (the ADC failed or did not open); it is
    /// started again after `retry_seconds`.
    pub fn source_failed(stream: &str, reason: &str, retry_seconds: u64) -> Self {
        Self {
            title: "PMU source failed".into(),
            body: format!("{stream}: {reason}; retrying in {retry_seconds} s"),
            kind: NotifyType::Failure,
            tag: format!("pmu/{stream}"),
        }
    }

    /// The device certificate is in its last third and was not renewed.
    pub fn attestation_failing(device: &TopicSegment, expires_in_seconds: i64) -> Self {
        Self {
            title: "Edgeward attestation failing".into(),
            body: format!(
                "{device}: the device certificate was not renewed and expires in \
                 {expires_in_seconds} s; the verifier has not attested this device since (see \
                 edgeward-agent attest)"
            ),
            kind: NotifyType::Failure,
            tag: "attestation".into(),
        }
    }

    /// A workload's own alert (an analytic's finding), under the workload's name: the title as
    /// it gave it, its tag below `workload/<name>/`.
    pub fn workload_alert(
        workload: &str,
        title: &str,
        body: &str,
        kind: NotifyType,
        tag: &str,
    ) -> Self {
        Self {
            title: title.to_owned(),
            body: format!("{workload}: {body}"),
            kind,
            tag: if tag.is_empty() {
                format!("workload/{workload}")
            } else {
                format!("workload/{workload}/{tag}")
            },
        }
    }

    /// A workload bundle was not started: unsigned, signed by another key, altered, or not
    /// runnable here.
    pub fn workload_refused(workload: &str, reason: &str) -> Self {
        Self {
            title: "Workload refused".into(),
            body: format!("{workload}: {reason}"),
            kind: NotifyType::Failure,
            tag: format!("workload/{workload}"),
        }
    }

    /// A workload ended other than by being stopped: failed, killed at its memory limit, or a
    /// block of its image did not match its signed root hash.
    pub fn workload_ended(workload: &str, reason: &str, restarting: bool) -> Self {
        Self {
            title: "Workload ended".into(),
            body: format!(
                "{workload}: {reason}{}",
                if restarting {
                    "; restarting"
                } else {
                    "; not restarted"
                }
            ),
            kind: NotifyType::Failure,
            tag: format!("workload/{workload}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_have_the_platforms_shape() {
        let device = TopicSegment::new("bay-1").expect("valid");
        let payload = Notification::tsa_unreachable(&device, "connection refused").payload(&device);
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
        assert_eq!(value["title"], "TSA unreachable");
        assert_eq!(value["notify_type"], "warning");
        assert_eq!(value["body_format"], "text");
        assert_eq!(value["attachments"], serde_json::json!([]));
        assert_eq!(value["tag"], "bay-1/tsa");
        assert!(value["body"]
            .as_str()
            .is_some_and(|body| body.contains("connection refused")));
        let clock = Notification::pmu_clock("bay-3", 7, true);
        assert_eq!(
            (clock.kind, clock.tag.as_str()),
            (NotifyType::Warning, "pmu/bay-3/clock")
        );
        assert_eq!(
            Notification::pmu_clock("bay-3", 7, false).kind,
            NotifyType::Success
        );
    }
}
