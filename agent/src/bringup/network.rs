//! The appliance's network: the interface up, then an address by DHCP (on QEMU's user network,
//! or a substation's DHCP server) or the static one of the configuration, the default route and
//! `/etc/resolv.conf`. Links, addresses and routes are set over rtnetlink; DHCP speaks UDP on
//! ports 68/67, bound to the interface. A DHCP lease is kept for the whole run ([`LeaseKeeper`],
//! the appliance's `network` role): renewed at T1, rebound at T2, and when it is lost the
//! address goes (the kernel drops it at the end of its lifetime too) until a server gives one.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use edgeward_config::device::Network;
use futures_util::stream::TryStreamExt as _;
use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, RouteMessageBuilder};
use tokio::sync::watch;
use tracing::{info, warn};

use edgeward_dhcp::{DhcpClient, Lease, Step};

/// What the network came up with.
#[derive(Debug, Clone)]
pub struct Up {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The DHCP lease, when the address came from one.
    pub lease: Option<Lease>,
}

/// The interface to use: the configured one, or the first that is not loopback.
fn interface(configured: &Option<String>) -> Result<String> {
    if let Some(name) = configured {
        return Ok(name.clone());
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .context("cannot list /sys/class/net")?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name != "lo")
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no network interface (is virtio_net loaded?)"))
}

/// The interface's index and hardware address (if it has an Ethernet one), from the kernel
/// over netlink.
async fn link_of(handle: &rtnetlink::Handle, interface: &str) -> Result<(u32, Option<[u8; 6]>)> {
    let mut links = handle
        .link()
        .get()
        .match_name(interface.to_owned())
        .execute();
    let link = links
        .try_next()
        .await
        .with_context(|| format!("cannot find interface {interface}"))?
        .ok_or_else(|| anyhow!("no interface {interface}"))?;
    let mac = link
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
    Ok((link.header.index, mac))
}

/// Port 68 on `interface`, for everything DHCP sends and receives.
fn dhcp_socket(interface: &str) -> Result<tokio::net::UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)))
        .context("cannot bind UDP port 68 for DHCP")?;
    socket.set_broadcast(true)?;
    // Without an address the kernel must be told which interface the broadcast leaves by.
    setsockopt(
        &socket,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(interface),
    )
    .with_context(|| format!("cannot bind the DHCP socket to {interface}"))?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::UdpSocket::from_std(socket)?)
}

const BROADCAST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::BROADCAST), 67);

/// One DHCP exchange: DISCOVER, OFFER, REQUEST, ACK, the DISCOVER repeated after 2 s, then
/// after twice as long each time up to 32 s, until `patience` (if any) runs out.
async fn acquire(
    socket: &tokio::net::UdpSocket,
    client: &mut DhcpClient,
    interface: &str,
    patience: Option<Duration>,
) -> Result<Lease> {
    let deadline = patience.map(|patience| tokio::time::Instant::now() + patience);
    let mut buffer = [0u8; 1500];
    let mut wait = Duration::from_secs(2);
    loop {
        socket.send_to(&client.discover()?, BROADCAST).await?;
        let round = tokio::time::Instant::now() + wait;
        loop {
            let received = tokio::time::timeout_at(round, socket.recv_from(&mut buffer)).await;
            let Ok(received) = received else { break };
            let (length, _) = received?;
            match client.handle(&buffer[..length], std::time::Instant::now())? {
                Step::Send(request) => {
                    socket.send_to(&request, BROADCAST).await?;
                }
                Step::Bound(lease) => return Ok(lease),
                Step::SendTo(..) | Step::Lost(_) | Step::Ignore => {}
            }
        }
        wait = (wait * 2).min(Duration::from_secs(32));
        if let (Some(patience), Some(deadline)) = (patience, deadline) {
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no DHCP server answered on {interface} within {} s",
                    patience.as_secs()
                );
            }
        }
    }
}

/// Gives `index` the address, the route to its network (with quick ACKs) and the default
/// route. A DHCP address gets the lease's lifetime, so the kernel itself drops it when the
/// lease runs out unrenewed; a second call for the same address (a renewal) only extends it.
async fn configure(
    handle: &rtnetlink::Handle,
    index: u32,
    name: &str,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    lifetime: Option<Duration>,
) -> Result<()> {
    let mut request = handle
        .address()
        .add(index, address.into(), prefix)
        .replace();
    if let Some(lifetime) = lifetime {
        let seconds = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX - 1);
        let mut info = CacheInfo::default();
        info.ifa_valid = seconds;
        info.ifa_preferred = seconds;
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(info));
    }
    request
        .execute()
        .await
        .with_context(|| format!("cannot give {name} the address {address}/{prefix}"))?;
    // The kernel's route to the local network, replaced by the same with quick ACKs.
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let subnet = Ipv4Addr::from(u32::from(address) & mask);
    let local = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(subnet, prefix)
        .output_interface(index)
        .pref_source(address)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::Kernel)
        .build();
    if let Err(error) = handle
        .route()
        .add(quick_acks(local))
        .replace()
        .execute()
        .await
    {
        warn!(%subnet, prefix, %error, "cannot set quick ACKs on the local network's route");
    }
    if let Some(gateway) = gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        if let Err(error) = handle
            .route()
            .add(quick_acks(route))
            .replace()
            .execute()
            .await
        {
            warn!(%gateway, %error, "cannot add the default route");
        }
    }
    Ok(())
}

fn write_resolv_conf(dns: &[Ipv4Addr]) {
    if dns.is_empty() {
        return;
    }
    let text: String = dns
        .iter()
        .map(|server| format!("nameserver {server}\n"))
        .collect();
    let _ = std::fs::create_dir_all("/etc");
    if let Err(error) = std::fs::write("/etc/resolv.conf", text) {
        warn!(%error, "cannot write /etc/resolv.conf");
    }
}

/// Keeps a DHCP lease for as long as the appliance runs: renews it at T1, rebinds at T2, and
/// when it is lost (expired, or refused with a NAK) drops the address and asks again until a
/// server answers. Clones share one lease, so the supervisor can restart the role without
/// forgetting it.
#[derive(Clone)]
pub struct LeaseKeeper(Arc<tokio::sync::Mutex<Keeper>>);

struct Keeper {
    handle: rtnetlink::Handle,
    index: u32,
    interface: String,
    socket: tokio::net::UdpSocket,
    client: DhcpClient,
}

impl LeaseKeeper {
    /// The lease held now, if any.
    pub async fn lease(&self) -> Option<Lease> {
        self.0.lock().await.client.lease().cloned()
    }

    /// Runs until `stop` changes; `report` is told each change of the lease in a line. It may
    /// be cancelled or restarted at any point: it starts by putting the kernel's address back
    /// in line with the lease held (or asking for one if there is none).
    pub async fn keep(
        &self,
        mut stop: watch::Receiver<bool>,
        report: impl Fn(String),
    ) -> Result<()> {
        let mut keeper = self.0.lock().await;
        let Keeper {
            handle,
            index,
            interface,
            socket,
            client,
        } = &mut *keeper;
        let mut buffer = [0u8; 1500];
        let mut configured = false;
        loop {
            let Some(lease) = client.lease().cloned() else {
                // No lease: lost, or the role restarted while asking for one.
                let lease = tokio::select! {
                    lease = acquire(socket, client, interface, None) => lease?,
                    _ = stop.changed() => return Ok(()),
                };
                info!(interface = %interface, address = %lease.address, server = %lease.server, lease_s = lease.lease.as_secs(), "DHCP lease");
                configured = false;
                continue;
            };
            if !configured {
                let left = client
                    .lease_ends()
                    .map(|ends| ends.saturating_duration_since(std::time::Instant::now()));
                configure(
                    handle,
                    *index,
                    interface,
                    lease.address,
                    lease.prefix,
                    lease.router,
                    left,
                )
                .await?;
                write_resolv_conf(&lease.dns);
                configured = true;
                report(format!(
                    "{}/{} from {}, {} s left",
                    lease.address,
                    lease.prefix,
                    lease.server,
                    left.unwrap_or_default().as_secs()
                ));
            }
            let due = client.deadline();
            let step = tokio::select! {
                received = socket.recv_from(&mut buffer) => {
                    let (length, _) = received.context("receiving DHCP")?;
                    client.handle(&buffer[..length], std::time::Instant::now())?
                }
                () = sleep_until(due) => client.timeout(std::time::Instant::now())?,
                _ = stop.changed() => return Ok(()),
            };
            match step {
                Step::Send(request) => {
                    info!(interface = %interface, "asking any DHCP server to extend the lease");
                    socket.send_to(&request, BROADCAST).await?;
                }
                Step::SendTo(request, server) => {
                    info!(interface = %interface, %server, "asking the DHCP server to renew the lease");
                    socket
                        .send_to(&request, SocketAddr::from((server, 67)))
                        .await?;
                }
                Step::Bound(lease) => {
                    info!(interface = %interface, address = %lease.address, server = %lease.server, lease_s = lease.lease.as_secs(), "DHCP lease renewed");
                    configured = false;
                }
                Step::Lost(lease) => {
                    warn!(interface = %interface, address = %lease.address, "the DHCP lease is lost; the address is dropped and a new one asked for");
                    report(format!("{} lost; asking for an address", lease.address));
                    let message = AddressMessageBuilder::<Ipv4Addr>::new()
                        .index(*index)
                        .address(lease.address, lease.prefix)
                        .build();
                    // The kernel may have dropped it already at the end of its lifetime.
                    if let Err(error) = handle.address().del(message).execute().await {
                        info!(%error, "the address was already gone");
                    }
                }
                Step::Ignore => {}
            }
        }
    }
}

/// Sleeps until `at`, or for ever without a deadline.
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Brings the network up as `network` says; with DHCP, also the [`LeaseKeeper`] that must run
/// for the address to stay.
pub async fn bring_up(network: &Network) -> Result<(Up, Option<LeaseKeeper>)> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    tokio::spawn(connection);
    // Loopback first: the agent's own services talk over it.
    let (lo, _) = link_of(&handle, "lo").await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .context("cannot bring lo up")?;
    let configured = match network {
        Network::Dhcp { interface } | Network::Static { interface, .. } => interface,
    };
    let name = interface(configured)?;
    let (index, mac) = link_of(&handle, &name).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("cannot bring {name} up"))?;
    let up = match network {
        Network::Static {
            address,
            prefix,
            gateway,
            ..
        } => {
            configure(&handle, index, &name, *address, *prefix, *gateway, None).await?;
            (
                Up {
                    interface: name.clone(),
                    address: *address,
                    prefix: *prefix,
                    gateway: *gateway,
                    lease: None,
                },
                None,
            )
        }
        Network::Dhcp { .. } => {
            let mac = mac.ok_or_else(|| {
                anyhow!("interface {name} has no Ethernet address to ask DHCP with")
            })?;
            let socket = dhcp_socket(&name)?;
            let mut client = DhcpClient::new(mac, rand::random());
            let lease = acquire(&socket, &mut client, &name, Some(Duration::from_secs(60))).await?;
            configure(
                &handle,
                index,
                &name,
                lease.address,
                lease.prefix,
                lease.router,
                Some(lease.lease),
            )
            .await?;
            write_resolv_conf(&lease.dns);
            let up = Up {
                interface: name.clone(),
                address: lease.address,
                prefix: lease.prefix,
                gateway: lease.router,
                lease: Some(lease),
            };
            let keeper = LeaseKeeper(Arc::new(tokio::sync::Mutex::new(Keeper {
                handle: handle.clone(),
                index,
                interface: name.clone(),
                socket,
                client,
            })));
            (up, Some(keeper))
        }
    };
    info!(interface = %name, address = %up.0.address, prefix = up.0.prefix, gateway = ?up.0.gateway, "network up");
    Ok(up)
}

/// `route` with RTAX_QUICKACK: TCP on it acknowledges every segment at once instead of
/// delaying the ACK. The platform's broker leaves Nagle's algorithm on, so of the PUBACKs it
/// owes at one instant all but the first wait for our ACK of that first; delayed, that is until
/// our next publish, 20 ms later at 50 frames/s (docs/benchmarks.md, "Data path").
fn quick_acks(mut route: RouteMessage) -> RouteMessage {
    route
        .attributes
        .push(RouteAttribute::Metrics(vec![RouteMetric::QuickAck(1)]));
    route
}
