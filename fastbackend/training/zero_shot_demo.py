"""The embedded zero-shot default: a tiny CLIP trained from scratch on scikit-learn's digits with
captions ("a photo of the digit seven"), its tokenizer made here (no download), and a LoRA adapter
for inverted digits. notebooks/zero_shot/00_demo_models.ipynb builds them (pipeline zero-shot-demo).

The tokenizer is a real `CLIPTokenizer` (byte-level BPE): every byte-level character, alone and
word-final, plus merges that spell the words of the captions, so any text tokenises (unknown words
letter by letter) and the captions' words are one token each.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.zero_shot import DEFAULT_TEMPLATE

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Captions the base learns: the issue's own phrasing, the pipeline's default template (so a request
# with only `candidate_labels` works) and the bare name.
CAPTION_TEMPLATES = ("a photo of the digit {}", DEFAULT_TEMPLATE, "{}")
IMAGE_SIZE = 16  # the digits' 8x8 upscaled by the processor (bicubic), as the ViT demo's
TOWER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def caption_words(templates: Sequence[str] = CAPTION_TEMPLATES, names: Sequence[str] = CLASS_NAMES) -> list[str]:
    """The lower-cased words of every caption, each once, in order."""
    words: dict[str, None] = {}
    for template in templates:
        for name in names:
            for word in template.format(name).lower().replace(".", " ").split():
                words.setdefault(word)
    return list(words)


def word_tokenizer(words: Sequence[str]) -> Any:
    """A CLIPTokenizer over single byte-level characters plus merges spelling `words` (one token each)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for piece in pieces[1:]:
            merged = left + piece
            if (left, piece) not in merges:
                merges.append((left, piece))
                vocab.setdefault(merged, len(vocab))
            left = merged
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def new_base(folder: str | Path, seed: int = 0) -> Path:
    """An untrained tiny CLIP (from a config) with its processor and tokenizer, saved in `folder`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    folder = Path(folder)
    tokenizer = word_tokenizer(caption_words())
    text = {
        **TOWER,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {**TOWER, "image_size": IMAGE_SIZE, "patch_size": 4}
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))
    processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_base(model: Any, folder: str | Path) -> Path:
    """The trained base's weights over the untrained ones (config, processor and tokenizer stay)."""
    model.eval().save_pretrained(folder)
    (Path(folder) / "README.md").unlink(missing_ok=True)
    return Path(folder)
