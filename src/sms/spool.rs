//! The `spool` gateway: one file per message in the smstools3 outgoing-spool format
//! (`To: <number>`, blank line, text), written under a temporary name and renamed so that a
//! modem daemon never reads half a file. Files are created with the gateway's `file_mode`
//! (0600 unless set): the text is the OTP. The mode is set on the open file, so the umask
//! cannot take away bits an smsd of another user needs.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use super::{Gateway, GatewayError, Message, PhoneShape, SendFuture};
use crate::config::SpoolGatewayConfig;

pub struct SpoolGateway {
    name: String,
    shape: PhoneShape,
    directory: PathBuf,
    file_mode: u32,
}

impl SpoolGateway {
    pub fn new(name: &str, shape: PhoneShape, config: &SpoolGatewayConfig) -> Self {
        SpoolGateway {
            name: name.to_string(),
            shape,
            directory: config.directory.clone(),
            file_mode: config.file_mode,
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
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.file_mode)
            .open(&temporary)
            .await
            .map_err(local)?;
        file.set_permissions(std::fs::Permissions::from_mode(self.file_mode))
            .await
            .map_err(local)?;
        file.write_all(content.as_bytes()).await.map_err(local)?;
        // A tokio File may still be writing when dropped; the rename must see every byte.
        file.flush().await.map_err(local)?;
        drop(file);
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
    use crate::phone::{Phone, PhoneFormat};

    fn gateway(directory: PathBuf, file_mode: u32) -> SpoolGateway {
        let shape = PhoneShape {
            format: PhoneFormat::Digits,
            rewrite: None,
        };
        SpoolGateway::new(
            "local",
            shape,
            &SpoolGatewayConfig {
                directory,
                file_mode,
            },
        )
    }

    #[tokio::test]
    async fn files_get_the_configured_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let message = Message {
            to: Phone::parse("+491701234567", None).unwrap(),
            text: "Code 123456".into(),
        };
        // 0660 has the group write bit that a usual umask (022) takes away.
        for (folder, mode) in [("a", 0o600), ("b", 0o660)] {
            let out = dir.path().join(folder);
            gateway(out.clone(), mode).send(&message).await.unwrap();
            let file = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap();
            assert_eq!(
                file.metadata().unwrap().permissions().mode() & 0o777,
                mode,
                "{folder}"
            );
        }
    }

    #[tokio::test]
    async fn writes_one_smstools_file_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = gateway(dir.path().join("out"), 0o600);
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
