//! Many users at once: `user{n}` with phone +4917055{n:05} and the PIN `PIN`, enrolled in
//! one import, and the full flow of one of them over raw UDP, each step sent once.

use std::path::Path;
use std::time::{Duration, Instant};

use super::raw::{Client, access_request, random_authenticator, verified_reply};
use super::{PIN, Server};
use otpgate::radius::packet::{attr, code};

/// Enrolls `user0` .. `user{count - 1}` through the CLI, the CSV files written in `dir`.
pub fn enroll(config: &Path, dir: &Path, count: usize) {
    let users = dir.join("users.csv");
    let tokens = dir.join("tokens.csv");
    let mut user_lines = String::from("name,phone\n");
    let mut token_lines = String::from("user,pin\n");
    for n in 0..count {
        user_lines.push_str(&format!("user{n},+4917055{n:05}\n"));
        token_lines.push_str(&format!("user{n},{PIN}\n"));
    }
    std::fs::write(&users, user_lines).unwrap();
    std::fs::write(&tokens, token_lines).unwrap();
    super::import_csv(config, &users, &tokens);
}

/// The SMS text `server` spooled to `number` (digits, as the spool's To: line has it).
pub fn sms_to(server: &Server, number: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let header = format!("To: {number}\n");
    loop {
        for entry in std::fs::read_dir(server.spool())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Ok(content) = std::fs::read_to_string(entry.path())
                && content.starts_with(&header)
                && let Some((_, text)) = content.split_once("\n\n")
            {
                return text.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no SMS to {number}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One login of `user{n}`: the PIN, sent to `pin_server` through `pin_client`, gets a
/// challenge; State + the OTP from that server's spool, sent through `answer_client` (the
/// same server or another node), gets an Access-Accept; each on the first send. Returns the
/// challenge's Reply-Message.
pub fn flow(
    pin_server: &Server,
    pin_client: &Client,
    answer_client: &Client,
    n: usize,
) -> Result<String, String> {
    let user = format!("user{n}");
    let identifier = (n % 128) as u8 * 2;
    let authenticator = random_authenticator();
    let reply = pin_client
        .exchange(&access_request(
            identifier,
            authenticator,
            &user,
            PIN,
            true,
            &[],
        ))
        .ok_or(format!("{user}: no reply to the PIN"))?;
    let packet = verified_reply(&reply, &authenticator);
    if packet.code != code::ACCESS_CHALLENGE {
        return Err(format!("{user}: the PIN got code {}", packet.code));
    }
    let state = packet.first(attr::STATE).ok_or("no State")?.to_vec();
    let prompt =
        String::from_utf8_lossy(packet.first(attr::REPLY_MESSAGE).unwrap_or_default()).into_owned();
    let otp = super::otp_of(&sms_to(pin_server, &format!("4917055{n:05}")));
    let authenticator = random_authenticator();
    let reply = answer_client
        .exchange(&access_request(
            identifier + 1,
            authenticator,
            &user,
            &otp,
            true,
            &[(attr::STATE, &state)],
        ))
        .ok_or(format!("{user}: no reply to the answer"))?;
    match verified_reply(&reply, &authenticator).code {
        code::ACCESS_ACCEPT => Ok(prompt),
        other => Err(format!("{user}: the answer got code {other}")),
    }
}
