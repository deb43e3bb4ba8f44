//! The `spool` gateway: one file per message in the smstools3 outgoing-spool format
//! (`To: <number>`, blank line, text), written under a temporary name and renamed so that a
//! modem daemon never reads half a file.

use std::path::PathBuf;

use super::{Gateway, GatewayError, Message, PhoneShape, SendFuture};
use crate::config::SpoolGatewayConfig;

pub struct SpoolGateway {
    name: String,
    shape: PhoneShape,
    directory: PathBuf,
}

impl SpoolGateway {
    pub fn new(name: &str, shape: PhoneShape, config: &SpoolGatewayConfig) -> Self {
        SpoolGateway {
            name: name.to_string(),
            shape,
            directory: config.directory.clone(),
        }
    }

    async fn write(&self, message: &Message) -> Result<(), GatewayError> {
        let number = self.shape.apply(&message.to);
        if number.contains(['\r', '\n']) {
            return Err(GatewayError::Local(
                "phone_regexp produced a line break".into(),
            ));
        }
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| GatewayError::Local(format!("no randomness: {e}")))?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let file_name = format!("otpgate-{millis}-{}", hex::encode(id));
        // smstools3 ignores names starting with a dot, so the half-written file is never sent.
        let temporary = self.directory.join(format!(".{file_name}"));
        let content = format!("To: {number}\n\n{}", message.text);
        let local = |e: std::io::Error| {
            GatewayError::Local(format!("spool {}: {e}", self.directory.display()))
        };
        tokio::fs::create_dir_all(&self.directory)
            .await
            .map_err(local)?;
        tokio::fs::write(&temporary, content).await.map_err(local)?;
        tokio::fs::rename(&temporary, self.directory.join(&file_name))
            .await
            .map_err(local)?;
        Ok(())
    }
}

impl Gateway for SpoolGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(self.write(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::{Phone, PhoneFormat};

    #[tokio::test]
    async fn writes_one_smstools_file_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let shape = PhoneShape {
            format: PhoneFormat::Digits,
            rewrite: None,
        };
        let gateway = SpoolGateway::new(
            "local",
            shape,
            &SpoolGatewayConfig {
                directory: dir.path().join("out"),
            },
        );
        let message = Message {
            to: Phone::parse("+491701234567", None).unwrap(),
            text: "Code 123456".into(),
        };
        gateway.send(&message).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(
            std::fs::read_to_string(&files[0]).unwrap(),
            "To: 491701234567\n\nCode 123456"
        );
    }
}
