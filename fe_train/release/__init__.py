"""Import and export of the authors' release layout (ictnlp/FreezeEmpath: one ``Omni2Speech2SQwen2ForCausalLM``
checkpoint); what was read where: docs/release.md."""
