"""Prompt → τθ(y): the caption tokenizer and the Transformer text encoder trained with the UNet."""

from ldmkit.text.encoder import TextEncoder, TextTransformerBlock, check_text_unet
from ldmkit.text.tokenizer import PromptTokenizer

__all__ = ["PromptTokenizer", "TextEncoder", "TextTransformerBlock", "check_text_unet"]
