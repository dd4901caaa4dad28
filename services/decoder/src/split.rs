//! The decoded audio of channels=split: ffmpeg writes the channels interleaved (one sample of
//! each in turn); each goes to its own mono audio blob.

use proto_msgs::pcm;

/// Splits interleaved PCM, in chunks cut anywhere, into one stream of samples per channel.
#[derive(Debug)]
pub struct ChannelSplitter {
    channels: usize,
    /// The start of a frame (one sample of each channel) that the last chunk cut.
    carry: Vec<u8>,
}

impl ChannelSplitter {
    pub fn new(channels: u16) -> Self {
        Self {
            channels: usize::from(channels.max(1)),
            carry: Vec::new(),
        }
    }

    /// The samples of each channel in the whole frames of `carry` and `chunk`; keeps the rest.
    pub fn deinterleave(&mut self, chunk: Vec<u8>) -> Vec<Vec<u8>> {
        if self.channels == 1 {
            return vec![chunk];
        }
        let sample = pcm::BYTES_PER_SAMPLE as usize;
        let frame = sample * self.channels;
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(&chunk);
        let whole = data.len() / frame * frame;
        let mut outputs = vec![Vec::with_capacity(whole / self.channels); self.channels];
        for frame in data[..whole].chunks_exact(frame) {
            for (output, sample) in outputs.iter_mut().zip(frame.chunks_exact(sample)) {
                output.extend_from_slice(sample);
            }
        }
        self.carry = data.split_off(whole);
        outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_samples_cut_anywhere_reach_their_own_channel() {
        // Two channels: left samples 0x0100, 0x0302, ...; right 0x8180, 0x8382, ...
        let interleaved: Vec<u8> = (0..8u8).flat_map(|i| [2 * i, 2 * i + 1]).collect();
        let interleaved: Vec<u8> = interleaved
            .chunks_exact(2)
            .enumerate()
            .flat_map(|(i, s)| match i % 2 {
                0 => [s[0], s[1]],
                _ => [s[0] | 0x80, s[1] | 0x80],
            })
            .collect();
        for cut in [vec![16], vec![1, 15], vec![3, 3, 3, 7], vec![5, 0, 11]] {
            let mut splitter = ChannelSplitter::new(2);
            let (mut left, mut right): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
            let mut at = 0;
            for length in &cut {
                let outputs = splitter.deinterleave(interleaved[at..at + length].to_vec());
                at += length;
                left.extend(&outputs[0]);
                right.extend(&outputs[1]);
            }
            assert_eq!(left, [0, 1, 4, 5, 8, 9, 12, 13], "{cut:?}");
            assert_eq!(right, [130, 131, 134, 135, 138, 139, 142, 143], "{cut:?}");
        }
    }

    #[test]
    fn mono_passes_through_as_it_comes() {
        let mut splitter = ChannelSplitter::new(1);
        assert_eq!(splitter.deinterleave(vec![1, 2, 3]), vec![vec![1, 2, 3]]);
    }
}
