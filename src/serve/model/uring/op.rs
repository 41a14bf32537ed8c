//! The operation tag carried in every io_uring request's user_data: which
//! kind of request completed, and for which listener or connection slot
//! (and which occupant of that slot, by generation).

/// user_data layout: operation kind in the top byte, the connection slot's
/// generation in the next 24 bits, the slot (or listener) index below.
pub(super) const KIND_SHIFT: u32 = 56;
pub(super) const GEN_SHIFT: u32 = 32;
pub(super) const GEN_MASK: u32 = 0x00FF_FFFF;
pub(super) const KIND_ACCEPT: u64 = 1;
pub(super) const KIND_RECV: u64 = 2;
pub(super) const KIND_SEND: u64 = 3;
pub(super) const KIND_CANCEL: u64 = 4;
pub(super) const KIND_POLL: u64 = 5;

/// What a completion is about, decoded from its user_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// The multishot accept on listener `.0`.
    Accept(usize),
    /// The multishot receive of connection slot `.0`, generation `.1`.
    Recv(usize, u32),
    /// The send of connection slot `.0`, generation `.1`.
    Send(usize, u32),
    /// An AsyncCancel: its own result changes nothing.
    Cancel,
    /// The multishot poll of spliced connection slot `.0`, generation `.1`.
    Poll(usize, u32),
}

impl Op {
    pub(super) fn encode(self) -> u64 {
        let pack = |kind: u64, idx: usize, generation: u32| {
            (kind << KIND_SHIFT)
                | (u64::from(generation & GEN_MASK) << GEN_SHIFT)
                | (idx as u64 & u64::from(u32::MAX))
        };
        match self {
            Op::Accept(i) => pack(KIND_ACCEPT, i, 0),
            Op::Recv(i, g) => pack(KIND_RECV, i, g),
            Op::Send(i, g) => pack(KIND_SEND, i, g),
            Op::Cancel => pack(KIND_CANCEL, 0, 0),
            Op::Poll(i, g) => pack(KIND_POLL, i, g),
        }
    }

    pub(super) fn decode(data: u64) -> Option<Op> {
        let idx = (data & u64::from(u32::MAX)) as usize;
        let generation = ((data >> GEN_SHIFT) as u32) & GEN_MASK;
        match data >> KIND_SHIFT {
            KIND_ACCEPT => Some(Op::Accept(idx)),
            KIND_RECV => Some(Op::Recv(idx, generation)),
            KIND_SEND => Some(Op::Send(idx, generation)),
            KIND_CANCEL => Some(Op::Cancel),
            KIND_POLL => Some(Op::Poll(idx, generation)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Accept(3),
            Op::Recv(7, GEN_MASK),
            Op::Send(u32::MAX as usize, 1),
            Op::Cancel,
            Op::Poll(2, 9),
        ] {
            assert_eq!(Op::decode(op.encode()), Some(op));
        }
        assert_eq!(Op::decode(0), None);
    }
}
