//! The capture gateway: a small HTTP server otpgate's `http` gateway posts each SMS to. It
//! hands the text to whoever waits for that phone number, so flows read their OTP the way a
//! user would, from the SMS. Requests to `/stall` are read and never answered, standing in
//! for a provider that hangs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

#[derive(Clone, Default)]
pub struct Capture {
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>,
}

impl Capture {
    /// Starts serving on `address`; returns the bound address.
    pub async fn start(&self, address: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        let capture = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let capture = capture.clone();
                tokio::spawn(async move { capture.serve(stream).await });
            }
        });
        Ok(bound)
    }

    /// Registers interest in the next SMS to `phone` (E.164).
    pub fn expect(&self, phone: &str) -> oneshot::Receiver<String> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(phone.to_string(), sender);
        receiver
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<String>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0).min(64 * 1024);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            // The stalling gateway: read the request, never answer (a provider that hangs).
            if target.starts_with("/stall") {
                std::future::pending::<()>().await;
            }
            let query = target
                .split_once('?')
                .map_or("", |(_, q)| q)
                .as_bytes()
                .to_vec();
            let fields: HashMap<String, String> =
                url::form_urlencoded::parse(if body.is_empty() { &query } else { &body })
                    .into_owned()
                    .collect();
            if let (Some(to), Some(text)) = (fields.get("to"), fields.get("text")) {
                let waiting = self.lock().remove(to);
                if let Some(sender) = waiting {
                    let _ = sender.send(text.clone());
                }
            }
            let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nID: 4711\n";
            if reader.get_mut().write_all(response).await.is_err() {
                return;
            }
        }
    }
}
