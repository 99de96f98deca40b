"""The frozen Whisper encoder: log-mel window -> frame states (and every block's output)."""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from fe_train.data.features import pad_window
from fe_train.model.pretrained import pretrained_dir

log = logging.getLogger(__name__)

MEL_FRAMES_PER_S = 100
"""Whisper's log-mel frames per second (hop 160 at 16 kHz)."""


def window_frames(frames: int, n_frames: int, round_frames: int) -> int:
    """Mel frames the encoder runs on when a batch's longest clip has ``frames``: Whisper's whole window
    (``round_frames`` 0), or ``frames`` rounded up to a multiple of ``round_frames``, at most the whole window."""
    if not round_frames:
        return n_frames
    return min(n_frames, max(1, -(-frames // round_frames)) * round_frames)


@functools.cache
def _windowed_encoder() -> type:
    """transformers' ``WhisperEncoder``, expecting the rest of a full Whisper checkpoint, and running on windows
    shorter than 30 s too (``model.encoder_window_s``).

    NOTE(transformers): from 5.0 ``from_pretrained`` prints a table of every unexpected key, which for
    Whisper-large-v3's encoder is the whole decoder (hundreds of lines); the decoder is expected here.
    NOTE(deepspeed): the shorter window is this module's own ``forward``, so that every window goes through the same
    module calls (this one, then its convolutions, position embedding, blocks and LayerNorm): ZeRO-3 prefetches
    parameters by the trace of module calls, and ranks whose traces differ wait for each other's gathers forever.
    """
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    class WindowedWhisperEncoder(WhisperEncoder):
        _keys_to_ignore_on_load_unexpected = [r"^model\.decoder\.", r"^proj_out\."]

        def forward(self, input_features: torch.Tensor, attention_mask=None, **kwargs) -> BaseModelOutput:
            """``WhisperEncoder.forward``, which refuses any window but 30 s; (B, n_mels, W) -> (B, W/2, D)."""
            if input_features.shape[-1] == self.config.max_source_positions * self.conv1.stride[0] * self.conv2.stride[0]:
                return super().forward(input_features, attention_mask, **kwargs)
            gelu = nn.functional.gelu
            hidden = gelu(self.conv2(gelu(self.conv1(input_features)))).permute(0, 2, 1)  # (B, W/2, D)
            hidden = hidden + self.embed_positions(torch.arange(hidden.shape[1], device=hidden.device))
            for layer in self.layers:
                out = layer(hidden, None)
                hidden = out[0] if isinstance(out, tuple) else out
            return BaseModelOutput(last_hidden_state=self.layer_norm(hidden))

    return WindowedWhisperEncoder


class WhisperSpeechEncoder(nn.Module):
    """Wraps transformers' ``WhisperEncoder``; always runs without autograd (it is frozen).

    ``forward`` returns the final states (after the last LayerNorm) and, when asked, the
    outputs of all blocks before that LayerNorm, stacked as (B, L, T, D), which the
    emotion extractor reads.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        if not isinstance(encoder, _windowed_encoder()):
            encoder.__class__ = _windowed_encoder()  # a subclass adding only the shorter windows' forward
        self.encoder = encoder
        self.round_frames = 0
        """``model.encoder_window_s`` in mel frames: 0 runs Whisper's whole window (``window_frames``)."""
        config = encoder.config
        self.n_mels = config.num_mel_bins
        self.n_frames = config.max_source_positions * 2  # two convolutions, the second with stride 2
        self.hidden_size = config.d_model
        self.num_layers = config.encoder_layers
        self._block_outputs: list[torch.Tensor] | None = None
        for block in encoder.layers:
            block.register_forward_hook(self._record_block)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype) -> WhisperSpeechEncoder:
        path = pretrained_dir(path, "model.encoder_path")
        # A full Whisper checkpoint stores the encoder under `model.encoder.`; the mapping
        # loads only those weights (the decoder's are ignored) and is a no-op for an encoder-only save.
        encoder = _windowed_encoder().from_pretrained(path, dtype=dtype, key_mapping={r"^model\.encoder\.": ""})
        log.info("loaded Whisper encoder from %s (%d blocks, d=%d)", path, encoder.config.encoder_layers, encoder.config.d_model)
        return cls(encoder)

    def _record_block(self, module, inputs, output):
        if self._block_outputs is not None:
            self._block_outputs.append(output[0] if isinstance(output, tuple) else output)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    def set_window(self, seconds: float) -> None:
        """Run on the batch's longest clip rounded up to a multiple of ``seconds`` (0: Whisper's whole window)."""
        self.round_frames = 2 * round(seconds * MEL_FRAMES_PER_S / 2)  # even: the second convolution has stride 2

    @torch.no_grad()
    def forward(self, mel: torch.Tensor, mel_pad_value: torch.Tensor, all_blocks: bool = False):
        """mel (B, n_mels, T<=n_frames) -> (B, W/2, D) [, (B, L, W/2, D)], W the window (``window_frames``)."""
        frames = window_frames(mel.shape[-1], self.n_frames, self.round_frames)
        window = pad_window(mel, mel_pad_value, frames).to(self.dtype)  # (B, n_mels, W)
        self._block_outputs = [] if all_blocks else None
        try:
            states = self.encoder(window).last_hidden_state  # (B, W/2, D)
            blocks = torch.stack(self._block_outputs, dim=1) if all_blocks else None  # (B, L, T, D)
        finally:
            self._block_outputs = None
        return states, blocks
