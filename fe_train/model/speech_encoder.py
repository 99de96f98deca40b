"""The frozen Whisper encoder: log-mel window -> frame states (and every block's output)."""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from fe_train.data.features import pad_window
from fe_train.model.pretrained import pretrained_dir

log = logging.getLogger(__name__)


@functools.cache
def _encoder_of_full_checkpoint() -> type:
    """transformers' ``WhisperEncoder``, expecting the rest of a full Whisper checkpoint.

    NOTE(transformers): from 5.0 ``from_pretrained`` prints a table of every unexpected key, which for
    Whisper-large-v3's encoder is the whole decoder (hundreds of lines); the decoder is expected here.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    class WhisperEncoderOfFullCheckpoint(WhisperEncoder):
        _keys_to_ignore_on_load_unexpected = [r"^model\.decoder\.", r"^proj_out\."]

    return WhisperEncoderOfFullCheckpoint


class WhisperSpeechEncoder(nn.Module):
    """Wraps transformers' ``WhisperEncoder``; always runs without autograd (it is frozen).

    ``forward`` returns the final states (after the last LayerNorm) and, when asked, the
    outputs of all blocks before that LayerNorm, stacked as (B, L, T, D), which the
    emotion extractor reads.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
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
        encoder = _encoder_of_full_checkpoint().from_pretrained(path, dtype=dtype, key_mapping={r"^model\.encoder\.": ""})
        log.info("loaded Whisper encoder from %s (%d blocks, d=%d)", path, encoder.config.encoder_layers, encoder.config.d_model)
        return cls(encoder)

    def _record_block(self, module, inputs, output):
        if self._block_outputs is not None:
            self._block_outputs.append(output[0] if isinstance(output, tuple) else output)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    @torch.no_grad()
    def forward(self, mel: torch.Tensor, mel_pad_value: torch.Tensor, all_blocks: bool = False):
        """mel (B, n_mels, T<=n_frames) -> (B, n_frames/2, D) [, (B, L, n_frames/2, D)]."""
        window = pad_window(mel, mel_pad_value, self.n_frames).to(self.dtype)  # (B, n_mels, n_frames)
        self._block_outputs = [] if all_blocks else None
        try:
            states = self.encoder(window).last_hidden_state  # (B, n_frames/2, D)
            blocks = torch.stack(self._block_outputs, dim=1) if all_blocks else None  # (B, L, T, D)
        finally:
            self._block_outputs = None
        return states, blocks
