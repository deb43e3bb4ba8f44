//! The `modem` gateway: a GSM modem on a serial port, spoken to with AT commands
//! (3GPP TS 27.005 / 27.007). Initialises (AT, ATE0, AT+CMEE=2, SIM PIN, registration,
//! message format), then sends in PDU mode (GSM 7-bit or UCS-2, concatenated when long) or in
//! text mode.
//!
//! One send at a time per modem: the port sits behind an async mutex, which is the queue.
//! The port is taken out while in use and put back only after a clean exchange, so an error
//! or a cancelled send leaves it closed and the next send opens and initialises it afresh.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use super::pdu::encode_submit;
use super::{Gateway, GatewayError, Message, PhoneShape, SendFuture};
use crate::config::{ModemGatewayConfig, ModemMode};
use crate::phone::Phone;

/// Ctrl-Z ends the message after the `> ` prompt.
const CTRL_Z: u8 = 0x1a;
/// A modem line longer than this is garbage; the port is reset.
const MAX_LINE: usize = 4096;
/// How long one AT command may take before the modem is thought dead.
const COMMAND_WAIT: Duration = Duration::from_secs(10);

pub struct ModemGateway {
    name: String,
    shape: PhoneShape,
    config: ModemGatewayConfig,
    port: tokio::sync::Mutex<Option<AtPort>>,
    /// Concatenation reference, different for each long message.
    reference: AtomicU8,
}

impl ModemGateway {
    pub fn new(name: &str, shape: PhoneShape, config: &ModemGatewayConfig) -> Self {
        ModemGateway {
            name: name.to_string(),
            shape,
            config: config.clone(),
            port: tokio::sync::Mutex::new(None),
            reference: AtomicU8::new(0),
        }
    }

    async fn deliver(&self, message: &Message) -> Result<(), GatewayError> {
        let mut slot = self.port.lock().await;
        let mut port = match slot.take() {
            Some(port) => port,
            None => self.open().await?,
        };
        let result = match self.config.mode {
            ModemMode::Pdu => self.send_pdus(&mut port, message).await,
            ModemMode::Text => self.send_text(&mut port, message).await,
        };
        match &result {
            Ok(()) => *slot = Some(port),
            Err(e) => {
                tracing::warn!(gateway = %self.name, error = %e, "modem error; it will be initialised again")
            }
        }
        result
    }

    async fn open(&self) -> Result<AtPort, GatewayError> {
        let device = self.config.device.to_string_lossy().into_owned();
        let stream = tokio_serial::new(&device, self.config.baud)
            .open_native_async()
            .map_err(|e| GatewayError::Connect(format!("{device}: {e}")))?;
        let mut port = AtPort {
            stream,
            buffer: Vec::new(),
        };
        self.initialise(&mut port).await?;
        tracing::info!(gateway = %self.name, device = %device, "modem initialised");
        Ok(port)
    }

    async fn initialise(&self, port: &mut AtPort) -> Result<(), GatewayError> {
        // The first AT may meet echo or a half-read line from before; say it twice if needed.
        if port.command("AT").await.is_err() {
            port.command("AT").await?;
        }
        port.command("ATE0").await?;
        port.command("AT+CMEE=2").await?;
        let sim = port.command("AT+CPIN?").await?;
        if !sim.iter().any(|l| l.contains("READY")) {
            if sim.iter().any(|l| l.contains("SIM PIN")) {
                let pin = self.config.sim_pin.as_ref().ok_or_else(|| {
                    GatewayError::Local("the SIM needs a PIN; set sim_pin".into())
                })?;
                port.command_secret(&format!("AT+CPIN=\"{}\"", pin.expose()))
                    .await?;
            } else {
                return Err(GatewayError::Local(format!(
                    "SIM not ready: {}",
                    sim.join(" ")
                )));
            }
        }
        self.wait_for_registration(port).await?;
        let format = match self.config.mode {
            ModemMode::Pdu => "AT+CMGF=0",
            ModemMode::Text => "AT+CMGF=1",
        };
        port.command(format).await?;
        if let (ModemMode::Text, Some(smsc)) = (self.config.mode, &self.config.smsc) {
            port.command(&format!("AT+CSCA=\"{}\"", smsc.e164()))
                .await?;
        }
        Ok(())
    }

    /// Polls AT+CREG? until the modem is registered at home (1) or roaming (5).
    async fn wait_for_registration(&self, port: &mut AtPort) -> Result<(), GatewayError> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let lines = port.command("AT+CREG?").await?;
            let status = lines
                .iter()
                .find_map(|l| l.strip_prefix("+CREG:"))
                .and_then(|rest| rest.split(',').nth(1))
                .map(|s| s.trim().to_string());
            if matches!(status.as_deref(), Some("1") | Some("5")) {
                return Ok(());
            }
            if Instant::now() + Duration::from_secs(1) > deadline {
                return Err(GatewayError::Local(format!(
                    "not registered to a network ({})",
                    lines.join(" ")
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn send_pdus(&self, port: &mut AtPort, message: &Message) -> Result<(), GatewayError> {
        // PDUs need an international number: a rewrite that still parses as one is honoured.
        let shaped = self.shape.apply(&message.to);
        let to = Phone::parse(&shaped, None).unwrap_or_else(|_| message.to.clone());
        let reference = self.reference.fetch_add(1, Ordering::Relaxed);
        for pdu in encode_submit(&to, &message.text, self.config.smsc.as_ref(), reference) {
            port.write(format!("AT+CMGS={}\r", pdu.tpdu_length).as_bytes())
                .await?;
            port.wait_for_prompt().await?;
            port.write(pdu.hex.as_bytes()).await?;
            port.write(&[CTRL_Z]).await?;
            port.final_result(self.config.timeout).await?;
        }
        Ok(())
    }

    async fn send_text(&self, port: &mut AtPort, message: &Message) -> Result<(), GatewayError> {
        let number = self.shape.apply(&message.to);
        if number.contains(['"', '\r', '\n']) {
            return Err(GatewayError::Local(
                "phone_regexp produced characters a modem cannot take".into(),
            ));
        }
        port.write(format!("AT+CMGS=\"{number}\"\r").as_bytes())
            .await?;
        port.wait_for_prompt().await?;
        // Ctrl-Z or ESC inside the text would end or cancel the message early.
        let text: String = message
            .text
            .chars()
            .filter(|c| *c != '\u{1a}' && *c != '\u{1b}')
            .collect();
        port.write(text.as_bytes()).await?;
        port.write(&[CTRL_Z]).await?;
        port.final_result(self.config.timeout).await?;
        Ok(())
    }
}

impl Gateway for ModemGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            // The wait for the queue counts too: a message stuck behind a hung modem fails.
            tokio::time::timeout(self.config.timeout, self.deliver(message))
                .await
                .unwrap_or(Err(GatewayError::Timeout))
        })
    }
}

/// An AT command line on a serial stream.
struct AtPort {
    stream: SerialStream,
    buffer: Vec<u8>,
}

impl AtPort {
    /// Sends a command and returns its information lines once it ends in OK.
    async fn command(&mut self, command: &str) -> Result<Vec<String>, GatewayError> {
        tracing::debug!(command, "modem <-");
        self.write(format!("{command}\r").as_bytes()).await?;
        self.final_result(COMMAND_WAIT).await
    }

    /// Like `command`, but never logs the command (it carries the SIM PIN).
    async fn command_secret(&mut self, command: &str) -> Result<Vec<String>, GatewayError> {
        tracing::debug!(command = "AT+CPIN=[redacted]", "modem <-");
        self.write(format!("{command}\r").as_bytes()).await?;
        self.final_result(COMMAND_WAIT).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), GatewayError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| GatewayError::Connect(format!("serial write: {e}")))?;
        self.stream
            .flush()
            .await
            .map_err(|e| GatewayError::Connect(format!("serial write: {e}")))
    }

    /// Reads lines until OK (returning the lines before it) or an error result.
    async fn final_result(&mut self, wait: Duration) -> Result<Vec<String>, GatewayError> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(deadline).await?;
            tracing::debug!(line = %line, "modem ->");
            match line.as_str() {
                "" => {}
                "OK" => return Ok(lines),
                "ERROR" => return Err(GatewayError::Refused("modem answered ERROR".into())),
                other if other.starts_with("+CMS ERROR") || other.starts_with("+CME ERROR") => {
                    return Err(GatewayError::Refused(other.to_string()));
                }
                other => lines.push(other.to_string()),
            }
        }
    }

    /// Waits for the `> ` prompt after AT+CMGS.
    async fn wait_for_prompt(&mut self) -> Result<(), GatewayError> {
        let deadline = Instant::now() + COMMAND_WAIT;
        loop {
            let start = self
                .buffer
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(self.buffer.len());
            self.buffer.drain(..start);
            if self.buffer.first() == Some(&b'>') {
                self.buffer.clear();
                return Ok(());
            }
            if self.buffer.contains(&b'\n') {
                let line = self.read_line(deadline).await?;
                if line == "ERROR"
                    || line.starts_with("+CMS ERROR")
                    || line.starts_with("+CME ERROR")
                {
                    return Err(GatewayError::Refused(line));
                }
                continue;
            }
            self.fill(deadline).await?;
        }
    }

    async fn read_line(&mut self, deadline: Instant) -> Result<String, GatewayError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim().to_string());
            }
            self.fill(deadline).await?;
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Result<(), GatewayError> {
        if self.buffer.len() > MAX_LINE {
            return Err(GatewayError::Refused(
                "modem sent a line too long to be an answer".into(),
            ));
        }
        let mut chunk = [0u8; 256];
        match timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Err(GatewayError::Timeout),
            Ok(Err(e)) => Err(GatewayError::Connect(format!("serial read: {e}"))),
            Ok(Ok(0)) => Err(GatewayError::Connect("serial port closed".into())),
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}
