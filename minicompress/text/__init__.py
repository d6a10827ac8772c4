"""Text input for the pretrained encoders: BERT's WordPiece tokenizer, as Hugging Face transformers'."""
from .tokenizer import BertTokenizer, normalize, split_words, wordpiece

__all__ = ["BertTokenizer", "normalize", "split_words", "wordpiece"]
