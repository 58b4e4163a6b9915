//! An 8-bit image with 1 to 4 interleaved channels, row-major (numpy's `H×W×C` `uint8`).

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

impl Pixels {
    /// `None` when `data` does not hold exactly `width × height × channels` bytes or the channel
    /// count is not 1 to 4.
    pub fn new(width: u32, height: u32, channels: u8, data: Vec<u8>) -> Option<Self> {
        let ok = (1..=4).contains(&channels) && data.len() as u64 == width as u64 * height as u64 * channels as u64;
        ok.then_some(Self { width, height, channels, data })
    }

    pub fn rgb(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        Self::new(width, height, 3, data)
    }

    /// The channels of the pixel at (`x`, `y`).
    pub fn pixel(&self, x: u32, y: u32) -> &[u8] {
        let ch = self.channels as usize;
        let at = (y as usize * self.width as usize + x as usize) * ch;
        &self.data[at..at + ch]
    }

    /// Fooocus's `HWC3`: gray is repeated to RGB, RGBA is composed over white
    /// (`color·α + 255·(1 − α)` in float32, truncated), RGB is kept.
    pub fn hwc3(self) -> Pixels {
        match self.channels {
            3 => self,
            1 => Pixels { data: self.data.iter().flat_map(|&g| [g, g, g]).collect(), channels: 3, ..self },
            2 => Pixels { data: self.data.chunks(2).flat_map(|p| [p[0], p[0], p[0]]).collect(), channels: 3, ..self },
            _ => {
                let data = self
                    .data
                    .chunks(4)
                    .flat_map(|p| {
                        let alpha = p[3] as f32 / 255.0;
                        let over = |c: u8| (c as f32 * alpha + 255.0 * (1.0 - alpha)).clamp(0.0, 255.0) as u8;
                        [over(p[0]), over(p[1]), over(p[2])]
                    })
                    .collect();
                Pixels { data, channels: 3, ..self }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwc3_composes_alpha_over_white_like_numpy() {
        let rgba = Pixels::new(2, 1, 4, vec![10, 20, 30, 0, 10, 20, 30, 128]).unwrap();
        let rgb = rgba.hwc3();
        // α = 128/255 in float32: 10·α + 255·(1 − α) = 132.02…, truncated.
        assert_eq!(rgb.data, vec![255, 255, 255, 132, 137, 142]);
        assert_eq!(Pixels::new(1, 1, 1, vec![7]).unwrap().hwc3().data, vec![7, 7, 7]);
        assert!(Pixels::new(2, 2, 3, vec![0; 11]).is_none());
    }
}
