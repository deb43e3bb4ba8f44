//! A RADIUS client for load: one UDP socket per worker, requests with a
//! Message-Authenticator, replies checked (Response Authenticator, Message-Authenticator)
//! before they count. Requests can be retransmitted as a NAS does (the same bytes again,
//! `access_retrying`), and the socket can be bound to a chosen source address, so that one
//! bench process can be two RADIUS clients (`flood`). Over RadSec (`--tls`, `tls.rs`) each
//! client is one TLS connection, and speaks RADIUS/1.1 when the server chose it by ALPN:
//! then the header carries a Token, the password goes in clear and nothing is signed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use md5::{Digest, Md5};
use otpgate::radius::dialect::Dialect;
use otpgate::radius::packet::{Packet, PacketBuilder, attr, code, hide_password};
use tokio::net::UdpSocket;

use crate::tls::{TlsLink, TlsOptions};

pub struct Client {
    transport: Transport,
    secret: Vec<u8>,
    identifier: u8,
    /// The RADIUS/1.1 Token of the last request (RFC 9765: a counter).
    token: u32,
    dialect: Dialect,
    timeout: Duration,
}

enum Transport {
    Udp(UdpSocket),
    Tls(TlsLink),
}

/// An Access-Request as sent, kept to send again (a retransmission is the same bytes).
pub struct Prepared {
    bytes: Vec<u8>,
    identifier: u8,
    authenticator: [u8; 16],
}

/// A checked reply: its code and the attributes the flow needs.
pub struct Reply {
    pub code: u8,
    pub state: Option<Vec<u8>>,
    /// Whether it carried a (valid) Message-Authenticator.
    pub signed: bool,
}

#[derive(Debug)]
pub enum Failure {
    Timeout,
    Invalid(&'static str),
    Io(std::io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Invalid(what) => f.write_str(what),
            Failure::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Failure {}

impl Client {
    pub async fn connect(
        server: SocketAddr,
        secret: &str,
        timeout: Duration,
    ) -> std::io::Result<Client> {
        Client::connect_from(server, None, secret, timeout).await
    }

    /// Like `connect`, from `source` (e.g. 127.0.0.2, a second RADIUS client on loopback);
    /// `None` is the loopback address of the server's family.
    pub async fn connect_from(
        server: SocketAddr,
        source: Option<IpAddr>,
        secret: &str,
        timeout: Duration,
    ) -> std::io::Result<Client> {
        let source = source.unwrap_or(if server.is_ipv6() {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
        });
        let socket = UdpSocket::bind(SocketAddr::new(source, 0)).await?;
        socket.connect(server).await?;
        Client::over(Transport::Udp(socket), Dialect::Classic, secret, timeout)
    }

    /// A RadSec client: one TLS connection to `server`.
    pub async fn connect_tls(
        server: SocketAddr,
        tls: &TlsOptions,
        secret: &str,
        timeout: Duration,
    ) -> std::io::Result<Client> {
        let link = tokio::time::timeout(timeout, TlsLink::connect(server, tls))
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
        let dialect = link.dialect();
        Client::over(Transport::Tls(link), dialect, secret, timeout)
    }

    /// UDP, or TLS when `tls` is set.
    pub async fn open(
        server: SocketAddr,
        tls: Option<&TlsOptions>,
        secret: &str,
        timeout: Duration,
    ) -> std::io::Result<Client> {
        match tls {
            Some(tls) => Client::connect_tls(server, tls, secret, timeout).await,
            None => Client::connect(server, secret, timeout).await,
        }
    }

    fn over(
        transport: Transport,
        dialect: Dialect,
        secret: &str,
        timeout: Duration,
    ) -> std::io::Result<Client> {
        let mut random = [0u8; 5];
        getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
        let [id, t0, t1, t2, t3] = random;
        Ok(Client {
            transport,
            secret: secret.as_bytes().to_vec(),
            identifier: id,
            token: u32::from_be_bytes([t0, t1, t2, t3]),
            dialect,
            timeout,
        })
    }

    pub async fn status(&mut self) -> Result<Reply, Failure> {
        let builder = self.builder(code::STATUS_SERVER);
        self.exchange(builder).await
    }

    pub async fn access(
        &mut self,
        user: &str,
        password: &str,
        state: Option<&[u8]>,
    ) -> Result<Reply, Failure> {
        let request = self.prepare_access(user, password, state)?;
        self.send(&request).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.reply_to(&request, deadline).await
    }

    /// Builds an Access-Request with the next identifier, to send with `send`.
    pub fn prepare_access(
        &mut self,
        user: &str,
        password: &str,
        state: Option<&[u8]>,
    ) -> Result<Prepared, Failure> {
        let authenticator = self.authenticator()?;
        let mut builder = self.builder(code::ACCESS_REQUEST);
        builder.push(attr::USER_NAME, user.as_bytes());
        match self.dialect {
            Dialect::Classic => builder.push(
                attr::USER_PASSWORD,
                &hide_password(password.as_bytes(), &self.secret, &authenticator),
            ),
            Dialect::Radius11 => builder.push(attr::USER_PASSWORD, password.as_bytes()),
        };
        if let Some(state) = state {
            builder.push(attr::STATE, state);
        }
        Ok(self.finish(builder, authenticator))
    }

    /// The header's authenticator field: random, or under RADIUS/1.1 the next Token and
    /// zeroes.
    fn authenticator(&mut self) -> Result<[u8; 16], Failure> {
        match self.dialect {
            Dialect::Classic => random_authenticator(),
            Dialect::Radius11 => {
                self.token = self.token.wrapping_add(1);
                let mut field = [0u8; 16];
                field[..4].copy_from_slice(&self.token.to_be_bytes());
                Ok(field)
            }
        }
    }

    fn finish(&self, builder: PacketBuilder, authenticator: [u8; 16]) -> Prepared {
        let bytes = match self.dialect {
            Dialect::Classic => builder.finish_request(&authenticator, &self.secret),
            Dialect::Radius11 => builder.finish_unsigned(&authenticator),
        };
        Prepared {
            bytes,
            identifier: self.identifier,
            authenticator,
        }
    }

    pub async fn send(&self, request: &Prepared) -> Result<(), Failure> {
        match &self.transport {
            Transport::Udp(socket) => socket.send(&request.bytes).await.map(|_| ()),
            Transport::Tls(link) => link.send(&request.bytes).await,
        }
        .map_err(Failure::Io)
    }

    /// An Access-Request sent as a NAS sends it: up to `tries` times, `interval` apart, the
    /// same bytes each time, giving up `interval` after the last. Returns the reply and how
    /// many sends had gone out when it came.
    pub async fn access_retrying(
        &mut self,
        user: &str,
        password: &str,
        state: Option<&[u8]>,
        tries: u32,
        interval: Duration,
    ) -> Result<(Reply, u32), Failure> {
        let request = self.prepare_access(user, password, state)?;
        for sent in 1..=tries.max(1) {
            self.send(&request).await?;
            let deadline = tokio::time::Instant::now() + interval;
            match self.reply_to(&request, deadline).await {
                Err(Failure::Timeout) => continue,
                other => return other.map(|reply| (reply, sent)),
            }
        }
        Err(Failure::Timeout)
    }

    /// The code of a datagram already received, if any, unchecked: a flood counts its
    /// replies without waiting for them.
    pub fn try_receive_code(&self) -> Option<u8> {
        let Transport::Udp(socket) = &self.transport else {
            return None;
        };
        let mut buffer = [0u8; 4096];
        match socket.try_recv(&mut buffer) {
            Ok(length) if length >= 20 => buffer.first().copied(),
            _ => None,
        }
    }

    /// Waits until `deadline` for the reply to `request`; replies to earlier requests are
    /// skipped.
    pub async fn reply_to(
        &self,
        request: &Prepared,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, Failure> {
        let mut buffer = vec![0u8; 4096];
        loop {
            let received = match &self.transport {
                Transport::Udp(socket) => {
                    tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await
                }
                Transport::Tls(link) => {
                    tokio::time::timeout_at(deadline, link.receive(&mut buffer)).await
                }
            };
            let length = match received {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => return Err(Failure::Io(e)),
                Ok(Ok(length)) => length,
            };
            let reply = &buffer[..length];
            // A late reply to an earlier, timed-out request: skip it. Under RADIUS/1.1 the
            // Token tells them apart.
            let mine = match self.dialect {
                Dialect::Classic => reply.get(1) == Some(&request.identifier),
                Dialect::Radius11 => reply.get(4..8) == request.authenticator.get(..4),
            };
            if !mine {
                continue;
            }
            return self.check(reply, &request.authenticator);
        }
    }

    fn builder(&mut self, request_code: u8) -> PacketBuilder {
        self.identifier = self.identifier.wrapping_add(1);
        match self.dialect {
            Dialect::Classic => {
                let mut builder = PacketBuilder::new(request_code, self.identifier);
                builder.message_authenticator();
                builder
            }
            // RFC 9765: Reserved-1 is zero, and no Message-Authenticator.
            Dialect::Radius11 => PacketBuilder::new(request_code, 0),
        }
    }

    async fn exchange(&mut self, builder: PacketBuilder) -> Result<Reply, Failure> {
        let authenticator = self.authenticator()?;
        let request = self.finish(builder, authenticator);
        self.send(&request).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.reply_to(&request, deadline).await
    }

    fn check(&self, reply: &[u8], request_authenticator: &[u8; 16]) -> Result<Reply, Failure> {
        let packet = Packet::decode(reply).map_err(|_| Failure::Invalid("malformed reply"))?;
        if self.dialect == Dialect::Radius11 {
            // TLS authenticated it; a Message-Authenticator must not be there (RFC 9765).
            if packet.identifier != 0 || packet.count(attr::MESSAGE_AUTHENTICATOR) > 0 {
                return Err(Failure::Invalid("not a RADIUS/1.1 reply"));
            }
            return Ok(Reply {
                code: packet.code,
                state: packet.first(attr::STATE).map(<[u8]>::to_vec),
                signed: true,
            });
        }
        let mut with_request = reply.to_vec();
        with_request[4..20].copy_from_slice(request_authenticator);
        let mut md5 = Md5::new();
        md5.update(&with_request);
        md5.update(&self.secret);
        if md5.finalize().as_slice() != &reply[4..20] {
            return Err(Failure::Invalid("bad Response Authenticator"));
        }
        let check =
            Packet::decode(&with_request).map_err(|_| Failure::Invalid("malformed reply"))?;
        // Checked when present; some servers (FreeRADIUS 3.2.1 on Status-Server) send none.
        let signed = match check.verify_message_authenticator(&self.secret) {
            Some(true) => true,
            Some(false) => return Err(Failure::Invalid("bad Message-Authenticator")),
            None => false,
        };
        Ok(Reply {
            code: packet.code,
            state: packet.first(attr::STATE).map(<[u8]>::to_vec),
            signed,
        })
    }
}

fn random_authenticator() -> Result<[u8; 16], Failure> {
    let mut authenticator = [0u8; 16];
    getrandom::fill(&mut authenticator)
        .map_err(|e| Failure::Io(std::io::Error::other(e.to_string())))?;
    Ok(authenticator)
}
