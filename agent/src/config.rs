//! The configuration of `edgeward-agent run` and `stream`: the `[[pmu]]` streams (parsed and
//! validated by `edgeward_config::pmu`, as in the signed device configuration) and the
//! statistics interval. Read as TOML with unknown fields refused.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edgeward_config::pmu::{validate_streams, RawPmu};
use edgeward_measurement::c37118::Frame;
use edgeward_measurement::client::Transport;
use serde::Deserialize;

pub use edgeward_config::pmu::{EstimatedPmu, PmuStream, Sampling, StreamSource};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Seconds between statistics reports.
    #[serde(default = "default_statistics_interval")]
    statistics_interval: u64,
    #[serde(default, rename = "pmu")]
    pmus: Vec<RawPmu>,
}

fn default_statistics_interval() -> u64 {
    10
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub statistics_interval: Duration,
    pub pmus: Vec<PmuStream>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid configuration {}", path.display()))?;
        load_config_caches(&mut config.pmus)?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text)?;
        if raw.statistics_interval == 0 {
            bail!("statistics_interval must be at least 1 second");
        }
        Ok(Self {
            statistics_interval: Duration::from_secs(raw.statistics_interval),
            pmus: validate_streams(raw.pmus)?,
        })
    }
}

/// A spontaneous-UDP stream starts from its cached CFG-2 (if there is one), so that data decodes
/// before the stream sends its own configuration.
pub fn load_config_caches(streams: &mut [PmuStream]) -> Result<()> {
    for stream in streams {
        let StreamSource::Remote(options) = &mut stream.source else {
            continue;
        };
        let path = options.config_cache.clone();
        let Transport::SpontaneousUdp { config, .. } = &mut options.transport else {
            continue;
        };
        let Some(path) = path.filter(|path| path.exists()) else {
            continue;
        };
        let name = &stream.name;
        let bytes = std::fs::read(&path)
            .with_context(|| format!("PMU {name}: cannot read {}", path.display()))?;
        match Frame::decode(&bytes, None) {
            Ok(Frame::Config(frame)) => *config = Some(frame),
            Ok(_) => bail!(
                "PMU {name}: {} holds no configuration frame",
                path.display()
            ),
            Err(error) => bail!("PMU {name}: {}: {error}", path.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_complete_configuration() {
        let config = AgentConfig::parse(
            r#"
            statistics_interval = 5
            [[pmu]]
            name = "bay-1"
            idcode = 7
            address = "127.0.0.1:4712"
            [[pmu]]
            name = "bay-2"
            idcode = 8
            transport = "tcp-udp"
            address = "127.0.0.1:4712"
            udp_bind = "0.0.0.0:4713"
            "#,
        )
        .expect("valid");
        assert_eq!(config.pmus.len(), 2);
        assert_eq!(config.statistics_interval, Duration::from_secs(5));
        assert!(matches!(
            config.pmus[1].remote().map(|options| &options.transport),
            Some(Transport::TcpUdp { .. })
        ));
    }

    #[test]
    fn an_estimated_stream_makes_the_appliance_the_pmu() {
        let config = AgentConfig::parse(
            r#"
            [[pmu]]
            name = "feeder-3"
            idcode = 9
            [pmu.estimate]
            class = "M"
            nominal = 60
            rate = 30
            sampling = "simulated"
            fs = 9600
            frequency = 60.05
            noise = 0.001
            serve_tcp = "127.0.0.1:4712"
            "#,
        )
        .expect("valid");
        let StreamSource::Estimated(pmu) = &config.pmus[0].source else {
            panic!("an estimated stream");
        };
        assert_eq!(pmu.estimator.rate(), 30);
        assert_eq!(pmu.estimator.fs(), 9600);
        assert_eq!(
            pmu.serve_tcp,
            Some("127.0.0.1:4712".parse().expect("address"))
        );
        assert_eq!(
            pmu.sampling,
            Sampling::Simulated {
                frequency: 60.05,
                noise: 0.001,
                voltage: 230.0,
                current: 5.0
            }
        );
    }

    #[test]
    fn an_adc_stream_reads_an_ads131m08() {
        let config = AgentConfig::parse("[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='M'\nnominal=50\nrate=50\nsampling='ads131m'\nfs=10000\n[pmu.estimate.adc]\nspi='/dev/spidev0.0'\ndrdy_chip='/dev/gpiochip0'\ndrdy_line=25\nclock_hz=10240000\nosr=512\ngains=[1,1,1,4,4,4,1,1]\nchannels=[0,1,2,3,4,5]\nscale=[400.0,400.0,400.0,40.0,40.0,40.0]").expect("valid");
        let StreamSource::Estimated(pmu) = &config.pmus[0].source else {
            panic!("an estimated stream");
        };
        let Sampling::Ads131m {
            spi,
            drdy_line,
            adc,
            ..
        } = &pmu.sampling
        else {
            panic!("ADC sampling");
        };
        assert_eq!(spi, std::path::Path::new("/dev/spidev0.0"));
        assert_eq!(*drdy_line, 25);
        assert_eq!(adc.clock_hz / 2 / adc.osr.ratio(), 10_000);
        assert_eq!(adc.gains[3].value(), 4);
    }

    #[test]
    fn refuses_what_cannot_work_and_says_why() {
        let cases = [
            ("[[pmu]]\nname='a'\nidcode=1\naddres='x:1'", "unknown field"),
            ("[[pmu]]\nname='a'\nidcode=0\naddress='x:1'", "reserved"),
            ("[[pmu]]\nname='a'\nidcode=1\ntransport='udp'", "needs `udp_bind`"),
            ("[[pmu]]\nname='a'\nidcode=1\ntransport='tcp'", "needs `address`"),
            (
                "[[pmu]]\nname='a'\nidcode=1\naddress='x:1'\n[[pmu]]\nname='a'\nidcode=2\naddress='x:1'",
                "used twice",
            ),
            ("statistics_interval = 5", "no [[pmu]]"),
            (
                "[[pmu]]\nname='a'\nidcode=1\naddress='x:1'\n[pmu.estimate]\nclass='P'\nnominal=50\nrate=50\nsampling='simulated'\nfs=10000",
                "for a PMU read over the network",
            ),
            (
                "[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='P'\nnominal=50\nrate=60\nsampling='simulated'\nfs=10000",
                "not a C37.118.1 reporting rate",
            ),
            (
                "[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='P'\nnominal=55\nrate=50\nsampling='simulated'\nfs=10000",
                "50 or 60",
            ),
            (
                "[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='P'\nnominal=50\nrate=50\nsampling='adc'\nfs=10000",
                "unknown variant",
            ),
            ("[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='M'\nnominal=50\nrate=50\nsampling='ads131m'\nfs=10000", "needs [pmu.estimate.adc]"),
            ("[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='M'\nnominal=50\nrate=50\nsampling='ads131m'\nfs=8000\n[pmu.estimate.adc]\nspi='/dev/spidev0.0'\ndrdy_chip='/dev/gpiochip0'\ndrdy_line=25\nclock_hz=10240000\nosr=512\ngains=[1,1,1,4,4,4,1,1]\nchannels=[0,1,2,3,4,5]\nscale=[400.0,400.0,400.0,40.0,40.0,40.0]", "must be fs = 8000"),
            ("[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='M'\nnominal=50\nrate=50\nsampling='ads131m'\nfs=10000\n[pmu.estimate.adc]\nspi='/dev/spidev0.0'\ndrdy_chip='/dev/gpiochip0'\ndrdy_line=25\nclock_hz=10240000\nosr=512\ngains=[3,1,1,4,4,4,1,1]\nchannels=[0,1,2,3,4,5]\nscale=[400.0,400.0,400.0,40.0,40.0,40.0]", "gain 3"),
            ("[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='M'\nnominal=50\nrate=50\nsampling='ads131m'\nfs=10000\n[pmu.estimate.adc]\nspi='/dev/spidev0.0'\ndrdy_chip='/dev/gpiochip0'\ndrdy_line=25\nclock_hz=10240000\nosr=512\ngains=[1,1,1,4,4,4,1,1]\nchannels=[0,1,2,3,4,4]\nscale=[400.0,400.0,400.0,40.0,40.0,40.0]", "six different"),
            ("[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='M'\nnominal=50\nrate=50\nsampling='ads131m'\nfs=10000\n[pmu.estimate.adc]\nspi='/dev/spidev0.0'\ndrdy_chip='/dev/gpiochip0'\ndrdy_line=25\nclock_hz=10240000\nosr=500\ngains=[1,1,1,4,4,4,1,1]\nchannels=[0,1,2,3,4,5]\nscale=[400.0,400.0,400.0,40.0,40.0,40.0]", "osr = 500"),
            (
                "[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='P'\nnominal=50\nrate=50\nsampling='simulated'\nfs=10000\nfrequency=57.0",
                "outside 50 ± 5 Hz",
            ),
            (
                "[[pmu]]\nname='a'\nidcode=1\n[pmu.estimate]\nclass='P'\nnominal=50\nrate=50\nsampling='simulated'\nfs=10000\nserve_tcp='0.0.0.0:4712'\n[[pmu]]\nname='b'\nidcode=2\n[pmu.estimate]\nclass='P'\nnominal=50\nrate=50\nsampling='simulated'\nfs=10000\nserve_tcp='0.0.0.0:4712'",
                "served by another stream",
            ),
        ];
        for (text, reason) in cases {
            let error = format!("{:#}", AgentConfig::parse(text).expect_err(text));
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
