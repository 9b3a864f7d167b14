"""speechmax.data: the Speech Commands vocabulary and layout, the offline corpus builder (TTS engines,
pseudo-speakers, background noise) and the v0.02 / vocoder-speech loaders."""
from .augment import FeatureAugment
from .corpus import CorpusSummary, build_corpus, build_vocoder_corpus, corpus_stats
from .dataset import CorpusError, SpeechCommands, Split, load_split, scan_corpus, vocoder_files
from .noise import coloured_noise, load_noise_files
from .speakers import Speaker, sample_speakers
from .tts import EngineError, available_engines
from .words import SILENCE_LABEL, TASK12_WORDS, UNKNOWN_LABEL, WORDS, labels, speaker_of, which_set

__all__ = [
    "WORDS", "TASK12_WORDS", "SILENCE_LABEL", "UNKNOWN_LABEL", "labels", "speaker_of", "which_set",
    "CorpusSummary", "build_corpus", "build_vocoder_corpus", "corpus_stats", "coloured_noise",
    "Speaker", "sample_speakers", "EngineError", "available_engines", "load_noise_files",
    "SpeechCommands", "FeatureAugment", "CorpusError", "load_split", "Split", "scan_corpus",
    "vocoder_files",
]
