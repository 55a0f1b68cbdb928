//! The booted appliance: what PID 1 does after reporting the measured boot. It reads the
//! operator-signed configuration from the ESP and refuses to go on without a valid one, mounts
//! the data partition, brings the network up, sets the clock, and runs the
//! [`Appliance`](crate::appliance::Appliance) until the power button (or SIGTERM) stops it; then
//! it flushes and unmounts, and the caller powers off.
//!
//! Each step says on the console what happened, in one line an operator can read and a test
//! can match: `EDGEWARD-CONFIG`, `EDGEWARD-REFUSED`, `EDGEWARD-NETWORK`, `EDGEWARD-CLOCK`,
//! `EDGEWARD-STOPPED`.

pub mod clock;
pub mod disk;
pub mod network;
pub mod power;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::appliance::{admit_serial, load_signed_config, Appliance, DataDirs};
use crate::tpm::Tpm;

/// Where on the ESP the device configuration and its signature are (`edgeward image
/// configure` puts them there).
pub const CONFIG_ON_ESP: &str = "EFI/edgeward/device.toml";
/// The image's configuration key (in the measured root).
pub const CONFIG_KEY: &str = "/etc/edgeward/config.pub.raw";
/// The TPM, through the kernel's resource manager.
pub const TCTI: &str = "device:/dev/tpmrm0";

/// How the booted appliance ended.
#[derive(Debug)]
pub enum Ended {
    /// No configuration on the ESP: an image not yet configured for a device.
    Unconfigured,
    /// A configuration that is not valid or not signed with the image's key.
    Refused(String),
    /// Stopped by the power button or SIGTERM.
    Stopped,
}

fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the appliance as PID 1 (after [`crate`]'s caller has mounted the kernel file systems
/// and loaded the modules). A configuration older than one this appliance has run (its
/// serial below the TPM's configuration counter) is refused like an unsigned one.
pub fn run() -> Result<Ended> {
    let esp = disk::mount_esp()?;
    let config_file = esp.join(CONFIG_ON_ESP);
    if !config_file.exists() {
        console(&format!(
            "EDGEWARD-UNCONFIGURED no {CONFIG_ON_ESP} on the ESP (edgeward image configure)"
        ));
        disk::unmount_all();
        return Ok(Ended::Unconfigured);
    }
    let config = match load_signed_config(&config_file, Path::new(CONFIG_KEY)) {
        Ok(config) => config,
        Err(error) => {
            let reason = format!("{error:#}");
            console(&format!("EDGEWARD-REFUSED {reason}"));
            disk::unmount_all();
            return Ok(Ended::Refused(reason));
        }
    };
    // Read from the ESP, which stays mounted read-only while the appliance runs.
    let workload_bundles = crate::workload_role::bundle_paths(
        &esp.join(crate::workload_role::BUNDLES_ON_ESP),
        &config.workloads,
    );
    // The one TPM owner, from here to power-off: first it judges the configuration's serial.
    let tpm = Tpm::open(TCTI)?;
    let admitted = match admit_serial(&tpm, config.serial) {
        Ok(admitted) => admitted,
        Err(error) => {
            let reason = format!("the device configuration is refused: {error:#}");
            console(&format!("EDGEWARD-REFUSED {reason}"));
            let _ = tpm.close();
            disk::unmount_all();
            return Ok(Ended::Refused(reason));
        }
    };
    console(&format!(
        "EDGEWARD-CONFIG identity={} location={} {admitted}",
        config.identity, config.location
    ));
    let data = disk::mount_data()?;
    let owner = tpm.clone();
    let runtime = crate::runtime()?;
    let outcome = runtime.block_on(async move {
        let (stopping, stop) = watch::channel(false);
        tokio::spawn(async move {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(terminate) => terminate,
                    Err(error) => {
                        warn!(%error, "cannot watch for SIGTERM");
                        return;
                    }
                };
            let button = async {
                match power::pressed().await {
                    Ok(()) => info!("power button pressed"),
                    Err(error) => {
                        warn!(error = %format!("{error:#}"), "the power button cannot stop the appliance");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = terminate.recv() => info!("SIGTERM"),
                () = button => {}
            }
            let _ = stopping.send(true);
        });
        let mut early_stop = stop.clone();
        let ready = async {
            let (up, keeper) = network::bring_up(&config.network).await?;
            console(&format!(
                "EDGEWARD-NETWORK interface={} address={}/{} gateway={}",
                up.interface,
                up.address,
                up.prefix,
                up.gateway.map(|gateway| gateway.to_string()).unwrap_or_else(|| "none".into())
            ));
            // The lease is kept while the clock is set too (an SNTP server may take its time).
            let (_held, holding) = watch::channel(false);
            let keeping = async {
                match &keeper {
                    Some(keeper) => keeper.keep(holding, |_| {}).await,
                    None => std::future::pending().await,
                }
            };
            let clock = tokio::select! {
                clock = clock::synchronise(&config.sntp) => clock?,
                kept = keeping => {
                    kept?;
                    anyhow::bail!("the DHCP lease ended before the clock was set")
                }
            };
            console(&format!(
                "EDGEWARD-CLOCK server={} offset_us={} stratum={}",
                clock.server, clock.offset_us, clock.stratum
            ));
            anyhow::Ok(keeper)
        };
        let network = tokio::select! {
            ready = ready => ready?,
            _ = early_stop.changed() => return anyhow::Ok(()),
        };
        // What the appliance costs, on the console for whoever watches it (and the benchmarks).
        tokio::spawn(async {
            let mut every = tokio::time::interval(RESOURCE_REPORT);
            every.tick().await;
            loop {
                every.tick().await;
                console(&format!("EDGEWARD-RESOURCES {}", resource_use()));
            }
        });
        let appliance = Appliance {
            config,
            data: DataDirs::new(&data),
            tpm,
            event_log: PathBuf::from(crate::attest_role::EVENT_LOG),
            network,
            workloads: workload_bundles,
            workload_key: PathBuf::from(crate::workload_role::TRUST_KEY),
        };
        appliance.run(stop).await
    });
    // Whatever happened, what is on the data partition is written out before power goes.
    drop(runtime);
    // Closed by the appliance when it ran; here on the ways out before it (a second close is
    // nothing).
    let closed = owner.close();
    disk::unmount_all();
    outcome?;
    closed?;
    console(&format!(
        "EDGEWARD-STOPPED the buffer is on disk; {}",
        resource_use()
    ));
    Ok(Ended::Stopped)
}

/// How often the console gets a line with the agent's memory and CPU time.
const RESOURCE_REPORT: std::time::Duration = std::time::Duration::from_secs(30);

/// The agent's peak memory and CPU time, for the operator (and the benchmarks) to read.
fn resource_use() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().trim_end_matches(" kB").trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its ')').
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state; in
    // clock ticks of 10 ms (USER_HZ is 100 on x86).
    let (user_ms, system_ms) = (ticks(11) * 10, ticks(12) * 10);
    let cpu_ms = user_ms + system_ms;
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let uptime_s = uptime.split_whitespace().next().unwrap_or("?");
    format!(
        "peak_rss_kib={} rss_kib={} cpu_ms={cpu_ms} user_ms={user_ms} system_ms={system_ms} \
         uptime_s={uptime_s}",
        field("VmHWM:"),
        field("VmRSS:")
    )
}
