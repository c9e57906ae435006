//! The checks every TX path applies to a frame before it takes a slot: shared by the AF_PACKET
//! TX ring and AF_XDP, so both refuse the same frames with the same errors.

use crate::error::{Error, Result};

/// Length of an Ethernet header.
pub(crate) const ETH_HLEN: usize = 14;

/// Largest frame the link takes: MTU plus the Ethernet header, plus 4 if the frame carries a VLAN
/// tag (the kernel's own allowance).
pub(crate) fn link_max_frame(mtu: u32, frame: &[u8]) -> usize {
    let tagged =
        frame.len() >= ETH_HLEN && matches!([frame[12], frame[13]], [0x81, 0x00] | [0x88, 0xa8]);
    mtu as usize + ETH_HLEN + if tagged { 4 } else { 0 }
}

/// Checks a frame of `len` bytes, starting with `frame_start` (its header, when known), against
/// a slot of `slot_max` bytes and a link of MTU `mtu`.
pub(crate) fn check_tx_frame(
    frame_start: &[u8],
    len: usize,
    slot_max: usize,
    mtu: u32,
) -> Result<()> {
    if len > slot_max {
        return Err(Error::FrameTooLarge { len, max: slot_max });
    }
    if len < ETH_HLEN {
        return Err(Error::FrameTooShort { len });
    }
    let max = link_max_frame(mtu, frame_start);
    if len > max {
        return Err(Error::FrameExceedsMtu { len, mtu, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_frames_get_four_more_bytes() {
        let mut f = vec![0u8; 64];
        assert_eq!(link_max_frame(1500, &f), 1514);
        f[12] = 0x81;
        f[13] = 0x00;
        assert_eq!(link_max_frame(1500, &f), 1518);
    }

    #[test]
    fn checks_in_order_slot_then_length_then_link() {
        assert!(matches!(
            check_tx_frame(&[], 3000, 2016, 9000),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(matches!(
            check_tx_frame(&[], 13, 2016, 1500),
            Err(Error::FrameTooShort { .. })
        ));
        assert!(matches!(
            check_tx_frame(&[], 1515, 2016, 1500),
            Err(Error::FrameExceedsMtu { max: 1514, .. })
        ));
        assert!(check_tx_frame(&[], 1514, 2016, 1500).is_ok());
    }
}
