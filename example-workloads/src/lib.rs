//! What the example workloads share: the appliance's channel as a workload sees it (connect to
//! `$EDGEWARD_SAMPLES`, read JSON lines, write alert lines). Written against the documented
//! line format (docs/bundle-format.md, "The samples channel"), not the agent's types: a
//! workload is built by another team, with nothing of ours but the format.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;

/// The channel, connected.
pub struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Channel {
    /// Connects to the socket the appliance names in `EDGEWARD_SAMPLES`.
    pub fn connect() -> std::io::Result<Self> {
        let path = std::env::var("EDGEWARD_SAMPLES").map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "EDGEWARD_SAMPLES is not set: not running in the appliance",
            )
        })?;
        let stream = UnixStream::connect(path)?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// The next message, or `None` when the appliance closed the channel.
    pub fn receive(&mut self) -> std::io::Result<Option<serde_json::Value>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            match serde_json::from_str(&line) {
                Ok(value) => return Ok(Some(value)),
                Err(error) => eprintln!("skipping a line that is not JSON: {error}"),
            }
        }
    }

    /// Raises an alert (level `info`, `warning` or `failure`).
    pub fn alert(
        &mut self,
        title: &str,
        body: &str,
        level: &str,
        tag: &str,
    ) -> std::io::Result<()> {
        let mut line = serde_json::json!({
            "type": "alert", "title": title, "body": body, "level": level, "tag": tag,
        })
        .to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())
    }
}

/// The value after `--name` in the arguments, parsed.
pub fn argument<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    let arguments: Vec<String> = std::env::args().collect();
    match arguments.iter().position(|argument| argument == name) {
        None => Ok(default),
        Some(at) => arguments
            .get(at + 1)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("{name} needs a value")),
    }
}
