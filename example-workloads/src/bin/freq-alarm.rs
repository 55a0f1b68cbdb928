//! A frequency-deviation alarm: raises a warning when a stream's frequency leaves
//! `nominal ± band`, and an info when it is back, at most one alert per stream per hold-off.
//!
//! `freq-alarm [--nominal-hz 50] [--band-mhz 50] [--hold-off-s 30]`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edgeward_example_workloads::{argument, Channel};

struct Stream {
    frequency: Option<usize>,
    outside: bool,
    last_alert: Option<Instant>,
}

fn main() {
    if let Err(error) = run() {
        eprintln!("freq-alarm: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let nominal: f64 = argument("--nominal-hz", 50.0)?;
    let band = argument::<f64>("--band-mhz", 50.0)? / 1000.0;
    let hold_off = Duration::from_secs(argument("--hold-off-s", 30)?);
    let mut channel =
        Channel::connect().map_err(|error| format!("the samples channel: {error}"))?;
    println!(
        "freq-alarm: watching for |f - {nominal} Hz| > {} mHz",
        band * 1000.0
    );
    let mut streams: HashMap<String, Stream> = HashMap::new();
    while let Some(message) = channel.receive().map_err(|error| error.to_string())? {
        let name = message["stream"].as_str().unwrap_or_default().to_owned();
        match message["type"].as_str() {
            Some("layout") => {
                let frequency = message["layout"]["signals"].as_array().and_then(|signals| {
                    signals
                        .iter()
                        .position(|signal| signal["name"] == "frequency")
                });
                println!("freq-alarm: stream {name}, frequency at {frequency:?}");
                streams.insert(
                    name,
                    Stream {
                        frequency,
                        outside: false,
                        last_alert: None,
                    },
                );
            }
            Some("sample") => {
                let Some(stream) = streams.get_mut(&name) else {
                    continue;
                };
                let Some(frequency) = stream
                    .frequency
                    .and_then(|at| message["values"].get(at))
                    .and_then(serde_json::Value::as_f64)
                else {
                    continue;
                };
                let outside = (frequency - nominal).abs() > band;
                let due = stream
                    .last_alert
                    .is_none_or(|last| last.elapsed() >= hold_off);
                if outside != stream.outside && due {
                    stream.outside = outside;
                    stream.last_alert = Some(Instant::now());
                    let deviation = (frequency - nominal) * 1000.0;
                    let (title, level) = if outside {
                        ("Frequency out of band", "warning")
                    } else {
                        ("Frequency back in band", "info")
                    };
                    let body = format!(
                        "{name}: {frequency:.3} Hz ({deviation:+.0} mHz; band ±{:.0} mHz)",
                        band * 1000.0
                    );
                    println!("freq-alarm: {title}: {body}");
                    channel
                        .alert(title, &body, level, "frequency")
                        .map_err(|error| format!("cannot raise the alert: {error}"))?;
                }
            }
            _ => {}
        }
    }
    println!("freq-alarm: the appliance closed the channel");
    Ok(())
}
