//! The `smtp` gateway: email-to-SMS through a named `[smtp.NAME]` server (lettre, async),
//! with `mailto`, `subject` and `body` rendered from templates. TLS is none, STARTTLS
//! (required, not opportunistic) or implicit TLS, optionally with a private CA file.
//!
//! Errors name the server and the SMTP problem, never the recipient address (it holds the
//! phone number) or the text.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Gateway, GatewayError, Message, PhoneShape, SendFuture};
use crate::config::{SmtpGatewayConfig, SmtpServerConfig, SmtpTls};
use crate::template::Escape;

pub struct SmtpGateway {
    name: String,
    shape: PhoneShape,
    config: SmtpGatewayConfig,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpGateway {
    pub fn new(name: &str, shape: PhoneShape, config: &SmtpGatewayConfig) -> Result<Self, String> {
        let server = &config.server;
        let from = server
            .from
            .parse::<Mailbox>()
            .map_err(|e| format!("smtp.{}.from: {e}", server.name))?;
        Ok(SmtpGateway {
            name: name.to_string(),
            shape,
            config: config.clone(),
            from,
            transport: transport(server)?,
        })
    }

    async fn deliver(&self, message: &Message) -> Result<(), GatewayError> {
        let phone = self.shape.apply(&message.to);
        let render = |template: &crate::template::Template| {
            template.render(|t| message.tag(t, &phone), Escape::None)
        };
        let to = render(&self.config.mailto)
            .parse::<Mailbox>()
            .map_err(|_| {
                GatewayError::Local("mailto does not render to an email address".into())
            })?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(render(&self.config.subject))
            // lettre picks base64 or quoted-printable for non-ASCII bodies but declares no
            // charset; receivers then read US-ASCII and garble umlauts and the euro sign.
            .header(ContentType::TEXT_PLAIN)
            .body(render(&self.config.body))
            .map_err(|e| GatewayError::Local(format!("cannot build the email: {e}")))?;
        self.transport.send(email).await.map(|_| ()).map_err(|e| {
            let server = &self.config.server;
            if e.is_timeout() {
                GatewayError::Timeout
            } else if e.is_permanent() || e.is_transient() {
                GatewayError::Refused(format!("smtp {}: {e}", server.name))
            } else {
                GatewayError::Connect(format!(
                    "smtp {} ({}:{}): {}",
                    server.name,
                    server.host,
                    server.port,
                    super::error_chain(&e)
                ))
            }
        })
    }
}

impl Gateway for SmtpGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            // lettre's timeout covers each command; this bounds the whole exchange.
            let whole = self.config.server.timeout * 3;
            tokio::time::timeout(whole, self.deliver(message))
                .await
                .unwrap_or(Err(GatewayError::Timeout))
        })
    }
}

fn transport(server: &SmtpServerConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = match server.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls_parameters(server)?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters(server)?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
        .port(server.port)
        .tls(tls)
        .timeout(Some(server.timeout));
    if let Some(user) = &server.username {
        let password = server
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

fn tls_parameters(server: &SmtpServerConfig) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(server.host.clone())
        .dangerous_accept_invalid_certs(server.accept_invalid_certs);
    if let Some(file) = &server.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| format!("smtp.{}.ca_file: {}: {e}", server.name, file.display()))?;
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| format!("smtp.{}.ca_file: {}: {e}", server.name, file.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("smtp.{}: TLS: {e}", server.name))
}
