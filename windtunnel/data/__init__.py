"""Data: the prepared-folder format (`prepared`), the embedded corpus (`corpus`), tokenizers, sources,
`data prepare` (`preparation`), batch sampling (`sampling`) and mixtures (`mixture`)."""
