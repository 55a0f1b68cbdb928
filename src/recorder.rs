//! `edgeward recorder`: the central side's recorder, subscribing as the platform's does and
//! filing what arrives in the platform's bucket layout:
//!
//! - `data/measurements/<location>/<device>/<point>/<first sample time, ISO 8601>.parquet`, one
//!   file per block, cut where a sample carries `new_frame`;
//! - `data/signatures/tsr/<DIGEST HEX>.sha256.tsr`, the DER response, unchanged;
//! - `data/signatures/sig/<DIGEST HEX>.sha256.p7s`, the device's block signature.
//!
//! A block signature names its block only through SHA-256(digest), so it is filed once the
//! block (or its token) is known. Redelivered samples (a sequence already recorded on the topic)
//! are dropped, so a message sent twice after an outage is recorded once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgeward_measurement::block::BlockHasher;
use edgeward_measurement::sample::Sample;
use edgeward_measurement::villas::{self, PointTopic, SIGNATURE_TOPIC, TSR_TOPIC};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use sha2::Digest as _;
use tracing::{info, warn};

#[derive(Args)]
pub struct RecorderArgs {
    /// The broker, HOST:PORT (mTLS).
    #[arg(long)]
    broker: String,
    /// The platform CA (PEM).
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// The recorder's client certificate and key (PEM).
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The store directory (the bucket's root).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<u64>,
}

#[derive(Default)]
struct Topic {
    block: Vec<Sample>,
    last_sequence: Option<u64>,
}

struct Store {
    root: PathBuf,
    topics: BTreeMap<PointTopic, Topic>,
    /// SHA-256(block digest) → block digest, for the blocks and tokens seen.
    digests: HashMap<[u8; 32], [u8; 32]>,
    /// Signatures whose block is not known yet, by SHA-256(block digest).
    parked: HashMap<[u8; 32], Vec<u8>>,
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// The platform's object name: first `ts_origin`, UTC, microseconds zeroed, isoformat.
pub fn block_name(sample: &Sample) -> Result<String> {
    let time = i64::try_from(sample.ts_origin.sec)
        .ok()
        .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
        .with_context(|| format!("sample time {} s is out of range", sample.ts_origin.sec))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00.parquet",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    ))
}

impl Store {
    fn sample_message(&mut self, topic: PointTopic, payload: &[u8]) -> Result<()> {
        let samples = villas::decode(payload)
            .with_context(|| format!("{}: not a VILLAS message", topic.samples()))?;
        let mut finished = Vec::new();
        let state = self.topics.entry(topic.clone()).or_default();
        for wire in samples {
            if state
                .last_sequence
                .is_some_and(|last| wire.sample.sequence <= last)
            {
                continue;
            }
            state.last_sequence = Some(wire.sample.sequence);
            if wire.new_frame && !state.block.is_empty() {
                finished.push(std::mem::take(&mut state.block));
            }
            state.block.push(wire.sample);
        }
        for block in finished {
            self.write_block(&topic, &block)?;
        }
        Ok(())
    }

    fn write_block(&mut self, topic: &PointTopic, block: &[Sample]) -> Result<()> {
        let mut hasher = BlockHasher::new();
        for sample in block {
            hasher.push(sample);
        }
        let Some(closed) = hasher.finish() else {
            return Ok(());
        };
        let path = self.root.join(topic.samples()).join(block_name(&block[0])?);
        write_atomically(
            &path,
            &edgeward_measurement::parquet_block::encode_block(block)?,
        )?;
        info!(file = %path.display(), samples = block.len(), digest = %closed.digest.hex_upper(), "block recorded");
        self.know(closed.digest.0)
    }

    fn know(&mut self, digest: [u8; 32]) -> Result<()> {
        let key: [u8; 32] = sha2::Sha256::digest(digest).into();
        self.digests.insert(key, digest);
        if let Some(signature) = self.parked.remove(&key) {
            self.write_signature(&digest, &signature)?;
        }
        Ok(())
    }

    fn write_signature(&self, digest: &[u8; 32], signature: &[u8]) -> Result<()> {
        let path = self
            .root
            .join("data/signatures/sig")
            .join(format!("{}.sha256.p7s", hex::encode_upper(digest)));
        write_atomically(&path, signature)
    }

    fn token(&mut self, payload: &[u8]) -> Result<()> {
        let digest = edgeward_proof::timestamp::response_imprint(payload)
            .context("signatures/tsr: not a time-stamp response")?;
        let path = self
            .root
            .join("data/signatures/tsr")
            .join(format!("{}.sha256.tsr", hex::encode_upper(digest)));
        write_atomically(&path, payload)?;
        self.know(digest)
    }

    fn signature(&mut self, payload: &[u8]) -> Result<()> {
        let key = edgeward_proof::origin::signed_message_digest(payload)
            .context("signatures/sig: not a block signature")?;
        match self.digests.get(&key) {
            Some(digest) => self.write_signature(&digest.clone(), payload),
            None => {
                self.parked.insert(key, payload.to_vec());
                Ok(())
            }
        }
    }
}

pub fn run(args: RecorderArgs) -> Result<()> {
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
        .with_context(|| format!("--broker {:?} is not HOST:PORT", args.broker))?;
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let tls = tls_config(&read(&args.ca)?, &read(&args.cert)?, &read(&args.key)?)?;
    let mut store = Store {
        root: args.store.clone(),
        topics: BTreeMap::new(),
        digests: HashMap::new(),
        parked: HashMap::new(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let mut options = MqttOptions::new("edgeward-recorder", host, port);
            options.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
            options.set_keep_alive(Duration::from_secs(5));
            // A persistent session: the broker queues what arrives while the recorder restarts.
            options.set_clean_session(false);
            options.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut events) = AsyncClient::new(options, 64);
            let deadline = async {
                match args.duration {
                    Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(deadline);
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            loop {
                let event = tokio::select! {
                    event = events.poll() => event,
                    _ = &mut deadline => break,
                    _ = terminate.recv() => break,
                    _ = tokio::signal::ctrl_c() => break,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        eprintln!("edgeward recorder: connected; recording into {}", store.root.display());
                        for topic in ["data/measurements/#", TSR_TOPIC, SIGNATURE_TOPIC] {
                            client.subscribe(topic, QoS::AtLeastOnce).await?;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let result = if publish.topic == TSR_TOPIC {
                            store.token(&publish.payload)
                        } else if publish.topic == SIGNATURE_TOPIC {
                            store.signature(&publish.payload)
                        } else if let Some(topic) = PointTopic::parse_samples(&publish.topic) {
                            store.sample_message(topic, &publish.payload)
                        } else {
                            Ok(())
                        };
                        if let Err(error) = result {
                            warn!(topic = %publish.topic, error = %format!("{error:#}"), "message not recorded");
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        warn!(%error, "broker connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            if !store.parked.is_empty() {
                warn!(signatures = store.parked.len(), "signatures whose block never arrived");
            }
            Ok(())
        })
}

fn tls_config(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca) {
        roots.add(certificate.context("--ca is not PEM")?)?;
    }
    if roots.is_empty() {
        bail!("--ca holds no certificate");
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .context("--cert is not PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key).context("--key is not a PEM private key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}
