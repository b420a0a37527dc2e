# Tokenizer (agent/engine/tokenizer.c, bpe_train.c, unicode_*.c). Timeouts are
# about 3x the time measured on the 2-core CI machine.
fw_add_test(NAME test_tokenizer SOURCES unit/test_tokenizer.c LIBS fw_engine
  LABELS unit TIMEOUT 60)
fw_add_test(NAME test_tokenizer_corpora SOURCES unit/test_tokenizer_corpora.c LIBS fw_engine
  LABELS unit TIMEOUT 60)
fw_add_test(NAME test_tokenizer_pretok SOURCES unit/test_tokenizer_pretok.c
  LIBS fw_engine PkgConfig::PCRE2 LABELS unit TIMEOUT 30)
fw_add_test(NAME test_tokenizer_train SOURCES unit/test_tokenizer_train.c LIBS fw_engine
  LABELS unit TIMEOUT 60)
