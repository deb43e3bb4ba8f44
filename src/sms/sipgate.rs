//! The `sipgate` gateway: XML-RPC `samurai.SessionInitiate` with RemoteUri
//! `sip:<digits>@sipgate.de`, TOS `text` and the message as Content, over HTTP basic auth.
//! A fault, or a StatusCode other than 200 in the response struct, is a failure carrying the
//! provider's text. Debug logs show request and response with message and password redacted.

use std::time::Duration;

use super::{Gateway, GatewayError, Message, PhoneShape, SendFuture, http};
use crate::config::SipgateGatewayConfig;
use crate::template::{Escape, push_escaped};

/// The most of a response read.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
const REDACTED: &str = "[redacted]";

pub struct SipgateGateway {
    name: String,
    shape: PhoneShape,
    config: SipgateGatewayConfig,
    client: reqwest::Client,
}

impl SipgateGateway {
    pub fn new(
        name: &str,
        shape: PhoneShape,
        config: &SipgateGatewayConfig,
    ) -> Result<Self, String> {
        let client = http::client(config.timeout, true, config.proxy.as_deref())?;
        Ok(SipgateGateway {
            name: name.to_string(),
            shape,
            config: config.clone(),
            client,
        })
    }

    async fn deliver(&self, message: &Message) -> Result<(), GatewayError> {
        let remote_uri = format!("sip:{}@sipgate.de", self.shape.apply(&message.to));
        let body = session_initiate(&remote_uri, &message.text);
        tracing::debug!(
            gateway = %self.name,
            user = %self.config.username,
            password = REDACTED,
            request = %session_initiate(&format!("sip:{}@sipgate.de", message.to.masked()), REDACTED),
            "sipgate request"
        );
        let request = self
            .client
            .post(&self.config.url)
            .basic_auth(&self.config.username, Some(self.config.password.expose()))
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(body);
        let (status, response) = http::exchange(request, MAX_RESPONSE_BODY).await?;
        tracing::debug!(gateway = %self.name, status, response = %response, "sipgate response");
        if !(200..300).contains(&status) {
            return Err(GatewayError::Refused(format!("HTTP {status}")));
        }
        check_response(&response).map_err(GatewayError::Refused)
    }
}

impl Gateway for SipgateGateway {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(
                self.config.timeout + Duration::from_millis(100),
                self.deliver(message),
            )
            .await
            .unwrap_or(Err(GatewayError::Timeout))
        })
    }
}

/// The XML-RPC call, with every value escaped.
fn session_initiate(remote_uri: &str, content: &str) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<methodCall><methodName>samurai.SessionInitiate</methodName>\
         <params><param><value><struct>",
    );
    for (name, value) in [
        ("RemoteUri", remote_uri),
        ("TOS", "text"),
        ("Content", content),
    ] {
        xml.push_str("<member><name>");
        xml.push_str(name);
        xml.push_str("</name><value><string>");
        push_escaped(&mut xml, value, Escape::Xml);
        xml.push_str("</string></value></member>");
    }
    xml.push_str("</struct></value></param></params></methodCall>\n");
    xml
}

/// Ok if the response is a struct with StatusCode 200; the fault or status text otherwise.
fn check_response(xml: &str) -> Result<(), String> {
    let document =
        roxmltree::Document::parse(xml).map_err(|e| format!("response is not XML: {e}"))?;
    let root = document.root_element();
    if !root.has_tag_name("methodResponse") {
        return Err("response is not an XML-RPC methodResponse".into());
    }
    let member = |scope: roxmltree::Node<'_, '_>, wanted: &str| -> Option<String> {
        scope
            .descendants()
            .filter(|n| n.has_tag_name("member"))
            .find_map(|m| {
                let name = m
                    .children()
                    .find(|c| c.has_tag_name("name"))?
                    .text()?
                    .trim()
                    .to_string();
                if name != wanted {
                    return None;
                }
                let value = m.children().find(|c| c.has_tag_name("value"))?;
                // A scalar is either typed (<int>, <string>, ...) or bare text.
                let text = value
                    .descendants()
                    .filter(|d| d.is_text())
                    .filter_map(|d| d.text())
                    .collect::<String>();
                Some(text.trim().to_string())
            })
    };
    if let Some(fault) = root.descendants().find(|n| n.has_tag_name("fault")) {
        let code = member(fault, "faultCode").unwrap_or_default();
        let text = member(fault, "faultString").unwrap_or_default();
        return Err(format!("XML-RPC fault {code}: {text}"));
    }
    match member(root, "StatusCode").as_deref() {
        Some("200") => Ok(()),
        Some(code) => Err(format!(
            "StatusCode {code}: {}",
            member(root, "StatusString").unwrap_or_default()
        )),
        None => Err("response has no StatusCode".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_content_of_the_call() {
        let xml = session_initiate("sip:491701234567@sipgate.de", "a & b < c");
        assert!(
            xml.contains("<name>Content</name><value><string>a &amp; b &lt; c</string></value>")
        );
        assert!(roxmltree::Document::parse(&xml).is_ok());
    }

    #[test]
    fn reads_status_codes_and_faults() {
        let ok = "<?xml version='1.0'?><methodResponse><params><param><value><struct>\
                  <member><name>StatusCode</name><value><int>200</int></value></member>\
                  <member><name>StatusString</name><value><string>Method success</string></value></member>\
                  </struct></value></param></params></methodResponse>";
        assert_eq!(check_response(ok), Ok(()));
        let refused = ok
            .replace("<int>200</int>", "<i4>401</i4>")
            .replace("Method success", "Unauthorized");
        assert_eq!(
            check_response(&refused),
            Err("StatusCode 401: Unauthorized".into())
        );
        let fault = "<methodResponse><fault><value><struct>\
                     <member><name>faultCode</name><value><int>407</int></value></member>\
                     <member><name>faultString</name><value><string>Bad &amp; worse</string></value></member>\
                     </struct></value></fault></methodResponse>";
        assert_eq!(
            check_response(fault),
            Err("XML-RPC fault 407: Bad & worse".into())
        );
        assert!(check_response("not xml").is_err());
    }
}
