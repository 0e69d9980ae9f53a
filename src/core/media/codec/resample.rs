//! Low-latency sample rate conversion between 8, 16, 24 and 48 kHz for the live call path.
//!
//! Owns one direction of one stream: a rubato asynchronous sinc resampler with a *short*
//! windowed-sinc filter (about 4 ms long, so about 2 ms of group delay), fed in 10 ms chunks,
//! plus the small output FIFO that turns rubato's varying per-chunk output counts into exact
//! frames: every 20 ms in gives exactly 20 ms out. rubato's FFT resampler is not used (it adds
//! about 10 ms); nor is plain polynomial interpolation (no anti-aliasing when downsampling).
//!
//! At construction a scratch resampler is run on an impulse and silence: that sizes the FIFO
//! pre-fill and measures the filter delay, which is then padded (by at most a few output
//! samples) to a whole number of samples at both rates. [`Resampler::delay_samples`] reports
//! the result: 2.0 to 2.25 ms for every pair (cutoff 0.92 of the lower Nyquist, flat to
//! 3 kHz, -1 dB at 3.4 kHz, about -77 dB alias rejection).
//!
//! Input lengths that are not a multiple of 10 ms are accepted: the remainder waits for the
//! next call. No allocation per frame once the buffers have grown to the frame size.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler as _, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use super::{CodecError, Rate, Result};

/// Processing chunk, in milliseconds of input.
const CHUNK_MS: usize = 10;
/// Length of the sinc filter in milliseconds of input.
const FILTER_MS: usize = 4;
/// Filter cutoff relative to the lower Nyquist frequency: keeps 8 kHz telephone audio flat to
/// 3.4 kHz with the short filter (rubato's automatic choice for 4 ms rolls off from 3 kHz).
const CUTOFF: f32 = 0.92;
/// Chunks run through a scratch resampler at construction to size the FIFO pre-fill.
const PROBE_CHUNKS: usize = 16;

/// Converts a mono i16 stream from one [`Rate`] to another, frame by frame, keeping state.
pub struct Resampler {
    from: Rate,
    to: Rate,
    /// `None` when `from == to` (pure passthrough, no delay).
    inner: Option<Async<f32>>,
    chunk_in: usize,
    chunk_out: usize,
    pending_in: Vec<f32>,
    scratch_out: Vec<f32>,
    fifo: Vec<f32>,
    out: Vec<i16>,
    prefill: usize,
    delay: usize,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler from `from` to `to` (any pair of supported rates, including equal ones).
    pub fn new(from: Rate, to: Rate) -> Result<Resampler> {
        let chunk_in = from.per_ms() * CHUNK_MS;
        let chunk_out = to.per_ms() * CHUNK_MS;
        let mut r = Resampler {
            from,
            to,
            inner: None,
            chunk_in,
            chunk_out,
            pending_in: Vec::with_capacity(2 * from.frame_len()),
            scratch_out: Vec::new(),
            fifo: Vec::with_capacity(4 * to.frame_len()),
            out: Vec::with_capacity(2 * to.frame_len()),
            prefill: 0,
            delay: 0,
        };
        if from == to {
            return Ok(r);
        }
        let mut probe = build(from, to, chunk_in)?;
        let probe = run_probe(&mut probe, chunk_in, chunk_out)?;
        // Pad the FIFO so the whole delay is a whole number of samples at both rates.
        let step = step(from, to) as f64;
        let total = probe.prefill as f64 + probe.filter_delay;
        let target = ((total - 0.25) / step).ceil().max(0.0) * step;
        let pad = (target - total).round().max(0.0) as usize;
        r.prefill = probe.prefill + pad;
        r.delay = (total + pad as f64).round() as usize;
        let inner = build(from, to, chunk_in)?;
        r.scratch_out = vec![0.0; inner.output_frames_max()];
        r.inner = Some(inner);
        r.fifo.resize(r.prefill, 0.0);
        Ok(r)
    }

    /// Input rate.
    pub fn from_rate(&self) -> Rate {
        self.from
    }

    /// Output rate.
    pub fn to_rate(&self) -> Rate {
        self.to
    }

    /// Delay this resampler adds, in output samples (filter group delay plus FIFO pre-fill).
    pub fn delay_samples(&self) -> usize {
        self.delay
    }

    /// [`Self::delay_samples`] in microseconds.
    pub fn delay_us(&self) -> u64 {
        self.delay as u64 * 1_000_000 / u64::from(self.to.hz())
    }

    /// Resamples `input`, returning the output it completes: exactly `input.len() * to / from`
    /// samples when `input` is a multiple of 10 ms (so 20 ms in, 20 ms out).
    pub fn process(&mut self, input: &[i16]) -> Result<&[i16]> {
        self.out.clear();
        let Some(inner) = self.inner.as_mut() else {
            self.out.extend_from_slice(input);
            return Ok(&self.out);
        };
        self.pending_in.extend(input.iter().map(|&s| f32::from(s) / 32768.0));
        let mut consumed = 0;
        let mut produced = 0;
        while self.pending_in.len() - consumed >= self.chunk_in {
            let chunk = &self.pending_in[consumed..consumed + self.chunk_in];
            let n = run_chunk(inner, chunk, &mut self.scratch_out)?;
            self.fifo.extend_from_slice(&self.scratch_out[..n]);
            consumed += self.chunk_in;
            produced += self.chunk_out;
        }
        self.pending_in.drain(..consumed);
        let take = produced.min(self.fifo.len());
        self.out.extend(self.fifo.drain(..take).map(to_i16));
        // Never short: should the FIFO run dry (it is sized so it does not), pad with silence.
        self.out.resize(produced, 0);
        Ok(&self.out)
    }

    /// Forgets all history (new stream), keeping the buffers.
    pub fn reset(&mut self) {
        self.pending_in.clear();
        self.fifo.clear();
        if let Some(inner) = self.inner.as_mut() {
            inner.reset();
            self.fifo.resize(self.prefill, 0.0);
        }
    }
}

/// The rubato resampler for `from` -> `to`: asynchronous sinc with a short Blackman window.
fn build(from: Rate, to: Rate, chunk_in: usize) -> Result<Async<f32>> {
    let ratio = f64::from(to.hz()) / f64::from(from.hz());
    let sinc_len = (from.per_ms() * FILTER_MS).next_multiple_of(8);
    let params = SincInterpolationParameters::new(sinc_len, WindowFunction::Blackman)
        .f_cutoff(CUTOFF)
        .oversampling_factor(128)
        .interpolation(SincInterpolationType::Cubic);
    Ok(Async::<f32>::new_sinc(ratio, 1.0, &params, chunk_in, 1, FixedAsync::Input)?)
}

/// Runs one chunk of `chunk_in` samples; returns the samples written to `out`.
fn run_chunk(inner: &mut Async<f32>, chunk: &[f32], out: &mut [f32]) -> Result<usize> {
    let frames_out = out.len();
    let input =
        InterleavedSlice::new(chunk, 1, chunk.len()).map_err(|_| CodecError::ResampleBuffer)?;
    let mut output =
        InterleavedSlice::new_mut(out, 1, frames_out).map_err(|_| CodecError::ResampleBuffer)?;
    let (_, written) = inner.process_into_buffer(&input, &mut output, None)?;
    Ok(written)
}

/// What a scratch run of the resampler shows.
struct Probe {
    /// Output samples the FIFO must hold up front so that every chunk can hand out exactly
    /// `chunk_out` samples: the worst cumulative shortfall.
    prefill: usize,
    /// Group delay of the filter, in output samples (peak of the impulse response).
    filter_delay: f64,
}

/// Runs an impulse and silence through `probe` to size the pre-fill and find the delay.
fn run_probe(probe: &mut Async<f32>, chunk_in: usize, chunk_out: usize) -> Result<Probe> {
    let mut input = vec![0.0f32; chunk_in];
    let mut out = vec![0.0f32; probe.output_frames_max()];
    let mut response = Vec::with_capacity(PROBE_CHUNKS * chunk_out * 2);
    let (mut owed, mut worst) = (0usize, 0usize);
    for i in 0..PROBE_CHUNKS {
        input[0] = if i == 0 { 1.0 } else { 0.0 };
        let n = run_chunk(probe, &input, &mut out)?;
        response.extend_from_slice(&out[..n]);
        owed += chunk_out;
        worst = worst.max(owed.saturating_sub(response.len()));
    }
    Ok(Probe { prefill: worst, filter_delay: peak_position(&response) })
}

/// Position of the largest sample, refined by a parabola through its neighbours.
fn peak_position(x: &[f32]) -> f64 {
    let Some((i, _)) = x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else {
        return 0.0;
    };
    if i == 0 || i + 1 >= x.len() {
        return i as f64;
    }
    let (a, b, c) = (f64::from(x[i - 1]), f64::from(x[i]), f64::from(x[i + 1]));
    let denom = a - 2.0 * b + c;
    let shift = if denom.abs() > 1e-12 { 0.5 * (a - c) / denom } else { 0.0 };
    i as f64 + shift.clamp(-0.5, 0.5)
}

/// Output samples per whole number of input *and* output samples (e.g. 2 for 8 -> 16 kHz).
fn step(from: Rate, to: Rate) -> usize {
    let (a, b) = (from.hz(), to.hz());
    let mut g = a.min(b);
    while a % g != 0 || b % g != 0 {
        g -= 1;
    }
    (b / g) as usize
}

/// f32 in [-1, 1) to i16, saturating.
fn to_i16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `signal` through `r` in 20 ms frames.
    fn run(r: &mut Resampler, signal: &[i16]) -> Vec<i16> {
        let mut out = Vec::new();
        for frame in signal.chunks(r.from_rate().frame_len()) {
            out.extend_from_slice(r.process(frame).unwrap());
        }
        out
    }

    /// Lag (output samples) maximizing the cross-correlation of `y` with `x` resampled
    /// ideally (a band-limited `x` evaluated on the output grid is passed in as `ideal`).
    fn best_lag(ideal: &[f64], y: &[i16], max_lag: usize) -> (usize, f64) {
        let mut best = (0, f64::MIN);
        for lag in 0..max_lag {
            let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
            for (i, &a) in ideal.iter().enumerate() {
                let Some(&b) = y.get(i + lag) else { break };
                let b = f64::from(b);
                xy += a * b;
                xx += a * a;
                yy += b * b;
            }
            let c = xy / (xx * yy).sqrt().max(1e-9);
            if c > best.1 {
                best = (lag, c);
            }
        }
        best
    }

    /// A linear chirp from 200 Hz to 3.2 kHz (inside every rate's band), sampled at `hz`.
    fn chirp(hz: u32, seconds: f64) -> Vec<f64> {
        let n = (f64::from(hz) * seconds) as usize;
        let (f0, f1) = (200.0, 3200.0);
        let k = (f1 - f0) / seconds;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(hz);
                let phase = 2.0 * std::f64::consts::PI * (f0 * t + 0.5 * k * t * t);
                12000.0 * phase.sin()
            })
            .collect()
    }

    #[test]
    fn twenty_ms_in_twenty_ms_out_for_every_pair() {
        for from in Rate::ALL {
            for to in Rate::ALL {
                let mut r = Resampler::new(from, to).unwrap();
                for i in 0..200 {
                    let frame = vec![(i * 37 % 1000) as i16; from.frame_len()];
                    let out = r.process(&frame).unwrap();
                    assert_eq!(out.len(), to.frame_len(), "{from:?}->{to:?} frame {i}");
                }
            }
        }
    }

    #[test]
    fn odd_lengths_are_buffered_not_lost() {
        let mut r = Resampler::new(Rate::Hz8000, Rate::Hz16000).unwrap();
        let mut total = 0;
        for len in [37usize, 160, 3, 0, 120, 160, 1000] {
            total += r.process(&vec![100; len]).unwrap().len();
        }
        let fed = 37 + 160 + 3 + 120 + 160 + 1000;
        assert_eq!(total, fed / 80 * 160);
    }

    #[test]
    fn measured_delay_is_low_and_matches_the_reported_one() {
        for from in Rate::ALL {
            for to in Rate::ALL {
                if from == to {
                    continue;
                }
                let mut r = Resampler::new(from, to).unwrap();
                let x: Vec<i16> = chirp(from.hz(), 0.5).iter().map(|&v| v as i16).collect();
                let y = run(&mut r, &x);
                let ideal = chirp(to.hz(), 0.5);
                let (lag, corr) = best_lag(&ideal, &y, to.per_ms() * 10);
                let ms = lag as f64 / to.per_ms() as f64;
                eprintln!(
                    "resampler {} -> {} Hz: measured delay {lag} samples ({ms:.3} ms), \
                     reported {} samples, correlation {corr:.4}",
                    from.hz(),
                    to.hz(),
                    r.delay_samples()
                );
                assert!(ms < 3.0, "{from:?}->{to:?}: delay {ms} ms");
                assert!(corr > 0.98, "{from:?}->{to:?}: correlation {corr}");
                assert!(
                    lag.abs_diff(r.delay_samples()) <= 1,
                    "{from:?}->{to:?}: measured {lag}, reported {}",
                    r.delay_samples()
                );
            }
        }
    }

    #[test]
    fn same_rate_is_passthrough() {
        let mut r = Resampler::new(Rate::Hz16000, Rate::Hz16000).unwrap();
        let x: Vec<i16> = (0..320).map(|i| i as i16 * 7).collect();
        assert_eq!(r.process(&x).unwrap(), &x[..]);
        assert_eq!(r.delay_samples(), 0);
    }

    #[test]
    fn downsampling_rejects_out_of_band_tone() {
        // 5 kHz at 48 kHz is above the 4 kHz Nyquist of 8 kHz: it must mostly vanish.
        let mut r = Resampler::new(Rate::Hz48000, Rate::Hz8000).unwrap();
        let x: Vec<i16> = (0..48000)
            .map(|i| {
                (12000.0 * (2.0 * std::f64::consts::PI * 5000.0 * i as f64 / 48000.0).sin()) as i16
            })
            .collect();
        let y = run(&mut r, &x);
        let rms = |s: &[i16]| {
            (s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        let atten_db = 20.0 * (rms(&y[800..]) / rms(&x)).log10();
        eprintln!("resampler 48k->8k: 5 kHz tone attenuated {atten_db:.1} dB");
        assert!(atten_db < -20.0, "alias only {atten_db} dB down");
    }

    #[test]
    fn extreme_samples_saturate_without_panic() {
        let mut r = Resampler::new(Rate::Hz8000, Rate::Hz48000).unwrap();
        for i in 0..50 {
            let frame: Vec<i16> =
                (0..160).map(|j| if (i + j) % 2 == 0 { i16::MAX } else { i16::MIN }).collect();
            assert_eq!(r.process(&frame).unwrap().len(), 960);
        }
        r.reset();
        assert_eq!(r.process(&[0; 160]).unwrap().len(), 960);
    }
}
