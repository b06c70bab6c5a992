//! The POP<->region protocol ([`strata_core::wire`]) read from and written to async
//! streams. The byte format, the messages and their limits are the core's; this module
//! only moves whole frames over a tokio stream (a QUIC stream, in practice) and never
//! interprets a body itself.

pub use strata_core::wire::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame from `r` and decodes it; `limit` caps the body (at most
/// [`MAX_FRAME_LEN`]).
///
/// # Errors
/// [`WireError`] on a short read, an oversized header or a malformed body.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Message, WireError> {
    let mut header = [0u8; FrameHeader::SIZE];
    r.read_exact(&mut header).await.map_err(eof_is_truncated)?;
    let FrameHeader { len } = FrameHeader::parse(header, limit)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(eof_is_truncated)?;
    decode(&body)
}

/// Encodes `msg` and writes it to `w` as one frame.
///
/// # Errors
/// [`WireError`] when the message is too large or the stream fails.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
) -> Result<(), WireError> {
    let frame = encode(msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

fn eof_is_truncated(e: std::io::Error) -> WireError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::Truncated
    } else {
        WireError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn truncated_stream_is_a_typed_error() {
        let frame = encode(&Message::Ping { nonce: 1 }).expect("encodes");
        let mut short = &frame[..frame.len() - 1];
        assert!(matches!(
            read_message(&mut short, MAX_FRAME_LEN).await,
            Err(WireError::Truncated)
        ));
    }
}
