"""A model's vocabulary: text to tokens and back, special tokens, the prompt's token list."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp


class Vocab:
    """The llama.cpp vocabulary of one loaded model."""

    def __init__(self, model: Any) -> None:
        self.ptr = llama_cpp.llama_model_get_vocab(model)
        self.n_tokens = llama_cpp.llama_vocab_n_tokens(self.ptr)
        self.bos_id = llama_cpp.llama_vocab_bos(self.ptr)
        self.bos_token = self._special_text(self.bos_id)
        self.eos_token = self._special_text(llama_cpp.llama_vocab_eos(self.ptr))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.ptr))

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.ptr, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.ptr, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.ptr, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.ptr, token, buf, -n, 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def is_end(self, token: int) -> bool:
        """End of generation (EOS, EOT and the like)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.ptr, token))

    def prompt_tokens(self, prompt: str) -> list[int]:
        """A rendered prompt's tokens, with BOS in front when the model wants one and the text has none."""
        tokens = self.tokenize(prompt, add_special=False, parse_special=True)
        if self.add_bos and self.bos_token and not prompt.startswith(self.bos_token):
            tokens.insert(0, self.bos_id)
        return tokens

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.token_bytes(token, special=True).decode("utf-8", "replace")


def gguf_template(model: Any) -> str | None:
    """The chat template stored in the GGUF metadata, if any."""
    ptr = llama_cpp.llama_model_chat_template(model, None)
    return ptr.decode("utf-8") if ptr else None
