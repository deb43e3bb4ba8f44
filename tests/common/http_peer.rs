//! A small real HTTP/1.1 server for gateway tests, plain or over TLS with a self-signed
//! certificate: records every request and answers with a programmed status and body,
//! optionally after a delay.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters (GET) or form fields (POST form).
    pub fn fields(&self) -> Vec<(String, String)> {
        let encoded = if self.method == "GET" {
            self.target.split_once('?').map_or("", |(_, q)| q)
        } else {
            &self.body
        };
        url::form_urlencoded::parse(encoded.as_bytes())
            .into_owned()
            .collect()
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: 200,
            body: "ID: 12345".into(),
            delay: Duration::ZERO,
        }
    }
}

pub struct HttpPeer {
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    scheme: &'static str,
}

impl HttpPeer {
    pub fn start(answer: Answer) -> HttpPeer {
        HttpPeer::listen(answer, None)
    }

    /// HTTPS with a self-signed certificate for 127.0.0.1, which no client trusts.
    pub fn start_tls(answer: Answer) -> HttpPeer {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        HttpPeer::listen(answer, Some(Arc::new(config)))
    }

    fn listen(answer: Answer, tls: Option<Arc<rustls::ServerConfig>>) -> HttpPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = requests.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (sink, answer, tls) = (sink.clone(), answer.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(connection, stream), sink, answer)
                    }
                    None => serve(stream, sink, answer),
                });
            }
        });
        HttpPeer {
            address,
            requests,
            scheme,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.address)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits for the `n`th request (1-based).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Recorded {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().get(n - 1) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the HTTP peer got no request number {n}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve<S: Read + Write>(stream: S, sink: Arc<Mutex<Vec<Recorded>>>, answer: Answer) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        sink.lock().unwrap().push(Recorded {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        std::thread::sleep(answer.delay);
        let response = format!(
            "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{}",
            answer.status,
            answer.body.len(),
            answer.body
        );
        if reader
            .get_mut()
            .write_all(response.as_bytes())
            .and_then(|_| reader.get_mut().flush())
            .is_err()
        {
            return;
        }
    }
}
