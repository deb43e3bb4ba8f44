//! Finds the configured UDP client for a source address: the most specific network wins.
//! RadSec clients (`tls_names`, `tls_fingerprints`) are left out: their certificate, not
//! their address, says who they are (`tls_clients`), and their default secret "radsec" must
//! never answer a UDP datagram. Lookups run on the receive loop for every datagram, so they
//! allocate nothing.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::ClientConfig;

pub struct ClientTable {
    /// Most specific first, so the first match is the answer.
    clients: Vec<(IpNet, Arc<ClientConfig>)>,
}

impl ClientTable {
    pub fn new(clients: &[ClientConfig]) -> Self {
        let mut clients: Vec<(IpNet, Arc<ClientConfig>)> = clients
            .iter()
            .filter(|c| c.tls.is_none())
            .filter_map(|c| Some((c.network?, Arc::new(c.clone()))))
            .collect();
        clients.sort_by_key(|(network, _)| std::cmp::Reverse(network.prefix_len()));
        ClientTable { clients }
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<&Arc<ClientConfig>> {
        let ip = unmapped(ip);
        self.clients
            .iter()
            .find(|(network, _)| network.contains(&ip))
            .map(|(_, client)| client)
    }
}

/// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; networks are written as IPv4.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn client(name: &str, network: &str) -> ClientConfig {
        ClientConfig::with_defaults(name, Some(network.parse().unwrap()), "0123456789abcdef")
    }

    #[test]
    fn the_most_specific_network_wins_and_mapped_ipv4_is_found() {
        let table = ClientTable::new(&[
            client("wide", "10.0.0.0/8"),
            client("host", "10.1.2.3/32"),
            client("v6", "::1/128"),
        ]);
        assert_eq!(
            table.lookup("10.1.2.3".parse().unwrap()).unwrap().name,
            "host"
        );
        assert_eq!(
            table.lookup("10.9.9.9".parse().unwrap()).unwrap().name,
            "wide"
        );
        assert_eq!(
            table
                .lookup("::ffff:10.1.2.3".parse().unwrap())
                .unwrap()
                .name,
            "host"
        );
        assert_eq!(table.lookup("::1".parse().unwrap()).unwrap().name, "v6");
        assert!(table.lookup("192.0.2.1".parse().unwrap()).is_none());
    }

    #[test]
    fn clients_from_the_config_are_looked_up_most_specific_first() {
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml"))
                .unwrap();
        let text = example.replace(
            "[challenge]",
            "[[client]]\nname = \"wide\"\naddress = \"127.0.0.0/8\"\nsecret = \"another-long-secret-value\"\n\n[challenge]",
        );
        let config = Config::from_toml(&text, std::path::Path::new("test.toml")).unwrap();
        let clients = ClientTable::new(&config.clients);
        let name = |ip: &str| clients.lookup(ip.parse().unwrap()).map(|c| c.name.clone());
        assert_eq!(name("127.0.0.1").as_deref(), Some("vpn"));
        assert_eq!(name("127.0.0.2").as_deref(), Some("wide"));
        assert_eq!(name("10.0.0.1"), None);
    }
}
