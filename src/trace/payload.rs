//! `-A` and `-X`: the data a segment or datagram carries, shown as
//! tcpdump shows it, under the packet's line. Pure.
//!
//! ```text
//!         0x0000:  6865 6c6c 6f0a                           hello.
//! ```
//!
//! tcpdump dumps the packet from the IP header on; netecho shows the data
//! only (the headers are on the line above, decoded).

/// How `trace` shows data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dump {
    /// `-A`: the bytes as text, line breaks kept, other unprintable bytes
    /// as `.`.
    Ascii,
    /// `-X`: 16 bytes a line, in hex and as text.
    Hex,
}

/// Bytes shown when `--payload-len` is not given.
pub(crate) const DEFAULT_LEN: usize = 256;
/// Bytes per `-X` line.
const PER_LINE: usize = 16;

/// The lines showing `data` (at most `max` bytes of it), each indented as
/// tcpdump indents them; a note says how much was left out.
pub(crate) fn lines(how: Dump, data: &[u8], max: usize) -> Vec<String> {
    if data.is_empty() {
        return Vec::new();
    }
    let shown = &data[..data.len().min(max)];
    let mut out = match how {
        Dump::Ascii => ascii(shown),
        Dump::Hex => hex(shown),
    };
    if shown.len() < data.len() {
        out.push(format!(
            "\t({} more bytes not shown; --payload-len sets how many are)",
            data.len() - shown.len()
        ));
    }
    out
}

/// `-A`: printable ASCII as is, `\n` ends a line, a `\r` before it is
/// dropped, anything else becomes `.`.
fn ascii(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\n' => out.push(format!("\t{}", std::mem::take(&mut line))),
            b'\r' if data.get(i + 1) == Some(&b'\n') => {}
            b @ 0x20..=0x7e => line.push(char::from(b)),
            _ => line.push('.'),
        }
        i += 1;
    }
    if !line.is_empty() {
        out.push(format!("\t{line}"));
    }
    out
}

/// `-X`: `\t0x0010:  4745 5420 ...  GET.` as tcpdump lays it out.
fn hex(data: &[u8]) -> Vec<String> {
    data.chunks(PER_LINE)
        .enumerate()
        .map(|(n, chunk)| {
            let mut hexpart = String::new();
            for (i, b) in chunk.iter().enumerate() {
                if i % 2 == 0 {
                    hexpart.push(' ');
                }
                hexpart.push_str(&format!("{b:02x}"));
            }
            let text: String = chunk
                .iter()
                .map(|&b| {
                    if (0x21..=0x7e).contains(&b) {
                        char::from(b)
                    } else {
                        '.'
                    }
                })
                .collect();
            // 8 groups of " xxxx": 40 columns, then two spaces.
            format!("\t0x{:04x}: {hexpart:<40}  {text}", n * PER_LINE)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes tcpdump 4.99 showed with `-X` (from the UDP data
    /// on): the layout matches column for column.
    #[test]
    fn hex_like_tcpdump() {
        let l = lines(Dump::Hex, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n\x00\x01", 256);
        assert_eq!(
            l,
            [
                "\t0x0000:  4745 5420 2f20 4854 5450 2f31 2e30 0d0a  GET./.HTTP/1.0..",
                "\t0x0010:  486f 7374 3a20 780d 0a0d 0a00 01         Host:.x......",
            ]
        );
    }

    #[test]
    fn ascii_like_tcpdump() {
        let l = lines(
            Dump::Ascii,
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n\x00\x01",
            256,
        );
        assert_eq!(l, ["\tGET / HTTP/1.0", "\tHost: x", "\t", "\t.."]);
    }

    #[test]
    fn cut_to_the_length_asked() {
        let l = lines(Dump::Ascii, b"abcdefgh", 3);
        assert_eq!(l[0], "\tabc");
        assert!(l[1].contains("5 more bytes not shown"), "{l:?}");
        assert!(lines(Dump::Hex, b"", 10).is_empty());
    }
}
