//! RADIUS packets on a byte stream (RFC 6613, RFC 6614): each packet is framed
//! by its own Length field, which must be 20 to 4096. Any other length means the stream is
//! out of step or hostile; nothing after it can be trusted, so the connection is closed.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::packet::{HEADER_LEN, MAX_PACKET_LEN};

/// Why no packet was read.
#[derive(Debug)]
pub enum FrameError {
    /// A Length field outside 20..=4096.
    Length(u16),
    /// The stream ended inside a packet, or failed.
    Io(std::io::Error),
}

/// Reads one packet into `buffer` (cleared first). `Ok(false)`: the peer closed the stream
/// between packets. Not cancel-safe: a packet cut off by cancellation leaves the stream out
/// of step, so the caller closes the connection then.
pub async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    buffer.clear();
    let mut header = [0u8; 4];
    match reader.read(&mut header[..1]).await {
        Ok(0) => return Ok(false),
        Ok(_) => {}
        Err(e) => return Err(FrameError::Io(e)),
    }
    reader
        .read_exact(&mut header[1..])
        .await
        .map_err(FrameError::Io)?;
    let length = u16::from_be_bytes([header[2], header[3]]);
    let total = usize::from(length);
    if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&total) {
        return Err(FrameError::Length(length));
    }
    buffer.extend_from_slice(&header);
    buffer.resize(total, 0);
    let rest = buffer.get_mut(header.len()..).unwrap_or_default();
    reader.read_exact(rest).await.map_err(FrameError::Io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<bool, FrameError>, Vec<u8>) {
        let mut buffer = Vec::new();
        let mut reader = bytes;
        let result = read_packet(&mut reader, &mut buffer).await;
        (result, buffer)
    }

    #[tokio::test]
    async fn packets_are_framed_by_their_length_and_bad_lengths_refused() {
        let mut two = vec![1u8, 7, 0, 20];
        two.extend_from_slice(&[0u8; 16]);
        two.extend_from_slice(&[12, 8, 0, 20]);
        two.extend_from_slice(&[0u8; 16]);
        let mut reader = &two[..];
        let mut buffer = Vec::new();
        assert!(read_packet(&mut reader, &mut buffer).await.unwrap());
        assert_eq!(buffer[..2], [1, 7]);
        assert!(read_packet(&mut reader, &mut buffer).await.unwrap());
        assert_eq!(buffer[..2], [12, 8]);
        assert!(!read_packet(&mut reader, &mut buffer).await.unwrap());
        for length in [0u16, 5, 19, 4097, 65535] {
            let bytes = [1u8, 1, (length >> 8) as u8, length as u8];
            assert!(
                matches!(read(&bytes).await.0, Err(FrameError::Length(l)) if l == length),
                "{length}"
            );
        }
        let cut = [1u8, 1, 0, 30, 0, 0];
        assert!(matches!(read(&cut).await.0, Err(FrameError::Io(_))));
    }
}
