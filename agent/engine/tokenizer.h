/* tokenizer.h - GPT-2 byte-level BPE tokenizer.
 *
 * Loads the Hugging Face files (vocab.json + merges.txt), the original OpenAI
 * names (encoder.json + vocab.bpe), or a tokenizer.json (merges as "a b"
 * strings or ["a","b"] pairs). Encoding reproduces GPT-2's encoder.py exactly:
 * the same pre-tokenisation regex, byte-to-unicode mapping and merge ranks.
 * Decoding returns raw bytes (a token may end inside a UTF-8 sequence). */
#ifndef FW_TOKENIZER_H
#define FW_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct fw_tokenizer fw_tokenizer;

/* Load from a directory. NULL on failure, with fw_err_detail() naming the
 * file and what was wrong. */
fw_tokenizer *fw_tokenizer_load(const char *dir);
void fw_tokenizer_destroy(fw_tokenizer **tok);

int fw_tokenizer_vocab_size(const fw_tokenizer *tok);
/* Id of "<|endoftext|>", or -1 when the vocabulary has none. */
int fw_tokenizer_eot(const fw_tokenizer *tok);

/* Encode len bytes of UTF-8 text. *ids is malloc'd (caller frees), *n set.
 * Invalid UTF-8 is FW_EINVAL with the byte offset in fw_err_detail(). The
 * text "<|endoftext|>" is encoded as ordinary text, never as the special id
 * (as encoder.py does); callers add the EOT id themselves. */
int fw_tokenizer_encode(const fw_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                        size_t *n);

/* Decode ids into bytes; *text is malloc'd and NUL-terminated (caller frees),
 * *len excludes the NUL. Unknown ids are FW_EINVAL. */
int fw_tokenizer_decode(const fw_tokenizer *tok, const int32_t *ids, size_t n, char **text,
                        size_t *len);

/* The raw bytes of one token (for streaming generation). Pointer owned by tok. */
int fw_tokenizer_token_bytes(const fw_tokenizer *tok, int32_t id, const char **bytes, size_t *len);

/* Write vocab.json + merges.txt (Hugging Face names) into dir (created if needed). */
int fw_tokenizer_save(const fw_tokenizer *tok, const char *dir);

/* Learn a byte-level BPE vocabulary of vocab_size tokens (256 bytes + merges
 * + "<|endoftext|>") from texts, with GPT-2's pre-tokenisation. When the
 * texts run out of pairs to merge first, the vocabulary is smaller (see
 * fw_tokenizer_vocab_size). */
int fw_tokenizer_train(const char *const *texts, const size_t *lens, size_t ntexts, int vocab_size,
                       fw_tokenizer **out);

/* Build a tokenizer from parts (fw_tokenizer_train does): tokens[i], lens[i]
 * bytes long, is token i for i < ntokens, and merge rank r joins ids
 * merges[2r] and merges[2r+1], whose concatenation must itself be a token.
 * All 256 single bytes must be tokens; "<|endoftext|>", when present, is the
 * EOT id. Everything is copied. NULL + fw_err_detail() on failure. */
fw_tokenizer *fw_tokenizer_from_parts(const char *const *tokens, const size_t *lens, int ntokens,
                                      const int32_t *merges, int nmerges);

#endif
