//! A listening UDP socket whose replies leave from the address the request came to.
//!
//! A socket bound to a specific address does that by itself. A wildcard socket
//! (`0.0.0.0`, `[::]`) would let the kernel pick the reply's source by route, and on a
//! multi-homed host that can be another address than the one the NAS sent to; the NAS then
//! drops the reply as coming from a stranger. For those, the socket asks the kernel for each
//! datagram's destination (IP_PKTINFO / IPV6_RECVPKTINFO) and sends the reply from it, as
//! FreeRADIUS does.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Room for the one control message a wildcard socket receives per datagram.
const CONTROL_SPACE: usize = {
    let v4 = nix::sys::socket::cmsg_space::<libc::in_pktinfo>();
    let v6 = nix::sys::socket::cmsg_space::<libc::in6_pktinfo>();
    if v4 > v6 { v4 } else { v6 }
};

pub struct RadiusSocket {
    socket: UdpSocket,
    /// Bound to a wildcard address: replies name their source explicitly.
    wildcard: bool,
}

/// One datagram's sender and, on a wildcard socket, the address it was sent to.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub source: SocketAddr,
    pub local: Option<IpAddr>,
}

impl RadiusSocket {
    /// Takes a bound, non-blocking socket; on a wildcard address, turns on the reporting of
    /// each datagram's destination.
    pub fn new(socket: socket2::Socket) -> io::Result<RadiusSocket> {
        let address = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))?;
        let wildcard = address.ip().is_unspecified();
        if wildcard {
            match address {
                SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?,
                SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?,
            }
        }
        Ok(RadiusSocket {
            socket: UdpSocket::from_std(socket.into())?,
            wildcard,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram into `buffer`.
    pub async fn recv(&self, buffer: &mut [u8]) -> io::Result<Received> {
        if !self.wildcard {
            let (len, source) = self.socket.recv_from(buffer).await?;
            return Ok(Received {
                len,
                source,
                local: None,
            });
        }
        let mut control = [0u8; CONTROL_SPACE];
        self.socket
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut *buffer)];
                let message = recvmsg::<SockaddrStorage>(
                    self.socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut control),
                    MsgFlags::empty(),
                )?;
                let source = message
                    .address
                    .as_ref()
                    .and_then(socket_addr)
                    .ok_or_else(|| io::Error::other("datagram without a source address"))?;
                let mut local = None;
                for control in message.cmsgs()? {
                    match control {
                        ControlMessageOwned::Ipv4PacketInfo(info) => {
                            local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                                info.ipi_addr.s_addr,
                            ))));
                        }
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                        }
                        _ => {}
                    }
                }
                Ok(Received {
                    len: message.bytes,
                    source,
                    local,
                })
            })
            .await
    }

    /// Sends `bytes` to `destination`, from `local` when the datagram it answers named one
    /// (only a wildcard socket's do).
    pub async fn send(
        &self,
        bytes: &[u8],
        destination: SocketAddr,
        local: Option<IpAddr>,
    ) -> io::Result<usize> {
        let Some(local) = local else {
            return self.socket.send_to(bytes, destination).await;
        };
        let (v4, v6);
        let source = match local {
            IpAddr::V4(address) => {
                v4 = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(address).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                ControlMessage::Ipv4PacketInfo(&v4)
            }
            IpAddr::V6(address) => {
                v6 = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: address.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                ControlMessage::Ipv6PacketInfo(&v6)
            }
        };
        let to = SockaddrStorage::from(destination);
        self.socket
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(bytes)];
                let control = std::slice::from_ref(&source);
                let sent = sendmsg(
                    self.socket.as_raw_fd(),
                    &iov,
                    control,
                    MsgFlags::empty(),
                    Some(&to),
                )?;
                Ok(sent)
            })
            .await
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}
