//! SMS-SUBMIT PDUs (3GPP TS 23.040 section 9.2.2.2) for modems in PDU mode: GSM 7-bit or
//! UCS-2 user data, and a concatenation User Data Header (IEI 0x00, 8-bit reference) when a
//! text needs more than one SMS.

use super::encoding::{self, Parts};
use crate::phone::Phone;

/// One PDU as the modem takes it after `AT+CMGS=<tpdu_length>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitPdu {
    /// SMSC part and TPDU, upper-case hex.
    pub hex: String,
    /// Octets of the TPDU alone (without the SMSC part), for AT+CMGS.
    pub tpdu_length: usize,
}

/// TP-MTI = SMS-SUBMIT, TP-VPF = relative.
const FIRST_OCTET: u8 = 0x11;
/// TP-UDHI: the user data starts with a header.
const UDH_INDICATOR: u8 = 0x40;
/// Relative validity 0xAA = 4 days.
const VALIDITY: u8 = 0xaa;
const DCS_GSM7: u8 = 0x00;
const DCS_UCS2: u8 = 0x08;
/// International number, ISDN numbering plan.
const TYPE_INTERNATIONAL: u8 = 0x91;

/// Encodes `text` to `to` as one PDU, or several with a concatenation header.
/// `reference` tells the parts of one message apart from another's.
pub fn encode_submit(
    to: &Phone,
    text: &str,
    smsc: Option<&Phone>,
    reference: u8,
) -> Vec<SubmitPdu> {
    let parts = encoding::split(text);
    let total = parts.count();
    let header = |index: usize| -> Vec<u8> {
        // Parts are at most 255 for any text otpgate sends (templates are short); clamp anyway.
        vec![
            0x05,
            0x00,
            0x03,
            reference,
            total.min(255) as u8,
            (index + 1).min(255) as u8,
        ]
    };
    let (dcs, user_data): (u8, Vec<(usize, Vec<u8>)>) = match &parts {
        Parts::Gsm7(septet_parts) => {
            let data = septet_parts
                .iter()
                .enumerate()
                .map(|(i, septets)| {
                    if total == 1 {
                        (septets.len(), encoding::pack_septets(septets, 0))
                    } else {
                        // 6 header octets = 48 bits; 1 fill bit aligns the text to septet 7.
                        let mut ud = header(i);
                        ud.extend(encoding::pack_septets(septets, 1));
                        (7 + septets.len(), ud)
                    }
                })
                .collect();
            (DCS_GSM7, data)
        }
        Parts::Ucs2(unit_parts) => {
            let data = unit_parts
                .iter()
                .enumerate()
                .map(|(i, units)| {
                    let mut ud = if total == 1 { Vec::new() } else { header(i) };
                    ud.extend(units.iter().flat_map(|u| u.to_be_bytes()));
                    (ud.len(), ud)
                })
                .collect();
            (DCS_UCS2, data)
        }
    };
    let smsc_part = match smsc {
        Some(smsc) => {
            let digits = semi_octets(smsc.digits());
            let mut part = vec![(digits.len() + 1) as u8, TYPE_INTERNATIONAL];
            part.extend(digits);
            part
        }
        None => vec![0x00],
    };
    user_data
        .into_iter()
        .map(|(user_data_length, ud)| {
            let first = if total == 1 {
                FIRST_OCTET
            } else {
                FIRST_OCTET | UDH_INDICATOR
            };
            let mut tpdu = vec![first, 0x00];
            tpdu.push(to.digits().len() as u8);
            tpdu.push(TYPE_INTERNATIONAL);
            tpdu.extend(semi_octets(to.digits()));
            // UDL counts septets for GSM-7 and octets for UCS-2; both fit in one octet.
            tpdu.extend([0x00, dcs, VALIDITY, user_data_length.min(255) as u8]);
            tpdu.extend(ud);
            SubmitPdu {
                hex: hex::encode_upper([&smsc_part[..], &tpdu[..]].concat()),
                tpdu_length: tpdu.len(),
            }
        })
        .collect()
}

/// Digits as swapped semi-octets, padded with F (TS 23.040 section 9.1.2.3).
fn semi_octets(digits: &str) -> Vec<u8> {
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let low = pair[0] - b'0';
            let high = pair.get(1).map_or(0x0f, |d| d - b'0');
            (high << 4) | low
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(text: &str) -> Phone {
        Phone::parse(text, None).unwrap()
    }

    #[test]
    fn encodes_the_classic_hellohello_pdu() {
        // The widely published SMS-SUBMIT example: "hellohello" to +46708251358.
        let pdus = encode_submit(&phone("+46708251358"), "hellohello", None, 0);
        assert_eq!(
            pdus,
            vec![SubmitPdu {
                hex: "0011000B916407281553F80000AA0AE8329BFD4697D9EC37".into(),
                tpdu_length: 23
            }]
        );
    }

    // Checked by decoding with python-gsmmodem's independent PDU decoder.
    #[test]
    fn encodes_ucs2_and_an_smsc() {
        let pdus = encode_submit(
            &phone("+491701234567"),
            "Привет",
            Some(&phone("+491722270333")),
            0,
        );
        assert_eq!(pdus.len(), 1);
        assert_eq!(
            pdus[0].hex,
            "079194712272303311000C919471103254760008AA0C041F04400438043204350442"
        );
        assert_eq!(pdus[0].tpdu_length, 26);
    }

    #[test]
    fn long_texts_become_concatenated_parts_with_a_header() {
        let text = "x".repeat(200);
        let pdus = encode_submit(&phone("+491701234567"), &text, None, 0x42);
        assert_eq!(pdus.len(), 2);
        // First octet 0x51 (UDHI), UDL 160 = 7 header septets + 153, header 05 00 03 42 02 01.
        assert!(
            pdus[0]
                .hex
                .starts_with("0051000C919471103254760000AAA0050003420201"),
            "{}",
            pdus[0].hex
        );
        assert!(pdus[1].hex.contains("050003420202"));
        assert_eq!(pdus[0].tpdu_length, 14 + 140);
    }
}
