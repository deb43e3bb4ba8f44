//! The `http` gateway (DESIGN section 5): GET with query parameters or POST with a form or JSON
//! body, basic auth, fixed `parameters` and tag-rendered `options`, headers, proxy,
//! `check_ssl`, `timeout`, and success judged by status and `return_success`/`return_fail`.
//!
//! Error texts never include the URL: its query may carry the OTP or a password.

use std::time::Duration;

use super::{Gateway, GatewayError, Message, PhoneShape, SendFuture};
use crate::config::{HttpBody, HttpGatewayConfig, HttpMethod};
use crate::template::{Escape, Tag};

/// The most of a response body read to look for return_success/return_fail.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

pub struct HttpGateway {
    name: String,
    shape: PhoneShape,
    config: HttpGatewayConfig,
    client: reqwest::Client,
}

impl HttpGateway {
    pub fn new(name: &str, shape: PhoneShape, config: &HttpGatewayConfig) -> Result<Self, String> {
        let client = client(config.timeout, config.check_ssl, config.proxy.as_deref())?;
        Ok(HttpGateway {
            name: name.to_string(),
            shape,
            config: config.clone(),
            client,
        })
    }

    async fn deliver(&self, message: &Message) -> Result<(), GatewayError> {
        let phone = self.shape.apply(&message.to);
        let value = |tag: Tag| message.tag(tag, &phone);
        let url = self.config.url.render(value, Escape::Url);
        let mut url =
            reqwest::Url::parse(&url).map_err(|e| GatewayError::Local(format!("url: {e}")))?;
        let fields: Vec<(String, String)> = self
            .config
            .parameters
            .iter()
            .cloned()
            .chain(
                self.config
                    .options
                    .iter()
                    .map(|(k, t)| (k.clone(), t.render(value, Escape::None))),
            )
            .collect();

        let request = match self.config.method {
            HttpMethod::Get => {
                if !fields.is_empty() {
                    url.query_pairs_mut().extend_pairs(&fields);
                }
                self.client.get(url)
            }
            HttpMethod::Post => {
                let request = self.client.post(url);
                match self.config.body {
                    HttpBody::Form => request.form(&fields),
                    HttpBody::Json => request.json(
                        &fields
                            .into_iter()
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect::<serde_json::Map<_, _>>(),
                    ),
                }
            }
        };
        let mut request = request;
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        if let Some(user) = &self.config.username {
            request = request.basic_auth(user, self.config.password.as_ref().map(|p| p.expose()));
        }

        let (status, body) = exchange(request, MAX_RESPONSE_BODY).await?;
        if !(200..300).contains(&status) {
            return Err(GatewayError::Refused(format!("HTTP {status}")));
        }
        if let Some(needle) = &self.config.return_success {
            if !body.contains(needle.as_str()) {
                return Err(GatewayError::Refused(format!(
                    "HTTP {}, return_success not in the response",
                    status
                )));
            }
        } else if let Some(needle) = &self.config.return_fail
            && body.contains(needle.as_str())
        {
            return Err(GatewayError::Refused(format!(
                "HTTP {}, return_fail found in the response",
                status
            )));
        }
        Ok(())
    }
}

/// An HTTP client for a gateway: its timeout, certificate checking, and only the configured
/// proxy (never one from the environment).
pub fn client(
    timeout: Duration,
    check_ssl: bool,
    proxy: Option<&str>,
) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .danger_accept_invalid_certs(!check_ssl)
        .pool_idle_timeout(Duration::from_secs(30));
    let builder = match proxy {
        Some(proxy) => {
            builder.proxy(reqwest::Proxy::all(proxy).map_err(|e| format!("proxy: {e}"))?)
        }
        None => builder.no_proxy(),
    };
    builder
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// Sends a request and reads at most `max_body` octets of the answer: (status, body).
pub async fn exchange(
    request: reqwest::RequestBuilder,
    max_body: usize,
) -> Result<(u16, String), GatewayError> {
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        let room = max_body.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn describe(e: reqwest::Error) -> GatewayError {
    let timeout = e.is_timeout();
    let connect = e.is_connect();
    // The URL may carry the OTP or a password in its query.
    let text = super::error_chain(&e.without_url());
    if timeout {
        GatewayError::Timeout
    } else if connect {
        GatewayError::Connect(text)
    } else {
        GatewayError::Refused(text)
    }
}

impl Gateway for HttpGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(self.deliver(message))
    }
}
