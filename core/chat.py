"""The project's special tokens and its one chat template (saved with the tokenizer, used by every stage): plain
strings, so a stage's config can check against them without importing torch."""

DOC_SEP = "<|endoftext|>"  # between pretraining documents
EOS = "<|end|>"  # ends a chat turn; generation stops here
PAD = "<|pad|>"
# Separate document and turn ends: a model pretrained to forget everything before a document boundary
# would otherwise ignore the user's message when it answers.
SPECIAL_TOKENS = [DOC_SEP, EOS, PAD, "<|system|>", "<|user|>", "<|assistant|>"]
# One template, carried by the tokenizer and used by every stage.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)
