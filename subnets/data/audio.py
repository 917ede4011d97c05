"""Keyword-spotting features: 49 x 10 MFCCs of a one-second 16 kHz clip, as in Hello Edge.

The recipe follows the TensorFlow speech-commands front end that Hello Edge used (its
``audio_spectrogram`` + ``mfcc`` ops): a 40 ms periodic Hann window every 20 ms, a 1024-point FFT,
the magnitude spectrum pooled into 40 mel bands between 20 Hz and 4 kHz, the log, and the first 10
DCT-II coefficients. It is built from ``tf.signal`` so it runs inside a ``tf.data`` pipeline; the
numbers agree with the old op in shape and spirit, not to the last bit (the mel weights and DCT
scaling of ``tf.signal`` differ slightly).

References:
    Zhang, Suda, Lai, Chandra. Hello Edge: Keyword Spotting on Microcontrollers. 2017.
    arXiv:1711.07128.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MfccConfig", "HELLO_EDGE", "mfcc", "mfcc_tf", "fix_length_tf"]


@dataclass(frozen=True)
class MfccConfig:
    """Front-end parameters; the defaults are Hello Edge's.

    Attributes:
        sample_rate: samples per second of the input.
        clip_samples: every clip is cropped or zero-padded to this many samples first.
        window_samples: analysis window (640 = 40 ms at 16 kHz).
        stride_samples: hop between windows (320 = 20 ms), giving 1 + (16000 - 640) // 320 = 49.
        num_mel_bins: mel filterbank channels.
        num_coefficients: DCT coefficients kept.
        lower_hz: lowest filterbank edge.
        upper_hz: highest filterbank edge.
        log_floor: added before the log; the TF ``mfcc`` op's floor, so zero-padded silence stays
            finite.
    """

    sample_rate: int = 16_000
    clip_samples: int = 16_000
    window_samples: int = 640
    stride_samples: int = 320
    num_mel_bins: int = 40
    num_coefficients: int = 10
    lower_hz: float = 20.0
    upper_hz: float = 4_000.0
    log_floor: float = 1e-12

    @property
    def num_frames(self) -> int:
        """Frames per clip (49 for the defaults)."""
        return 1 + (self.clip_samples - self.window_samples) // self.stride_samples


HELLO_EDGE = MfccConfig()


def _tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            "subnets.data.audio needs TensorFlow for its MFCC front end; install it with "
            "`pip install tensorflow-cpu` (or `pip install subnets[export]`)"
        ) from e
    return tf


def fix_length_tf(waveform: Any, length: int) -> Any:
    """Crops or zero-pads the last axis of a TF tensor to ``length`` samples (pads at the end)."""
    tf = _tf()
    waveform = waveform[..., :length]
    pad = length - tf.shape(waveform)[-1]
    rank = len(waveform.shape)
    paddings = tf.concat([tf.zeros([rank - 1, 2], tf.int32), [[0, pad]]], axis=0)
    return tf.pad(waveform, paddings)


def mfcc_tf(waveform: Any, config: MfccConfig = HELLO_EDGE) -> Any:
    """Graph-safe MFCCs of float waveforms ``[..., T]`` -> ``[..., frames, coefficients]``.

    Integer PCM must be scaled to [-1, 1) by the caller (``mfcc`` does it for you). The clip is
    cropped/padded to ``config.clip_samples`` first, so the frame count never depends on the input.
    """
    tf = _tf()
    waveform = fix_length_tf(tf.cast(waveform, tf.float32), config.clip_samples)
    stft = tf.signal.stft(
        waveform,
        frame_length=config.window_samples,
        frame_step=config.stride_samples,
        window_fn=tf.signal.hann_window,
    )
    # Magnitude, not power: the TF mfcc op takes the square root of the power spectrogram before
    # the mel filterbank, and matching it keeps the log-mel range close to Hello Edge's.
    magnitude = tf.abs(stft)
    mel_weights = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=config.num_mel_bins,
        num_spectrogram_bins=magnitude.shape[-1],
        sample_rate=config.sample_rate,
        lower_edge_hertz=config.lower_hz,
        upper_edge_hertz=config.upper_hz,
    )
    mel = tf.tensordot(magnitude, mel_weights, axes=1)
    log_mel = tf.math.log(mel + config.log_floor)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., : config.num_coefficients]


def mfcc(waveform: np.ndarray, config: MfccConfig = HELLO_EDGE) -> np.ndarray:
    """MFCC features of one clip ``[T]`` or a batch ``[..., T]``, as float32 numpy.

    Args:
        waveform: audio samples. Integer PCM (int16 from a WAV file, or offset-binary uint8)
            is scaled to [-1, 1) by its dtype's range; floats are taken as already in [-1, 1].
            Clips of any length are cropped or zero-padded to ``config.clip_samples``.
        config: front-end parameters; the default reproduces Hello Edge's 49 x 10 features.

    Returns:
        float32 array of shape ``[..., config.num_frames, config.num_coefficients]``.

    Example:
        >>> import numpy as np
        >>> t = np.arange(16_000) / 16_000
        >>> mfcc(np.sin(2 * np.pi * 440 * t)).shape
        (49, 10)

    References:
        Zhang et al. Hello Edge: Keyword Spotting on Microcontrollers. 2017. arXiv:1711.07128.
    """
    waveform = np.asarray(waveform)
    if waveform.ndim < 1:
        raise ValueError("mfcc needs at least one (time) axis, got a scalar")
    if np.issubdtype(waveform.dtype, np.signedinteger):
        waveform = waveform.astype(np.float32) / float(-np.iinfo(waveform.dtype).min)
    elif np.issubdtype(waveform.dtype, np.unsignedinteger):
        # Unsigned PCM (8-bit WAV) is offset binary: silence sits at mid-range, not at zero.
        half = (float(np.iinfo(waveform.dtype).max) + 1.0) / 2.0
        waveform = (waveform.astype(np.float32) - half) / half
    return np.asarray(mfcc_tf(waveform.astype(np.float32), config), dtype=np.float32)
