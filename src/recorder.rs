//! `edgeward recorder`: the central side's recorder, subscribing as the platform's does and
//! filing what arrives in the platform's bucket layout (`edgeward_platform::store`):
//!
//! - `data/measurements/<location>/<device>/<point>/<first sample time, ISO 8601>.parquet`, one
//!   file per block, cut where a sample carries `new_frame`;
//! - `data/signatures/tsr/<DIGEST HEX>.sha256.tsr`, the DER response, unchanged;
//! - `data/signatures/sig/<DIGEST HEX>.sha256.p7s`, the device's block signature.
//!
//! Any device may publish on `signatures/tsr` and `signatures/sig`, so nothing is filed on
//! trust and nothing filed is ever replaced: a token is filed only when it verifies (the TSA
//! root, its own imprint), a signature only when it verifies and its signer is the device whose
//! block it signs, and the first valid proof for a digest stays. A different proof for a digest
//! already filed, a proof that does not verify, or a block file that would replace a different
//! one goes to `aside/` under its name and a content hash, with a `.reason` file, and is logged.
//! Redelivered samples (a sequence already recorded on the topic) are dropped, so a message sent
//! twice after an outage is recorded once. Decision record: docs/decisions/0024.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use edgeward_measurement::block::BlockHasher;
use edgeward_measurement::sample::Sample;
use edgeward_platform::store;
use edgeward_platform::topics::{PointTopic, SIGNATURE_TOPIC, TSR_TOPIC};
use edgeward_platform::villas;
use edgeward_proof::block::ProofAnchors;
use edgeward_proof::origin::{verify_block, ChainTime};

use crate::proof_trust::ProofTrustArgs;
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
    /// Tokens and signatures that do not verify with these are kept aside, not filed.
    #[command(flatten)]
    trust: ProofTrustArgs,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<u64>,
}

#[derive(Default)]
struct Topic {
    block: Vec<Sample>,
    last_sequence: Option<u64>,
}

/// A block digest the recorder knows of: from a block it filed (then with its device) or a
/// token it filed.
struct Known {
    digest: [u8; 32],
    device: Option<String>,
}

/// At most this many signatures wait for their block; beyond, new ones are refused (a device
/// flooding signatures of blocks that never come must not exhaust the recorder).
const MAX_PARKED: usize = 10_000;

struct Store {
    root: PathBuf,
    topics: BTreeMap<PointTopic, Topic>,
    anchors: ProofAnchors,
    /// SHA-256(block digest) → the digest, for the blocks and tokens filed.
    digests: HashMap<[u8; 32], Known>,
    /// Signatures whose block is not known yet, by SHA-256(block digest).
    parked: HashMap<[u8; 32], Vec<Vec<u8>>>,
    parked_count: usize,
    /// How many things were kept aside.
    aside: usize,
}

/// What filing a file did.
#[derive(Debug, PartialEq, Eq)]
enum Filed {
    New,
    /// The same bytes were filed before (a redelivery).
    Again,
    /// Different bytes are filed under that name; the new ones were kept aside.
    Aside,
}

/// Writes `bytes` at `path` only if nothing is there: written beside, synced, then linked into
/// place (a link never replaces). Returns whether it was written, or the bytes already there.
fn write_new(path: &Path, bytes: &[u8]) -> Result<Option<Vec<u8>>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(Some(std::fs::read(path)?))
        }
        Err(error) => Err(error).with_context(|| format!("cannot file {}", path.display())),
    }
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
    /// Files `bytes` under `relative` (store-relative), or, when different bytes are filed
    /// there, keeps them aside with why.
    fn file(&mut self, relative: &str, bytes: &[u8], conflict: &str) -> Result<Filed> {
        match write_new(&self.root.join(relative), bytes)? {
            None => Ok(Filed::New),
            Some(existing) if existing == bytes => Ok(Filed::Again),
            Some(_) => {
                self.keep_aside(relative, bytes, conflict)?;
                Ok(Filed::Aside)
            }
        }
    }

    /// Keeps `bytes`, refused for `relative`, under `aside/` with a `.reason` file.
    fn keep_aside(&mut self, relative: &str, bytes: &[u8], reason: &str) -> Result<()> {
        let aside = store::aside_path(relative, bytes);
        let path = self.root.join(&aside);
        if write_new(&path, bytes)?.is_none() {
            write_new(
                &path.with_file_name(format!(
                    "{}.reason",
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .unwrap_or("aside")
                )),
                format!("{reason}\n").as_bytes(),
            )?;
            self.aside += 1;
        }
        warn!(kept = %aside, instead_of = %relative, %reason, "kept aside, not filed");
        Ok(())
    }

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
        let relative = format!("{}/{}", topic.samples(), block_name(&block[0])?);
        let bytes = edgeward_platform::parquet_block::encode_block(block)?;
        let filed = self.file(
            &relative,
            &bytes,
            "a different block is filed under this name (same topic, same first second)",
        )?;
        if filed == Filed::Aside {
            return Ok(());
        }
        info!(file = %relative, samples = block.len(), digest = %closed.digest.hex_upper(), "block recorded");
        self.know(closed.digest.0, Some(topic.device.as_str().to_owned()))
    }

    /// A digest is known (a block filed, with its device; or a token filed): signatures that
    /// waited for it are judged now.
    fn know(&mut self, digest: [u8; 32], device: Option<String>) -> Result<()> {
        let key: [u8; 32] = sha2::Sha256::digest(digest).into();
        let known = self.digests.entry(key).or_insert(Known {
            digest,
            device: None,
        });
        if known.device.is_none() {
            known.device = device;
        }
        if known.device.is_some() {
            if let Some(waiting) = self.parked.remove(&key) {
                self.parked_count = self.parked_count.saturating_sub(waiting.len());
                for signature in waiting {
                    self.file_signature(&key, &signature)?;
                }
            }
        }
        Ok(())
    }

    fn token(&mut self, payload: &[u8]) -> Result<()> {
        let digest = edgeward_proof::timestamp::response_imprint(payload)
            .context("signatures/tsr: not a time-stamp response")?;
        let relative = store::token_path(&digest);
        if let Err(error) = edgeward_proof::timestamp::verify_response(
            payload,
            &digest,
            None,
            &self.anchors.tsa,
            &self.anchors.tsa_certificates,
        ) {
            return self.keep_aside(
                &relative,
                payload,
                &format!("the token does not verify: {error}"),
            );
        }
        let filed = self.file(
            &relative,
            payload,
            "another valid token is already filed for this digest; the first one stays",
        )?;
        if filed == Filed::Aside {
            return Ok(());
        }
        self.know(digest, None)
    }

    fn signature(&mut self, payload: &[u8]) -> Result<()> {
        let key = edgeward_proof::origin::signed_message_digest(payload)
            .context("signatures/sig: not a block signature")?;
        if self
            .digests
            .get(&key)
            .is_some_and(|known| known.device.is_some())
        {
            return self.file_signature(&key, payload);
        }
        if self.parked_count >= MAX_PARKED {
            warn!(
                parked = self.parked_count,
                "too many signatures wait for their block; one refused"
            );
            return Ok(());
        }
        self.parked.entry(key).or_default().push(payload.to_vec());
        self.parked_count += 1;
        Ok(())
    }

    /// Files a signature of a known block: it must verify and be the block's device's.
    fn file_signature(&mut self, key: &[u8; 32], signature: &[u8]) -> Result<()> {
        let Some(known) = self.digests.get(key) else {
            return Ok(());
        };
        let (digest, device) = (known.digest, known.device.clone().unwrap_or_default());
        let relative = store::signature_path(&digest);
        // Filed at the signer's claimed time; verify-data judges it at the token's time.
        let verified = verify_block(
            signature,
            &digest,
            &self.anchors.devices,
            ChainTime::SignerClaim,
        );
        let refusal = match verified {
            Err(error) => Some(format!("the signature does not verify: {error}")),
            Ok(origin) if origin.device != device => Some(format!(
                "signed by {}, but the block is {device}'s",
                origin.device
            )),
            Ok(_) => None,
        };
        if let Some(reason) = refusal {
            return self.keep_aside(&relative, signature, &reason);
        }
        self.file(
            &relative,
            signature,
            "another valid signature is already filed for this block; the first one stays",
        )?;
        Ok(())
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
        anchors: args.trust.load()?,
        digests: HashMap::new(),
        parked: HashMap::new(),
        parked_count: 0,
        aside: 0,
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
            if store.parked_count > 0 {
                warn!(signatures = store.parked_count, "signatures whose block never arrived");
            }
            if store.aside > 0 {
                warn!(kept = store.aside, dir = %store.root.join(store::ASIDE).display(), "proofs or blocks kept aside");
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
