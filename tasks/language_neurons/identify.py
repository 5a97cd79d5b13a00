"""Which language a generated text is in: lingua restricted to the six languages, langdetect as a fallback."""

from __future__ import annotations

import importlib.metadata
from typing import Sequence

from harness import UsageError
from tasks.language_neurons.data import LANGS

MIN_CHARS = 10  # a text with fewer non-space characters is "unknown"


class LanguageIdentifier:
    """lingua, built from the six languages only, minimum relative distance 0.1; langdetect as fallback."""

    def __init__(self, min_chars: int = MIN_CHARS) -> None:
        self.min_chars = min_chars
        try:
            from lingua import Language, LanguageDetectorBuilder
        except ImportError:
            self._init_langdetect()
            return
        names = {
            "en": Language.ENGLISH,
            "de": Language.GERMAN,
            "fr": Language.FRENCH,
            "es": Language.SPANISH,
            "zh": Language.CHINESE,
            "ja": Language.JAPANESE,
        }
        self._code = {v: k for k, v in names.items()}
        self._detector = LanguageDetectorBuilder.from_languages(*names.values()).with_minimum_relative_distance(0.1).build()
        self.name = f"lingua-language-detector {importlib.metadata.version('lingua-language-detector')}"
        self._detect = lambda t: self._code.get(self._detector.detect_language_of(t), "unknown")

    def _init_langdetect(self) -> None:
        try:
            from langdetect import DetectorFactory, detect
            from langdetect.lang_detect_exception import LangDetectException
        except ImportError:
            raise UsageError("no language identifier: pip install lingua-language-detector") from None
        DetectorFactory.seed = 0

        def run(t: str) -> str:
            try:
                code = detect(t)
            except LangDetectException:
                return "unknown"
            code = "zh" if code.startswith("zh") else code
            return code if code in LANGS else "other"

        self.name = f"langdetect {importlib.metadata.version('langdetect')}"
        self._detect = run

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return [self._detect(t) if len("".join(t.split())) >= self.min_chars else "unknown" for t in texts]
