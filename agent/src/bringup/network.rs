//! The appliance's network: the interface up, then an address by DHCP (on QEMU's user network,
//! or a substation's DHCP server) or the static one of the configuration, the default route and
//! `/etc/resolv.conf`. Links, addresses and routes are set over rtnetlink; DHCP speaks UDP on
//! ports 68/67, bound to the interface.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use edgeward_config::device::Network;
use futures_util::stream::TryStreamExt as _;
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
};
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
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

fn mac_of(interface: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{interface}/address");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{path} holds no MAC address"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("{path} holds no 6-byte MAC address"))
}

async fn index_of(handle: &rtnetlink::Handle, interface: &str) -> Result<u32> {
    let mut links = handle
        .link()
        .get()
        .match_name(interface.to_owned())
        .execute();
    Ok(links
        .try_next()
        .await
        .with_context(|| format!("cannot find interface {interface}"))?
        .ok_or_else(|| anyhow!("no interface {interface}"))?
        .header
        .index)
}

/// One DHCP exchange on `interface`: DISCOVER, OFFER, REQUEST, ACK, retried every 2 s for
/// `patience`.
async fn lease_on(interface: &str, patience: Duration) -> Result<Lease> {
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
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let server = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    let mut client = DhcpClient::new(mac_of(interface)?, rand::random());
    let deadline = tokio::time::Instant::now() + patience;
    let mut buffer = [0u8; 1500];
    loop {
        socket.send_to(&client.discover()?, server).await?;
        let round = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let received = tokio::time::timeout_at(round, socket.recv_from(&mut buffer)).await;
            let Ok(received) = received else { break };
            let (length, _) = received?;
            match client.handle(&buffer[..length])? {
                Step::Send(request) => {
                    socket.send_to(&request, server).await?;
                }
                Step::Bound(lease) => return Ok(lease),
                Step::Ignore => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no DHCP server answered on {interface} within {} s",
                patience.as_secs()
            );
        }
    }
}

/// Brings the network up as `network` says.
pub async fn bring_up(network: &Network) -> Result<Up> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    tokio::spawn(connection);
    // Loopback first: the agent's own services talk over it.
    let lo = index_of(&handle, "lo").await?;
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
    let index = index_of(&handle, &name).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("cannot bring {name} up"))?;
    let (address, prefix, gateway, dns, lease) = match network {
        Network::Static {
            address,
            prefix,
            gateway,
            ..
        } => (*address, *prefix, *gateway, Vec::new(), None),
        Network::Dhcp { .. } => {
            let lease = lease_on(&name, Duration::from_secs(60)).await?;
            (
                lease.address,
                lease.prefix,
                lease.router,
                lease.dns.clone(),
                Some(lease),
            )
        }
    };
    handle
        .address()
        .add(index, address.into(), prefix)
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
        if let Err(error) = handle.route().add(quick_acks(route)).execute().await {
            warn!(%gateway, %error, "cannot add the default route");
        }
    }
    if !dns.is_empty() {
        let text: String = dns
            .iter()
            .map(|server| format!("nameserver {server}\n"))
            .collect();
        let _ = std::fs::create_dir_all("/etc");
        if let Err(error) = std::fs::write("/etc/resolv.conf", text) {
            warn!(%error, "cannot write /etc/resolv.conf");
        }
    }
    info!(interface = %name, %address, prefix, gateway = ?gateway, "network up");
    Ok(Up {
        interface: name,
        address,
        prefix,
        gateway,
        lease,
    })
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
