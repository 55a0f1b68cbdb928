//! The agent's log set-up, one place for PID 1 and the daemon commands.
//!
//! Filtering is by target and level only (`tracing_subscriber::filter::Targets`), not
//! `EnvFilter`: the latter brings the regex engines, about 0.6 MB of the agent that every boot
//! hashes and unpacks (docs/benchmarks.md), for span-field filters nobody here uses.

use std::io::IsTerminal as _;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What is logged unless `EDGEWARD_LOG` says otherwise: tss-esapi logs every context it opens
/// and closes at info.
pub const DEFAULT_FILTER: &str = "info,tss_esapi=warn";

/// The filter an `EDGEWARD_LOG` value names (`info,edgeward_agent=debug`: a default level, then
/// `target=level` pairs), or why it is not one.
pub fn filter(spec: &str) -> Result<Targets, String> {
    spec.parse::<Targets>()
        .map_err(|error| format!("EDGEWARD_LOG={spec:?} is not a log filter ({error})"))
}

fn default_filter() -> Targets {
    // A constant that parses: the unit test below holds it to that.
    filter(DEFAULT_FILTER).unwrap_or_default()
}

/// Logs to the serial console (stdout, no colours): the appliance's log is what an operator at
/// the serial port reads.
pub fn to_console() {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(false);
    tracing_subscriber::registry()
        .with(layer)
        .with(default_filter())
        .init();
}

/// Logs to stderr for the daemon commands, filtered by `EDGEWARD_LOG` when it is set; a value
/// that is not a filter is said once on stderr and the default used.
pub fn to_stderr() {
    let filter = match std::env::var("EDGEWARD_LOG") {
        Ok(spec) => filter(&spec).unwrap_or_else(|reason| {
            eprintln!("edgeward-agent: {reason}; logging with {DEFAULT_FILTER:?}");
            default_filter()
        }),
        Err(_) => default_filter(),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn the_default_filter_quiets_the_tss_below_warnings() {
        let targets = filter(DEFAULT_FILTER).expect("the default parses");
        assert!(targets.would_enable("edgeward_agent::pipeline", &Level::INFO));
        assert!(!targets.would_enable("edgeward_agent::pipeline", &Level::DEBUG));
        assert!(!targets.would_enable("tss_esapi::context", &Level::INFO));
        assert!(targets.would_enable("tss_esapi::context", &Level::WARN));
    }

    #[test]
    fn an_operators_filter_is_read_and_a_bad_one_refused() {
        let targets = filter("warn,edgeward_agent::forwarder=trace").expect("parses");
        assert!(targets.would_enable("edgeward_agent::forwarder", &Level::TRACE));
        assert!(!targets.would_enable("rustls", &Level::INFO));
        let refused = filter("edgeward_agent=loud").expect_err("not a level");
        assert!(
            refused.contains("EDGEWARD_LOG=\"edgeward_agent=loud\""),
            "{refused}"
        );
    }
}
