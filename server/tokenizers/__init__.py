"""Tokenizers: the acoustic codec (EnCodec or our small codec) and the semantic tokenizer."""
