"""Tokenizers for prepared data: byte-level, a BPE trained on the corpus, or an existing `tokenizer.json`.

All three share one small contract: ``name``, ``vocab_size``, ``eos_id`` (the id appended after each
document, or None), ``encode(text)``, ``encode_batch(texts)``, ``decode(ids)`` and ``save(folder)``.
BPE and file tokenizers use the Hugging Face ``tokenizers`` library, locally: nothing is downloaded.

A trained BPE is byte-level (GPT-2 style pre-tokenizer over the 256 byte symbols), so any text encodes
without unknown tokens and decodes back to itself exactly. Its id 0 is ``<|endoftext|>``, the document
separator. Literal ``<|endoftext|>`` text inside a document is encoded as plain text, never as the
separator, so data cannot forge document boundaries.

Example:
    >>> tok = parse_tokenizer("byte")
    >>> tok.encode("hi").tolist(), tok.eos_id
    ([104, 105], None)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from ..errors import DataError
from ..run_folder import META_FILE, TOKENIZER_FILE

__all__ = [
    "EOS_TOKEN",
    "TOKENIZER_FILE",
    "BPE_MIN_VOCAB",
    "Tokenizer",
    "ByteTokenizer",
    "ByteLevelTokenizer",
    "HFTokenizer",
    "parse_tokenizer",
    "train_bpe",
    "load_tokenizer",
]

EOS_TOKEN = "<|endoftext|>"
BPE_MIN_VOCAB = 257  # 256 byte symbols + the end-of-text token
# Names of end-of-document tokens in common tokenizer.json files, in order of preference.
_EOS_NAMES = (EOS_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "[SEP]")


class Tokenizer(Protocol):
    """What preparation needs from a tokenizer."""

    name: str
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> np.ndarray: ...
    def encode_batch(self, texts: list[str]) -> list[np.ndarray]: ...
    def decode(self, ids: Any) -> str: ...
    def save(self, folder: Path) -> str | None: ...


class ByteTokenizer:
    """Byte-level tokenizer: vocab 256, token id = byte value (UTF-8 for text).

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode("hi").tolist()
        [104, 105]
        >>> tok.decode([104, 105])
        'hi'
    """

    name = "byte"
    vocab_size = 256

    def encode(self, text: str | bytes) -> np.ndarray:
        """Encode text (as UTF-8) or raw bytes to a ``uint8`` array of token ids."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, dtype=np.uint8).copy()

    def decode(self, ids: Any) -> str:
        """Decode token ids (list, array or tensor) back to text; invalid UTF-8 becomes U+FFFD."""
        if hasattr(ids, "detach"):  # torch tensor
            ids = ids.detach().cpu().numpy()
        arr = np.asarray(ids).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"byte token ids must be in [0, 255], got range [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class ByteLevelTokenizer(ByteTokenizer):
    """The byte tokenizer of the embedded corpus, with the batch and save methods preparation uses.

    Vocab 256 leaves no id for a separator, so ``eos_id`` is None: documents are joined as they are.

    Example:
        >>> [a.tolist() for a in ByteLevelTokenizer().encode_batch(["a", "é"])]
        [[97], [195, 169]]
    """

    eos_id = None

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode several texts; one ``uint8`` array each."""
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def save(self, folder: Path) -> None:
        """Nothing to save: the byte tokenizer is fully described by its name."""
        return None


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` behind the windtunnel contract.

    Example:
        >>> tok = train_bpe(["hello world"] * 50, vocab_size=300)   # doctest: +SKIP
        >>> tok.decode(tok.encode("hello world")) == "hello world"  # doctest: +SKIP
        True
    """

    def __init__(self, tokenizer: Any, *, name: str, source: str | None = None):
        self.tk = tokenizer
        self.name = name
        self.source = source  # the file it came from, for error messages and meta.json
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.eos_id = next((i for i in map(tokenizer.token_to_id, _EOS_NAMES) if i is not None), None)
        # Text that spells a special token stays text: the separator comes only from eos_id.
        tokenizer.encode_special_tokens = True

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, name: str = "file") -> "HFTokenizer":
        """Load a ``tokenizer.json`` (no network). A missing or invalid file raises :class:`DataError`."""
        from tokenizers import Tokenizer as _HF

        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: tokenizer file not found; expected a Hugging Face tokenizer.json")
        try:
            tk = _HF.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception for malformed files
            raise DataError(f"{path}: not a valid tokenizer.json ({' '.join(str(e).split())})") from None
        return cls(tk, name=name, source=str(path))

    def encode(self, text: str) -> np.ndarray:
        """Token ids of one text (no special tokens added)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode several texts in parallel (Rust threads); one ``int64`` array each."""
        encodings = self.tk.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Any) -> str:
        """Text of token ids (list, array or tensor); special tokens are kept in the text."""
        if hasattr(ids, "detach"):
            ids = ids.detach().cpu().numpy()
        return self.tk.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def save(self, folder: Path) -> str:
        """Write ``tokenizer.json`` into ``folder`` (a copy of the source file when there is one)."""
        target = Path(folder) / TOKENIZER_FILE
        if self.source is not None:
            shutil.copyfile(self.source, target)
        else:
            self.tk.save(str(target))
        return TOKENIZER_FILE


def train_bpe(texts: Iterable[str], *, vocab_size: int) -> HFTokenizer:
    """Train a byte-level BPE with ``vocab_size`` ids (``<|endoftext|>`` is id 0) on an iterable of texts.

    The result may hold fewer ids than asked when the text is too small to learn that many merges.

    Example:
        >>> tok = train_bpe(["the cat sat on the mat\\n"] * 100, vocab_size=280)
        >>> tok.eos_id, tok.vocab_size <= 280
        (0, True)
    """
    from tokenizers import Tokenizer as _HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < BPE_MIN_VOCAB:
        raise DataError(f"bpe: vocab_size must be an integer >= {BPE_MIN_VOCAB} "
                        f"(256 bytes + {EOS_TOKEN}), got {vocab_size!r}")
    tk = _HF(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer=trainer)
    return HFTokenizer(tk, name="bpe")


def parse_tokenizer(spec: str) -> ByteLevelTokenizer | HFTokenizer | int:
    """Resolve a ``--tokenizer`` value: ``byte``, a path to a ``tokenizer.json``, or ``bpe:VOCAB``.

    ``bpe:VOCAB`` returns the vocabulary size (an int): the BPE is trained later, on the corpus.

    Example:
        >>> parse_tokenizer("bpe:8192")
        8192
        >>> parse_tokenizer("byte").vocab_size
        256
    """
    spec = str(spec).strip()
    if spec == "byte":
        return ByteLevelTokenizer()
    if spec.startswith("bpe:"):
        raw = spec[4:]
        vocab = int(raw) if raw.isdigit() else None
        if vocab is None or vocab < BPE_MIN_VOCAB or vocab > 1 << 32:
            raise DataError(f"--tokenizer {spec}: expected bpe:VOCAB with an integer VOCAB in "
                            f"[{BPE_MIN_VOCAB}, 2**32], for example bpe:8192")
        return vocab
    if spec.endswith(".json") or os.path.exists(spec):
        return HFTokenizer.from_file(spec)
    raise DataError(f"--tokenizer {spec}: expected 'byte', 'bpe:VOCAB' or the path of a tokenizer.json")


def load_tokenizer(folder: str | os.PathLike) -> ByteLevelTokenizer | HFTokenizer:
    """The tokenizer a prepared data folder was made with (from its ``meta.json``).

    Example:
        >>> tok = load_tokenizer("data/web")                # doctest: +SKIP
        >>> tok.decode(load_tokens("data/web").val[:50])    # doctest: +SKIP
    """
    folder = Path(folder).expanduser()
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{meta_path}: unreadable; expected the prepared data's metadata ({e})") from None
    if meta.get("tokenizer") == "byte":
        return ByteLevelTokenizer()
    name = meta.get("tokenizer_file")
    if not name:
        raise DataError(f"{meta_path}: tokenizer {meta.get('tokenizer')!r} has no tokenizer_file")
    tok = HFTokenizer.from_file(folder / name, name=str(meta.get("tokenizer")))
    if tok.vocab_size != meta.get("vocab_size"):
        raise DataError(f"{folder / name}: vocab size {tok.vocab_size} disagrees with "
                        f"vocab_size={meta.get('vocab_size')} in {meta_path}")
    return tok
