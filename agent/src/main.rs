//! `edgeward-agent`: the device daemon. It parses arguments, loads its configuration and wires
//! the library crates together; the protocols live in the libraries.
//!
//! Today it reads the substation's PMU streams and reports what it receives; later issues give
//! it attestation, signing and forwarding.

mod init;
mod streams;

use edgeward_agent::attest_role as attest;
use edgeward_agent::{buffer, config, forwarder, mtls, pipeline, tpm};

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "edgeward-agent", version, about = "Edgeward device daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read every PMU stream of the configuration and report frames and statistics.
    Run {
        /// The agent configuration (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print every decoded data frame on stdout, one line each.
        #[arg(long)]
        print_frames: bool,
        /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
    },
    /// The data path: read the PMU streams, cut blocks, sign each block in the TPM, time-stamp
    /// it, buffer everything durably and forward it over mutual TLS MQTT.
    Stream {
        /// The agent configuration (TOML) with the [[pmu]] streams.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The location level of the topics (substation).
        #[arg(long)]
        location: String,
        /// The TPM: device:/dev/tpmrm0 or swtpm:host=H,port=P.
        #[arg(long, default_value = "device:/dev/tpmrm0")]
        tcti: String,
        /// Where `attest` kept the device key blob.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/var/lib/edgeward/attestation"
        )]
        state: PathBuf,
        /// Where `attest` wrote device.crt and device-ca-chain.crt.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/edgeward/pki")]
        pki: PathBuf,
        /// The durable buffer's directory.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/edgeward/buffer")]
        buffer: PathBuf,
        /// Most bytes the buffer keeps before dropping the oldest.
        #[arg(long, default_value_t = 1 << 30)]
        buffer_bytes: u64,
        /// The broker, HOST:PORT (mTLS).
        #[arg(long)]
        broker: String,
        /// The platform CA that issued the broker's certificate (PEM).
        #[arg(long, value_name = "FILE")]
        broker_ca: PathBuf,
        /// The TSA, http://HOST:PORT/api/v1/timestamp.
        #[arg(long)]
        tsa: String,
        /// The root the TSA's certificate must chain to (PEM).
        #[arg(long, value_name = "FILE")]
        tsa_root: PathBuf,
        /// Block length in seconds (at least 1).
        #[arg(long, default_value_t = 10)]
        block_seconds: u64,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 10)]
        heartbeat_seconds: u64,
        /// Messages awaiting PUBACK at most.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Stop after this many seconds (default: until SIGINT or SIGTERM).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
    },
    /// The appliance: verify the signed device configuration, then run attestation and the
    /// data path under one supervisor with one TPM owner until SIGTERM or SIGINT.
    Appliance {
        /// The device configuration; it must be signed (FILE.sig, `edgeward config sign`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The key it must be signed with (the image's config.pub.raw).
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/edgeward/config.pub.raw"
        )]
        config_key: PathBuf,
        /// The TPM: device:/dev/tpmrm0 or swtpm:host=H,port=P.
        #[arg(long, default_value = "device:/dev/tpmrm0")]
        tcti: String,
        /// Where key blobs, the certificate and the buffer are kept across boots.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/edgeward")]
        data: PathBuf,
        /// The firmware's event log.
        #[arg(long, value_name = "FILE", default_value = attest::EVENT_LOG)]
        event_log: PathBuf,
        /// Where the workload bundles the configuration lists are.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/var/lib/edgeward/workloads"
        )]
        workloads: PathBuf,
        /// The key they must be signed with (PEM).
        #[arg(long, value_name = "KEY", default_value = edgeward_agent::workload_role::TRUST_KEY)]
        workload_key: PathBuf,
    },
    /// Register with the verifier, attest, and get the device certificate for the TPM-held key.
    Attest {
        /// The verifier, https://HOST:PORT.
        #[arg(long)]
        verifier: String,
        /// The CA of the verifier's TLS certificate (PEM).
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// The TPM: device:/dev/tpmrm0 or swtpm:host=H,port=P.
        #[arg(long, default_value = "device:/dev/tpmrm0")]
        tcti: String,
        /// Which EK to register with: rsa (RSA-2048) or ecc (P-256).
        #[arg(long, default_value = "rsa")]
        ek: edgeward_attestation::tpm::EkKind,
        /// The device identity to ask for (default: derived from the EK).
        #[arg(long)]
        device: Option<String>,
        /// Where key blobs and the registration are kept across restarts.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/var/lib/edgeward/attestation"
        )]
        state: PathBuf,
        /// Where device.crt and device-ca-chain.crt are written (what `stream --pki` reads).
        #[arg(long, value_name = "DIR", default_value = "/var/lib/edgeward/pki")]
        pki: PathBuf,
        /// The firmware event log.
        #[arg(long, value_name = "FILE", default_value = attest::EVENT_LOG)]
        event_log: PathBuf,
        /// Keep running: renew before expiry, re-attest on SIGHUP.
        #[arg(long)]
        daemon: bool,
    },
    /// Ask the AMD secure processor (/dev/sev-guest) for an SEV-SNP report binding the
    /// verifier's nonce, and write report.bin (and vcek.der when the host supplies it) for
    /// `edgeward sev verify`.
    SevReport {
        /// The verifier's nonce (hex, up to 64 bytes), zero-padded into REPORT_DATA.
        #[arg(long)]
        nonce: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Quote PCRs with an AK made under the EK, and write the quote in tpm2-tools' formats
    /// (quote.msg, quote.sig, quote.pcrs, ak.pub.pem) for `tpm2_checkquote`.
    Quote {
        /// The TPM: device:/dev/tpmrm0 or swtpm:host=H,port=P.
        #[arg(long, default_value = "device:/dev/tpmrm0")]
        tcti: String,
        /// The verifier's nonce (hex, 1-64 bytes).
        #[arg(long)]
        nonce: String,
        /// The PCRs to quote, BANK:N,N,…
        #[arg(long, default_value = "sha256:0,1,2,3,4,5,6,7")]
        pcrs: edgeward_attestation::tpm::PcrSelection,
        #[arg(long)]
        out: PathBuf,
    },
    /// Signed workload bundles (docs/bundle-format.md).
    #[command(subcommand)]
    Workload(WorkloadCommand),
}

#[derive(Subcommand)]
enum WorkloadCommand {
    /// Check a bundle as the appliance would, and every block of its image against its sealed
    /// root hash (in user space); print its manifest digest. Changes nothing.
    Verify {
        file: PathBuf,
        /// The workload key's public half (PEM), as the image carries it.
        #[arg(long, value_name = "KEY", default_value = edgeward_agent::workload_role::TRUST_KEY)]
        trust: PathBuf,
    },
    /// Verify, measure (PCR 15, the agent's log) and run one bundle in its sandbox until it
    /// ends or SIGTERM; exits with its exit code. Needs root, device-mapper and cgroup v2.
    Run {
        file: PathBuf,
        #[arg(long, value_name = "KEY", default_value = edgeward_agent::workload_role::TRUST_KEY)]
        trust: PathBuf,
        /// The TPM: device:/dev/tpmrm0 or swtpm:host=H,port=P.
        #[arg(long, default_value = "device:/dev/tpmrm0")]
        tcti: String,
    },
}

fn main() -> std::process::ExitCode {
    // The workload sandbox's stages are this binary run anew; stage two is PID 1 of its own
    // PID namespace, so this comes before the check for being the image's init.
    if let Some(code) = sandbox_stage() {
        std::process::exit(code);
    }
    // As the image's /init the agent brings the system up and reports what was measured.
    if std::process::id() == 1 {
        match init::run() {
            Ok(()) => {
                edgeward_agent::logging::to_console();
                match edgeward_agent::bringup::run() {
                    Ok(ended) => tracing::info!(?ended, "powering off"),
                    Err(error) => println!("EDGEWARD-FAILED {error:#}"),
                }
            }
            Err(error) => println!("EDGEWARD-FAILED {error:#}"),
        }
        init::power_off();
    }
    edgeward_agent::logging::to_stderr();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edgeward-agent: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a sandbox stage when the arguments name one (`workload-sandbox SPEC`,
/// `workload-sandbox-init SPEC`); returns its exit code.
fn sandbox_stage() -> Option<i32> {
    use edgeward_workload::sandbox;
    let mut arguments = std::env::args();
    let stage = arguments.nth(1)?;
    if stage != sandbox::STAGE_ONE && stage != sandbox::STAGE_TWO {
        return None;
    }
    let fail = |error: edgeward_workload::WorkloadError, code: i32| {
        eprintln!("edgeward sandbox: {error}");
        Some(code)
    };
    let spec = match sandbox::SandboxSpec::from_json(&arguments.next().unwrap_or_default()) {
        Ok(spec) => spec,
        Err(error) => return fail(error, sandbox::SANDBOX_FAILED),
    };
    if stage == sandbox::STAGE_ONE {
        let own = match std::env::current_exe() {
            Ok(own) => own,
            Err(error) => {
                eprintln!("edgeward sandbox: cannot find the agent's executable: {error}");
                return Some(sandbox::SANDBOX_FAILED);
            }
        };
        match sandbox::stage_one(&spec, &own) {
            Ok(code) => Some(code),
            Err(error) => fail(error, sandbox::SANDBOX_FAILED),
        }
    } else {
        let (code, error) = sandbox::stage_two(&spec);
        fail(error, code)
    }
}

/// A stop that changes on SIGTERM or Ctrl-C. Called inside the runtime.
fn stop_on_signal() -> Result<tokio::sync::watch::Receiver<bool>> {
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stopping.send(true);
    });
    Ok(stop)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config,
            print_frames,
            duration,
        } => {
            let config = config::AgentConfig::load(&config)?;
            edgeward_agent::runtime()?.block_on(streams::run(
                config,
                print_frames,
                duration.map(Duration::from_secs),
            ))
        }
        Command::Stream {
            config,
            location,
            tcti,
            state,
            pki,
            buffer,
            buffer_bytes,
            broker,
            broker_ca,
            tsa,
            tsa_root,
            block_seconds,
            heartbeat_seconds,
            window,
            duration,
        } => {
            let config = config::AgentConfig::load(&config)?;
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))
            };
            let credentials = edgeward_agent::credentials::DeviceCredentials::files(&pki);
            let device = credentials.load()?.identity;
            let (host, port) = broker
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
                .with_context(|| format!("--broker {broker:?} is not HOST:PORT"))?;
            let interval = edgeward_measurement::block::BlockInterval::from_secs(block_seconds)
                .context("--block-seconds must be at least 1")?;
            let signer = tpm::TpmSigner::start(&tcti, &state)?;
            let broker_ca = read(&broker_ca)?;
            let tls: forwarder::TlsSource = {
                let (credentials, signer) = (credentials.clone(), signer.clone());
                std::sync::Arc::new(move || {
                    mtls::client_config(&broker_ca, &credentials.load()?.pem, signer.clone())
                })
            };
            // Fail at start, not at the first connection, if the files are unusable.
            tls()?;
            let anchors = edgeward_proof::trust::TrustAnchors::from_pem(&read(&tsa_root)?)
                .context("--tsa-root")?;
            let opening = std::time::Instant::now();
            let buffer = buffer::Buffer::open(
                &buffer,
                buffer::Limits {
                    max_bytes: buffer_bytes,
                },
            )?;
            tracing::info!(open_ms = opening.elapsed().as_millis() as u64, fill = ?buffer.fill()?, "buffer opened");
            let options = pipeline::PipelineOptions {
                streams: config.pmus,
                location: edgeward_platform::topics::TopicSegment::new(&location)?,
                device: edgeward_platform::topics::TopicSegment::new(&device)?,
                interval,
                buffer,
                signer: signer.clone(),
                credentials,
                tsa: pipeline::TsaClient::new(&tsa, anchors, Vec::new())?,
                broker: forwarder::BrokerOptions {
                    addresses: vec![(host, port)],
                    client_id: device.clone(),
                    tls,
                    window: window.max(1),
                    // `attest --daemon` writes the files from another process: looked at again
                    // every second.
                    credentials_changed: None,
                },
                heartbeat: Duration::from_secs(heartbeat_seconds.max(1)),
                duration: duration.map(Duration::from_secs),
                stop: None,
                health: None,
                tap: None,
            };
            let outcome = edgeward_agent::runtime()?.block_on(pipeline::run(options));
            signer.close()?;
            outcome
        }
        Command::Quote {
            tcti,
            nonce,
            pcrs,
            out,
        } => quote(&tcti, &nonce, &pcrs, &out),
        Command::Appliance {
            config,
            config_key,
            tcti,
            data,
            event_log,
            workloads,
            workload_key,
        } => {
            let config = edgeward_agent::appliance::load_signed_config(&config, &config_key)?;
            let workloads =
                edgeward_agent::workload_role::bundle_paths(&workloads, &config.workloads);
            let tpm = tpm::Tpm::open(&tcti)?;
            let admitted = match edgeward_agent::appliance::admit_serial(&tpm, config.serial) {
                Ok(admitted) => admitted,
                Err(error) => {
                    tpm.close()?;
                    return Err(error.context("the device configuration is refused"));
                }
            };
            tracing::info!(%admitted, "device configuration admitted");
            let appliance = edgeward_agent::appliance::Appliance {
                config,
                data: edgeward_agent::appliance::DataDirs::new(&data),
                tpm,
                event_log,
                // On a host the host keeps its own address.
                network: None,
                workloads,
                workload_key,
            };
            edgeward_agent::runtime()?.block_on(async { appliance.run(stop_on_signal()?).await })
        }
        Command::Workload(WorkloadCommand::Verify { file, trust }) => {
            let key = read_trust(&trust)?;
            let (_, verified) = edgeward_workload::image::open(&file, &key)
                .map_err(|error| anyhow::anyhow!("{} is refused: {error}", file.display()))?;
            let bundle =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            edgeward_bundle::workload::verify_image(&bundle, &verified)
                .map_err(|error| anyhow::anyhow!("{} is refused: {error}", file.display()))?;
            println!(
                "{}",
                serde_json::json!({
                    "name": verified.manifest.name.as_str(),
                    "version": verified.manifest.version,
                    "manifest_sha256": hex::encode(verified.manifest_digest),
                    "pcr": edgeward_attestation::agent_log::WORKLOAD_PCR,
                })
            );
            Ok(())
        }
        Command::Workload(WorkloadCommand::Run { file, trust, tcti }) => {
            use edgeward_agent::workload_role::{Host, Notices, Tap, FIRST_UID};
            let tpm = tpm::Tpm::open(&tcti)?;
            let outcome = edgeward_agent::runtime()?.block_on(async {
                let host = Host::new(
                    tpm.clone(),
                    &trust,
                    Notices::Log,
                    Tap::default(),
                    std::env::current_exe().context("cannot find the agent's executable")?,
                )?;
                let admitted = host.admit(&file, FIRST_UID).await?;
                host.run(&admitted, stop_on_signal()?, |state| {
                    tracing::info!(state, "workload")
                })
                .await
            });
            tpm.close()?;
            let ended = outcome?;
            if ended.code != 0 && !ended.stopped {
                std::process::exit(ended.code.clamp(1, 255));
            }
            Ok(())
        }
        Command::SevReport { nonce, out } => {
            let nonce = hex::decode(nonce.trim()).context("--nonce is not hex")?;
            let evidence = edgeward_attestation::snp::request_guest_report(&nonce)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            std::fs::write(out.join("report.bin"), &evidence.report)?;
            if let Some(vcek) = &evidence.vcek {
                std::fs::write(out.join("vcek.der"), vcek)?;
            }
            tracing::info!(out = %out.display(), vcek = evidence.vcek.is_some(), "SEV-SNP report written");
            Ok(())
        }
        Command::Attest {
            verifier,
            ca,
            tcti,
            ek,
            device,
            state,
            pki,
            event_log,
            daemon,
        } => {
            let options = attest::Options {
                verifier,
                ca: std::fs::read_to_string(&ca)
                    .with_context(|| format!("cannot read the verifier CA {}", ca.display()))?,
                ek,
                device,
                state,
                out: pki,
                event_log,
            };
            let runtime = edgeward_agent::runtime()?;
            let tpm = tpm::Tpm::open(&tcti)?;
            let credentials = edgeward_agent::credentials::DeviceCredentials::files(&options.out);
            let outcome = if daemon {
                runtime.block_on(async {
                    attest::daemon(options, tpm.clone(), credentials, stop_on_signal()?).await
                })
            } else {
                runtime
                    .block_on(attest::attest_once(&options, &tpm, &credentials))
                    .map(|outcome| {
                        println!(
                            "{}",
                            serde_json::json!({
                                "device": outcome.device,
                                "certificate": options.out.join("device.crt"),
                                "not_after": outcome.not_after,
                                "attested_until": outcome.attested_until,
                            })
                        );
                    })
            };
            tpm.close()?;
            outcome
        }
    }
}

fn read_trust(path: &std::path::Path) -> Result<edgeward_bundle::signature::TrustedKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the workload key {} cannot be read", path.display()))?;
    edgeward_bundle::signature::TrustedKey::from_pem(&text)
        .with_context(|| format!("the workload key {}", path.display()))
}

fn quote(
    tcti: &str,
    nonce: &str,
    selection: &edgeward_attestation::tpm::PcrSelection,
    out: &std::path::Path,
) -> Result<()> {
    use edgeward_attestation::tpm;
    let nonce = tpm::Nonce::new(hex::decode(nonce.trim()).context("--nonce is not hex")?)?;
    let mut context = tpm::open(tcti)?;
    let quote = tpm::quote(&mut context, &nonce, selection)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let files: [(&str, &[u8]); 4] = [
        ("quote.msg", &quote.attest),
        ("quote.sig", &quote.signature),
        (
            "quote.pcrs",
            &tpm::tpm2_tools_pcrs_file(&quote.selection, &quote.pcr_values),
        ),
        ("ak.pub.pem", quote.ak_public_pem.as_bytes()),
    ];
    for (name, bytes) in files {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(out = %out.display(), pcrs = quote.pcr_values.len(), "quote written");
    Ok(())
}
