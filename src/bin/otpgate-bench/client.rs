//! A RADIUS client for load: one UDP socket per worker, requests with a
//! Message-Authenticator, replies checked (Response Authenticator, Message-Authenticator)
//! before they count.

use std::net::SocketAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use otpgate::radius::packet::{Packet, PacketBuilder, attr, code, hide_password};
use tokio::net::UdpSocket;

pub struct Client {
    socket: UdpSocket,
    secret: Vec<u8>,
    identifier: u8,
    timeout: Duration,
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

impl Client {
    pub async fn connect(
        server: SocketAddr,
        secret: &str,
        timeout: Duration,
    ) -> std::io::Result<Client> {
        let bind = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(server).await?;
        let mut id = [0u8; 1];
        getrandom::fill(&mut id).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Client {
            socket,
            secret: secret.as_bytes().to_vec(),
            identifier: id[0],
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
        let mut authenticator = [0u8; 16];
        getrandom::fill(&mut authenticator)
            .map_err(|e| Failure::Io(std::io::Error::other(e.to_string())))?;
        let mut builder = self.builder(code::ACCESS_REQUEST);
        builder.push(attr::USER_NAME, user.as_bytes());
        builder.push(
            attr::USER_PASSWORD,
            &hide_password(password.as_bytes(), &self.secret, &authenticator),
        );
        if let Some(state) = state {
            builder.push(attr::STATE, state);
        }
        self.send_and_check(builder, authenticator).await
    }

    fn builder(&mut self, request_code: u8) -> PacketBuilder {
        self.identifier = self.identifier.wrapping_add(1);
        let mut builder = PacketBuilder::new(request_code, self.identifier);
        builder.message_authenticator();
        builder
    }

    async fn exchange(&mut self, builder: PacketBuilder) -> Result<Reply, Failure> {
        let mut authenticator = [0u8; 16];
        getrandom::fill(&mut authenticator)
            .map_err(|e| Failure::Io(std::io::Error::other(e.to_string())))?;
        self.send_and_check(builder, authenticator).await
    }

    async fn send_and_check(
        &mut self,
        builder: PacketBuilder,
        authenticator: [u8; 16],
    ) -> Result<Reply, Failure> {
        let request = builder.finish_request(&authenticator, &self.secret);
        self.socket.send(&request).await.map_err(Failure::Io)?;
        let mut buffer = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buffer)).await;
            let length = match received {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => return Err(Failure::Io(e)),
                Ok(Ok(length)) => length,
            };
            let reply = &buffer[..length];
            // A late reply to an earlier, timed-out request: skip it.
            if reply.get(1) != Some(&self.identifier) {
                continue;
            }
            return self.check(reply, &authenticator);
        }
    }

    fn check(&self, reply: &[u8], request_authenticator: &[u8; 16]) -> Result<Reply, Failure> {
        let packet = Packet::decode(reply).map_err(|_| Failure::Invalid("malformed reply"))?;
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
