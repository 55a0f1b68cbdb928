//! The clock, right before anything is signed or a certificate judged: asked of the SNTP
//! servers of the configuration (RFC 4330) and set; until one answers, the appliance waits and
//! signs nothing (a block signed with a wrong clock, or a certificate judged by one, proves
//! nothing).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use edgeward_config::device::HostPort;
use sntpc::{NtpContext, NtpUdpSocket, StdTimestampGen};
use tracing::{info, warn};

/// A tokio UDP socket as sntpc wants it.
struct Socket(tokio::net::UdpSocket);

impl NtpUdpSocket for Socket {
    async fn send_to(&self, buffer: &[u8], address: SocketAddr) -> sntpc::Result<usize> {
        self.0
            .send_to(buffer, address)
            .await
            .map_err(|_| sntpc::Error::Network)
    }

    async fn recv_from(&self, buffer: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
        self.0
            .recv_from(buffer)
            .await
            .map_err(|_| sntpc::Error::Network)
    }
}

/// How the clock was set.
#[derive(Debug, Clone)]
pub struct Synchronised {
    pub server: String,
    /// What the clock was off by, in microseconds.
    pub offset_us: i64,
    pub roundtrip_us: u64,
    pub stratum: u8,
}

async fn ask(server: &HostPort) -> Result<sntpc::NtpResult> {
    let address = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .with_context(|| format!("cannot resolve {server}"))?
        .next()
        .ok_or_else(|| anyhow!("{server} has no address"))?;
    let socket = Socket(tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await?);
    let context = NtpContext::new(StdTimestampGen::default());
    tokio::time::timeout(
        Duration::from_secs(3),
        sntpc::get_time(address, &socket, context),
    )
    .await
    .map_err(|_| anyhow!("{server} did not answer within 3 s"))?
    .map_err(|error| anyhow!("{server}: {error:?}"))
}

/// Asks each server in turn until one answers, sets the clock, and says how far off it was.
/// Waits (every 2 s, naming what failed) for as long as none answers.
pub async fn synchronise(servers: &[HostPort]) -> Result<Synchronised> {
    let mut reported = false;
    loop {
        for server in servers {
            match ask(server).await {
                Ok(result) if result.stratum > 0 && result.stratum < 16 => {
                    set_clock(result.offset)?;
                    let synchronised = Synchronised {
                        server: server.to_string(),
                        offset_us: result.offset,
                        roundtrip_us: result.roundtrip,
                        stratum: result.stratum,
                    };
                    info!(server = %server, offset_us = result.offset, roundtrip_us = result.roundtrip, stratum = result.stratum, "clock set");
                    return Ok(synchronised);
                }
                Ok(result) => {
                    warn!(server = %server, stratum = result.stratum, "the server is not synchronised itself")
                }
                Err(error) if !reported => {
                    warn!(error = %format!("{error:#}"), "no time yet: nothing is signed until an SNTP server answers")
                }
                Err(_) => {}
            }
        }
        reported = true;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Moves the system clock by `offset_us`.
fn set_clock(offset_us: i64) -> Result<()> {
    use nix::time::{clock_gettime, clock_settime, ClockId};
    let now = clock_gettime(ClockId::CLOCK_REALTIME).context("cannot read the clock")?;
    let total = i128::from(now.tv_sec()) * 1_000_000_000
        + i128::from(now.tv_nsec())
        + i128::from(offset_us) * 1000;
    let seconds = (total.div_euclid(1_000_000_000)) as i64;
    let nanoseconds = (total.rem_euclid(1_000_000_000)) as i64;
    clock_settime(
        ClockId::CLOCK_REALTIME,
        nix::sys::time::TimeSpec::new(seconds, nanoseconds),
    )
    .context("cannot set the clock")
}
